"""The shard folders of a run directory (`parallel=fsdp`): their names, the files glassgpt writes in
them, and the removal of stale ones -- the run directory's rules, below the training code that
fills the folders (glassgpt.training.sharded)."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from glassgpt.errors import RunError
from glassgpt.ownership import remove_owned_folder, temp_name_of

FOLDER = re.compile(r"shards-\d{9}-[0-9a-f]{8}")
SHARD_FILE = re.compile(r"__\d+_\d+\.distcp")
INDEX = ".metadata.json"
LEGACY_INDEX = re.compile(r"(__\d+)?\.metadata(\.tmp)?")  # DCP's pickled index: removed when stale, never read


def owns(name: str) -> bool:
    """The file names glassgpt (or DCP, for an older glassgpt) writes inside a shard folder."""
    return bool(SHARD_FILE.fullmatch(name) or LEGACY_INDEX.fullmatch(name)) or name == INDEX \
        or temp_name_of(name) == INDEX


def new_folder_name(run_dir: Path, step: int) -> str:
    """A new shard folder in the run, made now (so the name is this checkpoint's alone): the
    step, and 8 random hex digits. Called by rank 0, which tells the others the name."""
    while True:
        name = f"shards-{step:09d}-{secrets.token_hex(4)}"
        try:
            (run_dir / name).mkdir()
        except FileExistsError:
            continue
        return name


def check_folder_name(name: object, where: Path) -> str:
    if not (isinstance(name, str) and FOLDER.fullmatch(name)):
        raise RunError(f"{where} names {str(name)[:80]!r} as its shard folder, which is no name glassgpt writes: "
                       "restore the run's own trainer state")
    return name


def drop_stale(run_dir: Path, keep: str | None) -> None:
    """Remove the shard folders of `run_dir` other than `keep` (the one the committed trainer state
    names): those of older checkpoints and one a killed writer left half written. Only the files
    glassgpt writes in them go; a folder holding anything else stays."""
    for path in run_dir.iterdir():
        if path.name != keep and FOLDER.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
            remove_owned_folder(path, owns)
