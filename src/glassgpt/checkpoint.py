"""The run directory: save, load and resume.

    config.json        model, train and tokenizer settings, SHA-256 of the weights, provenance
    model.safetensors  the weights (safetensors: loading runs no code)
    tokenizer.json     the tokenizer
    trainer_state.pt   optimizer, step, RNG and data position (read with weights_only=True)
    metrics.jsonl      one JSON object per logged step or eval
    loss.png           train and val curves

A checkpoint is several files that must change together. Each is first written
completely under a temporary name; then a small commit record is written
atomically; then the files are renamed into place and the record removed. A
run killed at any moment is repaired on the next load: with a commit record
the renames are finished, without one the temporary files are dropped and the
previous checkpoint stands. Only a writer repairs: the process training into
a run holds `.lock` for as long as it runs, and a reader (`load_run`) leaves
the files alone while it is held.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import pickle
import platform
import subprocess
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from glassgpt.config import RunConfig
from glassgpt.data import sha256_of
from glassgpt.errors import RunError, UsageError
from glassgpt.model import GPT
from glassgpt.tokenizer import Tokenizer, tokenizer_from_dict

try:
    import fcntl
except ImportError:  # not POSIX: no lock, so do not train and sample the same run at once
    fcntl = None

CONFIG, WEIGHTS, TOKENIZER, STATE = "config.json", "model.safetensors", "tokenizer.json", "trainer_state.pt"
METRICS, PLOT = "metrics.jsonl", "loss.png"
COMMIT = ".checkpoint-commit.json"
LOCK = ".lock"
TMP_SUFFIX = ".tmp"


# ---------------------------------------------------------------- atomic writes

def _fsync_write(path: Path, write: Callable[[Path], None]) -> None:
    write(path)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write one file through a temporary name and a rename: readers see the old
    file or the new one, never half of one."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        _fsync_write(tmp, write)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def commit_files(run_dir: Path, writers: dict[str, Callable[[Path], None]]) -> None:
    """Replace several files of `run_dir` as one change (see the module docstring)."""
    for name, write in writers.items():
        _fsync_write(run_dir / (name + TMP_SUFFIX), write)
    atomic_write_text(run_dir / COMMIT, json.dumps(sorted(writers)))
    _finish_commit(run_dir)


def _finish_commit(run_dir: Path) -> None:
    names = json.loads((run_dir / COMMIT).read_text())
    for name in names:
        tmp = run_dir / (name + TMP_SUFFIX)
        if tmp.exists():
            os.replace(tmp, run_dir / name)
    _fsync_dir(run_dir)  # the renames reach the disk before the record goes
    (run_dir / COMMIT).unlink()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not possible on every platform; renames are still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def recover(run_dir: Path) -> None:
    """Finish or undo a checkpoint write that was interrupted."""
    commit = run_dir / COMMIT
    if commit.exists():
        try:
            _finish_commit(run_dir)
        except (json.JSONDecodeError, OSError, TypeError):
            commit.unlink(missing_ok=True)
    for tmp in run_dir.glob("*" + TMP_SUFFIX):
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def writer_lock(run_dir: Path):
    """Held by the one process writing checkpoints into `run_dir`, for as long as it
    runs (the OS releases it if the process dies). A second writer is refused."""
    if fcntl is None:
        yield
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(f"another process is training into {run_dir}: wait for it to finish, "
                         "or choose another --out") from None
    try:
        yield
    finally:
        if created and [p.name for p in run_dir.iterdir()] == [LOCK]:  # failed before writing anything
            (run_dir / LOCK).unlink()
            run_dir.rmdir()
        os.close(fd)  # closing the file releases the lock


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

@functools.lru_cache(maxsize=1)
def code_revision() -> str | None:
    """The git revision of this code (asked once per process: checkpoints are frequent)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict:
    """What made this run: versions, machine, code revision."""
    rev = code_revision()
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
             trainer_state: dict | None = None) -> None:
    """Write (or update) a run directory as one atomic checkpoint."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    recover(run_dir)
    weights_tmp = run_dir / (WEIGHTS + TMP_SUFFIX)
    _fsync_write(weights_tmp, lambda p: save_model(model, str(p)))
    config = run_config.to_dict()
    config["tokenizer"] = tokenizer.to_dict()
    config["weights_sha256"] = sha256_of(weights_tmp)
    config["provenance"] = provenance()
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
    `glassgpt.generate.prepare_for_inference` (`glassgpt sample` does)."""
    from glassgpt.generate import cast_weights, inference_dtype

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
