"""`glassgpt eval` and fine-tuning (`init_from`), on tiny models and small files the tests make:
sliding-window loss checked against a token-by-token computation, bits per byte on a fake
enwik8, HellaSwag checked against answers computed by hand from the model's logits, and a
random-weight GPT-2 converted from transformers, fine-tuned, resumed and refused."""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os

import numpy as np
import pytest
import torch

from glassgpt.evaluation import loss as evaluate

from glassgpt.evaluation import hellaswag
from glassgpt import checkpoint as ckpt
from glassgpt.checkpoint import load_run, save_run
from glassgpt.cli import main as cli_main
from glassgpt.config import RunConfig, TrainConfig, load_run_config
from glassgpt.data import RawFile, TokenDataset, prepare
from glassgpt.errors import UsageError
from glassgpt.hf import convert_hf_dir
from glassgpt.model import GPT
from glassgpt.tokenizer import get_tokenizer
from glassgpt.training.loop import evaluate as train_evaluate
from glassgpt.training import train

from conftest import LazyModule, SHARED_DATA, assert_clean_error, make_enwik8_zip, pin_enwik8, run_cli, tiny_config

prepare_module = importlib.import_module("glassgpt.data.prepare")  # the module, not the function

transformers = LazyModule("transformers", on_import=lambda m: m.utils.logging.set_verbosity_error())


# ---------------------------------------------------------------- sliding windows

@pytest.mark.parametrize("n,context,stride", [(2, 4, 4), (17, 4, 4), (17, 4, 1), (30, 8, 3), (9, 8, 8), (40, 5, 5)])
def test_sliding_windows_score_every_target_once_with_enough_history(n, context, stride):
    scored = []
    for w in evaluate.sliding_windows(n, context, stride):
        assert w.length <= context
        targets = range(w.start + w.length - w.scored + 1, w.start + w.length + 1)
        for j in targets:
            assert w.start == 0 or j - w.start >= context - stride  # history of target j
        scored += list(targets)
    assert scored == list(range(1, n))


def reference_loss(model, data, context, stride):
    """Token by token: target j is predicted from data[b:j], where b is the first multiple of
    the stride with b + context >= j (the window that scores it); one forward pass per token."""
    total = 0.0
    for j in range(1, len(data)):
        b = max(0, math.ceil((j - context) / stride)) * stride
        x = torch.tensor(data[b:j], dtype=torch.long)[None]  # (1, j - b)
        logits, _ = model(x)
        total -= torch.log_softmax(logits[0, -1].double(), dim=-1)[int(data[j])].item()
    return total / (len(data) - 1)


@pytest.mark.parametrize("context,stride", [(16, 16), (16, 5), (16, 1), (8, 3)])
def test_stride_evaluation_equals_a_token_by_token_computation(context, stride):
    model = GPT(tiny_config(vocab_size=50, block_size=16)).eval()
    data = np.random.default_rng(0).integers(0, 50, size=45).astype(np.uint16)
    result = evaluate.sliding_window_loss(model, data, context, stride, batch_size=3)
    assert result.tokens == 44
    assert result.loss == pytest.approx(reference_loss(model, data, context, stride), rel=1e-5)


def test_non_overlapping_windows_equal_the_training_evaluation():
    model = GPT(tiny_config(vocab_size=50, block_size=16)).eval()
    data = np.random.default_rng(2).integers(0, 50, size=101).astype(np.uint16)
    ours = evaluate.sliding_window_loss(model, data, 16, 16, batch_size=4).loss
    assert ours == pytest.approx(train_evaluate(model, data, 16, 4, torch.device("cpu")), rel=1e-6)


@pytest.mark.parametrize("context,stride,fragment", [(17, 4, "--context"), (8, 9, "--stride"), (8, 0, "--stride")])
def test_bad_window_arguments_are_refused(context, stride, fragment):
    model = GPT(tiny_config(vocab_size=50, block_size=16)).eval()
    with pytest.raises(UsageError, match=fragment):
        evaluate.sliding_window_loss(model, np.zeros(40, dtype=np.uint16), context, stride)


# ---------------------------------------------------------------- enwik8: bits per byte on the test split

@pytest.fixture
def enwik8_run(tmp_path, monkeypatch, dirs):
    """A fake 4,000-byte enwik8 prepared (90/5/5: a 200-byte test split), and a tiny byte-level run."""
    _, mirror = dirs
    payload = (b"<page><title>Anarchism</title><text>A political philosophy.</text></page>\n" * 60)[:4000]
    pin_enwik8(monkeypatch, None, payload)  # the zip's own SHA-256 unpinned: the payload's is checked
    make_enwik8_zip(mirror / "enwik8.zip", payload)
    prepare("enwik8")
    run_dir = tmp_path / "run"
    config = tiny_config(vocab_size=256, block_size=32)
    save_run(run_dir, GPT(config), get_tokenizer("byte"), RunConfig(config, TrainConfig(dataset="enwik8")))
    return run_dir


def test_eval_reports_bits_per_byte_on_the_enwik8_test_split_with_a_stride(enwik8_run, capsys):
    cli_main(["eval", str(enwik8_run), "--split", "test", "--stride", "8", "--device", "cpu", "--json"])
    result = json.loads(capsys.readouterr().out)
    test = np.asarray(TokenDataset.load("enwik8").split("test"))
    model, _, _ = load_run(enwik8_run)
    expected = evaluate.sliding_window_loss(model, test, 32, 8).loss
    assert len(test) == 200
    assert (result["dataset"], result["split"], result["tokens"]) == ("enwik8", "test", 199)
    assert (result["context"], result["stride"], result["min_history"]) == (32, 8, 24)
    assert result["loss"] == pytest.approx(expected, rel=1e-6)
    assert result["bits_per_byte"] == pytest.approx(expected / math.log(2), rel=1e-6)
    assert result["perplexity"] == pytest.approx(math.exp(expected), rel=1e-6)

    cli_main(["eval", str(enwik8_run), "--split", "test", "--stride", "8", "--device", "cpu", "--max-tokens", "50"])
    text = capsys.readouterr().out
    assert "enwik8 test split: the first 50 tokens scored (one byte each)" in text
    assert "at least 24 tokens of history" in text and "bits per byte" in text


def test_eval_results_can_be_appended_to_the_runs_metrics(enwik8_run, capsys):
    cli_main(["eval", str(enwik8_run), "--device", "cpu", "--append-metrics", "--json"])
    printed = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in (enwik8_run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1] == {"kind": "eval_task", "step": 0, **printed}
    assert printed["split"] == "val" and "bits_per_byte" in printed


@pytest.mark.parametrize("args,code,fragment", [
    (["--stride", "33"], 2, "--stride must be between 1 and the context 32"),
    (["--context", "8", "--stride", "9"], 2, "--stride must be between 1 and the context 8"),
    (["--stride", "0"], 2, "must be at least 1"),
    (["--context", "64"], 2, "--context must be between 1 and the model's block_size 32"),
    (["--dataset", "shakespeare"], 2, "run `glassgpt prepare shakespeare`"),
    (["--dtype", "float64"], 2, "--dtype"),
    (["--limit", "3"], 2, "--limit applies to --task hellaswag"),
    (["--task", "hellaswag", "--stride", "4"], 2, "--stride apply to a split, not to --task hellaswag"),
])
def test_eval_refuses_bad_arguments_in_one_line(enwik8_run, args, code, fragment):
    result = run_cli("eval", str(enwik8_run), "--device", "cpu", "--append-metrics", *args)
    assert_clean_error(result, code, fragment)
    assert not (enwik8_run / "metrics.jsonl").exists()


def test_eval_on_a_split_that_was_never_prepared_says_which_prepare_to_run(enwik8_run, capsys):
    (TokenDataset.load("enwik8").path / "test.bin").unlink()
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["eval", str(enwik8_run), "--split", "test", "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no test split" in err and "glassgpt prepare enwik8 --force" in err


# ---------------------------------------------------------------- HellaSwag

def hf_gpt2(n_positions=32) -> transformers.GPT2LMHeadModel:
    """A small GPT-2 with GPT-2's vocabulary (so it reads BPE) and random weights everywhere."""
    config = transformers.GPT2Config(vocab_size=50257, n_positions=n_positions, n_embd=32, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory):
    """A random-weight GPT-2 (2 layers, 32 wide, 32 positions) converted with convert-hf."""
    hf_dir, run_dir = tmp_path_factory.mktemp("hf") / "gpt2-hf", tmp_path_factory.mktemp("runs") / "gpt2"
    torch.manual_seed(0)
    hf_gpt2().save_pretrained(hf_dir)
    convert_hf_dir(hf_dir, run_dir)
    return run_dir


HELLASWAG_ITEMS = [
    {"ctx": "A man is sitting on a roof. He", "label": 3,
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                 "is holding a rubik's cube.", "starts pulling up roofing on a roof."]},
    {"ctx": "A woman pours water into a glass. She", "label": 0,
     "endings": ["drinks it.", "puts the glass on a table and walks to the window slowly.", "sings.",
                 "throws the glass at a passing car."]},
    {"ctx": "The chef chops onions. Then he", "label": 1,
     "endings": ["adds them to the pan.", "cries.", "reads a newspaper about onions and tears.", "leaves."]},
    {"ctx": "Kids play in the snow. They", "label": 2,
     "endings": ["build a snowman.", "melt.", "throw snowballs at each other and laugh.", "go home."]},
]


def write_hellaswag(path, items=HELLASWAG_ITEMS, bad_line: str | None = None):
    lines = [json.dumps({"ind": i, "split": "val", **item}) for i, item in enumerate(items)]
    if bad_line is not None:
        lines.insert(2, bad_line)
    path.write_text("\n".join(lines) + "\n")
    return path


def pin_hellaswag(monkeypatch, path):
    monkeypatch.setattr(hellaswag, "HELLASWAG_VAL", RawFile(
        "hellaswag_val.jsonl", "http://example.invalid/hellaswag_val.jsonl", hashlib.sha256(path.read_bytes()).hexdigest()))


def by_hand(model, tokenizer, item):
    """(index of the lowest summed loss, index of the lowest mean loss) over the endings,
    each ending run on its own, its loss read off log_softmax of the logits."""
    sums, means = [], []
    context = tokenizer.encode(item["ctx"])
    for ending in item["endings"]:
        ending_ids = tokenizer.encode(" " + ending)
        ids = torch.tensor(context + ending_ids)[None]  # (1, T)
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids)[0][0].double(), dim=-1)  # (T, V)
        ending_losses = [-logprobs[len(context) + k - 1, t].item() for k, t in enumerate(ending_ids)]
        sums.append(sum(ending_losses))
        means.append(sum(ending_losses) / len(ending_losses))
    return int(np.argmin(sums)), int(np.argmin(means))


def test_hellaswag_scores_a_file_like_a_hand_computation(gpt2_run, tmp_path, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("GLASSGPT_MIRROR", str(mirror))
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(tmp_path / "data"))
    model, tokenizer, _ = load_run(gpt2_run)
    hand = [by_hand(model, tokenizer, item) for item in HELLASWAG_ITEMS]
    # labels chosen so that acc and acc_norm each count some items right and some wrong
    items = [dict(item, label=hand[i][0] if i % 2 == 0 else (hand[i][1] + 1) % 4) for i, item in enumerate(HELLASWAG_ITEMS)]
    write_hellaswag(mirror / "hellaswag_val.jsonl", items)
    pin_hellaswag(monkeypatch, mirror / "hellaswag_val.jsonl")
    expected_acc = sum(h[0] == it["label"] for h, it in zip(hand, items)) / len(items)
    expected_norm = sum(h[1] == it["label"] for h, it in zip(hand, items)) / len(items)

    cli_main(["eval", str(gpt2_run), "--task", "hellaswag", "--device", "cpu", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert (result["task"], result["items"]) == ("hellaswag", 4)
    assert (result["acc"], result["acc_norm"]) == (expected_acc, expected_norm)
    assert 0 < expected_acc and expected_norm < 1  # the test can tell right from wrong

    cli_main(["eval", str(gpt2_run), "--task", "hellaswag", "--limit", "2", "--device", "cpu", "--append-metrics"])
    text = capsys.readouterr().out
    assert "2 items" in text and "acc_norm" in text
    row = json.loads((gpt2_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["kind"] == "eval_task" and row["task"] == "hellaswag" and row["items"] == 2
    (gpt2_run / "metrics.jsonl").unlink()


def test_hellaswag_left_truncates_a_context_longer_than_the_model_reads():
    tokenizer = get_tokenizer("gpt2")
    item = hellaswag.Item("word " * 40, ("a b c", "d", "e f", "g h i j"), 0)
    tokens, mask = hellaswag.render(item, tokenizer, block_size=16)
    assert tokens.shape == (4, 16)
    assert mask[0].tolist() == [0] * 13 + [1] * 3  # the ending is kept whole, at the end
    assert mask[1].tolist() == [0] * 15 + [1]


def test_a_hellaswag_file_with_a_bad_line_is_refused_naming_the_line(gpt2_run, tmp_path, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("GLASSGPT_MIRROR", str(mirror))
    for bad in ['{"ctx": "x", "label": 7, "endings": ["a", "b", "c", "d"]}', '{"ctx": "x", "endings": [1]}', "{nope"]:
        write_hellaswag(mirror / "hellaswag_val.jsonl", bad_line=bad)
        pin_hellaswag(monkeypatch, mirror / "hellaswag_val.jsonl")
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["eval", str(gpt2_run), "--task", "hellaswag", "--device", "cpu", "--append-metrics"])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "hellaswag_val.jsonl line 3" in err[0], err
    assert not (gpt2_run / "metrics.jsonl").exists()


def test_the_official_hellaswag_file_is_verified_by_its_git_blob_id(gpt2_run, tmp_path, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("GLASSGPT_MIRROR", str(mirror))
    write_hellaswag(mirror / "hellaswag_val.jsonl")  # not the official file
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["eval", str(gpt2_run), "--task", "hellaswag", "--device", "cpu"])
    assert exit_info.value.code == 1
    assert "does not match its git blob id 0f5ee25d" in capsys.readouterr().err


# ---------------------------------------------------------------- fine-tuning from a converted GPT-2

@pytest.fixture(scope="module")
def small_shakespeare(tmp_path_factory):
    """`shakespeare` (GPT-2 BPE) prepared from the first 12,000 characters of Tiny Shakespeare,
    in a data dir of its own (val: ~300 tokens), so whole-split evals take milliseconds."""
    source = os.environ.get("GLASSGPT_MIRROR", str(SHARED_DATA))
    mirror, data_dir = tmp_path_factory.mktemp("mirror"), tmp_path_factory.mktemp("data")
    (mirror / "tinyshakespeare.txt").write_text(
        open(f"{source}/tinyshakespeare.txt", encoding="utf-8").read()[:12000], encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLASSGPT_DATA_DIR", str(data_dir))
        mp.setenv("GLASSGPT_MIRROR", str(mirror))
        mp.setattr(prepare_module, "TINY_SHAKESPEARE", RawFile("tinyshakespeare.txt", "http://example.invalid/x"))
        prepare("shakespeare")
        prepare("shakespeare-char")
    return data_dir, mirror


@pytest.fixture
def finetune_env(small_shakespeare, monkeypatch):
    data_dir, mirror = small_shakespeare
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("GLASSGPT_MIRROR", str(mirror))
    return data_dir


def finetune_config(source, *overrides):
    return load_run_config("finetune-shakespeare", [
        f"init_from={source}", "batch_size=2", "grad_accum_steps=1", "eval_iters=1", "eval_interval=2",
        "max_iters=2", "dtype=float32", "device=cpu", *overrides])


def test_a_converted_gpt2_fine_tunes_from_its_own_val_loss(gpt2_run, finetune_env, tmp_path, capsys):
    out = tmp_path / "ft"
    train(finetune_config(gpt2_run, "dropout=0.1", "attn_impl=manual"), out, log=lambda s: None)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    step0 = next(r for r in rows if r["kind"] == "eval" and r["step"] == 0)

    cli_main(["eval", str(gpt2_run), "--device", "cpu", "--json"])
    source_eval = json.loads(capsys.readouterr().out)
    assert source_eval["dataset"] == "shakespeare" and source_eval["stride"] == source_eval["context"] == 32
    assert step0["val_loss"] == pytest.approx(source_eval["loss"], rel=1e-5)

    config = json.loads((out / "config.json").read_text())
    source_config = json.loads((gpt2_run / "config.json").read_text())
    assert config["init_from"] == {"run_dir": str(gpt2_run.resolve()), "weights_sha256": source_config["weights_sha256"]}
    assert config["train"]["init_from"] == str(gpt2_run)
    assert config["model"] == {**source_config["model"], "dropout": 0.1, "attn_impl": "manual"}
    tuned, _, _ = load_run(out)
    source, _, _ = load_run(gpt2_run)
    assert not torch.equal(tuned.wte.weight, source.wte.weight)  # it trained
    assert (out / ckpt.STATE).is_file()


def test_a_fine_tuning_run_resumes_like_any_other(gpt2_run, finetune_env, tmp_path):
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    train(finetune_config(gpt2_run, "max_iters=4"), straight, log=lambda s: None)
    train(finetune_config(gpt2_run, "max_iters=2"), halves, log=lambda s: None)
    cli_main(["train", "--out", str(halves), "--resume", "max_iters=4"])
    a, _, _ = load_run(straight)
    b, _, _ = load_run(halves)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    assert json.loads((halves / "config.json").read_text())["init_from"]["run_dir"] == str(gpt2_run.resolve())


@pytest.mark.parametrize("case,code,fragment", [
    ("missing", 2, "does not exist"),
    ("not a run", 2, "is not a run"),
    ("corrupt", 1, "corrupt"),
    ("other tokenizer", 2, "uses the char tokenizer, but init_from"),
    ("other shape", 2, "n_layer 3 (source 2)"),
])
def test_bad_init_from_is_refused_in_one_line_and_writes_nothing(gpt2_run, finetune_env, tmp_path, case, code,
                                                                 fragment):
    source, extra = gpt2_run, []
    if case == "missing":
        source = tmp_path / "nowhere"
    elif case == "not a run":
        source = tmp_path / "empty"
        source.mkdir()
    elif case == "corrupt":
        source = tmp_path / "corrupt"
        source.mkdir()
        for f in gpt2_run.iterdir():
            (source / f.name).write_bytes(f.read_bytes())
        weights = bytearray((source / "model.safetensors").read_bytes())
        weights[-1] ^= 0xFF
        (source / "model.safetensors").write_bytes(bytes(weights))
    elif case == "other tokenizer":
        extra = ["dataset=shakespeare-char"]
    elif case == "other shape":
        extra = ["n_layer=3", "dropout=0.2"]
    out = tmp_path / "out"
    result = run_cli("train", "finetune-shakespeare", f"init_from={source}", "device=cpu", "dtype=float32",
                     *extra, "--out", str(out))
    assert_clean_error(result, code, fragment)
    assert not out.exists()


def test_the_analysis_report_lists_the_appended_evaluations(enwik8_run, capsys):
    from glassgpt.analysis.report import write_report

    cli_main(["eval", str(enwik8_run), "--stride", "16", "--device", "cpu", "--append-metrics"])
    printed = capsys.readouterr().out
    out = write_report(enwik8_run, num_windows=2)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<h2 id='evaluations'>Evaluations</h2>" in page
    assert printed.splitlines()[-1] in page  # the figures line, as eval printed it
