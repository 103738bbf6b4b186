"""No pickle is read from a run directory: the trainer and SAE states are safetensors with a JSON
tree, a sharded checkpoint is raw shards with a JSON index, and the files an older glassgpt
pickled are refused unread. A scan of the package keeps it so."""

import ast
import json
import math
import os
import pickle
from pathlib import Path

import pytest
import torch

from glassgpt import shard_folders
from glassgpt import checkpoint as ckpt
from glassgpt.errors import RunError
from glassgpt.tensor_tree import MAX_DEPTH, dumps_plain, load_tree, loads_plain, save_tree

from conftest import assert_clean_error, cli, shard_folder, snapshot

SRC = Path(__file__).resolve().parents[2] / "src" / "glassgpt"


# ---------------------------------------------------------------- the scan

PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "marshal", "shelve", "copyreg"}
LOADERS = {"torch": {"load"}, "np": {"load"}, "numpy": {"load"}, "yaml": {"load", "unsafe_load", "full_load"},
           "dcp": {"load"}, "serialization": {"load"}}
PICKLE_NAMES = {"Unpickler", "FileSystemReader", "from_pretrained", "dcp_to_torch_save", "torch_save_to_dcp"}

# Every use of a pickle-capable API in the package, and why it reads no run's file. A new one
# fails the scan until it is read through a format that runs no code, or justified here.
ALLOWED = {
    ("hf.py", "import pickle"): "only to catch the UnpicklingError transformers raises (convert-hf)",
    ("hf.py", "pickle.UnpicklingError"): "the same: an exception type, nothing is unpickled",
    ("hf.py", ".from_pretrained"): "convert-hf reads a user's transformers folder, not a run: safetensors, "
                                   "or a .bin that transformers reads with torch.load(weights_only=True)",
}


def pickle_uses(path: Path) -> list[str]:
    """Every use in a source file of an API that can unpickle: pickle-like modules, torch.load,
    np.load, yaml.load, DCP's own reader (dcp.load is allowed with glassgpt's reader and planner
    only), transformers' from_pretrained, and allow_pickle= / weights_only= arguments."""
    tree = ast.parse(path.read_text())
    ours = set()  # dcp.load(..., storage_reader=_ShardReader(...), planner=_JsonLoadPlanner())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            given = {k.arg: k.value for k in node.keywords}
            if all(isinstance(given.get(k), ast.Call) and getattr(given[k].func, "id", None) == cls
                   for k, cls in (("storage_reader", "_ShardReader"), ("planner", "_JsonLoadPlanner"))):
                ours.add(id(node.func))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            names = {a.name for a in node.names}
            if root in PICKLE_MODULES or (root == "torch" and "load" in names) or names & PICKLE_NAMES:
                found.append(f"from {node.module} import {', '.join(sorted(names))}")
        elif isinstance(node, ast.Attribute) and id(node) not in ours:
            owner = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", None)
            if node.attr in LOADERS.get(owner, ()) or owner in PICKLE_MODULES:
                found.append(f"{owner}.{node.attr}")
            elif node.attr in PICKLE_NAMES:
                found.append(f".{node.attr}")
        elif isinstance(node, ast.Name) and node.id in PICKLE_NAMES:
            found.append(node.id)
        elif isinstance(node, ast.keyword) and node.arg in ("allow_pickle", "weights_only"):
            found.append(f"{node.arg}=")
    return found


def test_no_module_can_unpickle_a_run_file():
    uses = {(str(path.relative_to(SRC)), use) for path in SRC.rglob("*.py") for use in pickle_uses(path)}
    assert uses - set(ALLOWED) == set(), "read it through glassgpt.tensor_tree (or justify it in ALLOWED)"
    assert set(ALLOWED) <= uses, "an allowance nothing needs any more: remove it"


def test_the_scan_finds_every_kind_of_unpickling(tmp_path):
    source = tmp_path / "bad.py"
    source.write_text("import pickle\nimport torch, numpy as np, yaml\nfrom torch import load\n"
                      "from torch.distributed.checkpoint import FileSystemReader\nimport torch.distributed.checkpoint as dcp\n"
                      "torch.load(p, weights_only=True)\nnp.load(p, allow_pickle=True)\nyaml.load(s)\n"
                      "dcp.load(state)\ndcp.load(state, storage_reader=_ShardReader(f, m), planner=_JsonLoadPlanner())\n"
                      "pickle.Unpickler(f).load()\nyaml.safe_load(s)\n")
    assert pickle_uses(source) == [
        "import pickle", "from torch import load", "from torch.distributed.checkpoint import FileSystemReader",
        "torch.load", "weights_only=", "np.load", "allow_pickle=", "yaml.load", "dcp.load", "pickle.Unpickler"]


# ---------------------------------------------------------------- the formats

def test_a_state_tree_round_trips_exactly_with_every_kind_of_node(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tree = {"step": 7, "lr": 3e-4, "inf": math.inf, "none": None, "flag": True, "name": "adamw",
            "betas": (0.9, 0.95), "params": [0, 1], 0: {"exp_avg": base, "view": base[1:, ::2], "same": base},
            "rng": torch.get_rng_state(), "bf16": torch.randn(5).to(torch.bfloat16), "scalar": torch.tensor(3.0),
            "empty": torch.zeros(0, 4)}
    path = tmp_path / "state.safetensors"
    save_tree(path, tree)
    back = load_tree(path, "restore it")
    assert back.keys() == tree.keys() and type(back["betas"]) is tuple and 0 in back and "0" not in back
    assert back["inf"] == math.inf and back["none"] is None and back["flag"] is True and back["step"] == 7
    for key in ("rng", "bf16", "scalar", "empty"):
        assert back[key].dtype == tree[key].dtype and torch.equal(back[key], tree[key]), key
    for key in ("exp_avg", "view", "same"):
        assert torch.equal(back[0][key], tree[0][key]), key
    length = int.from_bytes(path.read_bytes()[:8], "little")  # safetensors: a JSON header, then raw bytes
    assert "glassgpt.tree" in json.loads(path.read_bytes()[8:8 + length])["__metadata__"]
    assert loads_plain(dumps_plain([{"lr": 0.1, "betas": (0.9, 0.95)}])) == [{"lr": 0.1, "betas": (0.9, 0.95)}]


def test_a_state_tree_as_deep_as_a_state_may_be_reads_back(tmp_path):
    """Each dict of a tree is three levels of JSON ({"dict": [[key, value]]}): a tree `save_tree`
    writes, nested as deep as it allows, is within what the reader parses."""
    tree: object = 1
    for _ in range(MAX_DEPTH):
        tree = {"a": tree}
    save_tree(tmp_path / "state.safetensors", tree)
    assert load_tree(tmp_path / "state.safetensors", "restore it") == tree


DEEP = json.loads("[" * 40 + "1" + "]" * 40)


@pytest.mark.parametrize("skeleton", [{"pickle": "x"}, {"tensor": "t9"}, {"dict": [[1.5, 2]]}, {"tuple": "ab"},
                                      {"a": 1, "b": 2}, {"float": "1e999"}, DEEP])
def test_a_state_file_with_a_node_glassgpt_does_not_write_is_refused_naming_the_file(tmp_path, skeleton):
    from safetensors.torch import save_file

    path = tmp_path / "state.safetensors"
    save_file({"t0": torch.zeros(1)}, str(path), metadata={"glassgpt.format": "tree/1",
                                                           "glassgpt.tree": json.dumps(skeleton)})
    with pytest.raises(RunError, match=f"{path} is not a state glassgpt wrote"):
        load_tree(path, "restore it")


# ---------------------------------------------------------------- pickles planted in a run

def dotted_payload(command: str) -> bytes:
    """A pickle that calls os.system(command) through a dotted name (`torch.os.system`) looked up
    in DCP's metadata module: an unpickler allowing that module's classes resolves it."""
    def text(s: str) -> bytes:
        b = s.encode()
        return b"\x8c" + bytes([len(b)]) + b
    return (b"\x80\x04" + text("torch.distributed.checkpoint.metadata") + b"\x94" + text("torch.os.system") + b"\x94"
            + b"\x93\x94" + text(command) + b"\x94\x85\x94R\x94.")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("keep_index", [False, True])
def test_a_pickled_shard_index_with_a_dotted_name_never_runs(sharded_run, outside, monkeypatch, keep_index):
    """DCP's own index is a pickle: one planted where an older glassgpt wrote it is never read.
    Without glassgpt's JSON index the resume is refused; beside it, it is ignored."""
    monkeypatch.chdir(outside)  # where the payload's `touch PWNED` would land
    folder = shard_folder(sharded_run)
    (folder / ".metadata").write_bytes(dotted_payload("touch PWNED"))
    if not keep_index:
        (folder / shard_folders.INDEX).unlink()
        assert_clean_error(cli("train", "--out", sharded_run, "--resume", "max_iters=3"), 1, "refusing",
                       str(folder / ".metadata"), "init_from=")
    else:
        status, _, err = cli("train", "--out", sharded_run, "--resume", "max_iters=3")
        assert status == 0, err
    assert not (outside / "PWNED").exists()


def test_a_pickle_in_place_of_a_shard_value_never_runs(sharded_run, outside, monkeypatch):
    """A shard file's values (an optimizer's learning rate) are JSON; DCP unpickles them with
    weights_only=False. A pickle planted as one is refused, and its code never runs."""
    monkeypatch.chdir(outside)
    folder = shard_folder(sharded_run)
    index = json.loads((folder / shard_folders.INDEX).read_text())
    shard = folder / "__0_0.distcp"
    at, payload = shard.stat().st_size, pickle.dumps(_Payload())
    with open(shard, "ab") as f:
        f.write(payload)
    index["values"]["optim.param_groups.0.lr"] = {"file": shard.name, "at": at, "length": len(payload)}
    (folder / shard_folders.INDEX).write_text(json.dumps(index))
    before = snapshot(sharded_run)
    assert_clean_error(cli("train", "--out", sharded_run, "--resume", "max_iters=3"), 1,
                   "optim.param_groups.0.lr is not a value glassgpt wrote")
    assert not (outside / "PWNED").exists() and snapshot(sharded_run) == before


@pytest.mark.parametrize("payload", ["dotted", "reduce"])
def test_a_pickled_trainer_state_of_an_older_glassgpt_is_refused_unread(run_copy, outside, monkeypatch, payload):
    monkeypatch.chdir(outside)
    (run_copy / ckpt.STATE).unlink()
    (run_copy / ckpt.LEGACY_STATE).write_bytes(dotted_payload("touch PWNED") if payload == "dotted"
                                               else pickle.dumps({"step": 1, "x": _Payload()}))
    before = snapshot(run_copy)
    assert_clean_error(cli("train", "--out", run_copy, "--resume", "max_iters=3"), 2, str(run_copy / ckpt.LEGACY_STATE),
                   "older glassgpt", f"init_from={run_copy}")
    assert not (outside / "PWNED").exists() and snapshot(run_copy) == before
    status, _, err = cli("sample", run_copy, "--max-new-tokens", 2)  # its weights still serve
    assert status == 0, err


def test_a_pickled_sae_state_of_an_older_glassgpt_is_refused_unread(run_copy, outside, monkeypatch):
    monkeypatch.chdir(outside)
    args = ["sae", run_copy, "--hook", "blocks.0.resid_post", "--tokens", 512, "--batch-size", 256, "--width", 32, "--k", 4]
    assert cli(*args)[0] == 0
    folder = run_copy / "sae" / "blocks.0.resid_post"
    (folder / "sae_state.safetensors").unlink()
    (folder / "sae_state.pt").write_bytes(dotted_payload("touch PWNED"))
    assert_clean_error(cli(*args, "--resume"), 2, "sae_state.pt", "older glassgpt")
    assert not (outside / "PWNED").exists()
