"""`glassgpt circuit`: the folder it writes (circuit.json's contract, the picture, the graph view whose
numbers are the JSON's), its tasks (induction, repeat, a pairs file) and its refusals, one line each."""

import json
import re

import numpy as np
import pytest
import torch

from conftest import assert_clean_error, make_tiny_run, run_cli
from induction_model import make_induction_run

from glassgpt.checkpoint import load_run
from glassgpt.circuits import Graph, PairRuns, faithfulness, induction_task, read_pairs, repeat_task
from glassgpt.circuits.metrics import LogitDifference, PositionLoss
from glassgpt.circuits.tasks import find_repeats
from glassgpt.errors import UsageError


@pytest.fixture(scope="module")
def induction_run(tmp_path_factory):
    return make_induction_run(tmp_path_factory.mktemp("circuit") / "run")


@pytest.fixture(scope="module")
def written(induction_run):
    """`glassgpt circuit RUN --task induction --target 0.9`, run once: (result, RUN/circuit)."""
    result = run_cli("circuit", induction_run, "--task", "induction", "--target", "0.9", "--num-pairs", "16")
    return result, induction_run / "circuit"


def test_the_command_writes_the_contract_and_names_the_induction_circuit(written, induction_run):
    result, out = written
    assert result.returncode == 0, result.stderr
    assert "Smallest circuit reaching faithfulness 0.9" in result.stdout and "circuit.html" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["circuit.html", "circuit.json", "circuit.png"]
    record = json.loads((out / "circuit.json").read_text())
    model, tokenizer, _ = load_run(induction_run)
    graph = Graph.of(model)
    assert record["nodes"] == graph.nodes == ["embed"] + [f"L{i}.H{h}" for i in range(2) for h in range(4)] + ["logits"]
    assert [(e["src"], e["dst"]) for e in record["edges"]] == [tuple(e) for e in graph.edges]
    assert all(isinstance(e["score"], float) and isinstance(e["exact"], float) for e in record["edges"])
    circuit = {(e["src"], e["dst"]) for e in record["circuit"]}
    assert {("L0.H0", "L1.H0:k"), ("L1.H0", "logits")} <= circuit <= {(e["src"], e["dst"]) for e in record["edges"]}
    assert record["faithfulness"] >= 0.9 and len(circuit) == record["circuit_edges"] <= 0.1 * record["total_edges"]
    assert record["curve"][0] == [0, pytest.approx(0.0, abs=1e-4)]
    assert record["curve"][-1] == [81, pytest.approx(1.0, abs=1e-4)]
    assert record["agreement"]["spearman_abs"] >= 0.8
    heads = {h["node"]: h for h in record["heads"]}
    assert heads["L0.H0"]["in_circuit"] and heads["L1.H0"]["in_circuit"] and not heads["L1.H3"]["in_circuit"]
    assert heads["L1.H0"]["patched"] > 1 and abs(heads["L1.H3"]["patched"]) < 0.1  # the heads' own effects agree
    # the faithfulness it reports is what patching the same pairs gives here
    runs = PairRuns(model, induction_task(tokenizer.vocab_size, model.config.block_size, pairs=16, seed=0).batches)
    assert faithfulness(runs, graph.edge_mask(circuit)).value == pytest.approx(record["faithfulness"], abs=1e-5)


def test_the_views_numbers_are_the_jsons(written):
    _, out = written
    record = json.loads((out / "circuit.json").read_text())
    page = (out / "circuit.html").read_text()
    drawn = re.findall(r'<line class="gg-edge"[^>]*data-src="([^"]+)" data-dst="([^"]+)" data-score="([^"]+)" '
                       r'data-in-circuit="([01])"', page)
    assert len(drawn) == len(record["edges"])
    scores = {(e["src"], e["dst"]): e["score"] for e in record["edges"]}
    assert {(s, d): float(v) for s, d, v, _ in drawn} == scores
    assert {(s, d) for s, d, _, kept in drawn if kept == "1"} == {(e["src"], e["dst"]) for e in record["circuit"]}
    assert page.count('class="gg-node"') == len(record["nodes"])
    assert 'data-node="L1.H0" data-layer="1" data-head="0"' in page
    assert 'class="gg-view"' in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_a_pairs_file_gives_the_logit_difference_and_a_circuit(tmp_path, induction_run):
    pairs = tmp_path / "pairs.jsonl"
    lines = [{"clean": "abcdabc", "corrupted": "efghabc", "answer": "d", "wrong": "h"},
             {"clean": [4, 5, 6, 7, 4, 5, 6], "corrupted": [8, 9, 10, 11, 4, 5, 6], "answer": 7, "wrong": 11},
             {"clean": "jkajk", "corrupted": "bckjk", "answer": "a", "wrong": "c"}]
    pairs.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    result = run_cli("circuit", induction_run, "--pairs", pairs, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "circuit.json").read_text())
    assert record["metric"]["name"] == "logit-diff" and record["task"]["pairs"] == 3
    assert record["metric"]["clean"] > record["metric"]["corrupted"] + 1  # the clean prompts' answers win


def test_pairs_are_batched_by_length_with_their_metric(tmp_path, induction_run):
    _, tokenizer, _ = load_run(induction_run)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"clean": "abcab", "corrupted": "dbcab", "answer": "c", "wrong": "d"}\n'
                     '{"clean": "abab", "corrupted": "cdab", "answer": "a", "wrong": "c"}\n'
                     '{"clean": [1, 2, 3, 1, 2], "corrupted": [4, 5, 3, 1, 2], "answer": 3, "wrong": 6}\n')
    task = read_pairs(pairs, tokenizer, 12, 24)
    assert task.metric == "logit-diff" and [b.clean.shape for b in task.batches] == [(1, 4), (2, 5)]
    assert isinstance(task.batches[1].metric, LogitDifference)
    assert task.batches[1].metric.answer.tolist() == [2, 3] and task.batches[1].metric.position.tolist() == [4, 4]
    as_loss = read_pairs(pairs, tokenizer, 12, 24, metric="loss")
    assert isinstance(as_loss.batches[0].metric, PositionLoss)
    assert as_loss.batches[0].metric.targets.tolist() == [[-1, -1, -1, 0]]  # the answer, at the last position
    pairs.write_text('{"clean": "abcab", "corrupted": "dbcab", "positions": [1, 3]}\n')
    assert read_pairs(pairs, tokenizer, 12, 24).batches[0].metric.targets.tolist() == [[-1, 2, -1, 1, -1]]


# ---------------------------------------------------------------- the built-in tasks

def test_the_induction_task_repeats_the_second_half_and_corrupts_only_the_first():
    task = induction_task(vocab_size=64, block_size=32, pairs=5, seed=3)
    batch = task.batches[0]
    n = 8
    assert batch.clean.shape == batch.corrupted.shape == (5, 16)
    assert torch.equal(batch.clean[:, :n], batch.clean[:, n:])
    assert torch.equal(batch.corrupted[:, n:], batch.clean[:, n:])
    for clean, corrupted in zip(batch.clean, batch.corrupted):
        assert not set(clean[:n].tolist()) & set(corrupted[:n].tolist())  # nothing of the repeat before it
    targets = batch.metric.targets
    assert (targets[:, :n] == -1).all() and (targets[:, -1] == -1).all()
    assert torch.equal(targets[:, n: 2 * n - 1], batch.clean[:, n + 1:])


def test_the_repeat_task_finds_spans_that_repeat_and_corrupts_their_first_occurrence():
    rng = np.random.default_rng(0)
    text = rng.integers(20, 60, size=3000)
    span = np.arange(1, 7)  # six tokens that occur nowhere else, twice in a window
    for start in (100, 900, 2000):
        text[start: start + 6] = span
        text[start + 15: start + 21] = span
    assert find_repeats(text, 6, 32, limit=10) == [(100, 115), (900, 915), (2000, 2015)]
    task = repeat_task(text, block_size=32, pairs=3, span=6)
    batch = task.batches[0]
    assert batch.clean.shape == (3, 32)
    for clean, corrupted, targets in zip(batch.clean, batch.corrupted, batch.metric.targets):
        assert clean[-6:].tolist() == span.tolist() and corrupted[-6:].tolist() == span.tolist()
        first = clean.tolist().index(1)
        assert clean[first: first + 6].tolist() == span.tolist() != corrupted[first: first + 6].tolist()
        assert torch.equal(clean[:first], corrupted[:first]) and torch.equal(clean[first + 6:], corrupted[first + 6:])
        assert targets[-6:-1].tolist() == span[1:].tolist() and (targets[:-6] == -1).all() and targets[-1] == -1
    with pytest.raises(UsageError, match="only 0 spans of 6 tokens that repeat"):
        repeat_task(rng.integers(0, 1000, size=500), block_size=32, span=6)


def test_the_repeat_task_reads_the_runs_validation_text(tmp_path, small_data_env):
    from glassgpt.checkpoint import save_run
    from glassgpt.config import RunConfig, TrainConfig
    from glassgpt.data import TokenDataset
    from glassgpt.model import GPT

    from conftest import tiny_config

    tokenizer = TokenDataset.load("shakespeare-char").tokenizer
    config = tiny_config(vocab_size=tokenizer.vocab_size, block_size=32)
    save_run(tmp_path / "run", GPT(config), tokenizer, RunConfig(config, TrainConfig(dataset="shakespeare-char")))
    result = run_cli("circuit", tmp_path / "run", "--task", "repeat", "--span", "4", "--num-pairs", "4",
                     "--steps", "2")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "run" / "circuit" / "circuit.json").read_text())
    assert record["task"]["name"] == "repeat" and record["task"]["pairs"] == 4 and record["metric"]["name"] == "loss"
    make_tiny_run(tmp_path / "other")  # another tokenizer than the dataset's
    assert_clean_error(run_cli("circuit", tmp_path / "other", "--task", "repeat"), 2, "another tokenizer")


# ---------------------------------------------------------------- refusals: one line, exit 2

BAD_PAIRS = {
    "unequal": ('{"clean": "abcab", "corrupted": "abcabc", "answer": "c", "wrong": "d"}', "must be the same length"),
    "outside": ('{"clean": "abcab", "corrupted": "dbcab", "answer": 99, "wrong": "d"}', "outside the vocabulary"),
    "empty": ("\n\n", "holds no pairs"),
    "not json": ('{"clean": "abc",', "line 1 is not valid JSON"),
    "two tokens": ('{"clean": "abcab", "corrupted": "dbcab", "answer": "cd", "wrong": "d"}', "is 2 tokens, not 1"),
    "no wrong": ('{"clean": "abcab", "corrupted": "dbcab", "answer": "c"}\n', "logit-diff cannot be computed"),
    "unknown character": ('{"clean": "abcaz", "corrupted": "dbcab", "answer": "c", "wrong": "d"}', "'z'"),
}


@pytest.mark.parametrize("case", sorted(BAD_PAIRS))
def test_bad_pairs_are_refused_in_one_line(case, tmp_path, induction_run):
    text, fragment = BAD_PAIRS[case]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(text)
    extra = ["--metric", "logit-diff"] if case == "no wrong" else []
    result = run_cli("circuit", induction_run, "--pairs", pairs, "--out", tmp_path / "out", *extra)
    assert_clean_error(result, 2, fragment)
    assert not (tmp_path / "out").exists()


def test_other_refusals_are_one_line(tmp_path, induction_run):
    assert_clean_error(run_cli("circuit", induction_run, "--task", "induction", "--metric", "logit-diff"), 2,
                       "--metric logit-diff cannot be computed for this task")
    assert_clean_error(run_cli("circuit", induction_run), 2, "one of the arguments --task --pairs is required")
    assert_clean_error(run_cli("circuit", induction_run, "--task", "induction", "--target", "1.5"), 2, "--target")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own file\n")
    assert_clean_error(run_cli("circuit", induction_run, "--task", "induction", "--out", mine), 2, "notes.txt")
    assert (mine / "notes.txt").read_text() == "the user's own file\n"
    gated = make_tiny_run(tmp_path / "gated", attn_sink="gate")
    assert_clean_error(run_cli("circuit", gated, "--task", "induction"), 2, "attn_sink='gate'")


# ---------------------------------------------------------------- in a browser

def test_the_graph_view_shows_numbers_and_opens_a_head_offline(written, open_page):
    _, out = written
    opened = open_page((out / "circuit.html").resolve().as_uri())
    page = opened.page
    page.wait_for_selector(".gg-circuit-view[data-state=ready]", timeout=20_000)
    page.wait_for_selector(".gg-view[data-state=ready]", timeout=20_000)
    edge = '.gg-edge[data-src="L0.H0"][data-dst="L1.H0:k"]'
    page.focus(edge)  # (a vertical line has no width to hover in a test; focus shows the same)
    score = float(page.get_attribute(edge, "data-score"))
    assert f"score {score:+.4f}" in page.inner_text(".gg-circuit-view .gg-info")
    page.hover('.gg-node[data-node="L0.H0"]')
    assert "L0.H0; node score" in page.inner_text(".gg-circuit-view .gg-info")
    page.click('.gg-node[data-node="L1.H2"]')
    assert page.get_attribute(".gg-attention", "data-layer") == "1"
    assert page.get_attribute(".gg-attention", "data-head") == "2"
    assert page.get_attribute(".gg-circuit-view", "data-opened") == "L1.H2"


def test_the_report_names_the_runs_circuit(written, induction_run, tmp_path):
    from glassgpt.analysis.report import write_report

    out = write_report(induction_run, prompt="abcdefabcdef", out=tmp_path / "analysis")
    page = (out / "report.html").read_text()
    record = json.loads((written[1] / "circuit.json").read_text())
    assert "<h2 id='circuit'>Circuit</h2>" in page and str(written[1] / "circuit.html") in page
    assert record["summary"].splitlines()[3].replace("'", "&#x27;") in page
    assert page.count('class="gg-circuit-view"') == 1 and page.count('<line class="gg-edge"') == len(record["edges"])
    (written[1] / "circuit.json").write_text(json.dumps({**record, "nodes": ["embed", "logits"]}))  # damaged
    try:
        damaged = write_report(induction_run, prompt="abcdefabcdef", out=tmp_path / "again")
        assert "gg-circuit-view" not in (damaged / "report.html").read_text()  # left out, not a traceback
    finally:
        (written[1] / "circuit.json").write_text(json.dumps(record, indent=1))
