"""The natural-text recipes (`induction-text`, `depth-scan`) at a tiny budget on a dataset of one's own,
the options they use (`repeat_fraction`, `min_train_tokens`), and their refusal of a corpus too small."""

import json

import numpy as np
import pytest
import torch

from glassgpt.analysis.phenomena import depth_scan_check, induction_text_check
from glassgpt.config import load_preset, load_run_config
from glassgpt.data import BatchLoader, eval_windows
from glassgpt.data.loader import repeat_spans
from glassgpt.errors import UsageError

from conftest import assert_clean_error, run_cli

RECIPES = ("induction-text", "depth-scan")
TEXT = "".join(f"{name}: {line}\n" for name, line in [
    ("ROMEO", "But soft, what light through yonder window breaks?"), ("JULIET", "O Romeo, Romeo, wherefore art thou?"),
    ("MERCUTIO", "A plague o' both your houses!"), ("NURSE", "Faith, I can tell how to look of him."),
] * 60)  # about 10 KB


def prepare_own_text(root, tokenizer: str) -> dict:
    """TEXT prepared as a user would (`prepare text FILE --name mini --tokenizer ...`) into `root`: the
    environment that finds it."""
    (root / "play.txt").write_text(TEXT)
    env = {"GLASSGPT_DATA_DIR": str(root / "data")}
    result = run_cli("prepare", "text", str(root / "play.txt"), "--name", "mini", "--tokenizer", tokenizer, env=env)
    assert result.returncode == 0, result.stderr
    return env


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """A dataset of one's own, in characters."""
    return prepare_own_text(tmp_path_factory.mktemp("own"), "char")


@pytest.mark.parametrize("preset", RECIPES)
def test_a_recipe_trains_on_the_dataset_it_is_given_and_its_last_analysis_row_carries_its_scores(preset, own_data, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", preset, "dataset=mini", "min_train_tokens=0", "max_iters=4", "eval_interval=4",
                     "analysis_interval=2", "block_size=32", "--out", str(out), env=own_data)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["dataset"] == "mini" and config["model"]["vocab_size"] == len(set(TEXT))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    analysis = [r for r in rows if r["kind"] == "analysis"]
    assert [r["step"] for r in analysis] == [0, 2, 4]
    last = analysis[-1]
    layers = config["model"]["n_layer"]
    assert len(last["attention_distance"]) == layers and len(last["sink_rate"]) == layers
    assert last["induction_circuit"]["repeated_positions"] > 0  # the play repeats its lines
    clauses = (induction_text_check if preset == "induction-text" else depth_scan_check)(last)
    assert len(clauses) >= 3 and all(isinstance(ok, bool) for _, ok in clauses)
    assert (out / "dynamics.png").stat().st_size > 10_000


@pytest.mark.slow
def test_the_induction_recipe_grows_its_circuit_on_tiny_shakespeare_in_its_first_3500_steps(tmp_path, mirror):
    """The recipe at a smaller budget: the first 3,500 steps of its 5-minute schedule (the cosine stretched over
    the 32,000 steps those minutes hold) on the word pieces it was shown on; about 35 s of one core. The
    circuit is absent at step 0 and every clause holds at the end (seed 1337 first held at step 3,000)."""
    from conftest import prepare_into

    env = {"GLASSGPT_DATA_DIR": str(prepare_into(tmp_path / "data", "shakespeare-bpe512", mirror))}
    out = tmp_path / "run"
    result = run_cli("train", "induction-text", "max_minutes=0", "max_iters=3500", "lr_decay_iters=32000",
                     "analysis_interval=500", "eval_interval=3500", "eval_iters=2", "seed=1337", "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    analysis = [r for r in rows if r["kind"] == "analysis"]
    first, last = induction_text_check(analysis[0]), induction_text_check(analysis[-1])
    assert analysis[-1]["step"] == 3500 and not any(ok for _, ok in first[:2]), first
    assert all(ok for _, ok in last), last
    assert last[0][0].startswith("layer 1 ")  # above layer 0's previous-token head
    assert max(analysis[-1]["previous_token"][:1]) >= 0.3


@pytest.mark.parametrize("preset", RECIPES)
def test_a_recipe_says_what_it_grows_and_trains_on_any_dataset(preset):
    from importlib import resources

    text = resources.files("glassgpt").joinpath("presets", f"{preset}.toml").read_text()
    comment = [line for line in text.splitlines() if line.startswith("#")]
    assert len(comment) >= 4  # what it grows, and why these settings
    model, recipe = load_preset(preset)
    assert recipe.analysis_interval > 0 and recipe.min_train_tokens > 0
    assert load_run_config(preset, ["dataset=anything"]).train.dataset == "anything"
    if preset == "depth-scan":
        assert model.n_layer >= 6


@pytest.mark.parametrize("preset", RECIPES)
def test_a_corpus_too_small_for_a_recipe_is_one_line_exit_2_and_writes_nothing(preset, own_data, tmp_path):
    result = run_cli("train", preset, "dataset=mini", "--out", str(tmp_path / "run"), env=own_data)
    floor = load_preset(preset)[1].min_train_tokens
    assert_clean_error(result, 2, "mini", f"{floor:,}", "min_train_tokens", "larger corpus")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- repeat_fraction

def tokens(n: int = 500) -> np.ndarray:
    return np.arange(n, dtype=np.uint16) % 251


def test_repeat_spans_puts_a_copy_of_the_first_tokens_right_after_them_then_the_text_that_followed():
    x = torch.arange(20).view(2, 10)  # two windows of 11 tokens: 0..10 and 10..20
    rx, ry = repeat_spans(x, x + 1, torch.tensor([3, 0]))
    assert rx[0].tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 5, 6] and ry[0].tolist() == [1, 2, 0, 1, 2, 3, 4, 5, 6, 7]
    assert torch.equal(rx[1], x[1]) and torch.equal(ry[1], x[1] + 1)  # length 0: left alone
    rx, _ = repeat_spans(x, x + 1, torch.tensor([99, 2]))  # at most half the window
    assert rx[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4] and rx[1].tolist() == [10, 11, 10, 11, 12, 13, 14, 15, 16, 17]


def repeated_length(window: torch.Tensor) -> int:
    """The length L of the span a window starts with twice (0: none)."""
    return next((n for n in range(len(window) // 2, 1, -1) if torch.equal(window[:n], window[n: 2 * n])), 0)


def test_repeat_fraction_repeats_that_share_of_windows_at_varying_distances_and_zero_leaves_the_batches_alone():
    plain, zero = BatchLoader(tokens(), 16, 64, seed=1), BatchLoader(tokens(), 16, 64, seed=1, repeat_fraction=0.0)
    for _ in range(2):
        assert all(torch.equal(a, b) for a, b in zip(plain.next_batch(), zero.next_batch()))
    x, y = BatchLoader(tokens(), 16, 400, seed=1, repeat_fraction=0.25).next_batch()
    lengths = [repeated_length(w) for w in torch.cat([x, y[:, -1:]], dim=1)]  # windows of 17 tokens
    assert 0.18 < sum(n > 0 for n in lengths) / len(lengths) < 0.32
    assert set(n for n in lengths if n) == set(range(2, 9))  # span_lengths(16): 2 to 8, so no fixed distance
    x, y = BatchLoader(tokens(), 16, 8, seed=1, repeat_fraction=1.0).next_batch()
    assert all(repeated_length(w) for w in torch.cat([x, y[:, -1:]], dim=1))  # every window


def test_repeat_fraction_resumes_exactly_and_is_split_across_ranks_like_the_windows():
    a = BatchLoader(tokens(), 16, 4, seed=5, repeat_fraction=0.5)
    a.next_batch()
    state = a.state_dict()
    expected = a.next_batch()
    b = BatchLoader(tokens(), 16, 4, seed=0, repeat_fraction=0.5)
    b.load_state_dict(state)
    assert all(torch.equal(u, v) for u, v in zip(expected, b.next_batch()))
    single = BatchLoader(tokens(), 16, 8, seed=3, repeat_fraction=0.5).next_batch()[0]
    ranks = [BatchLoader(tokens(), 16, 4, seed=3, rank=r, world_size=2, repeat_fraction=0.5).next_batch()[0] for r in (0, 1)]
    assert torch.equal(torch.cat(ranks), single)


@pytest.mark.parametrize("override", ["repeat_fraction=1.5", "repeat_fraction=-0.1", "min_train_tokens=-1"])
def test_out_of_range_recipe_options_are_refused(override):
    with pytest.raises(UsageError, match=override.partition("=")[0]):
        load_run_config("cpu-baby", [override])


# ---------------------------------------------------------------- bos

def test_with_bos_starts_every_window_with_it_and_the_bos_predicts_the_first_token():
    loader = BatchLoader(tokens(), 8, 4, seed=2, bos=300)
    x, y = loader.next_batch()
    assert x.shape == y.shape == (4, 8)
    assert (x[:, 0] == 300).all() and (x[:, 1:] < 251).all()  # the BOS, then 7 tokens of text
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal((y[:, -1] - y[:, -2]) % 251, torch.ones(4, dtype=torch.long))
    x, y = BatchLoader(tokens(), 8, 4, seed=2, bos=300, repeat_fraction=1.0).next_batch()
    text = torch.cat([x[:, 1:], y[:, -1:]], dim=1)  # the window after its BOS
    assert (x[:, 0] == 300).all() and all(repeated_length(w) for w in text)  # the span repeats after the BOS


def test_evaluation_windows_with_bos_predict_every_token_of_the_split_once():
    data = np.arange(20, dtype=np.uint16)
    batches = list(eval_windows(data, block_size=6, batch_size=2, bos=99))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert (x[:, 0] == 99).all()
    assert sorted(y[y != -1].tolist()) == list(range(20))  # token 0 too: the BOS predicts it
    spread = next(eval_windows(data, block_size=6, batch_size=3, max_batches=1, bos=99))
    assert (spread[0][:, 0] == 99).all() and torch.equal(spread[1][:, :-1], spread[0][:, 1:])


@pytest.fixture(scope="module")
def own_bpe_data(tmp_path_factory):
    """The same text in a 300-token BPE (it has an end-of-text token)."""
    return prepare_own_text(tmp_path_factory.mktemp("own-bpe"), "bpe:300")


def test_a_bos_run_evaluates_and_probes_windows_that_start_with_the_end_of_text_token(own_bpe_data, tmp_path, monkeypatch):
    from glassgpt.analysis.dynamics import AnalysisProbe
    from glassgpt.checkpoint import load_run
    from glassgpt.data import TokenDataset
    from glassgpt.training.loop import evaluate, train

    for key, value in own_bpe_data.items():
        monkeypatch.setenv(key, value)
    config = load_run_config("induction-text", ["dataset=mini", "vocab_size=300", "min_train_tokens=0", "max_iters=2",
                                                "eval_interval=2", "analysis_interval=2", "block_size=32", "bos=true"])
    train(config, tmp_path / "run", log=lambda line: None)
    model, tokenizer, run_config = load_run(tmp_path / "run")
    assert run_config.train.bos
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = next(r for r in rows if r["kind"] == "final")
    val = TokenDataset.load("mini").split("val")
    eot = tokenizer.eot_token
    with_bos = evaluate(model, val, 32, 12, torch.device("cpu"), bos=eot)
    assert final["val_loss"] == pytest.approx(with_bos, abs=1e-5)  # the run's own evaluation read BOS windows
    assert final["val_loss"] != pytest.approx(evaluate(model, val, 32, 12, torch.device("cpu")), abs=1e-5)
    probe = AnalysisProbe.build(val, 32, tokenizer.vocab_size, seed=0, bos=eot)
    assert (probe.windows[:, 0] == eot).all() and (probe.repeated[:, 0] == eot).all() and probe.offset == 1
    analysis = [r for r in rows if r["kind"] == "analysis"][-1]
    assert analysis["induction_seq_len"] == probe.seq_len == 7  # (32 - 1) // 4: the BOS takes one position


def test_bos_on_characters_is_the_newline_and_without_one_it_is_one_line_exit_2(own_data, tmp_path):
    from glassgpt.data import bos_token
    from glassgpt.tokenizer import get_tokenizer

    assert bos_token(get_tokenizer("char", text="ab\ncd")) == get_tokenizer("char", text="ab\ncd").encode("\n")[0]
    (tmp_path / "flat.txt").write_text("abcd efgh " * 3000)  # no newline anywhere
    env = {"GLASSGPT_DATA_DIR": str(tmp_path / "data")}
    assert run_cli("prepare", "text", str(tmp_path / "flat.txt"), "--name", "flat", "--tokenizer", "char", env=env).returncode == 0
    result = run_cli("train", "induction-text", "dataset=flat", "min_train_tokens=0", "bos=true", "max_iters=2",
                     "--out", str(tmp_path / "run"), env=env)
    assert_clean_error(result, 2, "bos=true", "newline", "bpe:N")
    assert not (tmp_path / "run").exists()


def test_a_depth_scan_run_on_characters_samples_after_the_newline_it_trained_behind(own_data, tmp_path):
    from glassgpt.checkpoint import load_run
    from glassgpt.demo import Demo, demo_of_run
    from glassgpt.inference.text import prompt_as_trained

    out = tmp_path / "run"
    assert load_preset("depth-scan")[1].bos  # the recipe's sinks sit on its BOS
    trained = run_cli("train", "depth-scan", "dataset=mini", "min_train_tokens=0", "max_iters=2", "eval_interval=2",
                      "analysis_interval=2", "--out", str(out), env=own_data)
    assert trained.returncode == 0, trained.stderr
    model, tokenizer, run_config = load_run(out)
    newline, prompt = tokenizer.encode("\n"), tokenizer.encode("ROMEO:")
    assert prompt_as_trained(prompt, tokenizer, run_config.train.bos) == newline + prompt
    assert prompt_as_trained(newline + prompt, tokenizer, True) == newline + prompt  # not twice
    assert prompt_as_trained(prompt, tokenizer, False) == prompt
    demo = demo_of_run(str(out), threads=1)  # the demo reads prompts as the run read its windows
    assert demo.encode_prompt("ROMEO:") == newline + prompt
    block = model.config.block_size
    window = demo.window("ROMEO: " * block)
    assert len(window) == block and window[:1] == newline and window[1:] == demo.encode_prompt("ROMEO: " * block)[-block + 1:]
    assert Demo(model, tokenizer).window("ROMEO: " * block) == tokenizer.encode("ROMEO: " * block)[-block:]
    result = run_cli("sample", str(out), "--prompt", "ROMEO:", "--max-new-tokens", "5", "--seed", "0", env=own_data)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.startswith("ROMEO:")
