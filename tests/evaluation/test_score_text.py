"""Scoring any text with a run (`eval --text`), and preparing text with a run's own tokenizer
(`prepare text --tokenizer-from`)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from glassgpt.checkpoint import load_run, save_run
from glassgpt.config import RunConfig, TrainConfig
from glassgpt.data import TokenDataset
from glassgpt.evaluation.text import worst_spans
from glassgpt.model import GPT
from glassgpt.tokenizer import get_tokenizer

from conftest import assert_clean_error, cli, make_tiny_run, tiny_config

TEXT = "ROMEO: wherefore art thou?\nJULIET: here, at the window.\n" * 3  # 168 characters


@pytest.fixture
def char_run(tmp_path):
    return make_tiny_run(tmp_path / "run", text=TEXT + "xyz")


def test_eval_text_scores_a_file_outside_any_dataset_as_the_model_does(char_run, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text(TEXT, encoding="utf-8")
    status, out, err = cli("eval", char_run, "--text", path, "--json", "--context", "32", "--stride", "16")
    assert status == 0, err
    result = json.loads(out)
    scored = result["files"][0]
    model, tokenizer, _ = load_run(char_run)
    ids = torch.tensor([tokenizer.encode(TEXT)])  # (1, T); a char tokenizer has no end-of-text token
    with torch.no_grad():
        logits = torch.cat([model(ids[:, :32])[0]] + [model(ids[:, s - 16: s + 16])[0][:, 16:]  # 16 new targets
                                                       for s in range(32, ids.size(1) - 1, 16)], dim=1)
    losses = F.cross_entropy(logits[0, : ids.size(1) - 1].float(), ids[0, 1:], reduction="none")
    assert scored["tokens"] == len(TEXT) - 1 and scored["bytes"] == len(TEXT) - 1  # the first token is context
    assert scored["loss"] == pytest.approx(float(losses.mean()), abs=1e-4)
    assert scored["bits_per_byte"] == pytest.approx(float(losses.sum()) / math.log(2) / (len(TEXT) - 1), abs=1e-4)
    assert scored["loss_se"] > 0 and scored["bits_per_byte_se"] > 0
    spans = scored["worst_spans"]
    assert len(spans) == 5 and spans == sorted(spans, key=lambda s: -s["bits_per_byte"])
    assert all(TEXT.encode()[s["byte"]:].decode().startswith(s["text"]) for s in spans)
    assert all(s["line"] == TEXT[: s["byte"]].count("\n") + 1 for s in spans)
    status, out, _ = cli("eval", char_run, "--text", path, path)  # two files: each, and all of them
    assert status == 0 and "all files" in out and "bits per byte" in out and "worst-predicted spans" in out
    assert "±" in out


def test_a_tokenizer_with_an_end_of_text_token_scores_every_token_after_it(tmp_path):
    tokenizer = get_tokenizer("gpt2")
    config = tiny_config(vocab_size=tokenizer.vocab_size, block_size=64)
    save_run(tmp_path / "run", GPT(config), tokenizer, RunConfig(config, TrainConfig()))
    path = tmp_path / "text.md"
    path.write_text("The quick brown fox jumps over the lazy dog. " * 4, encoding="utf-8")
    status, out, err = cli("eval", tmp_path / "run", "--text", path, "--json")
    assert status == 0, err
    scored = json.loads(out)["files"][0]
    assert scored["tokens"] == len(tokenizer.encode(path.read_text())) and scored["bytes"] == path.stat().st_size


def test_the_worst_spans_are_the_worst_and_never_overlap():
    bits = np.ones(100)
    bits[40:56] = 9.0  # one bad stretch
    bits[80:84] = 5.0
    starts = worst_spans(bits, np.ones(100, dtype=np.int64), count=3, span=16)
    assert starts[0] == 40 and all(abs(a - b) >= 16 for i, a in enumerate(starts) for b in starts[i + 1:])
    assert 68 <= starts[1] <= 80  # the second one covers the smaller bump


@pytest.mark.parametrize("content, fragment", [
    (b"\xff\xfe not utf-8", "not UTF-8"),
    ("caf\u00e9 \u00fcber".encode(), "never seen"),
    (b"", "empty"),
])
def test_bad_text_is_one_line_naming_the_file(char_run, tmp_path, content, fragment):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    assert_clean_error(cli("eval", char_run, "--text", path), 2, fragment, "bad.txt")


def test_text_options_that_belong_to_a_split_are_refused(char_run, tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(TEXT)
    assert_clean_error(cli("eval", char_run, "--text", path, "--dataset", "shakespeare-char"), 2, "--dataset", "--text")
    assert_clean_error(cli("eval", char_run, "--text", tmp_path / "missing.txt"), 2, "missing.txt")


def test_prepare_text_with_a_runs_tokenizer_gives_data_the_run_evaluates_on(char_run, dirs, tmp_path):
    (tmp_path / "more.txt").write_text(TEXT * 4)
    status, out, err = cli("prepare", "text", tmp_path / "more.txt", "--name", "more", "--tokenizer-from", char_run)
    assert status == 0, err
    assert "eval" in out and f"init_from={char_run}" in out
    _, tokenizer, _ = load_run(char_run)
    dataset = TokenDataset.load("more")
    assert dataset.tokenizer.to_dict() == tokenizer.to_dict()
    assert dataset.meta["request"]["tokenizer_from"] == str(char_run)
    assert cli("prepare", "text", tmp_path / "more.txt", "--name", "more", "--tokenizer-from", char_run)[0] == 0
    status, out, err = cli("eval", char_run, "--dataset", "more")
    assert status == 0 and "more val split" in out, err
    (tmp_path / "odd.txt").write_text(TEXT + "\u00e9")
    assert_clean_error(cli("prepare", "text", tmp_path / "odd.txt", "--name", "odd", "--tokenizer-from", char_run), 2,
                   "never seen", "'\u00e9'")
    assert_clean_error(cli("prepare", "text", tmp_path / "more.txt", "--name", "x", "--tokenizer-from", char_run,
                       "--tokenizer", "char"), 2, "not both")
