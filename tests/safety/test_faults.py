"""Reliability and security: untrusted files, faults, and bad input. One test per case;
docs/reliability.md lists the cases and their outcomes."""

import dataclasses
import errno
import json
import pickle
import string

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from glassgpt import checkpoint as ckpt
from glassgpt.cli import build_parser
from glassgpt.config import RunConfig, load_run_config
from glassgpt.errors import RunError, UsageError

from conftest import assert_clean_error, make_tiny_run, run_cli


# ---------------------------------------------------------------- untrusted files

class _RunsCode:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('code ran')",))


def test_malicious_pickle_as_trainer_state_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = make_tiny_run(tmp_path / "run")
    with open(run_dir / ckpt.STATE, "wb") as f:
        pickle.dump({"step": 1, "payload": _RunsCode()}, f)
    with pytest.raises(RunError, match=f"cannot read {run_dir / ckpt.STATE}"):
        ckpt.load_trainer_state(run_dir)  # not a safetensors file: nothing of it is unpickled
    assert not (tmp_path / "PWNED").exists()


def test_bit_flipped_weights_are_detected(tmp_path):
    run_dir = make_tiny_run(tmp_path / "run")
    data = bytearray((run_dir / ckpt.WEIGHTS).read_bytes())
    data[-10] ^= 0x01
    (run_dir / ckpt.WEIGHTS).write_bytes(bytes(data))
    assert_clean_error(run_cli("sample", str(run_dir), "--prompt", "RO"), 1, "SHA-256", "corrupt")


def test_truncated_weights_are_detected(tmp_path):
    run_dir = make_tiny_run(tmp_path / "run")
    data = (run_dir / ckpt.WEIGHTS).read_bytes()
    (run_dir / ckpt.WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match="corrupt or truncated"):
        ckpt.load_run(run_dir)


def test_config_json_with_a_bad_field_is_refused(tmp_path):
    run_dir = make_tiny_run(tmp_path / "run")
    config = json.loads((run_dir / ckpt.CONFIG).read_text())
    config["model"]["n_head"] = "__import__('os')"
    (run_dir / ckpt.CONFIG).write_text(json.dumps(config))
    assert_clean_error(run_cli("sample", str(run_dir)), 2, "n_head")


def test_config_json_that_is_not_json(tmp_path):
    run_dir = make_tiny_run(tmp_path / "run")
    (run_dir / ckpt.CONFIG).write_text("{not json")
    assert_clean_error(run_cli("sample", str(run_dir)), 1, "not valid JSON")


# ---------------------------------------------------------------- faults

def test_full_disk_during_a_checkpoint_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    run_dir = make_tiny_run(tmp_path / "run")
    before = {name: (run_dir / name).read_bytes() for name in (ckpt.CONFIG, ckpt.WEIGHTS, ckpt.TOKENIZER)}
    model, tokenizer, rc = ckpt.load_run(run_dir)
    with torch.no_grad():
        model.wte.weight.add_(1.0)  # a new state that must not half-land

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_model", disk_full)
    with pytest.raises(OSError):
        ckpt.save_run(run_dir, model, tokenizer, rc, trainer_state={"step": 5})
    monkeypatch.undo()
    after = {name: (run_dir / name).read_bytes() for name in before}
    assert after == before
    ckpt.load_run(run_dir)  # and any leftovers are cleaned on the next load
    assert not list(run_dir.glob("*.tmp"))


def test_a_write_that_fails_midway_through_the_commit_is_rolled_back(tmp_path, monkeypatch):
    run_dir = make_tiny_run(tmp_path / "run")
    model, tokenizer, rc = ckpt.load_run(run_dir)
    weights_before = (run_dir / ckpt.WEIGHTS).read_bytes()
    real_dumps = json.dumps
    calls = {"n": 0}

    def failing_dumps(obj, *a, **kw):  # the config write fails after the weights were written
        calls["n"] += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.json, "dumps", failing_dumps)
    with torch.no_grad():
        model.wte.weight.mul_(2.0)
    with pytest.raises(OSError):
        ckpt.save_run(run_dir, model, tokenizer, rc)
    monkeypatch.setattr(ckpt.json, "dumps", real_dumps)
    assert calls["n"] >= 1
    reloaded, _, _ = ckpt.load_run(run_dir)  # recovers: the old checkpoint stands
    assert (run_dir / ckpt.WEIGHTS).read_bytes() == weights_before
    assert not list(run_dir.glob("*.tmp"))


def test_a_kill_after_the_commit_record_and_before_the_renames_rolls_forward(tmp_path, monkeypatch):
    """The record is on disk, the first rename fails (as if the process died there): the next
    load finishes the commit, so the new checkpoint stands, whole."""
    import os

    run_dir = make_tiny_run(tmp_path / "run")
    model, tokenizer, rc = ckpt.load_run(run_dir)
    weights_before = (run_dir / ckpt.WEIGHTS).read_bytes()
    real_replace = os.replace

    def die_after_the_record(src, dst):
        if str(dst).endswith(ckpt.COMMIT):  # the commit record itself goes through
            return real_replace(src, dst)
        raise KeyboardInterrupt("killed between the commit record and the renames")

    with torch.no_grad():
        model.wte.weight.mul_(2.0)
    monkeypatch.setattr(os, "replace", die_after_the_record)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_run(run_dir, model, tokenizer, rc)
    monkeypatch.setattr(os, "replace", real_replace)
    assert (run_dir / ckpt.COMMIT).exists() and list(run_dir.glob("*.tmp")), "killed mid-commit"
    assert (run_dir / ckpt.WEIGHTS).read_bytes() == weights_before

    reloaded, _, _ = ckpt.load_run(run_dir)  # recovers: the renames are finished
    assert (run_dir / ckpt.WEIGHTS).read_bytes() != weights_before
    torch.testing.assert_close(reloaded.wte.weight, model.wte.weight, atol=0, rtol=0)
    assert not (run_dir / ckpt.COMMIT).exists() and not list(run_dir.glob("*.tmp"))


# ---------------------------------------------------------------- bad data

def _fake_dataset(data_dir, name, train_tokens: int, val_tokens: int = 100):
    """A prepared char dataset with splits of the given sizes."""
    path = data_dir / name
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rng.integers(0, 65, train_tokens, dtype=np.uint8).tofile(path / "train.bin")
    rng.integers(0, 65, val_tokens, dtype=np.uint8).tofile(path / "val.bin")
    chars = "".join(sorted(set(string.printable[:65])))[:65]
    (path / "meta.json").write_text(json.dumps({"tokenizer": {"name": "char", "chars": chars}, "dtype": "uint8",
                                                "dataset": name}))


def test_block_size_larger_than_the_data(tmp_path):
    _fake_dataset(tmp_path / "data", "shakespeare-char", train_tokens=50)
    r = run_cli("train", "cpu-baby", "max_iters=2", "--out", str(tmp_path / "run"),
                env={"GLASSGPT_DATA_DIR": str(tmp_path / "data")})
    assert_clean_error(r, 2, "too few", "block_size")
    assert not (tmp_path / "run").exists(), "nothing written for a run that cannot start"


def test_empty_data_file(tmp_path):
    _fake_dataset(tmp_path / "data", "shakespeare-char", train_tokens=0)
    r = run_cli("train", "cpu-baby", "max_iters=2", "--out", str(tmp_path / "run"),
                env={"GLASSGPT_DATA_DIR": str(tmp_path / "data")})
    assert_clean_error(r, 1, "empty", "--force")
    assert not (tmp_path / "run").exists()


def test_unprepared_dataset(tmp_path):
    r = run_cli("train", "cpu-baby", "--out", str(tmp_path / "run"), env={"GLASSGPT_DATA_DIR": str(tmp_path)})
    assert_clean_error(r, 2, "not prepared", "glassgpt prepare shakespeare-char")


def test_validation_split_too_small_to_evaluate(tmp_path):
    _fake_dataset(tmp_path / "data", "shakespeare-char", train_tokens=5000, val_tokens=1)
    r = run_cli("train", "cpu-baby", "max_iters=2", "--out", str(tmp_path / "run"),
                env={"GLASSGPT_DATA_DIR": str(tmp_path / "data")})
    assert_clean_error(r, 2, "val split has 1 token", "prepare more data")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- every CLI argument out of range

RUN = "{run}"  # replaced by a real tiny run directory, so the check under test is the one that fails

OUT_OF_RANGE = [
    (["prepare", "shakespeare-char", "--max-tokens", "0"], "--max-tokens"),
    (["prepare", "shakespeare-char", "--workers", "0"], "--workers"),
    (["prepare", "shakespeare-char", "--workers", "two"], "--workers"),
    (["prepare", "no-such-corpus"], "no-such-corpus"),
    (["train", "cpu-baby", "max_iters=-1"], "max_iters"),
    (["train", "cpu-baby", "batch_size=0"], "batch_size"),
    (["train", "cpu-baby", "block_size=0"], "block_size"),
    (["train", "cpu-baby", "n_layer=0"], "n_layer"),
    (["train", "cpu-baby", "grad_accum_steps=0"], "grad_accum_steps"),
    (["train", "cpu-baby", "learning_rate=-0.1"], "learning_rate"),
    (["train", "cpu-baby", "min_lr=1.0"], "min_lr"),
    (["train", "cpu-baby", "dropout=1.5"], "dropout"),
    (["train", "cpu-baby", "beta2=1.0"], "beta2"),
    (["train", "cpu-baby", "learning_rate=inf"], "learning_rate"),
    (["train", "cpu-baby", "dtype=float64"], "dtype"),
    (["train", "cpu-baby", "device=tpu"], "device"),
    (["train", "cpu-baby", "--resume"], "--resume"),
    (["sample", RUN, "--max-new-tokens", "-1"], "--max-new-tokens"),
    (["sample", RUN, "--max-new-tokens", "100001"], "capped"),
    (["sample", RUN, "--temperature", "-1"], "temperature"),
    (["sample", RUN, "--temperature", "nan"], "nan"),
    (["sample", RUN, "--top-k", "0"], "--top-k"),
    (["sample", RUN, "--top-p", "0"], "top_p"),
    (["sample", RUN, "--top-p", "1.5"], "top_p"),
    (["sample", RUN, "--seed", "-1"], "--seed"),
    (["sample", RUN, "--num-samples", "0"], "--num-samples"),
    (["sample", RUN, "--device", "tpu"], "device"),
    (["analyze", RUN, "--windows", "0"], "--windows"),
    (["analyze", RUN, "--windows", "100000"], "--windows"),
    (["analyze", RUN, "--seed", "-5"], "--seed"),
    (["demo", RUN, "--port", "0"], "--port"),
    (["demo", RUN, "--port", "65536"], "--port"),
    (["bench", "nothing-like-this", "--quick"], "nothing-like-this"),
    (["bench", "--threads", "0"], "--threads"),
    (["convert-hf", RUN], "--out"),
    (["eval", RUN, "--stride", "0"], "--stride"),
    (["eval", RUN, "--stride", "33"], "--stride"),
    (["eval", RUN, "--context", "33"], "--context"),
    (["eval", RUN, "--context", "0"], "--context"),
    (["eval", RUN, "--max-tokens", "0"], "--max-tokens"),
    (["eval", RUN, "--batch-size", "0"], "--batch-size"),
    (["eval", RUN, "--task", "hellaswag", "--limit", "0"], "--limit"),
    (["eval", RUN, "--split", "train"], "--split"),
    (["eval", RUN, "--task", "mmlu"], "--task"),
    (["eval", RUN, "--dtype", "float64"], "--dtype"),
    (["eval", RUN, "--device", "tpu"], "device"),
]


@pytest.mark.parametrize("argv,fragment", OUT_OF_RANGE, ids=[" ".join(a) for a, _ in OUT_OF_RANGE])
def test_every_cli_argument_out_of_range(argv, fragment, tmp_path, monkeypatch, capsys):
    from glassgpt.cli import main

    run_dir = make_tiny_run(tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(tmp_path / "data"))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    argv = [str(run_dir) if a == RUN else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "a usage error wrote files"


# ---------------------------------------------------------------- fuzzing

keys = st.sampled_from(["n_layer", "n_head", "n_embd", "block_size", "dropout", "bias", "pos_encoding", "norm",
                        "attn_impl", "learning_rate", "min_lr", "batch_size", "dtype", "compile", "device",
                        "beta2", "max_iters", "grad_clip", "nope", "", "n_layer "])
values = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(str), st.text(max_size=12),
                   st.sampled_from(["true", "false", "[1, 2]", "{a = 1}", '"rope"', "1979-05-27", "inf", "nan"]))
overrides = st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", keys, values), st.text(max_size=20)), max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides)
def test_fuzz_config_overrides_never_raise_anything_but_usage_error(items):
    try:
        rc = load_run_config("cpu-baby", items)
    except UsageError:
        return
    assert isinstance(rc, RunConfig)


toml_values = st.recursive(st.one_of(st.integers(-5, 10**4), st.floats(), st.booleans(), st.text(max_size=8)),
                           lambda children: st.lists(children, max_size=3), max_leaves=5)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["model", "train", "other"]),
                       st.one_of(toml_values, st.dictionaries(keys, toml_values, max_size=4)), max_size=3))
def test_fuzz_config_files_never_raise_anything_but_usage_error(sections):
    try:
        rc = RunConfig.from_dict(sections)
    except UsageError:
        return
    # accepted: only then may nothing be garbage -- known tables and keys, each value the field's own
    assert set(sections) <= {"model", "train"}, sections
    for table, config in (("model", rc.model), ("train", rc.train)):
        fields = {f.name: f for f in dataclasses.fields(config)}
        for key, value in sections.get(table, {}).items():
            assert key in fields, (table, key)
            kept = getattr(config, key)
            assert kept == value or (isinstance(value, float) and value != value and kept != kept), (key, value, kept)
            assert isinstance(kept, type(fields[key].default)) or fields[key].default is None, (key, kept)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["train", "sample", "prepare", "demo", "--top-k", "--top-p", "--seed",
                                           "--temperature", "--max-new-tokens", "--port", "--out", "--resume",
                                           "-1", "0", "1.5", "nan", "x", "--help"]), st.text(max_size=8)),
                max_size=6))
def test_fuzz_command_line_parser_only_exits_cleanly(argv):
    try:
        build_parser().parse_known_args(argv)
    except SystemExit as e:
        assert e.code in (0, 2)


edge_numbers = ["-1", "0", "1", "2", "0.5", "1.5", "1e-9", "100000", "99999999999", "nan", "inf", "x", ""]
edge_texts = ["", " ", "ROMEO:", "\u00e9\u20ac", "\n", "zzzz", "\x00"]
HANDLER_FLAGS = {  # every flag of the run commands, each with its edge values
    "sample": {"--temperature": edge_numbers, "--top-k": edge_numbers, "--top-p": edge_numbers,
               "--seed": edge_numbers, "--num-samples": edge_numbers[:5], "--max-new-tokens": edge_numbers[:5],
               "--device": ["cpu", "cuda", "mps", "auto", "tpu", ""], "--prompt": edge_texts, "--no-cache": [None]},
    "analyze": {"--windows": ["0", "1", "2", "100000", "x"], "--seed": ["-1", "0", "99999999999", "x"],
                "--device": ["cpu", "cuda", "auto", "tpu"], "--prompt": edge_texts},
}
TRAIN_KEYS = ["dropout", "bias", "pos_encoding", "norm", "attn_impl", "learning_rate", "min_lr", "dtype", "device",
              "grad_clip", "warmup_iters", "weight_decay", "beta2", "seed", "grad_accum_steps", "eval_iters",
              "lr_decay_iters", "max_bad_steps", "dataset", "tensorboard", "compile", "nope"]
SAFE_TRAIN = ["n_layer=1", "n_head=2", "n_embd=16", "block_size=16", "batch_size=2", "max_iters=1", "eval_interval=1",
              "log_interval=1"]  # last, so they win: every run stays tiny


def handler_command_lines(command: str, run: str, out: str) -> list[list[str]]:
    """Every flag of sample or analyze with each edge value, or every train key with bad values."""
    if command == "train":
        return [["train", "cpu-baby", f"{key}={value}", *SAFE_TRAIN, "--out", out]
                for key in TRAIN_KEYS for value in ("-1", "nan", "x", "true")]
    tail = ["--max-new-tokens", "3"] if command == "sample" else ["--out", out]
    return [[command, run, *tail, flag] + ([] if value is None else [value])
            for flag, values in HANDLER_FLAGS[command].items() for value in values]


@pytest.mark.slow
@pytest.mark.parametrize("command", [*HANDLER_FLAGS, "train"])
def test_every_flag_through_the_command_handlers_exits_cleanly(command, tmp_path, prepared_data_dir, monkeypatch):
    """The handlers themselves, not just the parser, on a tiny run and real data: each edge value of
    each flag either works or ends in one line on stderr with exit 1 or 2, never a traceback."""
    import contextlib
    import io

    from glassgpt.cli import main

    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(prepared_data_dir))
    run = make_tiny_run(tmp_path / "run")
    problems = []
    for i, argv in enumerate(handler_command_lines(command, str(run), str(tmp_path / "out"))):
        argv = [str(tmp_path / f"out{i}") if a == str(tmp_path / "out") else a for a in argv]  # a fresh --out
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                main(argv)
            code = 0
        except SystemExit as e:
            code = e.code
        except Exception as e:  # a traceback a user would see
            problems.append((argv, f"{type(e).__name__}: {e}"))
            continue
        lines = [line for line in stderr.getvalue().splitlines() if line.strip() and not line.startswith("[")]
        if code not in (0, 1, 2) or (code != 0 and len(lines) != 1) or "Traceback" in stderr.getvalue():
            problems.append((argv, code, stderr.getvalue()))
    assert not problems, "\n".join(map(repr, problems))


def test_reliability_doc_names_only_tests_that_exist():
    import re
    from pathlib import Path

    tests_dir = Path(__file__).parents[1]
    doc = (tests_dir.parent / "docs" / "reliability.md").read_text()
    named = re.findall(r"`((?:\w+/)?test_\w+\.py)::(test_\w+)`", doc)
    assert len(named) >= 40
    missing = [f"{f}::{t}" for f, t in named
               if not re.search(rf"^def {t}\(", (tests_dir / f).read_text(), flags=re.M)]
    assert not missing, missing
