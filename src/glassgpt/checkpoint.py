"""The run directory: save, load and resume.

    config.json        model, train and tokenizer settings, SHA-256 of the weights, provenance
    model.safetensors  the weights (safetensors: loading runs no code)
    tokenizer.json     the tokenizer
    trainer_state.safetensors  optimizer, step, RNG and data position: tensors in safetensors, the
                       rest as JSON in its header (glassgpt.tensor_tree; no pickle)
    shards-<step>-<id>/ parallel=fsdp: the weights and optimizer state in shards (glassgpt.shard_folders, glassgpt.training.sharded);
                       the trainer state names the folder and holds the rest
    metrics.jsonl      one JSON object per logged step or eval
    loss.png           train and val curves

A checkpoint is several files that must change together: `glassgpt.atomic.commit_files`
writes each under a temporary name, then a commit record, then renames them into
place. A run killed at any moment is repaired on the next load (`recover`): with a
commit record the renames are finished, without one the temporary files are dropped
and the previous checkpoint stands. Only a writer repairs: the process training into
a run holds `.lock` for as long as it runs, and a reader (`load_run`) leaves
the files alone while it is held.

No file of a run is a pickle: a `trainer_state.pt` that an older glassgpt wrote is refused,
unread, with what to do instead (`load_trainer_state`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import platform
import re
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_file, save_model

from glassgpt.atomic import (
    COMMIT_RECORD, commit_files, pending, recover, write_temp,
)
from glassgpt.config import GPTConfig, RunConfig
from glassgpt.data import sha256_of
from glassgpt import safe_read
from glassgpt.errors import GlassGPTError, RunError, UsageError, first_line
from glassgpt.limits import check_fits, device_memory, parameter_count
from glassgpt.model import GPT
from glassgpt.ownership import MARKERS, RUN, has_marker, write_marker
from glassgpt.precision import inference_dtype, prepare_for_inference, row_major
from glassgpt.shard_folders import check_folder_name, drop_stale
from glassgpt.revision import git_revision
from glassgpt.tensor_tree import load_tree, save_tree
from glassgpt.tokenizer import Tokenizer, tokenizer_from_dict

CONFIG, WEIGHTS, TOKENIZER, STATE = "config.json", "model.safetensors", "tokenizer.json", "trainer_state.safetensors"
LEGACY_STATE = "trainer_state.pt"  # a pickle an older glassgpt wrote: refused, never read
METRICS, PLOT = "metrics.jsonl", "loss.png"
COMMIT = COMMIT_RECORD  # ".checkpoint-commit.json": the multi-file commit protocol is glassgpt.atomic's
LOCK = ".lock"
MARKER = MARKERS[RUN]  # ".glassgpt-run", written first into every run glassgpt starts (glassgpt.ownership)
DYNAMICS_PLOT = "dynamics.png"  # = glassgpt.analysis.dynamics.DYNAMICS
# The files glassgpt writes into a run (and so the only ones recovery may rename or remove).
RUN_FILES = (CONFIG, WEIGHTS, TOKENIZER, STATE, METRICS, PLOT, DYNAMICS_PLOT, COMMIT, MARKER)


def is_run(run_dir: Path) -> bool:
    """A folder glassgpt made a run of: its marker, or (a run from before the marker) a
    config.json that records glassgpt's provenance."""
    if has_marker(run_dir, RUN):
        return True
    if not (run_dir / CONFIG).is_file():
        return False
    try:
        raw = read_json(run_dir / CONFIG)
    except GlassGPTError:
        return False
    return isinstance(raw, dict) and isinstance(raw.get("provenance"), dict) and "glassgpt" in raw["provenance"]


def mark_as_run(run_dir: Path) -> None:
    write_marker(run_dir, RUN)


def check_writable_run_dir(run_dir: Path) -> None:
    """A folder glassgpt may write a run into: a new or empty folder, or one of its runs."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"{run_dir} is a file, not a folder: choose another --out")
    if run_dir.is_dir() and not is_run(run_dir) and any(run_dir.iterdir()):
        raise UsageError(f"{run_dir} holds files that are not a glassgpt run, and glassgpt writes runs only into "
                         "a new or empty folder or one of its own runs: choose another --out")


@contextlib.contextmanager
def writer_lock(run_dir: Path):
    """Held by the one process writing checkpoints into `run_dir`, for as long as it
    runs (the OS releases it if the process dies). A second writer is refused. Only in
    a new or empty folder (which becomes a run: its marker is written) or a run."""
    from filelock import FileLock, Timeout  # flock on POSIX, msvcrt locking on Windows

    check_writable_run_dir(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in run_dir.iterdir()}
    lock = FileLock(run_dir / LOCK, is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UsageError(f"another process is training into {run_dir}: wait for it to finish, "
                         "or choose another --out") from None
    try:
        mark_as_run(run_dir)
        yield
    finally:
        lock.release()
        if not before and {p.name for p in run_dir.iterdir()} <= {LOCK, MARKER}:  # failed before writing anything
            for name in (LOCK, MARKER):
                (run_dir / name).unlink(missing_ok=True)
            if created:
                run_dir.rmdir()


def recover_if_idle(run_dir: Path) -> None:
    """`recover`, unless a live process is writing into the run (then its files
    are in progress, not left over), or the folder is not one of glassgpt's runs."""
    if not pending(run_dir, RUN_FILES) or not is_run(run_dir):
        return
    try:
        with writer_lock(run_dir):
            recover(run_dir, RUN_FILES)
    except UsageError:
        pass


def drop_stale_shards(run_dir: Path) -> None:
    """Remove the shard folders (parallel=fsdp) that the committed trainer state does not name: an
    older checkpoint's, or one a killed writer left. Without a committed trainer state none is
    known to be stale, and all are left. Call after `recover`, as the run's writer."""
    if not (run_dir / STATE).is_file() or not any(p.name.startswith("shards-") for p in run_dir.iterdir()):
        return
    drop_stale(run_dir, keep=load_trainer_state(run_dir).get("sharded"))


# ---------------------------------------------------------------- saving

def provenance() -> dict:
    """What made this run: versions, machine, code revision."""
    rev = git_revision()
    from glassgpt import __version__

    return {
        "glassgpt": __version__,
        "git_revision": rev,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def save_weights(path: Path, model: GPT | None, weights: dict[str, torch.Tensor] | None = None) -> None:
    """The model's weights as safetensors; or `weights`, a whole state_dict (gathered from shards),
    written as `save_model` writes the model's (a tied head stored once, as lm_head.weight)."""
    if weights is None:
        with row_major(model):  # a model loaded for inference too
            save_model(model, str(path))
        return
    tensors, metadata = dict(weights), None
    if "wte.weight" in tensors and "lm_head.weight" in tensors and model.config.tie_weights:
        del tensors["wte.weight"]
        metadata = {"wte.weight": "lm_head.weight"}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def save_run(run_dir: str | Path, model: GPT, tokenizer: Tokenizer, run_config: RunConfig,
             trainer_state: dict | None = None, origin: dict | None = None,
             weights: dict[str, torch.Tensor] | None = None) -> None:
    """Write (or update) a run directory as one atomic checkpoint. `origin`: the run a
    fine-tuning run started from, recorded as `init_from` in config.json. `weights`: the whole
    state_dict, when `model` holds only a shard of it (parallel=fsdp)."""
    run_dir = Path(run_dir)
    check_writable_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    recover(run_dir, RUN_FILES)
    mark_as_run(run_dir)
    weights_tmp = write_temp(run_dir / WEIGHTS, lambda p: save_weights(p, model, weights))
    config = run_config.to_dict()
    config["tokenizer"] = tokenizer.to_dict()
    config["weights_sha256"] = sha256_of(weights_tmp)
    config["provenance"] = provenance()
    if origin is not None:
        config["init_from"] = origin
    writers: dict[str, Callable[[Path], None] | Path] = {
        WEIGHTS: weights_tmp,  # already written above, so its hash could go in the config
        CONFIG: lambda p: p.write_text(json.dumps(config, indent=2)),
        TOKENIZER: tokenizer.save,
    }
    if trainer_state is not None:
        state = dict(trainer_state, weights_sha256=config["weights_sha256"])
        writers[STATE] = lambda p: save_tree(p, state)
    commit_files(run_dir, writers)


# ---------------------------------------------------------------- loading

def check_run_dir(run_dir: str | Path, repair: bool = True) -> Path:
    """The run directory, checked to hold a run; `repair` first finishes or undoes
    a checkpoint write that a dead process left behind (in a glassgpt run only)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"{run_dir} is a file, not a run directory")
    if not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} does not exist")
    if repair:
        recover_if_idle(run_dir)  # only in a folder that is recognisably a run
    if not (run_dir / CONFIG).is_file():
        raise UsageError(f"{run_dir} is not a run directory: it has no {CONFIG}")
    if not (run_dir / WEIGHTS).is_file():
        raise UsageError(f"{run_dir} has no {WEIGHTS}: train into it first")
    return run_dir


MAX_CONFIG_BYTES = 10_000_000  # a run's config.json is a few KiB


def read_json(path: Path, max_bytes: int = MAX_CONFIG_BYTES):
    """A JSON file someone else may have written, through the bounded reader
    (`glassgpt.safe_read`): parsed, or one clear RunError naming it."""
    return safe_read.read_json(path, max_bytes, fix="restore it from a copy of the run")


def read_config(run_dir: Path) -> tuple[RunConfig, dict]:
    raw = read_json(run_dir / CONFIG)
    if not isinstance(raw, dict):
        raise RunError(f"{run_dir / CONFIG} is not a JSON object")
    missing = [k for k in ("model", "train") if not isinstance(raw.get(k), dict)]
    if missing:  # every run glassgpt saves has both: defaults in their place would describe another run
        raise RunError(f"{run_dir / CONFIG} has no {' and no '.join(repr(k) for k in missing)} section: it is not "
                       "a run's config; restore it from a copy of the run")
    return RunConfig.from_dict({k: raw[k] for k in ("model", "train")}, source=str(run_dir / CONFIG)), raw


def read_tokenizer(run_dir: Path, raw_config: dict) -> Tokenizer:
    """The run's tokenizer (config.json's copy, else tokenizer.json), checked to be one glassgpt knows."""
    source = run_dir / CONFIG
    described = raw_config.get("tokenizer")
    if described is None:
        source = run_dir / TOKENIZER
        if not source.is_file():
            raise RunError(f"{run_dir} has no tokenizer: neither {CONFIG} nor {TOKENIZER} describes one")
        described = read_json(source)
    try:
        tokenizer = tokenizer_from_dict(described)
    except (UsageError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise RunError(f"the tokenizer in {source} cannot be used ({first_line(e)}): restore the run's files") from None
    return tokenizer


def weights_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors file, read from its header alone
    (nothing is loaded; the library checks the header against the file's size)."""
    safe_read.check_regular(path, device_memory("cpu"), fix="restore the run's own weights")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{path} is not a readable safetensors file ({first_line(e)}): "
                       "it is corrupt or truncated") from None


def check_weights_fit(config: GPTConfig, path: Path) -> None:
    """Refuse a config.json whose model would not be the one in the weights file, before
    building it: the layers, the embedding's size, then every tensor's shape."""
    shapes = weights_shapes(path)
    layers = {int(m.group(1)) for name in shapes if (m := re.match(r"blocks\.(\d+)\.", name))}
    where = f"{path.parent / CONFIG} and {path}"
    if layers != set(range(config.n_layer)):
        raise RunError(f"{where} disagree: n_layer={config.n_layer} but the weights hold {len(layers)} layer(s); "
                       "restore the run's own config.json")
    wte = shapes.get("wte.weight", shapes.get("lm_head.weight"))
    if wte != (config.vocab_size, config.n_embd):
        raise RunError(f"{where} disagree: vocab_size={config.vocab_size}, n_embd={config.n_embd} but the token "
                       f"embedding is {wte}; restore the run's own config.json")
    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = {name: tuple(t.shape) for name, t in GPT(config).state_dict().items()}
    tied = {"wte.weight", "lm_head.weight"} if config.tie_weights else set()
    for name, shape in shapes.items():
        if expected.get(name) != shape:
            want = f"needs {expected[name]}" if name in expected else "has no such tensor"
            raise RunError(f"{where} disagree: the weights hold {name} {shape}, but the model config.json "
                           f"describes {want}; restore the run's own config.json")
    missing = [name for name in expected if name not in shapes and not (name in tied and tied & set(shapes))]
    if missing:
        raise RunError(f"{path} lacks {missing[0]} (and {len(missing) - 1} more), which the model in "
                       f"{CONFIG} has: restore the run's own files")


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", dtype: str = "float32",
             decoding: bool = True) -> tuple[GPT, Tokenizer, RunConfig]:
    """Load a run for inference: `(model in eval mode, tokenizer, run config)`, ready to
    generate fast. `dtype` (auto, float32, bfloat16, float16) is the precision the weights
    are cast to, in memory only (`auto`: the fastest here for decoding, or with
    `decoding=False` for whole windows: `precision.inference_dtype`); the weights get
    `prepare_for_inference`'s layout (the same values, stored where batch-1 decoding reads
    them fastest), so `load_run` and
    `generate` need no other call. Training loads weights with `load_weights` instead,
    in the layout it was built with."""
    torch_dtype = inference_dtype(dtype, device, decoding)
    run_dir = check_run_dir(run_dir)
    run_config, raw = read_config(run_dir)
    tokenizer = read_tokenizer(run_dir, raw)
    if tokenizer.vocab_size > run_config.model.vocab_size:
        raise RunError(f"{run_dir}'s tokenizer has {tokenizer.vocab_size} tokens but its model only "
                       f"{run_config.model.vocab_size}: the files come from different runs")
    check_weights_fit(run_config.model, run_dir / WEIGHTS)  # before a model of config.json's size is built
    check_fits(parameter_count(run_config.model) * 4, "cpu", f"the model in {run_dir / CONFIG}",
               "load it on a machine with more memory")  # built in fp32 on the CPU first
    model = GPT(run_config.model)
    load_weights(model, run_dir, device, expected_sha256=raw.get("weights_sha256"))
    return prepare_for_inference(model.to(device), torch_dtype), tokenizer, run_config


def load_weights(model: GPT, run_dir: Path, device: str | torch.device = "cpu",
                 expected_sha256: str | None = None) -> None:
    """Load the run's weights into `model`, checking them against the SHA-256 in its config."""
    if expected_sha256 is None:
        expected_sha256 = read_config(run_dir)[1].get("weights_sha256")
    if expected_sha256 is not None and not isinstance(expected_sha256, str):
        raise RunError(f"weights_sha256 in {run_dir / CONFIG} is not a string: restore the run's own config.json")
    if expected_sha256 and sha256_of(run_dir / WEIGHTS) != expected_sha256:
        writing = (run_dir / COMMIT).exists()
        busy = " (a checkpoint is being written right now: try again in a moment)" if writing else ""
        raise RunError(f"{run_dir / WEIGHTS} does not match the SHA-256 in {CONFIG}: "
                       f"the file is corrupt or truncated{busy}")
    check_weights_fit(model.config, run_dir / WEIGHTS)
    try:
        load_model(model, str(run_dir / WEIGHTS), device=str(device))
    except (SafetensorError, RuntimeError, OSError) as e:
        detail = " ".join(line.strip() for line in str(e).splitlines() if line.strip())[:300]
        raise RunError(f"cannot load {run_dir / WEIGHTS}: {detail or type(e).__name__}") from None


# What a trainer state must hold, and of what type, before a resume reads any of it.
STATE_FIELDS = {"step": int, "optimizer": dict, "rng": list, "loader": dict, "weights_sha256": str}


def load_trainer_state(run_dir: Path) -> dict:
    """The trainer state, read without running any code from the file (safetensors and JSON),
    and checked to hold what a resume needs. A pickled `trainer_state.pt` of an older glassgpt
    is refused unread: its weights still serve as `init_from` for a new run."""
    path = run_dir / STATE
    if path.is_dir() or path.is_symlink():
        raise RunError(f"{path} is a {'link' if path.is_symlink() else 'folder'}, not a trainer state: "
                       "restore the file, or train into a new --out")
    if not path.is_file():
        legacy = run_dir / LEGACY_STATE
        if legacy.exists() or legacy.is_symlink():
            raise UsageError(f"{legacy} was written by an older glassgpt as a pickle, which glassgpt no longer reads "
                             "(a pickle can run code): train into a new --out, starting from this run's weights "
                             f"with init_from={run_dir}")
        raise UsageError(f"{run_dir} has no {STATE} to resume from")
    state = load_tree(path, "restore it, or train into a new --out")
    if not isinstance(state, dict):
        raise RunError(f"{path} is not a trainer state (it holds a {type(state).__name__}): "
                       "restore it, or train into a new --out")
    for name, kind in STATE_FIELDS.items():
        value = state.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            got = "nothing" if value is None else f"a {type(value).__name__}"
            raise RunError(f"{path} is incomplete: its {name!r} should be a {kind.__name__}, it holds {got}; "
                           "restore it, or train into a new --out")
    if state["step"] < 0 or not state["rng"]:
        raise RunError(f"{path} holds an impossible step or no RNG state: restore it, or train into a new --out")
    if "sharded" in state:  # parallel=fsdp: the weights and optimizer state are in the folder it names
        check_folder_name(state["sharded"], path)
    return state
