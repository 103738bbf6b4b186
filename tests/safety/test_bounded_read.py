"""The bounded reader (`glassgpt.safe_read`) and the files it guards: every file glassgpt
reads from a run, a dataset or a corpus is a regular file of a bounded size, parsed within
limits, or one line naming it. The hangs, the memory and the tracebacks a hostile file
caused, one case each, then the reader's properties (hypothesis)."""

import json
import os
import shutil
import string
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from glassgpt import safe_read
from glassgpt.errors import GlassGPTError, RunError, UsageError
from glassgpt.safe_read import loads_json, read_bytes, read_json, read_lines

from conftest import assert_clean_error, cli, make_tiny_run, within


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("bounded") / "run")


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    shutil.copytree(tiny_run, tmp_path / "run")
    return tmp_path / "run"


def edit_config(run_dir: Path, edit) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    edit(config)
    (run_dir / "config.json").write_text(json.dumps(config))


# ---------------------------------------------------------------- the reader

def test_only_a_regular_file_is_read_and_a_pipe_never_blocks(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "pipe")  # a link is judged by what it reaches
    with within(5):
        for name, kind in [("pipe", "named pipe"), ("folder", "folder"), ("link", "named pipe")]:
            with pytest.raises(RunError, match=f"{name} is a {kind}"):
                read_bytes(tmp_path / name, 100)
        with pytest.raises(RunError, match="character device"):
            read_bytes("/dev/zero", 100)
        with pytest.raises(UsageError, match="does not exist: fix it"):
            read_json(tmp_path / "missing", 100, fix="fix it", error=UsageError)


def test_the_size_is_checked_before_reading_and_a_sparse_2_gb_config_is_refused_unread(run):
    (run / "config.json").unlink()
    with open(run / "config.json", "wb") as f:
        f.truncate(2 << 30)  # sparse: 2 GiB that take no disk and, read, 2 GiB of memory
    started = time.perf_counter()
    assert_clean_error(cli("sample", run, "--max-new-tokens", "1"), 1, "config.json", "2,147,483,648 bytes")
    assert time.perf_counter() - started < 10


def test_a_file_that_grows_while_it_is_read_is_cut_at_the_bound(tmp_path, monkeypatch):
    class FiveBytes:  # `os`, but fstat says 5 bytes: the file grew to 10 between the check and the read
        def __getattr__(self, name):
            return getattr(os, name)

        def fstat(self, fd):
            return os.stat_result((*os.fstat(fd)[:6], 5, *os.fstat(fd)[7:]))

    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    monkeypatch.setattr(safe_read, "os", FiveBytes())
    with pytest.raises(RunError, match="grew past 5 bytes"):
        read_bytes(path, 5)


@pytest.mark.parametrize("text, fragment", [
    ("9" * 5000, "5,000-digit integer"),
    ("[" * 100_000 + "]" * 100_000, "nested more than 64 deep"),
    ('{"a": ' * 70 + "1" + "}" * 70, "nested more than 64 deep"),
    ('"\\ud800"', "lone surrogate"),
    ('{"\\udfff": 1}', "lone surrogate"),
    ("[NaN]", "NaN"), ("-Infinity", "-Infinity"), ("1e400", "too large for a float"),
    ("{broken", "not valid JSON"), (b"\xff\xfe{}", "not UTF-8"),
])
def test_json_beyond_the_limits_is_one_error_naming_the_file(text, fragment):
    with pytest.raises(RunError) as caught:
        loads_json(text, "some/file.json")
    message = str(caught.value)
    assert message.startswith("some/file.json ") and fragment in message and "\n" not in message


def test_json_within_the_limits_reads_as_json_does():
    text = '{"a": [1, -2.5, null, true, "\\ud83d\\ude00", {"b": "x"}], "big": ' + "9" * 100 + "}"
    assert loads_json(text, "f") == json.loads(text)
    assert loads_json("[NaN]", "f", allow_nan=True)[0] != loads_json("[NaN]", "f", allow_nan=True)[0]


def test_lines_longer_than_the_bound_come_as_none_without_being_held(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"short\n" + b"x" * 5000 + b"\nafter\r\n" + b"y" * 100 + b"\nlast")
    assert list(read_lines(path, 1 << 20, 100)) == [b"short", None, b"after", b"y" * 100, b"last"]


# ---------------------------------------------------------------- hangs: a pipe in place of a run file

SAMPLE, ANALYZE = ["sample", "--max-new-tokens", "2"], ["analyze", "--prompt", "ROMEO: here."]


@pytest.mark.parametrize("name, command", [
    *[(name, SAMPLE) for name in ("config.json", "tokenizer.json", "model.safetensors", ".checkpoint-commit.json",
                                  ".glassgpt-run")],
    ("metrics.jsonl", ANALYZE), (".checkpoint-commit.json", ANALYZE),
])
def test_a_pipe_in_place_of_a_run_file_never_blocks_a_reader(run, name, command, tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(tmp_path / "no-data"))  # analyze measures on the prompt
    if name == "tokenizer.json":
        edit_config(run, lambda c: c.pop("tokenizer"))  # the tokenizer is then read from tokenizer.json
    (run / name).unlink(missing_ok=True)
    os.mkfifo(run / name)
    with within(60):
        status, _, err = cli(command[0], run, *command[1:])
    if status != 0:  # refused in one line; or (metrics, the marker, the record) read around
        assert_clean_error((status, "", err), status)


# ---------------------------------------------------------------- memory: sizes checked before allocating

def test_an_sae_json_with_a_huge_width_is_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    from safetensors.torch import save_model

    from glassgpt.sae import SAE, SAEConfig, load_sae

    folder = tmp_path / "sae"
    folder.mkdir()
    config = SAEConfig(d_in=16, width=32, k=4)
    save_model(SAE(config), str(folder / "sae.safetensors"))
    (folder / "sae.json").write_text(json.dumps({"sae": {**config.to_dict(), "width": 2**40}}))
    monkeypatch.setattr(SAE, "__init__", lambda *a, **k: pytest.fail("an SAE was built from sae.json's sizes"))
    with pytest.raises(RunError, match=r"width=1099511627776, but the weights hold W_dec \(32, 16\)"):
        load_sae(folder)


def test_an_sae_larger_than_the_device_is_refused(tmp_path, monkeypatch):
    from safetensors.torch import save_model

    from glassgpt import limits
    from glassgpt.sae import SAE, SAEConfig, load_sae

    folder = tmp_path / "sae"
    folder.mkdir()
    config = SAEConfig(d_in=16, width=32, k=4)
    save_model(SAE(config), str(folder / "sae.safetensors"))
    (folder / "sae.json").write_text(json.dumps({"sae": config.to_dict()}))
    monkeypatch.setattr(limits, "device_memory", lambda device: 1000)
    with pytest.raises(UsageError, match="the SAE in .* would take about"):
        load_sae(folder)


@pytest.mark.parametrize("field, value, fragment", [
    ("step", -1_000_000, "step -1000000 is not one of 0..10"), ("step", 11, "step 11"), ("step", 2.5, "step 2.5"),
    ("tokens_since_fired", torch.zeros(7, dtype=torch.long), "tokens_since_fired"),
    ("threshold", torch.tensor(float("nan")), "threshold"),
])
def test_a_saved_sae_state_is_checked_before_a_resume_trusts_it(field, value, fragment):
    from glassgpt.sae import SAE, SAEConfig, SAETrainConfig, SAETrainer

    trainer = SAETrainer(SAE(SAEConfig(d_in=8, width=16, k=2)), SAETrainConfig(steps=10))
    state = {**trainer.state_dict(), field: value}
    with pytest.raises(ValueError, match=fragment):
        SAETrainer(SAE(SAEConfig(d_in=8, width=16, k=2)), SAETrainConfig(steps=10)).load_state_dict(state)


def test_a_model_larger_than_memory_is_refused_before_it_is_built(run, monkeypatch):
    from glassgpt import checkpoint

    monkeypatch.setattr(checkpoint, "device_memory", lambda device: 1 << 40)  # the weights file passes
    monkeypatch.setattr("glassgpt.limits.device_memory", lambda device: 1000)
    monkeypatch.setattr(checkpoint, "load_weights", lambda *a, **k: pytest.fail("a model was built and loaded"))
    assert_clean_error(cli("sample", run), 2, "the model in", "would take about")


def test_a_metrics_row_too_wide_to_draw_is_skipped_unparsed(run):
    from glassgpt.training.log import read_metrics_counted

    good = {"kind": "train", "step": 1, "train_loss": 2.0}
    wide = {"kind": "analysis", "step": 1, "icl_score": 0.0, "entropy": [0.5] * 100_000, "sink_share": [0.1],
            "first_position_share": [0.1]}
    many = {"kind": "train", "step": 2, **{f"k{i}": i for i in range(300)}}
    long = json.dumps({"kind": "eval", "step": 3, "val_loss": 1.0, "note": "x" * (2 << 20)})
    (run / "metrics.jsonl").write_text("\n".join([json.dumps(good), json.dumps(wide), json.dumps(many), long]) + "\n")
    started = time.perf_counter()
    assert read_metrics_counted(run) == ([good], 3)
    assert time.perf_counter() - started < 2


# ---------------------------------------------------------------- tracebacks: one line instead

@pytest.mark.parametrize("value", ['"big": ' + "9" * 5000, '"deep": ' + "[" * 100_000 + "]" * 100_000,
                                   '"text": "\\ud800"', '"loss": NaN'])
@pytest.mark.parametrize("name", ["config.json", "tokenizer.json"])
def test_a_run_file_beyond_the_json_limits_is_one_line(run, name, value):
    if name == "tokenizer.json":
        edit_config(run, lambda c: c.pop("tokenizer"))
    text = (run / name).read_text()
    (run / name).write_text(text.replace("{", "{" + value + ", ", 1))
    assert_clean_error(cli("sample", run), 1, name)


def test_a_toml_config_of_thousands_of_digits_or_a_pipe_is_one_line(tmp_path):
    (tmp_path / "big.toml").write_text("[model]\nn_layer = " + "9" * 5000 + "\n")
    assert_clean_error(cli("train", tmp_path / "big.toml"), 2, "big.toml", "not valid TOML")
    os.mkfifo(tmp_path / "pipe.toml")
    with within(10):
        assert_clean_error(cli("train", tmp_path / "pipe.toml"), 2, "pipe.toml", "named pipe")


def test_a_torn_meta_json_or_a_pipe_in_its_place_says_how_to_repair(tmp_path, monkeypatch):
    from glassgpt.data import read_meta

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "meta.json").write_text('{"tokenizer": ' + "9" * 5000 + "}")
    with pytest.raises(RunError, match="meta.json is corrupt .*5,000-digit integer.*--force"):
        read_meta(tmp_path / "mine")
    (tmp_path / "mine" / "meta.json").unlink()
    os.mkfifo(tmp_path / "mine" / "meta.json")
    with within(10), pytest.raises(RunError, match="meta.json is corrupt .*named pipe.*--force"):
        read_meta(tmp_path / "mine")


# ---------------------------------------------------------------- properties (hypothesis)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20)


def json_ish() -> st.SearchStrategy[str]:
    """JSON texts, and texts that are nearly JSON: cut, spliced with brackets, surrogates, long digits."""
    pieces = st.sampled_from(["[", "]", "{", "}", '"', "\\ud800", "\\u", "NaN", "-Infinity", "1e999", "9" * 120,
                              ",", ":", "\\", "null", "\x00", "\ud800"])
    texts = JSON_VALUES.map(json.dumps)
    return st.one_of(
        texts,
        st.tuples(texts, st.integers(0, 200)).map(lambda t: t[0][: t[1]]),
        st.tuples(texts, st.lists(pieces, max_size=8), st.integers(0, 200)).map(
            lambda t: t[0][: t[2]] + "".join(t[1]) + t[0][t[2]:]),
        st.lists(pieces, max_size=30).map("".join),
        st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
    )


def one_line_or_value(where, call, *args):
    """`call(*args)`, or None after a GlassGPTError of one line that names `where`; any other
    exception fails the test."""
    try:
        return call(*args)
    except GlassGPTError as e:
        assert "\n" not in str(e) and str(e).startswith(str(where)), str(e)


@settings(max_examples=400, deadline=1000)
@given(json_ish())
def test_any_json_ish_text_is_a_value_within_the_limits_or_one_error(text):
    value = one_line_or_value("f.json", loads_json, text, "f.json")
    if value is not None:  # what was accepted writes back as strict JSON in UTF-8 (no NaN, no lone surrogate)
        assert json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")


@settings(max_examples=200, deadline=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | st.text(string.printable, max_size=300).map(str.encode))
def test_any_bytes_in_a_file_are_a_value_or_one_error(tmp_path, data):
    path = tmp_path / "f.json"
    path.write_bytes(data)
    one_line_or_value(path, read_json, path, 200)


@settings(max_examples=200, deadline=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400), st.integers(1, 50))
def test_lines_read_within_a_bound_are_the_lines_of_the_file(tmp_path, data, limit):
    path = tmp_path / "lines"
    path.write_bytes(data)
    raw = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        raw = raw[:-1]
    assert list(read_lines(path, 1 << 20, limit)) == [line.rstrip(b"\r") if len(line) <= limit else None
                                                       for line in raw]


def test_analysis_rows_of_another_model_are_left_out_of_the_pictures(run, tmp_path, monkeypatch):
    """A row of 1,024 layers passes the row bounds, but not the model's 2 layers: drawing it would
    take minutes (a line and a legend entry per layer, on five axes)."""
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(tmp_path / "no-data"))
    row = {"kind": "analysis", "step": 1, "icl_score": 0.0,
           **{key: [0.5] * 1024 for key in ("entropy", "sink_share", "first_position_share")}}
    (run / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    status, _, err = cli("analyze", run, "--prompt", "ROMEO: here.")
    assert status == 0, err
    assert not (run / "analysis" / "dynamics.png").exists()
