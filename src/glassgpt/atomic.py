"""Writes that a crash cannot leave half done: one file, or several files as one change.

One file: write it under a temporary name, flush it to the disk, rename it over the
old one (a rename is atomic), so a reader sees the old file or the new one.

Several files (a checkpoint's weights, config and trainer state): write each under a
temporary name; write a small commit record naming them; rename them into place;
remove the record. After a crash, `recover` finishes the renames if the record
exists and drops the temporary files if it does not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

TMP_SUFFIX = ".tmp"
COMMIT_RECORD = ".checkpoint-commit.json"


def fsync_write(path: Path, write: Callable[[Path], None]) -> None:
    """`write(path)`, then make sure the bytes are on the disk."""
    write(path)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write one file through a temporary name and a rename: readers see the old
    file or the new one, never half of one."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        fsync_write(tmp, write)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def commit_files(run_dir: Path, writers: dict[str, Callable[[Path], None]]) -> None:
    """Replace several files of `run_dir` as one change: each `writers[name](path)` writes its
    file under a temporary name, then the commit record names them all, then the renames."""
    for name, write in writers.items():
        fsync_write(run_dir / (name + TMP_SUFFIX), write)
    atomic_write_text(run_dir / COMMIT_RECORD, json.dumps(sorted(writers)))
    finish_commit(run_dir)


def finish_commit(run_dir: Path) -> None:
    names = json.loads((run_dir / COMMIT_RECORD).read_text())
    for name in names:
        tmp = run_dir / (name + TMP_SUFFIX)
        if tmp.exists():
            os.replace(tmp, run_dir / name)
    fsync_dir(run_dir)  # the renames reach the disk before the record goes
    (run_dir / COMMIT_RECORD).unlink()


def fsync_dir(path: Path) -> None:
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
    """Finish (a commit record exists) or undo (none does) a `commit_files` that was interrupted."""
    commit = run_dir / COMMIT_RECORD
    if commit.exists():
        try:
            finish_commit(run_dir)
        except (json.JSONDecodeError, OSError, TypeError):
            commit.unlink(missing_ok=True)
    for tmp in run_dir.glob("*" + TMP_SUFFIX):
        tmp.unlink(missing_ok=True)
