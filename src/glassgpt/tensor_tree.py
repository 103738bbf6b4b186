"""Nested state as files that run no code when read: no pickle.

A trainer state (the step, the optimizer's moments and hyperparameters, RNG states, the data
position) is a tree of dicts, lists, tuples, numbers, strings and tensors. `flatten` splits it
into a JSON skeleton and the tensors it names; `save_tree` writes the tensors as safetensors with
the skeleton in the file's own header (`__metadata__`), and `load_tree` reads it back, checking
every node. The skeleton says exactly what each node is:

    null, true, 3, 0.5, "text"    themselves (a float that is not finite: {"float": "nan"})
    [a, b]                        a list
    {"tuple": [a, b]}             a tuple
    {"dict": [[key, v], ...]}     a dict, its keys strings or whole numbers (an optimizer's are)
    {"tensor": "t0"}              the tensor stored under that name

`dumps_plain` / `loads_plain` are the same skeleton with no tensors, as bytes: DCP's non-tensor
items (an optimizer's learning rate, betas, parameter names) in a sharded checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from glassgpt.errors import GlassGPTError, RunError, first_line
from glassgpt.safe_read import check_regular, loads_json

FORMAT_KEY, FORMAT = "glassgpt.format", "tree/1"
TREE_KEY = "glassgpt.tree"
MAX_DEPTH = 32
JSON_DEPTH = 3 * MAX_DEPTH + 2  # a dict node is three levels of JSON: {"dict": [[key, value]]}
SPECIAL_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class TreeError(ValueError):
    """A skeleton that is not one `flatten` writes."""


# ---------------------------------------------------------------- tree <-> skeleton + tensors

def flatten(tree: object) -> tuple[object, dict[str, torch.Tensor]]:
    """(JSON skeleton, tensors by name): each tensor on the CPU, contiguous, owning its memory."""
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()

    def visit(node, depth: int):
        if depth > MAX_DEPTH:
            raise TreeError(f"nested deeper than {MAX_DEPTH}")
        if isinstance(node, torch.Tensor):
            t = node.detach().to("cpu")
            if _is_view(t) or t.untyped_storage().data_ptr() in storages:
                t = t.contiguous().clone()  # safetensors stores each tensor's own bytes, never a view
            if t.numel():
                storages.add(t.untyped_storage().data_ptr())
            name = f"t{len(tensors)}"
            tensors[name] = t
            return {"tensor": name}
        if node is None or isinstance(node, (bool, int, str)):
            return node
        if isinstance(node, float):
            return node if math.isfinite(node) else {"float": str(node)}
        if isinstance(node, tuple):
            return {"tuple": [visit(v, depth + 1) for v in node]}
        if isinstance(node, list):
            return [visit(v, depth + 1) for v in node]
        if isinstance(node, dict):
            bad = next((k for k in node if not isinstance(k, (str, int)) or isinstance(k, bool)), None)
            if bad is not None:
                raise TreeError(f"a dict key of type {type(bad).__name__}")
            return {"dict": [[k, visit(v, depth + 1)] for k, v in node.items()]}
        raise TreeError(f"a value of type {type(node).__name__}, which a state file does not hold")

    return visit(tree, 0), tensors


def _is_view(t: torch.Tensor) -> bool:
    """`t` does not own exactly its memory: a slice, a transpose, or a part of a bigger storage."""
    return (not t.is_contiguous() or t.storage_offset() != 0
            or t.untyped_storage().nbytes() != t.numel() * t.element_size())


def unflatten(skeleton: object, tensors: dict[str, torch.Tensor] | None = None) -> object:
    """The tree a skeleton describes; TreeError for anything `flatten` does not write."""
    tensors = tensors or {}

    def visit(node, depth: int):
        if depth > MAX_DEPTH:
            raise TreeError(f"nested deeper than {MAX_DEPTH}")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [visit(v, depth + 1) for v in node]
        if not (isinstance(node, dict) and len(node) == 1):
            raise TreeError(f"a node {str(node)[:60]!r} of no known kind")
        (kind, value), = node.items()
        if kind == "tensor" and isinstance(value, str):
            if value not in tensors:
                raise TreeError(f"it names a tensor {value[:40]!r} the file does not hold")
            return tensors[value]
        if kind == "float" and value in SPECIAL_FLOATS:
            return SPECIAL_FLOATS[value]
        if kind == "tuple" and isinstance(value, list):
            return tuple(visit(v, depth + 1) for v in value)
        if kind == "dict" and isinstance(value, list):
            out = {}
            for item in value:
                if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], (str, int))
                        and not isinstance(item[0], bool)):
                    raise TreeError("a dict entry that is not a [key, value] pair")
                out[item[0]] = visit(item[1], depth + 1)
            return out
        raise TreeError(f"a node of kind {str(kind)[:40]!r}")

    return visit(skeleton, 0)


# ---------------------------------------------------------------- files

def save_tree(path: Path, tree: object) -> None:
    """The tree as one safetensors file: its tensors, and the skeleton in the header."""
    skeleton, tensors = flatten(tree)
    save_file(tensors, str(path), metadata={FORMAT_KEY: FORMAT, TREE_KEY: json.dumps(skeleton, allow_nan=False)})


def load_tree(path: Path, repair: str) -> object:
    """The tree in a file `save_tree` wrote, checked node by node; anything else is one RunError
    naming the file and ending with `repair` (what the user can do)."""
    check_regular(path, fix=repair)  # a pipe in its place is refused, not waited on
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if header.get(FORMAT_KEY) != FORMAT or not isinstance(header.get(TREE_KEY), str):
                raise TreeError("it has no glassgpt state in its header")
            skeleton = loads_json(header[TREE_KEY], path, max_depth=JSON_DEPTH, fix=repair)
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        return unflatten(skeleton, tensors)
    except (SafetensorError, OSError) as e:
        raise RunError(f"cannot read {path} ({first_line(e)}): it is corrupt or truncated; {repair}") from None
    except (TreeError, ValueError, RecursionError) as e:
        raise RunError(f"{path} is not a state glassgpt wrote ({first_line(e)}): {repair}") from None


def dumps_plain(obj: object) -> bytes:
    """A tree without tensors as JSON bytes."""
    skeleton, tensors = flatten(obj)
    if tensors:
        raise TreeError("a plain value holding a tensor")
    return json.dumps(skeleton, allow_nan=False).encode("utf-8")


def loads_plain(data: bytes) -> object:
    """The value `dumps_plain` wrote; TreeError (a ValueError) for anything else."""
    try:
        skeleton = loads_json(data, "the value", max_depth=JSON_DEPTH)
    except GlassGPTError as e:
        raise TreeError(str(e)) from None
    return unflatten(skeleton)
