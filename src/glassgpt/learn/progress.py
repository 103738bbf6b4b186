"""The learner's progress: the last check of each exercise, in a small JSON file under the user's
data folder (`$GLASSGPT_LEARN_DIR`, by default ~/.cache/glassgpt/learn), written atomically."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from glassgpt.atomic import atomic_write_text
from glassgpt.errors import RunError

LEARN_DIR_ENV = "GLASSGPT_LEARN_DIR"
MAX_PROGRESS_BYTES = 1_000_000  # a few hundred bytes per exercise


def progress_file() -> Path:
    base = os.environ.get(LEARN_DIR_ENV)
    return (Path(base) if base else Path.home() / ".cache" / "glassgpt" / "learn") / "progress.json"


def load_progress(path: Path | None = None) -> dict[str, dict]:
    """{exercise: {"status", "file", "when", "passed_at"}} of the checks recorded so far ({} before the first).
    A file that is not what glassgpt wrote is a RunError naming it."""
    path = path or progress_file()
    if not path.exists():
        return {}
    try:
        if path.stat().st_size > MAX_PROGRESS_BYTES:
            raise ValueError("too large")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.get("exercises", {}).values()):
            raise ValueError("not glassgpt's progress file")
    except (OSError, ValueError, RecursionError) as e:
        raise RunError(f"{path} cannot be read as glassgpt's progress file ({e}): delete it to start afresh, "
                       f"or set {LEARN_DIR_ENV} to another folder") from None
    return data.get("exercises", {})


def record_progress(result, file: str | Path, path: Path | None = None) -> dict[str, dict]:
    """Add one check's result (a CheckResult) to the progress file; returns the whole progress."""
    path = path or progress_file()
    progress = load_progress(path)
    now = datetime.datetime.now().isoformat(timespec="seconds")
    before = progress.get(result.exercise, {})
    progress[result.exercise] = {"status": result.status, "file": str(file), "when": now,
                                 "passed_at": now if result.passed else before.get("passed_at")}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"version": 1, "exercises": progress}, indent=1))
    return progress
