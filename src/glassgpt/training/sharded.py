"""Sharded checkpoints (`parallel=fsdp`): the weights and AdamW state in one folder of shards,
written by every rank at once with `torch.distributed.checkpoint` (DCP), readable on any number
of ranks (DCP reshards on load: a run of 2 ranks resumes on 1, or 4).

    shards-<step>-<nonce>/   .metadata.json (the index, written last, by rank 0) and
                             __<rank>_0.distcp, one per rank

DCP plans who writes and reads what; glassgpt stores it, in a format no reader can run code
from (DCP's own format is pickles: its index, every tensor, and every other value):

- a shard file `__<rank>_0.distcp` is the rank's tensors as raw bytes, one after another, and
  its other values (an optimizer's learning rate, betas, parameter names) as JSON
  (`glassgpt.tensor_tree.dumps_plain`);
- the index `.metadata.json` says, for every tensor, its dtype, its size, and each chunk's
  offsets and sizes and where its bytes are (file, offset, length); for every other value,
  where its JSON is. It is checked field by field (`read_index`) before DCP sees any of it.

A folder DCP wrote in its own format (a pickled `.metadata`, from an older glassgpt) is refused
unread, with what to do instead.

The commit is the run's ordinary one (glassgpt.checkpoint.save_run): a checkpoint's shard
folder is written, complete and on the disk, under a name no checkpoint has used, before the
trainer state names it in that same commit as the weights and config. A kill before the
commit leaves the previous trainer state, which names the previous folder; `drop_stale`
then removes the folder the dead writer left. A kill after it leaves the new one. Confined to what
glassgpt wrote: only folders named `shards-<digits>-<hex>` that are not links, only the file
names glassgpt writes inside them, and a folder holding anything else is left where it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.futures import Future
from torch.distributed.checkpoint import StorageReader, StorageWriter
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.metadata import (BytesStorageMetadata, ChunkStorageMetadata, Metadata,
                                                   MetadataIndex, StorageMeta, TensorProperties,
                                                   TensorStorageMetadata)
from torch.distributed.checkpoint.planner import LoadItemType, WriteItemType
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_model_state_dict, set_state_dict)
from torch.distributed.checkpoint.storage import WriteResult

from glassgpt.atomic import UNCHANGED, atomic_write_text, fsync_dir, write_error
from glassgpt.errors import GlassGPTError, RunError, first_line
from glassgpt.ownership import refuse_link, remove_owned_folder
from glassgpt.safe_read import check_regular, open_regular, read_json
from glassgpt.shard_folders import INDEX, SHARD_FILE, owns
from glassgpt.tensor_tree import TreeError, dumps_plain, loads_plain

FORMAT = "glassgpt-shards"
MAX_INDEX_BYTES = 100_000_000
MAX_VALUE_BYTES = 1 << 20  # one non-tensor value (a learning rate, a list of parameter names)
MAX_DIMS = 8
DTYPES = {name: getattr(torch, name) for name in ("float64", "float32", "float16", "bfloat16", "int64", "int32",
                                                  "int16", "int8", "uint8", "bool")}
REDO = "restore the checkpoint, or train into a new --out"


# ---------------------------------------------------------------- writing

def save_shards(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Every rank writes its shard of the model and optimizer state into `folder` (made by
    `new_folder_name`). Returns whether the optimizer state is in it: before the first step AdamW
    has none, and asking DCP for it then would take a step of zeros (its step count would be off by
    one). A failed write (a full disk) is an OSError naming the folder, which is removed."""
    with_optimizer = bool(optimizer.state)
    if with_optimizer:
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state}
    else:
        state = {"model": get_model_state_dict(model)}
    try:
        with _one_process_is_fine():
            dcp.save(state, storage_writer=_ShardWriter(folder), planner=_JsonSavePlanner())
    except BaseException as e:  # DCP wraps a rank's failure in its own exception type
        cause = _rank_failure(e)
        if not (torch.distributed.is_initialized() and torch.distributed.get_rank() != 0):
            remove_owned_folder(folder, owns)  # the half-written folder: ours, named by no commit
        if isinstance(cause, GlassGPTError) or not isinstance(cause, Exception):
            raise cause from None
        raise write_error(cause, folder) or RunError(f"writing the sharded checkpoint {folder} failed "
                                                     f"({first_line(cause)}); {UNCHANGED}") from None
    fsync_dir(folder)  # ... and the folder's entries, before any commit names the folder
    return with_optimizer


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole fp32 weights, gathered to rank 0's CPU memory (every rank must call it; the
    others get an empty dict), named as in the model's state_dict."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


class _JsonSavePlanner(DefaultSavePlanner):
    """DCP's planner, with a value that is not a tensor stored as JSON (DCP's own: a pickle)."""

    def transform_object(self, write_item, object):
        if write_item.type == WriteItemType.BYTE_IO:
            return io.BytesIO(dumps_plain(object))
        return object


class _ShardWriter(StorageWriter):
    """Each rank's items into one new file of the folder (`__<rank>_0.distcp`): a tensor as its
    raw bytes, a value as JSON; then the coordinator writes the index (`.metadata.json`)."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = Path(folder)

    def reset(self, checkpoint_id=None) -> None:
        pass

    def set_up_storage_writer(self, is_coordinator: bool, *args, **kwargs) -> None:
        self.folder.mkdir(exist_ok=True)  # made by rank 0 (new_folder_name); another host's ranks make their own
        refuse_link(self.folder, "a shard folder")

    def prepare_local_plan(self, plan):
        return plan

    def prepare_global_plan(self, plans):
        return [dataclasses.replace(plan, storage_data=f"__{rank}_0.distcp") for rank, plan in enumerate(plans)]

    def write_data(self, plan, planner) -> Future:
        name, results = plan.storage_data, []
        with open(self.folder / name, "xb") as f:  # a new file: never an existing one, never through a link
            for item in plan.items:
                data = planner.resolve_data(item)
                at = f.tell()
                f.write(data.getbuffer() if item.type == WriteItemType.BYTE_IO else _raw_bytes(data))
                length = f.tell() - at
                results.append(WriteResult(index=item.index, size_in_bytes=length, storage_data=(name, at, length)))
            f.flush()
            os.fsync(f.fileno())
        done: Future = Future()
        done.set_result(results)
        return done

    def finish(self, metadata: Metadata, results) -> None:
        where = {r.index: r.storage_data for rank in results for r in rank}
        atomic_write_text(self.folder / INDEX, json.dumps(_index_of(metadata, where)))

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id) -> bool:
        return True


def _raw_bytes(tensor: torch.Tensor):
    """A tensor's bytes, in row-major order, as a buffer (bfloat16 included: viewed as bytes)."""
    t = tensor.detach().to("cpu").contiguous()
    return t.reshape(-1).view(torch.uint8).numpy()


def _index_of(metadata: Metadata, where: dict) -> dict:
    """DCP's metadata and where each item went, as the JSON index `read_index` reads."""
    dtype_names = {dtype: name for name, dtype in DTYPES.items()}
    tensors, values = {}, {}
    for fqn, md in metadata.state_dict_metadata.items():
        if isinstance(md, TensorStorageMetadata):
            chunks = []
            for chunk in md.chunks:
                file, at, length = where[MetadataIndex(fqn, chunk.offsets)]
                chunks.append({"offsets": list(chunk.offsets), "sizes": list(chunk.sizes),
                               "file": file, "at": at, "length": length})
            tensors[fqn] = {"dtype": dtype_names[md.properties.dtype], "size": list(md.size), "chunks": chunks}
        else:
            file, at, length = where[MetadataIndex(fqn)]
            values[fqn] = {"file": file, "at": at, "length": length}
    return {"format": FORMAT, "version": 1, "tensors": tensors, "values": values}


# ---------------------------------------------------------------- reading, untrusted

@dataclasses.dataclass(frozen=True)
class Stored:
    """Where an item's bytes are in the folder, and (a tensor's chunk) what they hold."""
    file: str
    at: int
    length: int
    dtype: torch.dtype | None = None
    sizes: tuple[int, ...] | None = None


def read_index(folder: Path) -> Metadata:
    """The folder's `.metadata.json`, checked field by field, as DCP's Metadata (storage_data
    maps each item to where it is: `Stored`). A pickled `.metadata` is refused, unread."""
    path = folder / INDEX
    if folder.is_symlink() or not folder.is_dir():
        raise RunError(f"{folder} is missing (or not a folder): the run's sharded checkpoint is gone; "
                       "restore it, or train into a new --out")
    if path.is_symlink() or not path.is_file():
        legacy = folder / ".metadata"
        if legacy.exists() or legacy.is_symlink():
            raise RunError(f"refusing {legacy}: it is a pickle (DCP's own format, as an older glassgpt wrote it), "
                           "and glassgpt reads no pickle from a run; train into a new --out, starting from this "
                           f"run's weights with init_from={folder.parent}")
        raise RunError(f"{path} is missing: the sharded checkpoint is incomplete; {REDO}")
    try:
        raw = read_json(path, MAX_INDEX_BYTES)
    except GlassGPTError as e:  # the bounded reader's sentence, inside this one's
        raise RunError(f"{path} is not a checkpoint index glassgpt wrote ({str(e).removeprefix(f'{path} ')}); "
                       f"{REDO}") from None
    try:
        return _metadata_from(raw)
    except (ValueError, TypeError, KeyError, RecursionError, OverflowError) as e:
        raise RunError(f"{path} is not a checkpoint index glassgpt wrote ({first_line(e)}); {REDO}") from None


def _whole(value, what: str, at_most: int | None = None) -> int:
    if type(value) is not int or value < 0 or (at_most is not None and value > at_most):
        raise ValueError(f"{what} is {str(value)[:40]}, not a whole number" + (f" up to {at_most}" if at_most else ""))
    return value


def _shape(value, what: str, dims: int | None = None) -> tuple[int, ...]:
    if not (isinstance(value, list) and len(value) <= MAX_DIMS and (dims is None or len(value) == dims)):
        raise ValueError(f"{what} is not a list of {dims if dims is not None else f'up to {MAX_DIMS}'} sizes")
    return tuple(_whole(v, what, 1 << 40) for v in value)


def _where(entry, what: str) -> tuple[str, int, int]:
    if not isinstance(entry, dict):
        raise ValueError(f"{what} is not an object")
    file = entry.get("file")
    if not (isinstance(file, str) and SHARD_FILE.fullmatch(file)):
        raise ValueError(f"{what} names {str(file)[:80]!r}, not a shard of the folder")
    return file, _whole(entry.get("at"), f"{what}'s offset", 1 << 50), _whole(entry.get("length"), f"{what}'s length", 1 << 50)


def _metadata_from(raw) -> Metadata:
    if not (isinstance(raw, dict) and raw.get("format") == FORMAT and raw.get("version") == 1
            and isinstance(raw.get("tensors"), dict) and isinstance(raw.get("values"), dict)):
        raise ValueError(f"not a {FORMAT} index of version 1")
    described, storage = {}, {}
    for fqn, entry in raw["tensors"].items():
        if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES or not isinstance(entry.get("chunks"), list):
            raise ValueError(f"tensor {fqn[:80]!r} has no known dtype or no chunks")
        dtype, size = DTYPES[entry["dtype"]], _shape(entry.get("size"), f"{fqn[:80]}'s size")
        chunks, volume = [], 0
        for chunk in entry["chunks"]:
            what = f"a chunk of {fqn[:80]}"
            file, at, length = _where(chunk, what)
            offsets = _shape(chunk.get("offsets"), f"{what}'s offsets", len(size))
            sizes = _shape(chunk.get("sizes"), f"{what}'s sizes", len(size))
            if any(o + n > s for o, n, s in zip(offsets, sizes, size)):
                raise ValueError(f"{what} reaches past the tensor's size {list(size)}")
            if length != math.prod(sizes) * dtype.itemsize:
                raise ValueError(f"{what} is {length} bytes, not the {math.prod(sizes) * dtype.itemsize} its sizes take")
            volume += math.prod(sizes)
            chunks.append(ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=torch.Size(sizes)))
            storage[MetadataIndex(fqn, offsets)] = Stored(file, at, length, dtype, sizes)
        if volume != math.prod(size):
            raise ValueError(f"the chunks of {fqn[:80]} do not cover it exactly")
        described[fqn] = TensorStorageMetadata(properties=TensorProperties(dtype=dtype), size=torch.Size(size),
                                               chunks=chunks)
    for fqn, entry in raw["values"].items():
        if fqn in described:
            raise ValueError(f"{fqn[:80]} is both a tensor and a value")
        file, at, length = _where(entry, f"value {fqn[:80]}")
        if length > MAX_VALUE_BYTES:
            raise ValueError(f"value {fqn[:80]} is {length:,} bytes, more than a value glassgpt stores")
        described[fqn] = BytesStorageMetadata()
        storage[MetadataIndex(fqn)] = Stored(file, at, length)
    return Metadata(state_dict_metadata=described, storage_data=storage, storage_meta=StorageMeta())


def check_shards(folder: Path, model: torch.nn.Module) -> Metadata:
    """Refuse a shard folder that cannot be loaded into `model`, in one line, before DCP reads it:
    its index reads, every file it names is a shard file of the folder and long enough, and every
    weight has the shape of the model's. Returns the index."""
    metadata = read_index(folder)
    ends: dict[str, int] = {}
    for stored in metadata.storage_data.values():
        ends[stored.file] = max(ends.get(stored.file, 0), stored.at + stored.length)
    for name, end in ends.items():
        path = folder / name
        if path.is_symlink() or not path.exists():
            raise RunError(f"{path} is missing: the sharded checkpoint is incomplete; {REDO}")
        size = check_regular(path, fix=REDO)  # a pipe or a folder in its place is refused, never waited on
        if size < end:
            raise RunError(f"{path} is truncated ({size:,} bytes, {end:,} expected): "
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
    return metadata


class _JsonLoadPlanner(DefaultLoadPlanner):
    """DCP's planner, with a value that is not a tensor read as JSON (DCP's own: unpickled)."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        fqn = read_item.dest_index.fqn
        if isinstance(self.state_dict.get(fqn), torch.Tensor):
            raise RunError(f"the sharded checkpoint stores {fqn[:80]} as a value, but it is a tensor; {REDO}")
        try:
            loaded = loads_plain(value.getvalue())
        except (TreeError, ValueError) as e:
            raise RunError(f"the sharded checkpoint's {fqn[:80]} is not a value glassgpt wrote "
                           f"({first_line(e)}); {REDO}") from None
        if self.flatten_state_dict:
            _set_at(self.original_state_dict, self.mappings[fqn], loaded)
        else:
            self.state_dict[fqn] = loaded


def _set_at(root, path: tuple, value) -> None:
    """root[path[0]][path[1]]... = value."""
    for key in path[:-1]:
        root = root[key]
    root[path[-1]] = value


class _ShardReader(StorageReader):
    """Reads the items DCP asks for from a folder whose index `check_shards` has checked."""

    def __init__(self, folder: Path, metadata: Metadata):
        super().__init__()
        self.folder, self.metadata = Path(folder), metadata

    def reset(self, checkpoint_id=None) -> None:
        pass

    def read_metadata(self) -> Metadata:
        return self.metadata

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool) -> None:
        pass

    def prepare_local_plan(self, plan):
        return plan

    def prepare_global_plan(self, plans):
        return plans

    def read_data(self, plan, planner) -> Future:
        by_file: dict[str, list] = {}
        for item in plan.items:
            by_file.setdefault(self.metadata.storage_data[item.storage_index].file, []).append(item)
        for name, items in by_file.items():
            with open_regular(self.folder / name, fix=REDO) as (f, _):  # a pipe in its place: refused, not waited on
                for item in items:
                    stored = self.metadata.storage_data[item.storage_index]
                    f.seek(stored.at)
                    raw = f.read(stored.length)
                    if len(raw) != stored.length:
                        raise RunError(f"{self.folder / name} is truncated; {REDO}")
                    if item.type == LoadItemType.BYTE_IO:
                        planner.load_bytes(item, io.BytesIO(raw))
                        continue
                    chunk = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(stored.dtype).reshape(stored.sizes) \
                        if raw else torch.empty(stored.sizes, dtype=stored.dtype)
                    for dim, (start, length) in enumerate(zip(item.storage_offsets, item.lengths)):
                        chunk = chunk.narrow(dim, start, length)
                    target = planner.resolve_tensor(item).detach()
                    if target.size() != chunk.size():
                        raise RunError(f"the sharded checkpoint's {item.dest_index.fqn[:80]} has the wrong shape; {REDO}")
                    target.copy_(chunk)
                    planner.commit_tensor(item, target)
        done: Future = Future()
        done.set_result(None)
        return done

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id) -> bool:
        return True


def load_shards(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                with_optimizer: bool) -> None:
    """Load the weights (and, `with_optimizer`, the optimizer state) of a shard folder into `model`
    and `optimizer`, on any number of ranks (each reads the parts of the shards its own shard needs)."""
    metadata = check_shards(folder, model)
    if not with_optimizer:
        state = {"model": get_model_state_dict(model)}
        _load(folder, metadata, state)
        set_model_state_dict(model, state["model"])
        return
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    _load(folder, metadata, state)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def _load(folder: Path, metadata: Metadata, state: dict) -> None:
    try:
        with _one_process_is_fine():
            dcp.load(state, storage_reader=_ShardReader(folder, metadata), planner=_JsonLoadPlanner())
    except BaseException as e:  # DCP wraps a rank's failure in its own exception type
        cause = _rank_failure(e)
        if isinstance(cause, (GlassGPTError, KeyboardInterrupt)):
            raise cause from None
        if not isinstance(cause, Exception):
            raise
        raise RunError(f"cannot load the sharded checkpoint {folder} ({first_line(cause)}): restore it, "
                       "or train into a new --out") from None


def _rank_failure(e: BaseException) -> BaseException:
    """The exception a rank raised, out of DCP's CheckpointException (the first rank's)."""
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict) and failures:
        first = failures[min(failures)]
        return first[0] if isinstance(first, tuple) and first and isinstance(first[0], BaseException) else e
    return e


@contextlib.contextmanager
def _one_process_is_fine():
    """DCP warns when there is no process group; one process (no torchrun) is a supported case."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield
