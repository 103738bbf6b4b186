"""Sharded checkpoints (`parallel=fsdp`): the weights and AdamW state in one folder of shards,
written by every rank at once with `torch.distributed.checkpoint` (DCP), readable on any number
of ranks (DCP reshards on load: a run of 2 ranks resumes on 1, or 4).

    shards-<step>-<nonce>/   .metadata (written last, by rank 0) and __<rank>_0.distcp, one per rank

The commit is the run's ordinary one (glassgpt.checkpoint.save_run): a checkpoint's shard
folder is written, complete and on the disk, under a name no checkpoint has used, before
`trainer_state.pt` names it in that same commit as the weights and config. A kill before the
commit leaves the previous `trainer_state.pt`, which names the previous folder; `drop_stale`
then removes the folder the dead writer left. A kill after it leaves the new one. Confined to what
glassgpt wrote: only folders named `shards-<digits>-<hex>` that are not links, only the file
names DCP writes inside them, and a folder holding anything else is left where it is.

Every file of a shard folder is untrusted: `.metadata` is unpickled by an unpickler that builds
DCP's own metadata classes and nothing else (DCP's reader would run any pickle), each shard it
names must be a plain file of that folder, long enough for what is read from it, and every tensor
must have the shape the run's model gives it.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import re
import secrets
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_model_state_dict, set_state_dict)

from glassgpt.atomic import fsync_dir
from glassgpt.errors import RunError

FOLDER = re.compile(r"shards-\d{9}-[0-9a-f]{8}")
SHARD_FILE = re.compile(r"__\d+_\d+\.distcp|(__\d+)?\.metadata(\.tmp)?")
METADATA = ".metadata"
MAX_METADATA_BYTES = 100_000_000


def new_folder_name(run_dir: Path, step: int) -> str:
    """A name nothing in the run has (the step, and 8 random hex digits); chosen by rank 0."""
    while True:
        name = f"shards-{step:09d}-{secrets.token_hex(4)}"
        if not ((run_dir / name).exists() or (run_dir / name).is_symlink()):
            return name


def check_folder_name(name: object, where: Path) -> str:
    if not (isinstance(name, str) and FOLDER.fullmatch(name)):
        raise RunError(f"{where} names {str(name)[:80]!r} as its shard folder, which is no name glassgpt writes: "
                       "restore the run's own trainer_state.pt")
    return name


# ---------------------------------------------------------------- writing

def save_shards(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Every rank writes its shard of the model and optimizer state into `folder` (a new name, from
    `new_folder_name`). Returns whether the optimizer state is in it: before the first step AdamW
    has none, and asking DCP for it then would take a step of zeros (its step count would be off by one)."""
    with_optimizer = bool(optimizer.state)
    if with_optimizer:
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state}
    else:
        state = {"model": get_model_state_dict(model)}
    with _one_process_is_fine():
        dcp.save(state, storage_writer=FileSystemWriter(folder, sync_files=True))  # each file fsynced
    fsync_dir(folder)  # ... and the folder's entries, before any commit names the folder
    return with_optimizer


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole fp32 weights, gathered to rank 0's CPU memory (every rank must call it; the
    others get an empty dict), named as in the model's state_dict."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def drop_stale(run_dir: Path, keep: str | None) -> None:
    """Remove the shard folders of `run_dir` other than `keep` (the one the committed trainer state
    names): those of older checkpoints and one a killed writer left half written."""
    for path in run_dir.iterdir():
        if path.name != keep and FOLDER.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
            _remove_shard_folder(path)


def _remove_shard_folder(path: Path) -> None:
    for child in path.iterdir():
        if SHARD_FILE.fullmatch(child.name) and (child.is_file() or child.is_symlink()):
            child.unlink()
    try:
        path.rmdir()
    except OSError:
        pass  # it holds something glassgpt did not write: left as it is


# ---------------------------------------------------------------- reading, untrusted

class _MetadataUnpickler(pickle.Unpickler):
    """Builds DCP's metadata classes, torch sizes, dtypes and layouts, and a path; nothing else."""

    ALLOWED = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
               ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"), ("collections", "OrderedDict"),
               ("torch.distributed.checkpoint.filesystem", "_StorageInfo")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED or module == "torch.distributed.checkpoint.metadata":
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's metadata")


def read_metadata(folder: Path):
    path = folder / METADATA
    if folder.is_symlink() or not folder.is_dir():
        raise RunError(f"{folder} is missing (or not a folder): the run's sharded checkpoint is gone; "
                       "restore it, or train into a new --out")
    if path.is_symlink() or not path.is_file():
        raise RunError(f"{path} is missing: the sharded checkpoint is incomplete; restore it, or train into a new --out")
    data = path.read_bytes()[:MAX_METADATA_BYTES + 1]
    if len(data) > MAX_METADATA_BYTES:
        raise RunError(f"{path} is larger than a checkpoint's metadata can be")
    from torch.distributed.checkpoint.metadata import Metadata

    try:
        metadata = _MetadataUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # a hostile or torn file: any failure to unpickle is one line
        raise RunError(f"refusing {path}: it is not a checkpoint's metadata ({_first_line(e)}); "
                       "restore it, or train into a new --out") from None
    if not isinstance(metadata, Metadata) or not isinstance(metadata.storage_data, dict):
        raise RunError(f"{path} is not a checkpoint's metadata: restore it, or train into a new --out")
    return metadata


def check_shards(folder: Path, model: torch.nn.Module) -> None:
    """Refuse a shard folder that cannot be loaded into `model`, in one line, before DCP reads it:
    every file its metadata names is a shard file of the folder and long enough, and every weight
    has the shape of the model's."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = read_metadata(folder)
    ends: dict[str, int] = {}
    for info in metadata.storage_data.values():
        name = getattr(info, "relative_path", None)
        if not (isinstance(name, str) and SHARD_FILE.fullmatch(name) and name.endswith(".distcp")):
            raise RunError(f"{folder / METADATA} names {str(name)[:80]!r}, not a shard of the folder: "
                           "restore the checkpoint, or train into a new --out")
        offset, length = getattr(info, "offset", None), getattr(info, "length", None)
        if not (type(offset) is int and type(length) is int and offset >= 0 and length >= 0):
            raise RunError(f"{folder / METADATA} is corrupt: restore the checkpoint, or train into a new --out")
        ends[name] = max(ends.get(name, 0), offset + length)
    for name, end in ends.items():
        path = folder / name
        if path.is_symlink() or not path.is_file():
            raise RunError(f"{path} is missing: the sharded checkpoint is incomplete; restore it, "
                           "or train into a new --out")
        if path.stat().st_size < end:
            raise RunError(f"{path} is truncated ({path.stat().st_size:,} bytes, {end:,} expected): "
                           "restore it, or train into a new --out")
    want = {f"model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}
    for fqn, shape in want.items():
        held = metadata.state_dict_metadata.get(fqn)
        if not isinstance(held, TensorStorageMetadata):
            raise RunError(f"{folder} holds no {fqn[len('model.'):]}, which the model has: the shards come from "
                           "another model; restore the run's own checkpoint, or train into a new --out")
        if tuple(held.size) != shape:
            raise RunError(f"{folder} holds {fqn[len('model.'):]} of shape {tuple(held.size)}, but the model "
                           f"needs {shape}: the shards come from another model shape; restore the run's own "
                           "checkpoint, or train into a new --out")


class _SafeReader(FileSystemReader):
    """DCP's file reader, with the metadata read by the unpickler above."""

    def read_metadata(self, *args, **kwargs):
        metadata = read_metadata(Path(self.path))
        from torch.distributed.checkpoint.metadata import StorageMeta

        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def load_shards(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                with_optimizer: bool) -> None:
    """Load the weights (and, `with_optimizer`, the optimizer state) of a shard folder into `model`
    and `optimizer`, on any number of ranks (each reads the parts of the shards its own shard needs)."""
    check_shards(folder, model)
    if not with_optimizer:
        state = {"model": get_model_state_dict(model)}
        _load(folder, state)
        set_model_state_dict(model, state["model"])
        return
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    _load(folder, state)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def _load(folder: Path, state: dict) -> None:
    try:
        with _one_process_is_fine():
            dcp.load(state, storage_reader=_SafeReader(folder))
    except (RunError, KeyboardInterrupt):
        raise
    except Exception as e:  # DCP wraps a rank's failure in its own exception type
        raise RunError(f"cannot load the sharded checkpoint {folder} ({_first_line(e)}): restore it, "
                       "or train into a new --out") from None


@contextlib.contextmanager
def _one_process_is_fine():
    """DCP warns when there is no process group; one process (no torchrun) is a supported case."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(e).__name__


