"""Fine-tuning: a run that starts from another run's weights (`init_from = RUN_DIR`).

The source is any run directory: one trained here, or a GPT-2 converted with
`glassgpt convert-hf`. The new run takes the source's model shape; the
[model] keys given alongside must agree with it on every key that fixes the
weights (`SHAPE_FIELDS`, as glassgpt.config declares them), while dropout, `attn_impl`
and `norm` may differ.
The dataset's tokenizer must be the source's. The optimizer starts fresh.
The new run's `config.json` records where it came from (`origin`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from glassgpt import checkpoint as ckpt
from glassgpt.config import GPTConfig, RunConfig, fixed_on
from glassgpt.errors import UsageError
from glassgpt.tokenizer import Tokenizer, describe

# The fields that fix the weights' shapes and meaning, as each GPTConfig field declares
# (`option(..., finetune=True)` for those that may change: dropout, attn_impl, norm, zero_init_proj).
SHAPE_FIELDS = fixed_on(GPTConfig, "finetune")


@dataclasses.dataclass(frozen=True)
class Source:
    """A run to start from: its folder, model shape, tokenizer and the SHA-256 of its weights."""

    run_dir: Path
    model: GPTConfig
    tokenizer: Tokenizer
    weights_sha256: str | None

    def origin(self) -> dict:
        """What the new run's config.json records about where it came from."""
        return {"run_dir": str(self.run_dir.resolve()), "weights_sha256": self.weights_sha256}


def read_source(init_from: str) -> Source:
    """The run named by `init_from`, checked to be a loadable run (UsageError / RunError otherwise)."""
    path = Path(init_from).expanduser()
    if not path.is_dir():
        raise UsageError(f"init_from {init_from} does not exist: give a run directory (one trained here, "
                         "or a GPT-2 converted with glassgpt convert-hf)")
    try:
        ckpt.check_run_dir(path)
    except UsageError as e:
        raise UsageError(f"init_from {init_from} is not a run: {e}") from None
    config, raw = ckpt.read_config(path)
    tokenizer = ckpt.read_tokenizer(path, raw)
    ckpt.check_weights_fit(config.model, path / ckpt.WEIGHTS)  # before a model of that size is built
    return Source(path, config.model, tokenizer, raw.get("weights_sha256"))


def model_from_source(source_model: GPTConfig, rc: RunConfig, what: str) -> GPTConfig:
    """The source's model shape, with the keys `rc` gives on top; a given shape key that
    disagrees with the source is refused, naming every difference."""
    given = set(rc.given_model_keys) if rc.given_model_keys is not None else {
        f.name for f in dataclasses.fields(GPTConfig)}
    differences = [f"{k} {getattr(rc.model, k)} (source {getattr(source_model, k)})" for k in SHAPE_FIELDS
                   if k in given and getattr(rc.model, k) != getattr(source_model, k)]
    if differences:
        raise UsageError(f"{what} has a different model shape than asked for ({', '.join(differences)}): "
                         "leave these keys out, the shape comes from the source run")
    free = {k: getattr(rc.model, k) for k in given if k not in SHAPE_FIELDS}
    return dataclasses.replace(source_model, **free)


def check_same_tokenizer(source: Source, dataset: str, tokenizer: Tokenizer) -> None:
    if tokenizer.to_dict() != source.tokenizer.to_dict():
        raise UsageError(f"dataset {dataset} uses the {tokenizer.name} tokenizer, but init_from {source.run_dir} "
                         f"was trained with {describe(source.tokenizer)}: pick a dataset with the same tokenizer")


def fine_tuning_model(rc: RunConfig, run_dir: Path, resume: bool) -> tuple[GPTConfig, Source | None, dict | None]:
    """For a run with `init_from`: its model config, the source to load weights from
    (None on resume: the run's own checkpoint has them), and the origin to record.
    A resumed fine-tuning run keeps the shape and origin its config.json holds."""
    if not resume:
        source = read_source(rc.train.init_from)
        return model_from_source(source.model, rc, f"init_from {rc.train.init_from}"), source, source.origin()
    if not (run_dir / ckpt.CONFIG).is_file():
        return rc.model, None, None  # resuming nothing: the resume checks say so
    saved, raw = ckpt.read_config(run_dir)
    return model_from_source(saved.model, rc, f"the run in {run_dir}"), None, raw.get("init_from")
