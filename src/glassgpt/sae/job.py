"""`glassgpt sae RUN_DIR --hook NAME`: train an SAE on a run's activations, evaluate it, and
write its folder (default RUN_DIR/sae/<hook>):

    sae.safetensors   the SAE's weights
    sae.json          what it is: the hook, its config and training config, the run's weights SHA-256
    sae_state.safetensors  the optimizer, each feature's tokens since it fired, the step (for --resume;
                      tensors in safetensors, the rest as JSON in its header: no pickle)
    metrics.jsonl     one row per logged step
    evaluation.json   L0, FVU, CE loss recovered, dead and dense features, tokens/s
    features.json     every feature's contexts, histogram, density and logit effect
    features.html     the page of every live feature (glassgpt.sae.page)

Checkpoints are all-or-nothing (`glassgpt.atomic.commit_files`), and a resume continues
the same activation stream at the same step, so 2 x N steps equal N, then --resume, then N.
The folder is written only where no link leads (a run's `sae/` that is a link is refused), and a
pickled `sae_state.pt` of an older glassgpt is refused, unread.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from glassgpt import checkpoint as ckpt
from glassgpt.atomic import atomic_write_text, commit_files, recover
from glassgpt.errors import RunError, UsageError, first_line
from glassgpt.ownership import refuse_link, refuse_links_below
from glassgpt.limits import check_fits
from glassgpt.stop import Interrupted, StopRequested
from glassgpt.sae.activations import ActivationStream, check_hook
from glassgpt.sae.evaluate import evaluate_sae
from glassgpt.sae.features import feature_stats, features_per_token
from glassgpt.sae.model import SAE, SAEConfig
from glassgpt.sae.page import render_features_html
from glassgpt.sae.training import SAETrainConfig, SAETrainer, train_sae
from glassgpt.tensor_tree import load_tree, save_tree
from glassgpt.training.log import read_metrics

WEIGHTS, CONFIG, STATE, METRICS = "sae.safetensors", "sae.json", "sae_state.safetensors", "metrics.jsonl"
LEGACY_STATE = "sae_state.pt"  # a pickle an older glassgpt wrote: refused, never read
EVALUATION, FEATURES, PAGE = "evaluation.json", "features.json", "features.html"
SAE_FILES = (WEIGHTS, CONFIG, STATE, METRICS, EVALUATION, FEATURES, PAGE, ckpt.COMMIT)
PAGES_TOKENS = 65_536  # validation tokens the feature page reads: enough for distinct top contexts


def default_out(run_dir: Path, hook: str, head: int | None) -> Path:
    return run_dir / "sae" / (hook if head is None else f"{hook}.head{head}")


def check_out(out: Path, resume: bool, run_dir: Path | None = None) -> None:
    """A new or empty folder, or (with --resume) an SAE folder glassgpt wrote; not a link, and
    (inside the run, `run_dir`) reached through no link."""
    refuse_link(out, "the SAE's folder")
    if run_dir is not None:
        refuse_links_below(run_dir, out, "a run's sae/ folder")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file, not a folder: choose another --out")
    ours = (out / CONFIG).is_file()
    if resume and not ours:
        raise UsageError(f"{out} holds no SAE to resume ({CONFIG} is missing): leave out --resume")
    if not resume and out.is_dir() and any(out.iterdir()):
        hint = "pass --resume to continue it, or choose another --out" if ours else "choose a new or empty --out"
        raise UsageError(f"{out} is not empty: {hint}")


def identity_of(hook: str, head, sae_config: SAEConfig, train_config: SAETrainConfig, run_raw: dict, seed: int,
                batch_tokens: int) -> dict:
    """What sae.json records, and what a resume must find unchanged."""
    return {"hook": hook, "head": head, "sae": sae_config.to_dict(), "train": train_config.to_dict(),
            "seed": seed, "batch_tokens": batch_tokens, "run_weights_sha256": run_raw.get("weights_sha256")}


def run_sae(run_dir: str | Path, hook: str, *, head: int | None = None, width: int | None = None, k: int = 32,
            batch_topk: bool = False, tokens: int = 2_000_000, batch_tokens: int = 1024, lr: float = 1e-3,
            seed: int = 0, device: str = "cpu", out: str | Path | None = None, resume: bool = False,
            eval_windows: int = 32, checkpoint_every: int = 250, log: Callable[[str], None] = print,
            progress: Callable[..., None] | None = None, pages_tokens: int | None = None) -> dict:
    """Train, evaluate and describe an SAE at `hook` of the run in `run_dir`; returns the evaluation.
    `progress(done, total)` hears the training steps, then `progress(done, total, stage="feature pages")`
    the windows the page reads: `pages_tokens` of the validation split (PAGES_TOKENS by default)."""
    from glassgpt.data import TokenDataset, eval_windows as spread_windows

    run_dir = Path(run_dir)
    model, tokenizer, run_config = ckpt.load_run(run_dir, device)
    for p in model.parameters():
        p.requires_grad_(False)
    d_in = check_hook(model, hook, head)
    sae_config = SAEConfig(d_in=d_in, width=width or 8 * d_in, k=k, batch_topk=batch_topk)
    if tokens < batch_tokens:
        raise UsageError(f"--tokens {tokens:,} is less than one batch of --batch-size {batch_tokens:,} tokens")
    train_config = SAETrainConfig(steps=tokens // batch_tokens, lr=lr)
    try:
        dataset = TokenDataset.load(run_config.train.dataset)
    except UsageError as e:
        raise UsageError(f"the run's data is not ready here ({e})") from None
    if dataset.tokenizer.to_dict() != tokenizer.to_dict():
        raise UsageError(f"dataset {run_config.train.dataset} here is prepared with another tokenizer than the run's")
    out = Path(out) if out is not None else default_out(run_dir, hook, head)
    check_out(out, resume, run_dir)
    _, run_raw = ckpt.read_config(run_dir)
    identity = identity_of(hook, head, sae_config, train_config, run_raw, seed, batch_tokens)

    sae = SAE(sae_config, generator=torch.Generator().manual_seed(seed)).to(device)
    trainer = SAETrainer(sae, train_config)
    rows = restore(out, identity, trainer, device) if resume else []
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        commit_files(out, {
            WEIGHTS: lambda p: save_model(sae, str(p)),
            CONFIG: lambda p: p.write_text(json.dumps(identity, indent=2)),
            STATE: lambda p: save_tree(p, trainer.state_dict()),
            METRICS: lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in rows)),
        })

    stream = ActivationStream(model, dataset.split("train"), hook, batch_tokens=batch_tokens, seed=seed, head=head)
    started, first_step = time.perf_counter(), trainer.step

    def on_step(metrics: dict) -> None:
        if metrics["step"] % 10 == 0 or metrics["step"] == train_config.steps:
            rows.append({"kind": "train", **metrics})
        if metrics["step"] % checkpoint_every == 0:
            save()
        if progress is not None:
            progress(metrics["step"], train_config.steps)

    try:
        train_sae(stream.batches(trainer.step), sae, train_config, on_step=on_step, trainer=trainer)
    except StopRequested as stop:  # between two steps: the state is whole
        save()
        raise Interrupted(f"{stop} at SAE step {trainer.step} with a checkpoint saved; continue with: glassgpt sae "
                          f"{run_dir} --hook {hook} --out {out} --resume (and the same settings)") from None
    seconds = time.perf_counter() - started
    tokens_per_s = (trainer.step - first_step) * batch_tokens / max(seconds, 1e-9)
    save()

    val = dataset.split("val")
    windows, targets = next(spread_windows(val, model.config.block_size, eval_windows, max_batches=1))
    windows, targets = windows.to(device), targets.to(device)
    evaluation = {**evaluate_sae(model, sae, hook, windows, targets, head), "tokens_per_s": tokens_per_s,
                  "train_tokens": trainer.step * batch_tokens, "hook": hook, "head": head}
    from glassgpt.analysis.plots import token_labels

    page_windows = -(-(pages_tokens or PAGES_TOKENS) // model.config.block_size)  # whole windows, rounding up
    page_windows = min(page_windows, max(1, (len(val) - 1) // model.config.block_size))  # ... of the split
    windows, _ = next(spread_windows(val, model.config.block_size, page_windows, max_batches=1))
    windows = windows.to(device)
    on_windows = None if progress is None else (lambda done, total: progress(done, total, stage="feature pages"))
    features = feature_stats(model, sae, hook, windows, lambda ids: token_labels(tokenizer, ids), head,
                             progress=on_windows)
    text_ids = windows[0].tolist()
    token_view = (token_labels(tokenizer, text_ids), features_per_token(model, sae, hook, text_ids, head))
    atomic_write_text(out / EVALUATION, json.dumps(evaluation, indent=2))
    atomic_write_text(out / FEATURES, json.dumps(features))
    atomic_write_text(out / PAGE, render_features_html(f"SAE features of {run_dir.name} at {hook}", evaluation,
                                                       features, token_view=token_view,
                                                       tokens_read=windows.numel()))
    return evaluation


def restore(out: Path, identity: dict, trainer: SAETrainer, device: str) -> list[dict]:
    """Load the SAE folder `out` into `trainer` (and its SAE) to resume, each file checked
    first: the same settings in sae.json, weights of the SAE's sizes, a state glassgpt wrote
    with a step of this training. Returns the metrics rows up to that step."""
    recover(out, SAE_FILES)
    saved = ckpt.read_json(out / CONFIG)
    if saved != identity:
        changed = [k for k in identity if not isinstance(saved, dict) or saved.get(k) != identity[k]]
        raise UsageError(f"cannot resume {out} with other settings ({', '.join(changed)} differ): resume with "
                         "the settings it was started with, or choose another --out")
    check_sae_weights(trainer.sae.config, out / WEIGHTS, device)
    state = read_state(out)
    try:
        load_model(trainer.sae, str(out / WEIGHTS), device=str(device))
        trainer.load_state_dict(state)
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, AttributeError, SafetensorError) as e:
        raise RunError(f"cannot resume the SAE in {out} ({first_line(e)}): its files are corrupt; "
                       "train into another --out") from None
    return [r for r in read_metrics(out) if r["step"] <= trainer.step]  # the same file name as a run's


def read_state(out: Path) -> dict:
    """The SAE trainer's saved state (sae_state.safetensors), read without running code from it."""
    path, repair = out / STATE, "its files are corrupt; train into another --out"
    if not path.is_file() and (out / LEGACY_STATE).exists():
        raise UsageError(f"{out / LEGACY_STATE} was written by an older glassgpt as a pickle, which glassgpt no "
                         "longer reads (a pickle can run code): train the SAE again into another --out")
    if path.is_symlink() or not path.is_file():
        raise RunError(f"cannot resume the SAE in {out}: {STATE} is missing; {repair}")
    state = load_tree(path, repair)
    if not isinstance(state, dict):
        raise RunError(f"{path} is not an SAE trainer state: {repair}")
    return state


def load_sae(folder: str | Path, device: str = "cpu") -> tuple[SAE, dict]:
    """An SAE folder written by `run_sae`: (the SAE in eval mode, its sae.json)."""
    folder = Path(folder)
    identity = ckpt.read_json(folder / CONFIG)
    try:
        config = SAEConfig(**identity["sae"])
    except (KeyError, TypeError, UsageError) as e:
        raise RunError(f"{folder / CONFIG} does not describe an SAE ({first_line(e)})") from None
    check_sae_weights(config, folder / WEIGHTS, device)
    try:
        sae = SAE(config)
        load_model(sae, str(folder / WEIGHTS), device=str(device))
    except (KeyError, TypeError, RuntimeError, OSError, ValueError, SafetensorError) as e:
        raise RunError(f"{folder} does not hold a readable SAE ({first_line(e)})") from None
    return sae.eval(), identity


def check_sae_weights(config: SAEConfig, path: Path, device: str) -> None:
    """Refuse an sae.json whose sizes are not those of the weights in `path` (read from its header:
    nothing is loaded), or an SAE too large for the device, before one is built."""
    shapes = ckpt.weights_shapes(path)
    d, w = config.d_in, config.width
    expected = {"W_dec": (w, d), "W_enc": (d, w), "b_enc": (w,), "b_dec": (d,), "threshold": ()}
    if shapes != expected:
        found = ", ".join(f"{name} {shape}" for name, shape in list(shapes.items())[:5])
        raise RunError(f"{path.parent / CONFIG} and {path} disagree: d_in={d}, width={w}, but the weights hold "
                       f"{found or 'no tensors'}; restore the SAE's own files")
    check_fits(2 * (2 * d * w + w + d) * 4, device, f"the SAE in {path.parent}",  # its weights, and a copy on loading
               "load it on a device with more memory")


def discover_saes(run_dir: str | Path, device: str = "cpu") -> dict[str, tuple[SAE, dict]]:
    """The readable SAE folders under RUN_DIR/sae, by folder name (an unreadable one is left out)."""
    found = {}
    root = Path(run_dir) / "sae"
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file():
            try:
                found[folder.name] = load_sae(folder, device)
            except (RunError, UsageError):
                continue
    return found
