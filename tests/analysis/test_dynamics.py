"""Analysis during training (`analysis_interval`): the rows, dynamics.png, exact resume, the
time left out of tokens/s, and the measures on models whose answer is known."""

import json
import time

import pytest
import torch

from glassgpt.analysis import dynamics
from glassgpt.analysis.dynamics import AnalysisProbe, analysis_row, icl_bands, in_context_learning
from glassgpt.checkpoint import load_run
from glassgpt.config import load_run_config
from glassgpt.model import GPT
from glassgpt.training import train
from glassgpt.training.log import read_metrics

from conftest import assert_clean_error, run_cli, tiny_config

TINY = ["n_layer=2", "n_head=2", "n_embd=32", "block_size=32", "eval_iters=2", "log_interval=2",
        "warmup_iters=2", "learning_rate=3e-3", "min_lr=3e-4", "device=cpu", "batch_size=4"]
KEYS = ("entropy", "sink_share", "sink_head", "sink_key", "first_position_share", "induction", "induction_head",
        "previous_token", "previous_token_head")


def run_config(*extra):
    return load_run_config("cpu-baby", [*TINY, *extra])


def rows_of(run_dir, kind):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


def quiet(_line):
    pass


def test_analysis_rows_are_written_every_interval_with_a_value_per_layer_and_a_picture(data_env, tmp_path):
    lines = []
    train(run_config("max_iters=6", "eval_interval=3", "analysis_interval=3"), tmp_path / "run", log=lines.append)
    rows = rows_of(tmp_path / "run", "analysis")
    assert [r["step"] for r in rows] == [0, 3, 6]
    for row in rows:
        for key in KEYS:
            assert len(row[key]) == 2, key
        assert all(0.0 <= v <= 1.0 for key in ("entropy", "sink_share", "induction", "previous_token") for v in row[key])
        assert row["icl_score"] == pytest.approx(row["loss_late"] - row["loss_early"], abs=1e-5)
        for key in ("entropy", "sink_share", "first_position_share", "induction", "previous_token"):
            assert len(row[f"{key}_se"]) == 2 and all(0.0 <= v < 0.2 for v in row[f"{key}_se"]), key
        assert 0.0 < row["icl_score_se"] < 0.5 and row["loss_early_se"] > 0 and row["loss_late_se"] > 0
    assert (tmp_path / "run" / dynamics.DYNAMICS).stat().st_size > 10_000
    assert any("not counted in tok/s" in line for line in lines)
    assert "analysis_seconds" in rows_of(tmp_path / "run", "final")[0]


def test_no_analysis_rows_and_no_picture_by_default(data_env, tmp_path):
    train(run_config("max_iters=2", "eval_interval=2"), tmp_path / "run", log=quiet)
    assert rows_of(tmp_path / "run", "analysis") == []
    assert not (tmp_path / "run" / dynamics.DYNAMICS).exists()


def test_analysis_leaves_training_alone_and_resume_repeats_it_exactly(data_env, tmp_path):
    recipe = ["eval_interval=4", "dropout=0.1", "lr_decay_iters=8"]
    train(run_config(*recipe, "max_iters=8"), tmp_path / "plain", log=quiet)
    train(run_config(*recipe, "max_iters=8", "analysis_interval=2"), tmp_path / "whole", log=quiet)
    train(run_config(*recipe, "max_iters=4", "analysis_interval=2"), tmp_path / "split", log=quiet)
    train(run_config(*recipe, "max_iters=8", "analysis_interval=2"), tmp_path / "split", resume=True, log=quiet)

    plain, whole, split = (load_run(tmp_path / name)[0].state_dict() for name in ("plain", "whole", "split"))
    for name in plain:  # the analysis uses no RNG the training uses, and no dropout
        assert torch.equal(plain[name], whole[name]), name
        assert torch.equal(whole[name], split[name]), name
    strip = lambda rows: [{k: v for k, v in r.items() if k != "analysis_seconds"} for r in rows]  # noqa: E731
    whole_rows, split_rows = rows_of(tmp_path / "whole", "analysis"), rows_of(tmp_path / "split", "analysis")
    assert [r["step"] for r in split_rows] == [0, 2, 4, 6, 8]  # nothing lost, nothing twice
    assert strip(whole_rows) == strip(split_rows)


def test_analysis_time_is_left_out_of_tokens_per_second(data_env, tmp_path, monkeypatch):
    """A slow analysis (1 s a row) must not slow the reported tokens/s: the 2 steps of 128 tokens
    between rows would show under 256 tokens/s if its seconds were counted."""
    real_row = dynamics.analysis_row

    def slow_row(*args, **kwargs):
        time.sleep(1.0)
        return real_row(*args, **kwargs)

    monkeypatch.setattr(dynamics, "analysis_row", slow_row)
    final = train(run_config("max_iters=4", "eval_interval=100", "analysis_interval=2"), tmp_path / "run", log=quiet)
    train_rows = rows_of(tmp_path / "run", "train")
    assert len(train_rows) == 2
    assert min(r["tokens_per_s"] for r in train_rows) > 2 * 256
    assert final["tokens_per_s"] > 2 * 256 and final["analysis_seconds"] >= 3.0


@pytest.mark.parametrize("override,fragment", [("analysis_interval=-1", "analysis_interval"),
                                               ("analysis_interval=1.5", "analysis_interval")])
def test_analysis_interval_out_of_range_is_one_line_exit_2(override, fragment, tmp_path):
    result = run_cli("train", "cpu-baby", override, "--out", str(tmp_path / "run"))
    assert_clean_error(result, 2, fragment)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the measures, on known answers

def test_icl_bands_compare_a_tenth_of_the_way_in_with_the_end():
    early, late = icl_bands(64)
    assert (early.start, early.stop, late.start, late.stop) == (4, 8, 60, 64)
    early, late = icl_bands(4)
    assert early.stop <= late.start


def test_in_context_learning_score_is_late_minus_early_loss():
    model = GPT(tiny_config()).eval()
    windows = torch.randint(0, 50, (3, 16))
    targets = torch.randint(0, 50, (3, 16))
    with torch.no_grad():
        logits, _ = model(windows)
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)
    early, late = icl_bands(16)
    got = in_context_learning(model, windows, targets)
    assert got["loss_early"] == pytest.approx(float(losses[:, early].mean()), abs=1e-5)
    assert got["icl_score"] == pytest.approx(float(losses[:, late].mean() - losses[:, early].mean()), abs=1e-5)


def test_the_circuit_ablation_reads_circuit_tokens_of_windows_that_do_not_overlap_and_its_error_shrinks():
    from glassgpt.analysis.dynamics import CIRCUIT_TOKENS, ICL_TOKENS

    large, small = torch.randint(0, 8, (2 * CIRCUIT_TOKENS,)).numpy(), torch.randint(0, 8, (12_000,)).numpy()  # repeats often
    probe = AnalysisProbe.build(large, 32, 50, seed=0)
    assert probe.circuit_windows.shape == (CIRCUIT_TOKENS // 32, 32) and probe.icl_windows.shape == (ICL_TOKENS // 32, 32)
    assert AnalysisProbe.build(small, 32, 50, seed=0).circuit_windows.shape == (12_000 // 32, 32)  # no more than fit
    assert AnalysisProbe.build(small[:6000], 32, 50, seed=0).circuit_windows.shape == (ICL_TOKENS // 32, 32)  # the ICL's
    model = GPT(tiny_config(block_size=32))
    row = analysis_row(model, probe, step=0)["induction_circuit"]
    repeated = analysis_row(model, AnalysisProbe(probe.windows, probe.targets, probe.repeated, probe.seq_len,
                                                 probe.icl_windows, probe.icl_targets), step=0)["induction_circuit"]
    assert row["repeated_positions"] > 3 * repeated["repeated_positions"]  # read on four times the tokens
    assert row["ablation_repeated_se"] < 0.75 * repeated["ablation_repeated_se"]


def test_a_model_whose_layer_1_head_0_sinks_into_position_0_is_found_by_the_row():
    """Force one head onto key 0 through its scores hook: the row names that layer, head and key."""
    model = GPT(tiny_config(block_size=32))
    val = torch.randint(0, 50, (4000,)).numpy()
    probe = AnalysisProbe.build(val, 32, 50, seed=0, num_windows=4, num_repeats=2)

    def onto_zero(scores, _hook):
        scores = scores.clone()
        scores[:, 0, :, 0] = 1e4
        return scores

    with model.hooks([("blocks.1.attn.scores", onto_zero)]):
        row = analysis_row(model, probe, step=7)
    assert row["step"] == 7 and row["kind"] == "analysis"
    assert row["sink_share"][1] == pytest.approx(1.0) and row["sink_head"][1] == 0 and row["sink_key"][1] == 0
    assert row["first_position_share"][1] == pytest.approx(1.0)
    assert row["sink_share"][0] < 0.3


# ---------------------------------------------------------------- the report and the demo show it

@pytest.fixture(scope="module")
def analysed_run(tmp_path_factory, prepared_data_dir):
    run_dir = tmp_path_factory.mktemp("dyn") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLASSGPT_DATA_DIR", str(prepared_data_dir))
        train(run_config("max_iters=4", "eval_interval=2", "analysis_interval=2"), run_dir, log=quiet)
    return run_dir


@pytest.mark.slow
def test_the_report_includes_the_training_curves_when_the_run_has_analysis_rows(analysed_run, data_env, tmp_path):
    from glassgpt.analysis.report import write_report

    out = write_report(analysed_run, out=tmp_path / "with")
    page = (out / "report.html").read_text()
    assert "id='dynamics'" in page and 'alt="dynamics.png"' in page
    assert (out / "dynamics.png").stat().st_size > 10_000
    plain = tmp_path / "plain"
    train(run_config("max_iters=2", "eval_interval=2"), plain, log=quiet)
    assert "id='dynamics'" not in (write_report(plain, out=tmp_path / "without") / "report.html").read_text()


def test_the_demo_inside_tab_shows_the_curves_when_the_run_has_analysis_rows(analysed_run):
    pytest.importorskip("gradio", reason="the demo tests need the demo extra (make test installs it)")
    from glassgpt.demo import Demo, build_app

    model, tokenizer, _ = load_run(analysed_run)
    with_rows = Demo(model, tokenizer, metrics_rows=read_metrics(analysed_run))
    assert with_rows.dynamics() is not None and Demo(model, tokenizer).dynamics() is None

    def elem_ids(app):
        return {c.get("props", {}).get("elem_id") for c in app.config["components"]}

    assert "dynamics-plot" in elem_ids(build_app(with_rows))
    assert "dynamics-plot" not in elem_ids(build_app(Demo(model, tokenizer)))


# ---------------------------------------------------------------- the repeated-random dataset and the presets

def test_repeated_segments_repeat_each_segment_once_and_are_fixed_by_the_seed():
    from glassgpt.data.synthetic import repeated_segments

    stream = repeated_segments(10_000, seed=5, lengths=(8, 32))
    assert stream.size == 10_000 and stream.min() >= 0 and stream.max() < 256
    assert (stream == repeated_segments(10_000, seed=5, lengths=(8, 32))).all()
    assert not (stream == repeated_segments(10_000, seed=6, lengths=(8, 32))).all()
    fixed = repeated_segments(24, seed=0, lengths=(4, 4))  # three segments of 4, each twice
    for start in range(0, 24, 8):
        assert (fixed[start: start + 4] == fixed[start + 4: start + 8]).all()


def test_prepare_repeated_random_makes_token_files_with_a_val_split(tmp_path, monkeypatch):
    from glassgpt.data import TokenDataset, prepare
    from glassgpt.data.synthetic import SPLIT_TOKENS

    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(tmp_path))
    prepare("repeated-random")
    dataset = TokenDataset.load("repeated-random")
    assert dataset.tokenizer.name == "char" and dataset.tokenizer.vocab_size == 64
    train_split, val = dataset.split("train"), dataset.split("val")
    assert len(train_split) == SPLIT_TOKENS["train"] and len(val) == SPLIT_TOKENS["val"]
    assert not (train_split[:1000] == val[:1000]).all()  # different seeds


@pytest.mark.parametrize("preset,dataset", [("induction", "repeated-random"), ("sinks", "shakespeare-char")])
def test_a_preset_on_data_that_is_not_prepared_is_one_line_exit_2_and_writes_nothing(preset, dataset, tmp_path):
    result = run_cli("train", preset, "--out", str(tmp_path / "run"), env={"GLASSGPT_DATA_DIR": str(tmp_path / "empty")})
    assert_clean_error(result, 2, f"glassgpt prepare {dataset}")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("preset", ["induction", "sinks"])
def test_both_presets_carry_the_analysis(preset, tmp_path, data_env):
    """Trained at a tiny size for exactly one of its own analysis intervals, the preset writes an
    analysis row with the scores the tutorials plot."""
    from glassgpt.config import load_preset, load_run_config
    from glassgpt.training import train

    interval = load_preset(preset)[1].analysis_interval
    tiny = ["n_layer=2", "n_head=2", "n_embd=16", "block_size=16", "batch_size=2", f"max_iters={interval}", "eval_iters=1",
            f"eval_interval={interval}", "log_interval=1000", "device=cpu", "dtype=float32", "compile=false",
            "dataset=shakespeare-char", "vocab_size=65"]
    train(load_run_config(preset, tiny), tmp_path / "run", log=lambda line: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    analysis = [r for r in rows if r.get("kind") == "analysis"]
    assert analysis and analysis[-1]["step"] == interval


def test_the_summary_names_the_previous_token_head_before_the_induction_head():
    from glassgpt.analysis.summary import summarize

    induction = torch.tensor([[0.01, 0.02], [0.05, 0.91]])  # layer 1 head 1
    previous = torch.tensor([[0.10, 0.88], [0.97, 0.02]])  # layer 0 head 1; layer 1 head 0 comes after it
    text = summarize({"induction": induction, "previous_token": previous, "induction_seq_len": 32})
    assert "layer 1 head 1 (0.91)" in text
    assert "Before it, layer 0 head 1 is a previous-token head (0.88" in text
    weak = summarize({"induction": induction, "previous_token": previous * 0.1, "induction_seq_len": 32})
    assert "No previous-token head before it" in weak


# The `sinks` recipe growing a sink past 0.3 by step 100 is asserted by the executed tutorial
# docs/tutorials/sinks.md, which `make test` builds with warnings as errors.
