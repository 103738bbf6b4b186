"""The ownership rule: glassgpt deletes, replaces or renames only what it can prove it wrote.

Proof is one of three things, and nothing else:

- a **marker**: a small JSON file (`.glassgpt-run`, `.glassgpt-dataset`) that glassgpt writes
  into a folder it makes before anything else goes in, naming the folder's kind;
- a **temporary name** glassgpt made itself: `NAME.<pid>-<8 hex digits>.tmp`, created anew
  (never an existing file, never through a link) by the process whose id it carries; a leftover
  one is removed only once that process has ended;
- a **file name** glassgpt writes, inside a folder that carries its marker (for folders made
  before markers existed: a `meta.json` that only glassgpt writes, with nothing else there).

Everything else at a target path is refused with the path named, and a link is never followed
for a write: a link where glassgpt would write (a run's `tensorboard/`, `sae/`, a dataset
folder) is refused, and a folder is removed only entry by entry, each a plain file or a link
(the link itself, never what it points to).
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
from pathlib import Path
from typing import Callable, Collection

from glassgpt.errors import GlassGPTError, RunError, UsageError
from glassgpt.safe_read import read_json

RUN, DATASET = "run directory", "dataset"  # the kinds a marker names (runs marked before versions: the same)
MARKERS = {RUN: ".glassgpt-run", DATASET: ".glassgpt-dataset"}
MAX_MARKER_BYTES = 4096
TEMP = re.compile(r"(?P<name>.+)\.(?P<pid>\d{1,10})-(?P<nonce>[0-9a-f]{8})\.tmp")


# ---------------------------------------------------------------- markers

def marker_path(folder: Path, kind: str) -> Path:
    return folder / MARKERS[kind]


def write_marker(folder: Path, kind: str) -> None:
    """Mark `folder` (a folder this process just made, or one already marked) as glassgpt's `kind`."""
    path = marker_path(folder, kind)
    if has_marker(folder, kind):
        return
    try:  # created anew: an existing file or a link under the name is never written through
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except FileExistsError:
        raise UsageError(f"{path} exists and was not written by glassgpt: remove it, or choose another folder") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps({"glassgpt": kind, "version": 1}) + "\n")
    except OSError as e:  # a full disk: the marker does not stay half written
        path.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None


def has_marker(folder: Path, kind: str) -> bool:
    """`folder` is a real folder (not a link) holding glassgpt's marker of `kind`, a plain file."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    raw = small_json(marker_path(folder, kind), MAX_MARKER_BYTES)
    return isinstance(raw, dict) and raw.get("glassgpt") == kind


def small_json(path: Path, max_bytes: int):
    """The JSON in a small plain file (not a link, at most `max_bytes`, read by the bounded
    reader), or None when there is none: proof of ownership is never a file that cannot be read."""
    if path.is_symlink():
        return None
    try:
        return read_json(path, max_bytes)
    except GlassGPTError:
        return None


# ---------------------------------------------------------------- temporary names

def temp_path(path: Path) -> Path:
    """A new, empty file next to `path` under a name no one else has (`NAME.<pid>-<hex>.tmp`),
    created exclusively: an existing file or a link under that name is never written through."""
    while True:
        tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


def temp_name_of(name: str) -> str | None:
    """The file name a temporary name of glassgpt's stands for (`x.json` for `x.json.12-ab12cd34.tmp`)."""
    m = TEMP.fullmatch(name)
    return m.group("name") if m else None


def is_abandoned_temp(path: Path, owned: Collection[str]) -> bool:
    """A temporary file of glassgpt's for one of the `owned` names, left by a process that has ended."""
    m = TEMP.fullmatch(path.name)
    return bool(m) and m.group("name") in owned and not process_alive(int(m.group("pid"))) \
        and (path.is_symlink() or path.is_file())


def abandoned_temps(folder: Path, owned: Collection[str]) -> list[Path]:
    if folder.is_symlink() or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_abandoned_temp(p, owned))


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # no process of glassgpt's has that id: not provably ended
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


# ---------------------------------------------------------------- links and folders

def refuse_link(path: Path, what: str) -> None:
    """Refuse to write at `path` when it is a link (or stands below one, up to `path`'s folder)."""
    if path.is_symlink():
        raise RunError(f"{path} is a symbolic link, and glassgpt never writes through one ({what}): "
                       "replace it with a real folder or file, or remove it")


def refuse_links_below(root: Path, path: Path, what: str) -> None:
    """Refuse when `path`, or any folder between `root` and it, is a link: a write into a run or a
    dataset stays inside it. `root` itself is the user's choice and may be reached through links."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return
    here = root
    for part in parts:
        here = here / part
        refuse_link(here, what)


def _removable(entry: Path) -> bool:
    """A plain file, or an empty folder (it holds nothing to lose), standing under a name glassgpt owns."""
    if entry.is_symlink() or entry.is_file():
        return True
    return entry.is_dir() and not any(entry.iterdir())


def foreign_entries(folder: Path, owns: Callable[[str], bool]) -> list[str]:
    """The entries of `folder` glassgpt did not write: names `owns` does not claim, or its names
    standing as a link or a folder that holds something."""
    return sorted(p.name for p in folder.iterdir()
                  if not owns(p.name) or p.is_symlink() or not _removable(p))


def remove_owned_folder(folder: Path, owns: Callable[[str], bool]) -> bool:
    """Remove the entries of `folder` whose names `owns` claims (a plain file, a link itself but
    never its target, an empty folder), then the folder if nothing else is left. Returns whether
    it is gone; a folder that holds anything else keeps it, and stays."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    for entry in folder.iterdir():
        if owns(entry.name) and _removable(entry):
            entry.unlink() if entry.is_symlink() or entry.is_file() else entry.rmdir()
    try:
        folder.rmdir()
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True
