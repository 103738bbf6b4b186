"""Hostile input: folders and run directories a careless user or a stranger could hand
glassgpt. Every command must end in exit 0, 1 or 2 with no traceback, never change a
file outside the run, and never lose a file of the run (or of a folder that is not one).

The commands run in process (`glassgpt.cli.main`), as the console script calls it, so
hundreds of corrupted runs cost seconds. The cases the hostile-input review found come
first, one test each; then the fuzzing (hypothesis) over every file of a run.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from glassgpt import checkpoint as ckpt
from glassgpt.config import load_run_config
from glassgpt.inference.text import MAX_STOP_CHARS, StopText
from glassgpt.tensor_tree import save_tree
from glassgpt.training import train

from conftest import TINY, assert_clean_error, cli, dead_pid, make_tiny_run, push_all, shard_folder, snapshot, within


# ---------------------------------------------------------------- write only what you own

@pytest.mark.parametrize("command", [["sample"], ["eval"], ["analyze"], ["demo"], ["train", "--resume", "--out"]])
def test_a_folder_that_is_not_a_run_is_left_exactly_as_it_was(tmp_path, command, data_env):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "draft.tmp").write_text("work")
    (folder / "config.json.tmp").write_text("also the user's")
    (folder / ".checkpoint-commit.json").write_text(json.dumps(["draft"]))
    before = snapshot(folder)
    status, _, err = cli(*command, folder)
    assert status == 2, err
    assert snapshot(folder) == before  # nothing deleted, no .lock left


def test_train_into_a_folder_of_the_users_is_refused_and_touches_nothing(tmp_path, monkeypatch, data_env):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "config.json").write_text('{"mine": true}')
    (tmp_path / "loss.png.tmp").write_text("mine too")
    before = snapshot(tmp_path)
    assert_clean_error(cli("train", "cpu-baby", *TINY, "--out", "."), 2, "not a glassgpt run", "--out")
    assert snapshot(tmp_path) == before


def test_train_into_an_empty_folder_works_and_into_a_file_is_a_usage_error(tmp_path, data_env):
    empty = tmp_path / "empty"
    empty.mkdir()
    status, _, err = cli("train", "cpu-baby", *TINY, "--out", empty)
    assert status == 0, err
    assert (empty / ckpt.MARKER).is_file() and (empty / ckpt.WEIGHTS).is_file()
    (tmp_path / "a-file").write_text("x")
    assert_clean_error(cli("train", "cpu-baby", *TINY, "--out", tmp_path / "a-file"), 2, "is a file")


def test_analyze_out_never_replaces_a_folder_with_files_glassgpt_did_not_write(run_copy, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "analysis.json").write_text("{}")  # looks like a report...
    (out / "thesis").mkdir()  # ...but holds the user's work
    (out / "thesis" / "chapter1.md").write_text("years of work")
    before = snapshot(out)
    assert_clean_error(cli("analyze", run_copy, "--windows", 1, "--out", out), 2, "thesis", "--out")
    assert snapshot(out) == before


def test_analyze_out_replaces_its_own_earlier_report(run_copy, tmp_path):
    out = tmp_path / "report"
    assert cli("analyze", run_copy, "--windows", 1, "--out", out)[0] == 0
    first = set(snapshot(out))
    status, _, err = cli("analyze", run_copy, "--windows", 1, "--out", out)
    assert status == 0, err
    assert set(snapshot(out)) == first


@pytest.mark.parametrize("name, tmp", [
    ("/ABS/victim", "victim.1-0123abcd.tmp"), ("../outside/victim", "victim.1-0123abcd.tmp"),
    ("sub/../../outside/victim", "victim.1-0123abcd.tmp"), ("victim", "victim.1-0123abcd.tmp"), ("..", "x.tmp"),
    (ckpt.CONFIG, "../outside/victim.tmp"), (ckpt.CONFIG, "/ABS/victim.tmp"), (ckpt.CONFIG, "config.json.tmp"),
])
def test_a_commit_record_cannot_reach_outside_the_run(run_copy, outside, name, tmp):
    name, tmp = name.replace("/ABS", str(outside)), tmp.replace("/ABS", str(outside))
    (run_copy / ckpt.COMMIT).write_text(json.dumps({name: tmp}))
    (outside / "victim.tmp").write_text("the user's draft\n")
    (run_copy / Path(tmp).name).write_text("planted")
    before = snapshot(outside)
    status, _, err = cli("sample", run_copy, "--prompt", "RO", "--max-new-tokens", 3, "--seed", 1)
    assert status == 0, err
    assert snapshot(outside) == before
    assert not (run_copy / ckpt.COMMIT).exists()  # the untrusted record is dropped, the run stands


def test_a_first_checkpoint_cut_short_after_its_commit_record_is_finished_by_a_reader(run_copy):
    temps = {name: f"{name}.{dead_pid()}-0123abcd.tmp" for name in (ckpt.CONFIG, ckpt.WEIGHTS, ckpt.TOKENIZER)}
    for name, tmp in temps.items():  # the renames had not happened
        os.replace(run_copy / name, run_copy / tmp)
    (run_copy / ckpt.COMMIT).write_text(json.dumps(temps))
    status, _, err = cli("sample", run_copy, "--prompt", "RO", "--max-new-tokens", 3)
    assert status == 0, err  # the run is recognised by its marker and rolled forward
    assert (run_copy / ckpt.CONFIG).is_file() and not (run_copy / ckpt.COMMIT).exists()


@pytest.mark.parametrize("temp", ["{name}.tmp", "{name}.{dead}-0123abcd.tmp"])  # a user's name; one like glassgpt's
def test_a_temporary_file_planted_as_a_link_is_never_written_through(run_copy, outside, data_env, temp):
    links = [run_copy / temp.format(name=name, dead=dead_pid())
             for name in (ckpt.CONFIG, ckpt.WEIGHTS, ckpt.STATE, ckpt.METRICS, ckpt.PLOT)]
    for link in links:
        os.symlink(outside / "victim", link)
    before = snapshot(outside)
    status, _, err = cli("train", "--out", run_copy, "--resume", "max_iters=3")
    assert status == 0, err
    assert snapshot(outside) == before
    assert (run_copy / ckpt.STATE).is_file() and not (run_copy / ckpt.STATE).is_symlink()
    users = temp == "{name}.tmp"  # not glassgpt's name: left alone; a dead writer's: the link (only) removed
    assert all(link.is_symlink() == users for link in links)


def test_metrics_that_is_a_link_is_not_appended_through(run_copy, outside):
    (run_copy / ckpt.METRICS).unlink()
    os.symlink(outside / "victim", run_copy / ckpt.METRICS)
    before = snapshot(outside)
    assert_clean_error(cli("eval", run_copy, "--max-tokens", 64, "--append-metrics"), 1, "symbolic link")
    assert snapshot(outside) == before


# ---------------------------------------------------------------- untrusted files, checked before use

def _edit_config(run_dir: Path, **model) -> None:
    config = json.loads((run_dir / ckpt.CONFIG).read_text())
    config["model"].update(model)
    (run_dir / ckpt.CONFIG).write_text(json.dumps(config))


@pytest.mark.parametrize("edit, code, fragment", [
    ({"n_layer": 3_000_000}, 2, "n_layer is capped"),
    ({"n_layer": 900}, 1, "n_layer=900 but the weights hold 1 layer"),
    ({"vocab_size": 10**15}, 2, "vocab_size is capped"),
    ({"vocab_size": 2**23}, 1, "disagree"),
    ({"n_embd": 32, "n_head": 2}, 1, "disagree"),
    ({"mlp_act": "relu2", "attn_sink": "learned"}, 1, "sink_logit"),
])
def test_config_json_is_checked_against_the_weights_before_a_model_is_built(run_copy, edit, code, fragment):
    _edit_config(run_copy, **edit)
    assert_clean_error(cli("sample", run_copy, "--max-new-tokens", 2), code, fragment)


def test_a_context_too_long_for_memory_is_refused_before_scoring(run_copy):
    _edit_config(run_copy, block_size=2**17)  # RoPE: the weights do not fix the context
    assert_clean_error(cli("eval", run_copy, "--batch-size", 64), 2, "would take about", "--batch-size")
    _edit_config(run_copy, pos_encoding="learned")
    assert_clean_error(cli("sample", run_copy, "--max-new-tokens", 2), 1, "wpe.weight")


@pytest.mark.parametrize("content", [b"", b"\x80\x02}q\x00.", b"garbage", "truncated"])
def test_an_empty_truncated_or_foreign_trainer_state_is_refused_in_one_line(run_copy, content):
    path = run_copy / ckpt.STATE
    if content == "truncated":
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    assert_clean_error(cli("train", "--out", run_copy, "--resume", "max_iters=3"), 1, str(path))


@pytest.mark.parametrize("state", [{}, {"step": 2}, [1, 2], {"step": -1, "optimizer": {}, "rng": [], "loader": {},
                                                                "weights_sha256": "x"}])
def test_an_incomplete_trainer_state_names_what_it_lacks(run_copy, state):
    save_tree(run_copy / ckpt.STATE, state)
    assert_clean_error(cli("train", "--out", run_copy, "--resume", "max_iters=3"), 1, ckpt.STATE)


@pytest.mark.parametrize("tokenizer", [None, 7, {"name": "char"}, {"name": "char", "chars": ""},
                                       {"name": "nope"}, {"name": "char", "chars": "ab"}])
def test_a_bad_tokenizer_description_is_refused_naming_the_file(run_copy, tokenizer):
    config = json.loads((run_copy / ckpt.CONFIG).read_text())
    config["tokenizer"] = tokenizer
    (run_copy / ckpt.CONFIG).write_text(json.dumps(config))
    (run_copy / ckpt.TOKENIZER).write_text("not json")
    status, _, err = cli("sample", run_copy, "--prompt", "a", "--max-new-tokens", 2)
    if tokenizer == {"name": "char", "chars": "ab"}:  # a valid tokenizer smaller than the model's vocabulary
        assert status == 0, err
    else:
        assert_clean_error((status, "", err), 1)


def test_a_torn_or_non_utf8_metrics_file_is_read_around_and_appends_start_a_new_line(run_copy):
    path = run_copy / ckpt.METRICS
    path.write_bytes(path.read_bytes() + b'\xff\xfe not utf-8\n{"kind": "train", "step": 1, "train_lo')
    status, _, err = cli("eval", run_copy, "--max-tokens", 64, "--append-metrics")
    assert status == 0, err
    from glassgpt.training.log import read_metrics_counted

    rows, skipped = read_metrics_counted(run_copy)
    assert rows[-1]["kind"] == "eval_task"  # not glued onto the torn line
    assert skipped == 2
    assert cli("eval", run_copy, "--max-tokens", 64, "--append-metrics")[0] == 0
    assert not path.read_bytes().endswith(b"\n\n")  # after a whole line, no empty one
    assert read_metrics_counted(run_copy)[1] == 2
    status, _, err = cli("analyze", run_copy, "--windows", 1)
    assert status == 0 and "skipped 2 unreadable line(s)" in err, err


WRONG_SHAPED_ROWS = [
    {"kind": "analysis", "step": 1, "icl_score": 0.1, "entropy": "x", "sink_share": [0.2],
     "first_position_share": [0.1]},
    {"kind": "analysis", "step": 1, "icl_score": [], "entropy": [0.1], "sink_share": [0.2],
     "first_position_share": [0.1], "induction": [{"a": 1}]},
    {"kind": "analysis", "step": 1, "icl_score": 0.1, "icl_score_se": "x", "entropy": [0.1], "entropy_se": 3,
     "sink_share": [0.2], "sink_share_se": ["x"], "first_position_share": [0.1]},  # errors not numbers
    {"kind": "eval_task", "step": 1, "task": "hellaswag", "acc": "x", "acc_norm": None},
    {"kind": "eval", "step": 2, "val_loss": "low"},
]


def test_metrics_rows_of_the_wrong_shape_do_not_break_the_report_or_resume(run_copy):
    """Every row kind the report and the resume read, each with a field of the wrong type, in one
    metrics file (one analyze and one resume read them all)."""
    with open(run_copy / ckpt.METRICS, "a") as f:
        f.writelines(json.dumps(row) + "\n" for row in WRONG_SHAPED_ROWS)
    status, _, err = cli("analyze", run_copy, "--windows", 1)
    assert status == 0, err
    status, _, err = cli("train", "--out", run_copy, "--resume", "max_iters=3", "analysis_interval=1")
    assert status == 0, err


def test_a_truncated_safetensors_given_to_convert_hf_is_one_line(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "n_embd": 16, "n_head": 2,
                                                "vocab_size": 50257, "n_positions": 32}))
    from safetensors.torch import save_file

    save_file({"h.0.attn.c_attn.weight": torch.zeros(16, 48)}, str(hf / "model.safetensors"))
    data = (hf / "model.safetensors").read_bytes()
    (hf / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert_clean_error(cli("convert-hf", hf, "--out", tmp_path / "run"), 1, "truncated")
    assert not (tmp_path / "run").exists()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 3_000_000}))
    assert_clean_error(cli("convert-hf", hf, "--out", tmp_path / "run"), 2, "n_layer")


# ---------------------------------------------------------------- bounds on sizes and values

@pytest.mark.parametrize("override, fragment", [
    ("n_embd=65536", "would take about"), ("vocab_size=100000000", "vocab_size is capped"),
    ("batch_size=60000 block_size=4096", "would take about"), ("block_size=1000000", "block_size is capped"),
    ("eval_iters=10000000", "eval_iters is capped"), ("seed=9223372036854775808", "seed is capped"),
    ("seed=-1", "seed must not be negative"), ("n_layer=" + "[" * 3000 + "]" * 3000, "nests too deeply"),
])
def test_sizes_past_their_bounds_are_refused_before_allocating_and_leave_no_run(tmp_path, override, fragment, data_env):
    out = tmp_path / "run"
    assert_clean_error(cli("train", "cpu-baby", *TINY, *override.split(" "), "--out", out), 2, fragment)
    assert not out.exists()


def test_a_deeply_nested_toml_file_is_one_line(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("[model]\nn_layer = " + "[" * 3000 + "]" * 3000 + "\n")
    assert_clean_error(cli("train", path, "--out", tmp_path / "run"), 2, "too deeply")


@pytest.mark.parametrize("args", [["--temperature", "1e-300"], ["--top-p", "1e-300"], ["--temperature", "5e-324"],
                                  ["--temperature", "1e-30", "--top-p", "1e-30", "--top-k", "1"]])
def test_tiny_temperatures_and_top_p_sample_as_greedy_instead_of_underflowing(run_copy, args):
    greedy = cli("sample", run_copy, "--prompt", "RO", "--max-new-tokens", 8, "--temperature", 0)
    status, out, err = cli("sample", run_copy, "--prompt", "RO", "--max-new-tokens", 8, "--seed", 3, *args)
    assert status == 0, err
    if "--top-p" not in args:
        assert out == greedy[1]


@pytest.mark.parametrize("args, fragment", [
    (["--temperature", "inf"], "temperature"), (["--num-samples", "1000000"], "capped"),
    (["--prompt", "RO\udcff"], "not valid UTF-8"), (["--stop", "x" * (MAX_STOP_CHARS + 1)], "capped"),
    (["--stop", "\udcff"], "not valid UTF-8"),
])
def test_sampling_arguments_out_of_bounds_are_one_line(run_copy, args, fragment):
    assert_clean_error(cli("sample", run_copy, "--max-new-tokens", 2, *args), 2, fragment)


def test_an_analysis_prompt_that_is_not_utf8_is_one_line(run_copy):
    assert_clean_error(cli("analyze", run_copy, "--prompt", "RO\udcffMEO"), 2, "not valid UTF-8")


def test_invalid_utf8_on_the_real_command_line_is_one_line(run_copy):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "glassgpt", "sample", str(run_copy), "--prompt", b"RO\xff"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "not valid UTF-8" in result.stderr and "Traceback" not in result.stderr


def test_a_path_of_the_wrong_kind_is_a_usage_error(run_copy, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_clean_error(cli("sample", tmp_path / "file"), 2, "is a file")
    assert_clean_error(cli("analyze", run_copy, "--out", tmp_path / "file"), 2, "not a folder")
    assert_clean_error(cli("analyze", run_copy, "--out", tmp_path / "file" / "sub"), 2, "choose another path")


def test_the_demo_builds_for_a_run_of_one_layer_and_one_head(tmp_path):
    pytest.importorskip("gradio")
    from glassgpt.demo import Demo, build_app

    model, tokenizer, _ = ckpt.load_run(make_tiny_run(tmp_path / "run", n_layer=1, n_head=1))
    build_app(Demo(model, tokenizer))


def test_the_demo_refuses_inputs_a_page_should_not_send(tmp_path):
    from glassgpt.demo import Demo
    from glassgpt.errors import UsageError

    model, tokenizer, _ = ckpt.load_run(make_tiny_run(tmp_path / "run"))
    demo = Demo(model, tokenizer)
    for kwargs in ({"seed": 2**64}, {"seed": "x"}, {"stop": "R" * (MAX_STOP_CHARS + 1)}, {"temperature": None},
                   {"max_new_tokens": 1.5}, {"top_k": float("nan")}):
        args = dict(prompt="RO", max_new_tokens=4, temperature=0.8, top_k=0, top_p=1.0, seed=1, stop="")
        args.update(kwargs)
        with pytest.raises(UsageError):
            list(demo.generate(**args))


# ---------------------------------------------------------------- stop strings: right, and linear

def _naive_stop(stops: list[str], chunks: list[str]) -> tuple[str, bool]:
    """The reference: the whole text, cut where the first stop string ends earliest."""
    text = "".join(chunks)
    ends = [(text.find(s) + len(s), -len(s)) for s in stops if s in text]
    if not ends:
        return text, False
    end, neg_len = min(ends)
    return text[:end + neg_len], True


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text("ab\n", min_size=1, max_size=6), min_size=1, max_size=3),
       st.lists(st.text("ab\n", max_size=5), max_size=12))
def test_stop_strings_are_found_across_any_split_of_the_text(stops, chunks):
    assert push_all(StopText(stops), chunks) == _naive_stop(stops, chunks)


def test_stop_matching_does_work_linear_in_the_text_added():
    stop = "a" * (MAX_STOP_CHARS - 1) + "b"  # the worst case of the old quadratic check
    matcher = StopText([stop])
    steps = 0
    original = StopText._advance

    def counting(self, i, char):
        nonlocal steps
        steps += 1
        return original(self, i, char)

    StopText._advance = counting
    try:
        shown = "".join(matcher.push("a")[0] for _ in range(5000))
    finally:
        StopText._advance = original
    assert steps == 5000  # one automaton step per character added, whatever the stop string's length
    assert matcher.push("b") == ("", True)
    assert shown == "a" * (5000 - (MAX_STOP_CHARS - 1))  # all but the start of the stop string


# ---------------------------------------------------------------- sharded checkpoints (parallel=fsdp)

def _index_naming(folder: Path, path: str) -> bytes:
    """The folder's index, with its first tensor read from `path`."""
    index = json.loads((folder / ".metadata.json").read_text())
    next(iter(index["tensors"].values()))["chunks"][0]["file"] = path
    return json.dumps(index).encode()


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _plant(kind: str, folder: Path, outside: Path) -> None:
    import pickle

    if kind == "missing shard":
        (folder / "__0_0.distcp").unlink()
    elif kind == "truncated shard":
        shard = folder / "__0_0.distcp"
        shard.write_bytes(shard.read_bytes()[:100])
    elif kind == "no index":
        (folder / ".metadata.json").unlink()
    elif kind == "pickle payload":  # DCP's own index format: a pickle, never read
        (folder / ".metadata.json").unlink()
        (folder / ".metadata").write_bytes(pickle.dumps(_Payload()))
    elif kind == "shard is a pipe":
        (folder / "__0_0.distcp").unlink()
        os.mkfifo(folder / "__0_0.distcp")
    elif kind == "garbage index":
        (folder / ".metadata.json").write_bytes(b"\x80\x04garbage")
    elif kind == "index reaching outside":
        (folder / ".metadata.json").write_bytes(_index_naming(folder, str(outside / "victim")))
    elif kind == "index reaching up":
        (folder / ".metadata.json").write_bytes(_index_naming(folder, "../../outside/victim"))
    elif kind == "folder is a link":
        shutil.rmtree(folder)
        os.symlink(outside, folder)


@pytest.mark.parametrize("kind, fragment", [
    ("missing shard", "__0_0.distcp is missing"), ("truncated shard", "is truncated"),
    ("no index", ".metadata.json is missing"), ("shard is a pipe", "__0_0.distcp is a named pipe"), ("pickle payload", "refusing"),
    ("garbage index", "not a checkpoint index glassgpt wrote"),
    ("index reaching outside", "not a shard of the folder"), ("index reaching up", "not a shard of the folder"),
    ("folder is a link", "is missing"),
])
def test_a_damaged_sharded_checkpoint_is_refused_in_one_line_and_nothing_is_overwritten(
        sharded_run, outside, kind, fragment, monkeypatch):
    monkeypatch.chdir(outside)  # where a payload's `touch PWNED` would land
    _plant(kind, shard_folder(sharded_run), outside)
    before, outside_before = snapshot(sharded_run), snapshot(outside)
    with within(60):  # a shard that blocks its reader fails the test, not the suite
        result = cli("train", "--out", sharded_run, "--resume", "max_iters=4")
    assert_clean_error(result, 1, fragment)
    assert snapshot(sharded_run) == before and snapshot(outside) == outside_before
    assert not (outside / "PWNED").exists()


def test_shards_of_another_model_shape_are_refused_before_loading(sharded_run, tmp_path, data_env):
    other = tmp_path / "other"
    train(load_run_config("cpu-baby", [*TINY, "parallel=fsdp", "n_embd=32"]), other, log=lambda line: None)
    folder = shard_folder(sharded_run)
    shutil.rmtree(folder)
    shutil.copytree(shard_folder(other), folder)
    before = snapshot(sharded_run)
    assert_clean_error(cli("train", "--out", sharded_run, "--resume", "max_iters=4"), 1, "another model shape")
    assert snapshot(sharded_run) == before


def test_a_trainer_state_naming_a_shard_folder_outside_the_run_is_refused(sharded_run, outside):
    state = ckpt.load_trainer_state(sharded_run)
    state["sharded"] = "../outside"
    save_tree(sharded_run / ckpt.STATE, state)
    assert_clean_error(cli("train", "--out", sharded_run, "--resume", "max_iters=4"), 1, "no name glassgpt writes")


def test_stale_shard_folders_are_dropped_but_what_glassgpt_did_not_write_stays(sharded_run, outside):
    """A killed writer's orphan goes; a file of the user's inside a folder of that name, and a
    link of that name, stay (the link's target untouched)."""
    orphan = sharded_run / "shards-000000009-0123abcd"
    shutil.copytree(shard_folder(sharded_run), orphan)
    mixed = sharded_run / "shards-000000008-0123abcd"
    shutil.copytree(shard_folder(sharded_run), mixed)
    (mixed / "notes.txt").write_text("the user's\n")
    os.symlink(outside, sharded_run / "shards-000000007-0123abcd")
    outside_before = snapshot(outside)
    status, _, err = cli("train", "--out", sharded_run, "--resume", "max_iters=3")
    assert status == 0, err
    assert not orphan.exists() and (mixed / "notes.txt").read_text() == "the user's\n"
    assert sorted(p.name for p in mixed.iterdir()) == ["notes.txt"]
    assert (sharded_run / "shards-000000007-0123abcd").is_symlink() and snapshot(outside) == outside_before


def test_an_unknown_parallel_mode_muon_under_fsdp_and_switching_modes_on_resume_are_usage_errors(
        tmp_path, run_copy, sharded_run):
    assert_clean_error(cli("train", "cpu-baby", *TINY, "parallel=tp", "--out", tmp_path / "a"), 2,
                   "parallel must be one of ddp, fsdp, got 'tp'")
    assert_clean_error(cli("train", "cpu-baby", *TINY, "parallel=fsdp", "optimizer=muon", "--out", tmp_path / "b"), 2,
                   "optimizer=muon needs each weight matrix whole")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    for run, now in ((run_copy, "fsdp"), (sharded_run, "ddp")):  # the saved optimizer state has the mode's format
        before = snapshot(run)
        assert_clean_error(cli("train", "--out", run, "--resume", "max_iters=3", f"parallel={now}"), 2,
                       f"with parallel={now}")
        assert snapshot(run) == before


# ---------------------------------------------------------------- fuzzing every file of a run

def _mutations(draw, run_dir: Path, outside: Path) -> str:
    files = sorted(p.name for p in run_dir.iterdir() if p.is_file())
    main = [ckpt.CONFIG, ckpt.WEIGHTS, ckpt.STATE, ckpt.METRICS, ckpt.COMMIT]  # the files every command reads
    name = draw(st.sampled_from(main) | st.sampled_from(files))
    path = run_dir / name
    kind = draw(st.sampled_from(["truncate", "empty", "garbage", "non-utf8", "json-type", "swap", "symlink-out",
                                 "folder", "commit-escape", "flip", "config-field", "config-field"]))
    data = path.read_bytes() if path.is_file() else b""
    if kind == "truncate":
        path.write_bytes(data[: draw(st.integers(0, max(len(data) - 1, 0)))])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(draw(st.binary(max_size=64)))
    elif kind == "non-utf8":
        path.write_bytes(data[: len(data) // 2] + b"\xff\xfe\xc0" + data[len(data) // 2:])
    elif kind == "json-type":
        path.write_text(json.dumps(draw(st.sampled_from([[], 1, "x", None, {"model": []}, {"model": {"n_layer": []}},
                                                          {"kind": "train", "step": "3"}]))))
    elif kind == "swap":
        other = run_dir / draw(st.sampled_from(files))
        path.write_bytes(other.read_bytes())
    elif kind == "symlink-out":
        path.unlink(missing_ok=True)
        os.symlink(outside / "victim", path)
    elif kind == "folder":
        path.unlink(missing_ok=True)
        path.mkdir()
        (path / "inside").write_text("x")
    elif kind == "commit-escape":
        (run_dir / ckpt.COMMIT).write_text(json.dumps([str(outside / "victim"), "../outside/victim", name]))
        (run_dir / (name + ".tmp")).write_text("planted")
    elif kind == "config-field":  # one setting of config.json set to a hostile value
        config = json.loads((run_dir / ckpt.CONFIG).read_text())
        section = draw(st.sampled_from(["model", "train", "tokenizer"]))
        key = draw(st.sampled_from(sorted(config[section])))
        config[section][key] = draw(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                                              st.floats(allow_nan=True), st.text(max_size=8),
                                              st.lists(st.integers(), max_size=3), st.just({"a": 1})))
        (run_dir / ckpt.CONFIG).write_text(json.dumps(config))
        return f"config {section}.{key}={config[section][key]!r}"
    elif kind == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        path.write_bytes(data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1:])
    return f"{kind} {name}"


COMMANDS = {
    "sample": lambda run: ["sample", run, "--prompt", "RO", "--max-new-tokens", 4, "--seed", 1],
    "eval": lambda run: ["eval", run, "--max-tokens", 64, "--append-metrics"],
    "analyze": lambda run: ["analyze", run, "--windows", 1],
    "resume": lambda run: ["train", "--out", run, "--resume", "max_iters=3"],
    "circuit": lambda run: ["circuit", run, "--task", "induction", "--num-pairs", 4, "--steps", 1],
}


# Corrupted runs per command: sampling and eval take a fraction of a second each; a resume trains a
# step, an analysis draws every picture and a circuit patches every edge, so those three see fewer.
EXAMPLES = {"sample": 30, "eval": 30, "analyze": 15, "resume": 15, "circuit": 15}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_fuzzed_runs_give_one_clear_line_and_touch_nothing_outside(command, trained_run, tmp_path_factory, data_env):
    @settings(max_examples=EXAMPLES[command], deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True)
    @given(st.data())
    def check(data):
        root = tmp_path_factory.mktemp("fuzz")
        run_dir, outside = root / "run", root / "outside"
        shutil.copytree(trained_run, run_dir, symlinks=True)
        outside.mkdir()
        (outside / "victim").write_text("the user's own file\n")
        what = _mutations(data.draw, run_dir, outside)
        outside_before = snapshot(outside)
        names_before = {p.name for p in run_dir.iterdir()} - {n + ".tmp" for n in ckpt.RUN_FILES} - {ckpt.COMMIT}
        status, _, err = cli(*COMMANDS[command](run_dir))
        assert status in (0, 1, 2), (what, status, err)
        assert "Traceback" not in err, (what, err)
        if status:
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("glassgpt: error: "), (what, err)
        assert snapshot(outside) == outside_before, what
        assert names_before <= {p.name for p in run_dir.iterdir()}, what  # no file of the run lost
        shutil.rmtree(root)

    check()



# ---------------------------------------------------------------- fuzzing a prepared dataset

DATA_COMMANDS = {
    "train": lambda tmp: ["train", "cpu-baby", *TINY, "--out", tmp / "new-run"],
    "eval": lambda tmp: ["eval", tmp / "run", "--max-tokens", 64],
    "prepare": lambda tmp: ["prepare", "shakespeare-char"],
}


def _corrupt_dataset(draw, folder: Path) -> str:
    name = draw(st.sampled_from(["meta.json", "train.bin", "val.bin"]))
    path = folder / name
    data = path.read_bytes()
    kind = draw(st.sampled_from(["empty", "truncate", "garbage", "ids-past-vocab", "json-type", "meta-field",
                                 "folder", "missing"]))
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncate":
        path.write_bytes(data[: draw(st.integers(0, max(len(data) - 1, 0)))])
    elif kind == "garbage":
        path.write_bytes(draw(st.binary(min_size=1, max_size=64)) * 100)
    elif kind == "ids-past-vocab" and name != "meta.json":
        path.write_bytes(b"\xff" * len(data))  # every id 255 or 65535: past a 65-character vocabulary
    elif kind == "json-type" and name == "meta.json":
        path.write_text(json.dumps(draw(st.sampled_from([[], 1, "x", None, {"tokens": "many"}]))))
    elif kind == "meta-field" and name == "meta.json":
        meta = json.loads(data)
        key = draw(st.sampled_from(sorted(meta)))
        meta[key] = draw(st.one_of(st.none(), st.integers(-2**40, 2**40), st.text(max_size=6),
                                   st.lists(st.integers(), max_size=2), st.just({"train": -5, "val": "x"})))
        path.write_text(json.dumps(meta))
        return f"meta {key}={meta[key]!r}"
    elif kind == "folder":
        path.unlink()
        path.mkdir()
    elif kind == "missing":
        path.unlink()
    return f"{kind} {name}"


@pytest.mark.parametrize("command", sorted(DATA_COMMANDS))
def test_fuzzed_datasets_give_one_clear_line_and_prepare_force_repairs_them(command, trained_run, prepared_data_dir,
                                                                           tmp_path_factory, monkeypatch, mirror):
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.data())
    def check(data):
        root = tmp_path_factory.mktemp("data-fuzz")
        shutil.copytree(prepared_data_dir / "shakespeare-char", root / "data" / "shakespeare-char")
        shutil.copytree(trained_run, root / "run", symlinks=True)
        monkeypatch.setenv("GLASSGPT_DATA_DIR", str(root / "data"))
        monkeypatch.setenv("GLASSGPT_MIRROR", str(mirror))
        what = _corrupt_dataset(data.draw, root / "data" / "shakespeare-char")
        status, _, err = cli(*DATA_COMMANDS[command](root))
        assert status in (0, 1, 2) and "Traceback" not in err, (what, status, err)
        if status:
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and "error: " in lines[0], (what, err)
        status, _, err = cli("prepare", "shakespeare-char", "--force")  # the advised repair always works
        assert status == 0, (what, err)
        status, _, err = cli("eval", root / "run", "--max-tokens", 64)
        assert status == 0, (what, err)
        shutil.rmtree(root)

    check()
