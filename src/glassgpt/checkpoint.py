"""The run directory: save, load and resume.

    config.json        model, train and tokenizer settings, SHA-256 of the weights, provenance
    model.safetensors  the weights (safetensors: loading runs no code)
    tokenizer.json     the tokenizer
    trainer_state.pt   optimizer, step, RNG and data position (read with weights_only=True)
    metrics.jsonl      one JSON object per logged step or eval
    loss.png           train and val curves

A checkpoint is several files that must change together: `glassgpt.atomic.commit_files`
writes each under a temporary name, then a commit record, then renames them into
place. A run killed at any moment is repaired on the next load (`recover`): with a
commit record the renames are finished, without one the temporary files are dropped
and the previous checkpoint stands. Only a writer repairs: the process training into
a run holds `.lock` for as long as it runs, and a reader (`load_run`) leaves
the files alone while it is held.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import pickle
import platform
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from glassgpt.atomic import (  # noqa: F401  (atomic_write* re-exported: glassgpt.checkpoint.atomic_write)
    COMMIT_RECORD, TMP_SUFFIX, atomic_write, atomic_write_text, commit_files, fsync_write, recover,
)
from glassgpt.config import RunConfig
from glassgpt.data import sha256_of
from glassgpt.errors import RunError, UsageError
from glassgpt.model import GPT
from glassgpt.revision import git_revision
from glassgpt.tokenizer import Tokenizer, tokenizer_from_dict

CONFIG, WEIGHTS, TOKENIZER, STATE = "config.json", "model.safetensors", "tokenizer.json", "trainer_state.pt"
METRICS, PLOT = "metrics.jsonl", "loss.png"
COMMIT = COMMIT_RECORD  # ".checkpoint-commit.json": the multi-file commit protocol is glassgpt.atomic's
LOCK = ".lock"


@contextlib.contextmanager
def writer_lock(run_dir: Path):
    """Held by the one process writing checkpoints into `run_dir`, for as long as it
    runs (the OS releases it if the process dies). A second writer is refused."""
    from filelock import FileLock, Timeout  # flock on POSIX, msvcrt locking on Windows

    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / LOCK, is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UsageError(f"another process is training into {run_dir}: wait for it to finish, "
                         "or choose another --out") from None
    try:
        yield
    finally:
        lock.release()
        if created and [p.name for p in run_dir.iterdir()] in ([LOCK], []):  # failed before writing anything
            (run_dir / LOCK).unlink(missing_ok=True)
            run_dir.rmdir()


def recover_if_idle(run_dir: Path) -> None:
    """`recover`, unless a live process is writing into the run (then its files
    are in progress, not left over)."""
    if not (run_dir / COMMIT).exists() and not any(run_dir.glob("*" + TMP_SUFFIX)):
        return
    try:
        with writer_lock(run_dir):
            recover(run_dir)
    except UsageError:
        pass


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


def save_run(run_dir: str | Path, model: GPT, tokenizer: Tokenizer, run_config: RunConfig,
             trainer_state: dict | None = None, origin: dict | None = None) -> None:
    """Write (or update) a run directory as one atomic checkpoint. `origin`: the run a
    fine-tuning run started from, recorded as `init_from` in config.json."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    recover(run_dir)
    weights_tmp = run_dir / (WEIGHTS + TMP_SUFFIX)
    fsync_write(weights_tmp, lambda p: save_model(model, str(p)))
    config = run_config.to_dict()
    config["tokenizer"] = tokenizer.to_dict()
    config["weights_sha256"] = sha256_of(weights_tmp)
    config["provenance"] = provenance()
    if origin is not None:
        config["init_from"] = origin
    writers: dict[str, Callable[[Path], None]] = {
        WEIGHTS: lambda p: None,  # already written above, so its hash could go in the config
        CONFIG: lambda p: p.write_text(json.dumps(config, indent=2)),
        TOKENIZER: tokenizer.save,
    }
    if trainer_state is not None:
        state = dict(trainer_state, weights_sha256=config["weights_sha256"])
        writers[STATE] = lambda p: torch.save(state, p)
    commit_files(run_dir, writers)


# ---------------------------------------------------------------- loading

def check_run_dir(run_dir: str | Path, repair: bool = True) -> Path:
    """The run directory, checked to hold a run; `repair` first finishes or undoes
    a checkpoint write that a dead process left behind."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} does not exist")
    if repair:
        recover_if_idle(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise UsageError(f"{run_dir} is not a run directory: it has no {CONFIG}")
    if not (run_dir / WEIGHTS).is_file():
        raise UsageError(f"{run_dir} has no {WEIGHTS}: train into it first")
    return run_dir


def read_json(path: Path):
    """A JSON file someone else may have written: parsed, or one clear RunError."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is not valid JSON: {e}") from None


def read_config(run_dir: Path) -> tuple[RunConfig, dict]:
    raw = read_json(run_dir / CONFIG)
    if not isinstance(raw, dict):
        raise RunError(f"{run_dir / CONFIG} is not a JSON object")
    sections = {k: raw[k] for k in ("model", "train") if k in raw}
    return RunConfig.from_dict(sections, source=str(run_dir / CONFIG)), raw


def load_run(run_dir: str | Path, device: str | torch.device = "cpu",
             dtype: str = "float32") -> tuple[GPT, Tokenizer, RunConfig]:
    """Load a run for inference: `(model in eval mode, tokenizer, run config)`. `dtype`
    (auto, float32, bfloat16, float16) is the precision the weights are cast to for
    inference, in memory only. To generate fast, pass the model to
    `glassgpt.precision.prepare_for_inference` (`glassgpt sample` does)."""
    from glassgpt.precision import cast_weights, inference_dtype

    torch_dtype = inference_dtype(dtype, device)
    run_dir = check_run_dir(run_dir)
    run_config, raw = read_config(run_dir)
    tokenizer = tokenizer_from_dict(raw.get("tokenizer") or json.loads((run_dir / TOKENIZER).read_text()))
    model = GPT(run_config.model)
    load_weights(model, run_dir, device, expected_sha256=raw.get("weights_sha256"))
    return cast_weights(model.to(device), torch_dtype).eval(), tokenizer, run_config


def load_weights(model: GPT, run_dir: Path, device: str | torch.device = "cpu",
                 expected_sha256: str | None = None) -> None:
    """Load the run's weights into `model`, checking them against the SHA-256 in its config."""
    if expected_sha256 is None:
        expected_sha256 = read_config(run_dir)[1].get("weights_sha256")
    if expected_sha256 and sha256_of(run_dir / WEIGHTS) != expected_sha256:
        writing = (run_dir / COMMIT).exists()
        busy = " (a checkpoint is being written right now: try again in a moment)" if writing else ""
        raise RunError(f"{run_dir / WEIGHTS} does not match the SHA-256 in {CONFIG}: "
                       f"the file is corrupt or truncated{busy}")
    try:
        load_model(model, str(run_dir / WEIGHTS), device=str(device))
    except (SafetensorError, RuntimeError, OSError) as e:
        raise RunError(f"cannot load {run_dir / WEIGHTS}: {str(e).splitlines()[0]}") from None


def load_trainer_state(run_dir: Path) -> dict:
    """The trainer state, read without running any code from the file."""
    path = run_dir / STATE
    if not path.is_file():
        raise UsageError(f"{run_dir} has no {STATE} to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise RunError(f"refusing to load {path}: it holds objects other than tensors and plain data "
                       f"({str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise RunError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
