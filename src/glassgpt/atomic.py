"""Writes that a crash cannot leave half done: one file, or several files as one change.

One file: write it under a temporary name, flush it to the disk, rename it over the
old one (a rename is atomic), so a reader sees the old file or the new one.

Several files (a checkpoint's weights, config and trainer state): write each under a
temporary name; write a small commit record naming them; rename them into place;
remove the record. After a crash, `recover` finishes the renames if the record
exists and drops the temporary files if it does not.

Confined to what glassgpt wrote (`glassgpt.ownership`): a temporary name is new, made by this
process (`NAME.<pid>-<hex>.tmp`, created exclusively, so never a user's file and never written
through a link), and a leftover one is removed only once the process that made it has ended.
A folder (a downloaded run, a user's own folder) may hold anything, so recovery reads the
commit record as untrusted: it renames only temporary names of glassgpt's into the plain file
names its caller owns (no path, no `..`, no other name).

A write that fails (a full disk, a read-only folder; whichever library wrote the bytes) is an
`OSError` naming the file it was for, and its temporary file is gone: the previous file stands.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from pathlib import Path
from typing import Callable, Collection, Union

from glassgpt.errors import GlassGPTError
from glassgpt.ownership import abandoned_temps, small_json, temp_name_of, temp_path

TMP_SUFFIX = ".tmp"  # every temporary name ends so: NAME.<pid>-<hex>.tmp (glassgpt.ownership.TEMP)
COMMIT_RECORD = ".checkpoint-commit.json"
MAX_RECORD_BYTES = 1_000_000  # a record names a few files
KILL_ENV = "GLASSGPT_TEST_KILL"  # tests only: where a checkpoint write dies, e.g. "commit" or "shards:4"
UNCHANGED = "the previous copy is unchanged"

Writer = Union[Callable[[Path], None], Path]  # writes a file at the path it is given; or a temporary file already written


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


# ---------------------------------------------------------------- failures

OS_ERROR_CODE = re.compile(r"os error (\d+)|code: (\d+)|\[Errno (\d+)\]|errno[ =:]+(\d+)", re.IGNORECASE)
WRITE_FAILED = re.compile(r"fail\w* (to )?writ|write fail|no space left|disk full|quota", re.IGNORECASE)


def write_error(e: BaseException, path: Path) -> OSError | None:
    """A failed write as the OSError it is at bottom, naming `path` (not a temporary name), or None
    when `e` is no I/O failure (a bug, a refusal), which then propagates as it is."""
    if isinstance(e, GlassGPTError) or not isinstance(e, Exception):
        return None
    if isinstance(e, OSError):
        code, reason = e.errno, e.strerror or str(e)
    else:  # safetensors, tokenizers and torch report the OS error in their own exception types
        text = str(e)
        found = OS_ERROR_CODE.search(text)
        if found:
            code = int(next(g for g in found.groups() if g))
            reason = os.strerror(code)
        elif WRITE_FAILED.search(text):
            code, reason = errno.EIO, f"the write failed ({text.strip().splitlines()[0][:160]})"
        else:
            return None
    kind = type(e) if isinstance(e, OSError) else OSError
    try:
        return kind(code, f"{reason}; {UNCHANGED}", str(path))
    except TypeError:
        return OSError(code, f"{reason}; {UNCHANGED}", str(path))


def remove_temp(tmp: Path) -> None:
    if tmp.is_symlink() or tmp.is_file():
        tmp.unlink()


# ---------------------------------------------------------------- one file

@contextlib.contextmanager
def _undone_on_failure(tmp: Path, path: Path):
    """On any failure inside: `tmp` removed, and an I/O failure raised as an OSError naming `path`."""
    try:
        yield
    except BaseException as e:
        remove_temp(tmp)
        failure = write_error(e, path)
        if failure is not None:
            raise failure from None
        raise


def write_temp(path: Path, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` into a new temporary file next to `path`, flushed to the disk; returns it.
    A failure removes it and is an OSError naming `path` (see `write_error`)."""
    tmp = temp_path(path)
    with _undone_on_failure(tmp, path):
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
            mode = user_file_mode()  # the user's umask, whatever the writer chose (safetensors writes 0600)
            if os.fstat(f.fileno()).st_mode & 0o777 != mode:
                os.fchmod(f.fileno(), mode)
    return tmp


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


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write one file through a temporary name and a rename: readers see the old
    file or the new one, never half of one."""
    tmp = write_temp(path, write)
    with _undone_on_failure(tmp, path):
        os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


# ---------------------------------------------------------------- several files as one change

def commit_files(run_dir: Path, writers: dict[str, Writer]) -> None:
    """Replace several files of `run_dir` as one change: each `writers[name](path)` writes its
    file under a temporary name (or `writers[name]` is a temporary file already written with
    `write_temp`), then the commit record names them all, then the renames."""
    bad = [name for name in writers if not is_plain_name(name)]
    if bad:
        raise ValueError(f"commit_files writes plain file names inside the folder, not {bad[0]!r}")
    temps: dict[str, Path] = {}
    try:
        for name, write in writers.items():
            temps[name] = write if isinstance(write, Path) else write_temp(run_dir / name, write)
        atomic_write_text(run_dir / COMMIT_RECORD, json.dumps({name: tmp.name for name, tmp in temps.items()}))
    except BaseException:
        for tmp in [*temps.values(), *(w for w in writers.values() if isinstance(w, Path))]:
            remove_temp(tmp)
        raise
    kill_point("commit")
    finish_commit(run_dir, writers)


def read_commit_record(run_dir: Path, owned: Collection[str]) -> dict[str, str] | None:
    """name -> temporary name, as the commit record lists them, or None when the record cannot
    be trusted: not a JSON object, a name the caller does not own (a path, `..`, another name),
    or a temporary name that is not one of glassgpt's for that name."""
    record = small_json(run_dir / COMMIT_RECORD, MAX_RECORD_BYTES)
    if not isinstance(record, dict):
        return None
    for name, tmp in record.items():
        if not (is_plain_name(name) and name in owned and is_plain_name(tmp) and temp_name_of(tmp) == name):
            return None
    return record


def finish_commit(run_dir: Path, owned: Collection[str]) -> None:
    """Do the renames the commit record names (only into names in `owned`), then remove it."""
    record = run_dir / COMMIT_RECORD
    for name, tmp_name in (read_commit_record(run_dir, owned) or {}).items():
        tmp = run_dir / tmp_name
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


def pending(run_dir: Path, owned: Collection[str]) -> bool:
    """A commit record, or temporary files a dead writer left: something for `recover` to do."""
    return (run_dir / COMMIT_RECORD).exists() or (run_dir / COMMIT_RECORD).is_symlink() \
        or bool(abandoned_temps(run_dir, owned))


def recover(run_dir: Path, owned: Collection[str]) -> None:
    """Finish (a trustworthy commit record exists) or undo (none does) a `commit_files` that
    was interrupted. Touches only the names in `owned`, temporary files of glassgpt's for them
    whose process has ended, and the record."""
    if (run_dir / COMMIT_RECORD).exists() or (run_dir / COMMIT_RECORD).is_symlink():
        finish_commit(run_dir, owned)
    for tmp in abandoned_temps(run_dir, owned):
        tmp.unlink()
