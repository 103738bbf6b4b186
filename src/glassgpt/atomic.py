"""Writes that a crash cannot leave half done: one file, or several files as one change.

One file: write it under a temporary name, flush it to the disk, rename it over the
old one (a rename is atomic), so a reader sees the old file or the new one.

Several files (a checkpoint's weights, config and trainer state): write each under a
temporary name; write a small commit record naming them; rename them into place;
remove the record. After a crash, `recover` finishes the renames if the record
exists and drops the temporary files if it does not.

Confined to what glassgpt wrote: a folder (a downloaded run, a user's own folder) may
hold anything, so recovery reads the commit record as untrusted. It renames and
removes only `NAME.tmp` for the plain file names its caller owns (no path, no `..`,
no other name), and a temporary file is never written through: a link planted under
its name is removed first, so a write cannot land outside the folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Collection

TMP_SUFFIX = ".tmp"
COMMIT_RECORD = ".checkpoint-commit.json"
KILL_ENV = "GLASSGPT_TEST_KILL"  # tests only: where a checkpoint write dies, e.g. "commit" or "shards:4"


def kill_point(where: str, step: int | None = None) -> None:
    """Tests only: SIGKILL this process here when GLASSGPT_TEST_KILL names this point (`where`, or
    `where:step`), as a power cut at that moment of a checkpoint write would stop it."""
    wanted = os.environ.get(KILL_ENV)
    if wanted and wanted in (where, f"{where}:{step}"):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def is_plain_name(name: object) -> bool:
    """A file name with no folder in it: not absolute, no separator, not `.` or `..`."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\0" not in name and Path(name).name == name)


def _fresh(path: Path) -> Path:
    """`path`, with whatever sits there now (a stale temporary file, a planted link) removed,
    so the write that follows creates a new file instead of writing through a link."""
    if path.is_symlink() or path.exists():
        if path.is_dir() and not path.is_symlink():
            raise IsADirectoryError(21, "a folder stands where glassgpt writes a temporary file", str(path))
        path.unlink()
    return path


def user_file_mode() -> int:
    """The mode `open()` gives a new file under this process's umask (0o666 less the umask)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no other way to read it: set and put back at once
    os.umask(mask)
    return 0o666 & ~mask


def fsync_write(path: Path, write: Callable[[Path], None]) -> None:
    """`write(path)` into a new file, then make sure the bytes are on the disk. The file gets the
    user's umask whatever the writer chose (safetensors writes 0600, for one)."""
    write(_fresh(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        mode = user_file_mode()
        if os.fstat(f.fileno()).st_mode & 0o777 != mode:
            os.fchmod(f.fileno(), mode)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write one file through a temporary name and a rename: readers see the old
    file or the new one, never half of one."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        fsync_write(tmp, write)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def commit_files(run_dir: Path, writers: dict[str, Callable[[Path], None] | None]) -> None:
    """Replace several files of `run_dir` as one change: each `writers[name](path)` writes its
    file under a temporary name (None: the caller has already written `name.tmp` with
    `fsync_write`), then the commit record names them all, then the renames."""
    bad = [name for name in writers if not is_plain_name(name)]
    if bad:
        raise ValueError(f"commit_files writes plain file names inside the folder, not {bad[0]!r}")
    for name, write in writers.items():
        if write is not None:
            fsync_write(run_dir / (name + TMP_SUFFIX), write)
    atomic_write_text(run_dir / COMMIT_RECORD, json.dumps(sorted(writers)))
    kill_point("commit")
    finish_commit(run_dir, writers)


def read_commit_record(run_dir: Path, owned: Collection[str]) -> list[str] | None:
    """The names a commit record lists, or None when the record cannot be trusted: not a
    JSON list of names, or naming a file the caller does not own (a path, `..`, another name)."""
    try:
        names = json.loads((run_dir / COMMIT_RECORD).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(names, list) or not all(is_plain_name(n) and n in owned for n in names):
        return None
    return names


def finish_commit(run_dir: Path, owned: Collection[str]) -> None:
    """Do the renames the commit record names (only of names in `owned`), then remove it."""
    record = run_dir / COMMIT_RECORD
    for name in read_commit_record(run_dir, owned) or []:
        tmp = run_dir / (name + TMP_SUFFIX)
        if tmp.is_file() and not tmp.is_symlink():
            os.replace(tmp, run_dir / name)
    fsync_dir(run_dir)  # the renames reach the disk before the record goes
    if record.is_file() or record.is_symlink():
        record.unlink()


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


def recover(run_dir: Path, owned: Collection[str]) -> None:
    """Finish (a trustworthy commit record exists) or undo (none does) a `commit_files` that
    was interrupted. Touches only `NAME.tmp` and `NAME` for NAME in `owned`, and the record."""
    if (run_dir / COMMIT_RECORD).exists() or (run_dir / COMMIT_RECORD).is_symlink():
        finish_commit(run_dir, owned)
    for name in owned:
        tmp = run_dir / (name + TMP_SUFFIX)
        if tmp.is_symlink() or tmp.is_file():
            tmp.unlink()
