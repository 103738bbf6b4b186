"""The analysis suite: each measure against a known answer, the plots, the summary, and the report."""

import copy
import html
import json
import re
import shutil
import subprocess

import pytest
import torch
from matplotlib.figure import Figure

from glassgpt.analysis import (
    attention_distance, attention_patterns, depth_scan, find_sinks, head_ablation, induction_scores,
    induction_stripe, logit_lens, normalized_entropy, plot_attention, plot_attention_grid, plot_head_heatmap,
    plot_logit_lens, prefix_matching, previous_token_stripe, repeated_random_tokens, sink_rate, sink_scores,
    summarize,
)
from glassgpt.model import GPT

from conftest import assert_clean_error, run_cli, tiny_config


def uniform_causal(T: int) -> torch.Tensor:
    mask = torch.ones(T, T).tril()
    return mask / mask.sum(dim=-1, keepdim=True)  # row i: 1 / (i + 1) on keys 0..i


def all_on_key(T: int, key: int) -> torch.Tensor:
    """Every query attends to `key` once it can see it, to itself before that."""
    pattern = torch.zeros(T, T)
    for i in range(T):
        pattern[i, key if i >= key else i] = 1.0
    return pattern


def previous_token(T: int) -> torch.Tensor:
    pattern = torch.zeros(T, T)
    pattern[0, 0] = 1.0
    pattern[torch.arange(1, T), torch.arange(T - 1)] = 1.0
    return pattern


# ---------------------------------------------------------------- attention measures

def test_normalized_entropy_is_one_for_uniform_and_zero_for_one_hot_attention():
    T = 12
    patterns = torch.stack([uniform_causal(T), torch.eye(T), all_on_key(T, 0), previous_token(T)])[None]  # (1, 4, T, T)
    entropy = normalized_entropy(patterns)
    assert entropy.shape == (1, 4)
    torch.testing.assert_close(entropy, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    half = torch.zeros(3, 3)  # row 1 split evenly over its 2 keys: entropy log 2 / log 2 = 1; row 2 one-hot: 0
    half[0, 0], half[1, :2], half[2, 1] = 1.0, 0.5, 1.0
    torch.testing.assert_close(normalized_entropy(half), torch.tensor(0.5))


def test_attention_patterns_are_the_cached_patterns_of_one_sequence():
    model = GPT(tiny_config(n_layer=3, attn_impl="sdpa"))
    idx = torch.randint(0, 50, (10,))
    patterns = attention_patterns(model, idx)
    assert patterns.shape == (3, 2, 10, 10)
    torch.testing.assert_close(patterns.sum(-1), torch.ones(3, 2, 10))
    _, cache = model.run_with_cache(idx[None])
    torch.testing.assert_close(patterns[2], cache["blocks.2.attn.pattern"][0])
    torch.testing.assert_close(attention_patterns(model, idx[None]), patterns)
    with pytest.raises(ValueError, match="one sequence"):
        attention_patterns(model, torch.randint(0, 50, (2, 10)))


def test_depth_scan_is_the_mean_entropy_over_windows_taken_in_chunks():
    model = GPT(tiny_config())
    windows = torch.randint(0, 50, (11, 16))  # 11 windows: chunks of 8 and 3
    scan = depth_scan(model, windows)
    one_by_one = torch.stack([normalized_entropy(attention_patterns(model, w)) for w in windows]).mean(0)
    assert scan.shape == (2, 2)
    torch.testing.assert_close(scan, one_by_one)


def test_attention_distance_of_known_patterns():
    T = 16
    patterns = torch.stack([previous_token(T), torch.eye(T), uniform_causal(T), all_on_key(T, 0)])
    # previous token: 1; self: 0; uniform: mean over rows 1..T-1 of i/2 = T/4; all on key 0: mean of i = T/2
    torch.testing.assert_close(attention_distance(patterns), torch.tensor([1.0, 0.0, T / 4, T / 2]))


# ---------------------------------------------------------------- sinks

def force_onto_key(head: int, key: int):
    """A hook for attn.pattern (B, nh, T, T): one head puts all its attention on `key`."""
    def hook(pattern, _hook):
        pattern = pattern.clone()
        pattern[:, head] = all_on_key(pattern.size(-1), key)
        return pattern
    return hook


def test_a_head_forced_to_attend_to_position_zero_is_reported_as_a_sink():
    model = GPT(tiny_config(n_layer=3))
    idx = torch.randint(0, 50, (12,))
    tokens = [f"t{i}" for i in idx.tolist()]
    model.add_hook("blocks.1.attn.pattern", force_onto_key(head=0, key=0))
    model.add_hook("blocks.2.attn.pattern", force_onto_key(head=1, key=3))
    scores = sink_scores(attention_patterns(model, idx))
    model.remove_hooks()
    assert scores["first_position_share"].shape == (3, 2)
    assert scores["first_position_share"][1, 0] == 1.0 and scores["max_key_index"][1, 0] == 0
    torch.testing.assert_close(scores["max_key_share"][2, 1], torch.tensor(1.0))  # every row that can see key 3
    assert scores["max_key_index"][2, 1] == 3
    sinks = find_sinks(scores, threshold=0.5, tokens=tokens)
    assert [(s["layer"], s["head"], s["key_index"], s["token"]) for s in sinks] == [
        (1, 0, 0, tokens[0]), (2, 1, 3, tokens[3])]
    assert find_sinks(scores, threshold=0.9) == [s | {"token": None} for s in sinks]
    assert scores["max_key_share"][0].max() < 0.3, "untouched random heads are no sinks"
    text = summarize({"sinks": sinks, "sink_scores": scores})
    assert text.startswith(f"2 heads are attention sinks (sink share at least 30%): layer 1 head 0 (100% onto position 0, {tokens[0]!r}), "
                           f"layer 2 head 1 (100% onto position 3, {tokens[3]!r})")


def test_the_summary_the_sink_rate_and_the_training_time_analysis_name_the_same_sinks_by_one_sink_share():
    """One definition of sink share: the heads the summary lists are those the sink rate counts and
    the head kinds call sinks, and dynamics.png's sink share is the same number on the same windows."""
    from glassgpt.analysis import analyze
    from glassgpt.analysis.dynamics import AnalysisProbe, analysis_row
    from glassgpt.analysis.summary import head_kinds

    model = GPT(tiny_config(n_layer=3)).eval()
    model.add_hook("blocks.1.attn.pattern", force_onto_key(head=0, key=0))
    model.add_hook("blocks.2.attn.pattern", force_onto_key(head=1, key=5))
    windows, targets = torch.randint(0, 50, (4, 16)), torch.randint(0, 50, (4, 16))
    results = analyze(model, windows[0, :8], windows, targets)
    named = {(s["layer"], s["head"]) for s in results["sinks"]}
    assert named == {(1, 0), (2, 1)}
    assert float(results["sink_rate"]["any_key"].mean()) * 6 == pytest.approx(len(named))
    kinds = head_kinds(results)
    assert {(layer, head) for layer in range(3) for head in range(2) if kinds[layer][head] == "sink"} <= named
    text = summarize(results)
    assert "2 heads are attention sinks" in text and "33% of heads sink into some single key" in text
    row = analysis_row(model, AnalysisProbe(windows, targets, None, 0), step=0)
    share = results["window_sink_scores"]["max_key_share"]  # (L, H)
    assert row["sink_share"] == pytest.approx([float(v) for v in share.max(dim=1).values], abs=1e-6)
    assert row["sink_key"][1:] == [0, 5]
    model.remove_hooks()


def test_a_perfect_sink_scores_one_wherever_its_key_is():
    T = 48
    patterns = torch.stack([all_on_key(T, 0), all_on_key(T, 30), uniform_causal(T)])[None]  # (1, 3, T, T)
    scores = sink_scores(patterns)
    torch.testing.assert_close(scores["max_key_share"][0, :2], torch.tensor([1.0, 1.0]))
    assert scores["max_key_index"][0, :2].tolist() == [0, 30]
    assert scores["max_key_share"][0, 2] < 0.3, "uniform attention is no sink"
    # the old measure (mean over all rows 1..T-1) gave key 30 only (T - 30) / (T - 1) = 0.38
    assert find_sinks(scores, threshold=0.3)[1]["key_index"] == 30


def test_attending_to_oneself_or_the_previous_token_is_no_sink():
    T = 48
    patterns = torch.stack([torch.eye(T), previous_token(T)])[None]  # (1, 2, T, T)
    scores = sink_scores(patterns)
    assert scores["max_key_share"].max() <= 1 / (T // 4), scores  # late keys, seen by few rows, are no candidates
    assert find_sinks(scores) == []


def test_sink_rate_is_the_fraction_of_heads_above_epsilon_per_layer():
    T = 48
    layer0 = torch.stack([all_on_key(T, 0), uniform_causal(T), uniform_causal(T), all_on_key(T, 30)])
    layer1 = torch.stack([uniform_causal(T)] * 4)
    rate = sink_rate(sink_scores(torch.stack([layer0, layer1])), epsilon=0.3)  # (L=2, H=4)
    torch.testing.assert_close(rate["first_position"], torch.tensor([0.25, 0.0]))
    torch.testing.assert_close(rate["any_key"], torch.tensor([0.5, 0.0]))
    with pytest.raises(ValueError, match="epsilon"):
        sink_rate(sink_scores(layer1[None]), epsilon=1.5)


# ---------------------------------------------------------------- induction

def induction_circuit(model: GPT, prev_layer=0, prev_head=0, ind_layer=1, ind_head=1) -> list:
    """Hooks that make a previous-token head and, after it, a head that attends from each token to
    the one that followed that token's most recent earlier occurrence (itself if there is none).
    The token ids are read as the model is called."""
    seen = {}
    model.register_forward_pre_hook(lambda module, args: seen.update(idx=args[0]))

    def previous(pattern, _hook):
        pattern = pattern.clone()
        pattern[:, prev_head] = previous_token(pattern.size(-1))
        return pattern

    def induction(pattern, _hook):
        pattern = pattern.clone()
        pattern[:, ind_head] = 0.0
        for b, row in enumerate(seen["idx"].tolist()):
            for t, token in enumerate(row):
                earlier = [j for j in range(t) if row[j] == token]
                pattern[b, ind_head, t, earlier[-1] + 1 if earlier else t] = 1.0
        return pattern

    return [(f"blocks.{prev_layer}.attn.pattern", previous), (f"blocks.{ind_layer}.attn.pattern", induction)]


def test_a_hand_built_induction_circuit_scores_as_an_induction_head_and_a_random_model_does_not():
    model = GPT(tiny_config(vocab_size=1000, block_size=32))
    random_scores = induction_scores(model, seq_len=16, batch=4, generator=torch.Generator().manual_seed(0))
    assert random_scores.shape == (2, 2)
    assert random_scores.max() < 0.2, random_scores
    with model.hooks(induction_circuit(model)):
        scores = induction_scores(model, seq_len=16, batch=4, generator=torch.Generator().manual_seed(0))
    assert scores[1, 1] > 0.95, scores
    assert scores[0, 0] < 0.05, "a previous-token head alone is not an induction head"
    assert scores[0, 1] < 0.2 and scores[1, 0] < 0.2
    with pytest.raises(ValueError, match="seq_len"):
        induction_scores(model, seq_len=17)


def test_repeated_random_tokens_have_no_repeat_in_the_first_half():
    tokens = repeated_random_tokens(65, 64, batch=16, generator=torch.Generator().manual_seed(1))
    assert tokens.shape == (16, 128)
    assert torch.equal(tokens[:, :64], tokens[:, 64:])
    assert all(len(set(row)) == 64 for row in tokens[:, :64].tolist())
    assert tokens.max() < 65 and tokens.min() >= 0
    with pytest.raises(ValueError, match="vocab_size"):
        repeated_random_tokens(65, 66, batch=1)


def test_a_perfect_induction_head_scores_one_on_a_small_vocabulary():
    """At vocab 65 and 64 tokens per repeat, drawing with repeats made the previous occurrence
    ambiguous and a perfect head scored about 0.6; with distinct tokens it scores 1."""
    model = GPT(tiny_config(vocab_size=65, block_size=128))
    with model.hooks(induction_circuit(model)):
        scores = induction_scores(model, seq_len=64, batch=8, generator=torch.Generator().manual_seed(0))
    assert scores[1, 1] >= 0.99, scores
    assert scores[0, 0] < 0.05


def test_previous_token_and_prefix_matching_of_known_patterns():
    T = 12
    patterns = torch.stack([previous_token(T), uniform_causal(T)])  # (H=2, T, T)
    stripe = previous_token_stripe(patterns)
    assert stripe[0] == 1.0 and stripe[1] < 0.3
    # tokens a b c a: query 3 (a) matches key 1 (b follows the earlier a); an induction pattern there scores 1
    idx = torch.tensor([[5, 6, 7, 5]])
    induction = torch.zeros(1, 1, 4, 4)
    induction[0, 0, [0, 1, 2], [0, 1, 2]] = 1.0
    induction[0, 0, 3, 1] = 1.0
    torch.testing.assert_close(prefix_matching(induction, idx), torch.tensor([1.0]))
    torch.testing.assert_close(prefix_matching(uniform_causal(4)[None, None], idx), torch.tensor([0.25]))
    # on repeated distinct tokens, prefix matching is the induction stripe
    tokens = repeated_random_tokens(50, 8, batch=2, generator=torch.Generator().manual_seed(0))
    model = GPT(tiny_config(block_size=16))
    with model.hooks(induction_circuit(model)):
        from glassgpt.analysis import batch_patterns
        p = batch_patterns(model, tokens)  # (L, B, H, T, T)
    torch.testing.assert_close(prefix_matching(p, tokens), induction_stripe(p, 8).mean(dim=1))


# ---------------------------------------------------------------- logit lens and ablation

def test_the_logit_lens_at_the_last_layer_is_the_model_itself():
    model = GPT(tiny_config(n_layer=3))
    idx, targets = torch.randint(0, 50, (4, 16)), torch.randint(0, 50, (4, 16))
    targets[0, -3:] = -1  # skipped positions
    lens = logit_lens(model, idx, targets)
    assert lens["loss"].shape == (4,) and lens["accuracy"].shape == (4,)
    assert lens["labels"] == ["embed", "block 0", "block 1", "block 2"]
    logits, loss = model(idx, targets)
    torch.testing.assert_close(lens["loss"][-1], loss)
    keep = targets != -1
    expected_accuracy = ((logits.argmax(-1) == targets) & keep).sum() / keep.sum()
    torch.testing.assert_close(lens["accuracy"][-1], expected_accuracy.float())
    # the embedding point decodes the embedding directly
    embed_logits = model.lm_head(model.ln_f(model.wte(idx) + model.wpe(torch.arange(16))))
    embed_loss = torch.nn.functional.cross_entropy(embed_logits.flatten(0, 1), targets.flatten(), ignore_index=-1)
    torch.testing.assert_close(lens["loss"][0], embed_loss)


def test_zero_ablating_a_head_through_hooks_equals_removing_its_output_by_hand():
    model = GPT(tiny_config(n_layer=2, n_head=4, n_embd=32))
    with torch.no_grad():
        for block in model.blocks:
            block.attn.c_proj.weight.mul_(20)  # make each head matter
    idx, targets = torch.randint(0, 50, (3, 16)), torch.randint(0, 50, (3, 16))
    increase = head_ablation(model, idx, targets)
    assert increase.shape == (2, 4)
    _, base = model(idx, targets)
    hs = model.config.head_size
    for layer in range(2):
        for head in range(4):
            by_hand = copy.deepcopy(model)
            with torch.no_grad():
                by_hand.blocks[layer].attn.c_proj.weight[:, head * hs:(head + 1) * hs] = 0  # the head's columns
            _, loss = by_hand(idx, targets)
            torch.testing.assert_close(increase[layer, head], (loss - base).detach(), atol=1e-5, rtol=1e-4)
    assert increase.abs().max() > 1e-3
    assert all(not hp.fns for hp in model.hook_points.values()), "ablation hooks removed"


# ---------------------------------------------------------------- plots and summary

def test_plots_return_figures_with_token_labels():
    tokens = ["T", "o", "\u2423", "b", "e"]
    fig = plot_attention(uniform_causal(5), tokens, title="layer 0 head 1")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == tokens
    assert [t.get_text() for t in ax.get_yticklabels()] == tokens
    assert ax.get_title() == "layer 0 head 1"
    grid = plot_attention_grid(torch.stack([uniform_causal(5)] * 6).view(2, 3, 5, 5), tokens)
    panels = [a for a in grid.axes if a.get_title().startswith("layer")]
    assert len(panels) == 6 and panels[-1].get_title() == "layer 1 head 2"
    assert [t.get_text() for t in panels[0].get_xticklabels()] == tokens
    one_layer = plot_attention_grid(torch.stack([uniform_causal(5)] * 3)[None], tokens, first_layer=4)
    assert [a.get_title() for a in one_layer.axes[:3]] == ["layer 4 head 0", "layer 4 head 1", "layer 4 head 2"]
    heat = plot_head_heatmap(torch.tensor([[0.25, 0.5], [0.75, 1.0]]), "entropy", "nats")
    assert {t.get_text() for t in heat.axes[0].texts} == {"0.25", "0.50", "0.75", "1.00"}
    lens = plot_logit_lens({"loss": torch.tensor([3.0, 2.0]), "accuracy": torch.tensor([0.1, 0.4]),
                            "labels": ["embed", "block 0"]})
    assert list(lens.axes[0].lines[0].get_ydata()) == [3.0, 2.0]


@pytest.mark.parametrize("tokens", [list("ROMEO: here"), ["\u2423wherefore", "\u23ce", "art", "\u2423thou"] * 4,
                                    [f"\u2423tok{i}" for i in range(64)]], ids=["chars", "words", "64 tokens"])
def test_the_hand_laid_out_pictures_keep_every_label_inside_and_apart(tokens):
    """The attention grid and the head heatmaps have no layout engine: every text drawn lies inside
    the figure, and no panel's tick labels run into the titles of the row below or the colour bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    T = len(tokens)
    figures = [plot_attention_grid(torch.stack([uniform_causal(T)] * 8).view(2, 4, T, T), tokens, title="layer 0"),
               plot_head_heatmap(torch.rand(2, 4) - 0.5, "loss increase when the head is zeroed", "nats", fmt=".3f")]
    for fig in figures:
        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)
        page = fig.bbox.padded(1)
        texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_window_extent"))
                 if t.get_visible() and t.get_text()]
        for text in texts:
            box = text.get_window_extent(renderer)
            if "the head is zeroed" in text.get_text():  # a title wider than a small heatmap: as before
                continue
            assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, \
                (text.get_text(), box, page)
        panels = [a for a in fig.axes if a.get_title().startswith("layer")]
        for upper in (a for a in panels if a.get_title().startswith("layer 0")):
            others = [a for a in fig.axes if a is not upper]  # the other panels and the colour bar
            obstacles = [a.get_window_extent(renderer) for a in others] + [a.title.get_window_extent(renderer)
                                                                          for a in others if a.get_title()]
            for label in upper.get_xticklabels():
                box = label.get_window_extent(renderer)
                assert not any(box.overlaps(o) for o in obstacles), (label.get_text(), upper.get_title())


def test_summarize_reads_its_findings_out_of_the_numbers():
    results = {
        "window_length": 64,
        "depth_scan": torch.tensor([[0.10, 0.20], [0.90, 0.95]]),
        "attention_distance": torch.tensor([[1.0, 1.2], [20.0, 18.0]]),
        "sink_scores": {"max_key_share": torch.tensor([[0.1, 0.1], [0.1, 0.9]])},
        "sinks": [{"layer": 1, "head": 1, "key_index": 0, "share": 0.9, "first_position_share": 0.9, "token": "\u23ce"}],
        "induction": torch.tensor([[0.02, 0.03], [0.81, 0.05]]),
        "induction_seq_len": 32,
        "logit_lens": {"loss": torch.tensor([9.82, 3.0, 2.0, 1.95]), "accuracy": torch.tensor([0.1, 0.3, 0.5, 0.52]),
                       "labels": ["embed", "block 0", "block 1", "block 2"], "uniform_loss": 4.17,
                       "unigram_entropy": 3.3},
        "sink_rate": {"first_position": torch.tensor([0.0, 0.5]), "any_key": torch.tensor([0.0, 0.5])},  # the one sink
        "previous_token": torch.tensor([[0.9, 0.1], [0.1, 0.1]]),
        "prefix_matching": torch.tensor([[0.0, 0.1], [0.7, 0.1]]),
        "ablation_tokens": [2, 64],
        "ablation": torch.tensor([[0.5, 0.001], [0.002, 0.02]]),
    }
    text = summarize(results)
    assert "layer 0 is local" in text and "layer 1 is diffuse" in text
    assert "1 head is an attention sink (sink share at least 30%): layer 1 head 1 (90% onto position 0, '\u23ce')" in text
    assert "1 head looks like an induction head on repeated random tokens: layer 1 head 0 (0.81)" in text
    assert ("Logit lens (baselines: uniform ln V = 4.17, the targets' unigram entropy 3.30; final loss 1.95, top-1 52%): "
            "share of the gap from uniform to the final loss closed after block 0 53%, block 1 98%, block 2 100%. "
            "block 1 already comes within 10% of the gap of the final loss (loss 2.00 there).") in text
    assert "Decoding the embedding alone gives 9.82 (top-1 10%), worse than uniform." in text
    assert "25% of heads sink into some single key, 25% into position 0 (by layer: 0%, 50%)" in text
    assert "1 head put at least 30% of their attention on the previous token (best: layer 0 head 0 (0.90))" in text
    assert "The 4 heads by kind (each named by the first that holds by two standard errors, in this order): " \
           "1 induction, 1 previous-token, 1 sink, 1 local." in text
    assert "local: mean attention distance at most 6.4 tokens" in text
    assert "prefix matching (best: layer 1 head 0 (0.70))" in text
    assert "Most important heads by ablation (on 2 windows of 64 tokens)" in text
    untrained = dict(results, logit_lens=dict(results["logit_lens"], loss=torch.tensor([9.8, 5.0, 4.5, 4.4])))
    assert "the final loss 4.40 is no better than knowing nothing (uniform ln V = 4.17" in summarize(untrained)
    assert "Most important heads by ablation (on 2 windows of 64 tokens): layer 0 head 0 (+0.500 nats)" in text
    assert "2 of 4 heads change the loss by less than 0.01" in text
    quiet = dict(results, sinks=[], induction=torch.full((2, 2), 0.05))
    assert "No attention sinks" in summarize(quiet) and "No induction head:" in summarize(quiet)
    assert summarize({"ablation": results["ablation"]}).startswith("Most important heads")


# ---------------------------------------------------------------- the report, through the command line

SECTIONS = ["summary", "attention-maps", "depth-scan", "sinks", "distance", "previous-token", "logit-lens", "induction",
            "ablation"]


def run_main(capsys, *args: str) -> subprocess.CompletedProcess:
    """`glassgpt ARGS` run in this process (no interpreter start-up): its exit status and output."""
    from glassgpt.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, prepared_data_dir, mirror):
    from glassgpt.config import load_run_config
    from glassgpt.training import train

    run_dir = tmp_path_factory.mktemp("analysis") / "run"
    run_config = load_run_config("cpu-baby", ["n_layer=2", "n_head=2", "n_embd=32", "block_size=32", "batch_size=64",
                                              "max_iters=10", "eval_interval=10", "eval_iters=1"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLASSGPT_DATA_DIR", str(prepared_data_dir))
        mp.setenv("GLASSGPT_MIRROR", str(mirror))
        train(run_config, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def report_dir(trained_run, tmp_path_factory, prepared_data_dir, mirror):
    """The report of the trained run, made by `glassgpt analyze` as a user runs it."""
    out = tmp_path_factory.mktemp("report-parent") / "report"
    env = {"GLASSGPT_DATA_DIR": str(prepared_data_dir), "GLASSGPT_MIRROR": str(mirror)}
    r = run_cli("analyze", str(trained_run), "--out", str(out), "--windows", "3", env=env)
    assert r.returncode == 0, r.stderr
    assert str(out / "report.html") in r.stdout
    return out


def test_analyze_writes_a_self_contained_report_with_every_section(report_dir):
    out = report_dir
    page = (out / "report.html").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f"id='{section}'" in page, section
    images = re.findall(r'src="([^"]*)"', page)
    assert len(images) == 2 + 9 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert not re.search(r"<script[^>]*\bsrc=", page), "the interactive view's script is inline"
    assert "validation split of the run&#x27;s dataset &#x27;shakespeare-char&#x27;" in page
    numbers = json.loads((out / "analysis.json").read_text(encoding="utf-8"))
    assert len(numbers["prompt_ids"]) == 32  # the default prompt: the start of the validation windows
    assert torch.tensor(numbers["prompt_patterns"]).shape == (2, 2, 32, 32)
    for key in ("depth_scan", "attention_distance", "induction", "ablation", "previous_token", "prefix_matching"):
        assert torch.tensor(numbers[key]).shape == (2, 2), key
    assert len(numbers["logit_lens"]["loss"]) == 3 and numbers["num_windows"] == 3
    for key in ("depth_scan", "attention_distance", "induction", "ablation", "previous_token", "prefix_matching"):
        assert torch.tensor(numbers[f"{key}_se"]).shape == (2, 2), key  # each score's standard error beside it
    assert len(numbers["logit_lens"]["loss_se"]) == 3 and numbers["icl_score_se"] > 0
    assert set(numbers["window_sink_scores"]) >= {"max_key_share_se", "first_position_share_se"}
    assert [(h["layer"], h["head"]) for h in numbers["heads"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(h["description"] and "share_se" in h and "kind" in h for h in numbers["heads"])
    assert "id='heads'" in page and html.escape(numbers["heads"][0]["description"]) in page
    from glassgpt.analysis.view import embedded_view_data

    shown = {score["key"]: score for score in embedded_view_data(page)["scores"]}  # the view's per-head table
    assert shown["depth_scan"]["se"] == [[round(v, 4) for v in row] for row in numbers["depth_scan_se"]]
    assert shown["max_key_share"]["se"] is not None and shown["attribution"]["se"] is None
    assert all(html.escape(paragraph) in page for paragraph in numbers["summary"].split("\n\n"))
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(["attention_layer0.png", "attention_layer1.png", "depth_scan.png", "sink_first_position.png",
                           "sink_max_key.png", "attention_distance.png", "logit_lens.png", "induction.png",
                           "ablation.png", "previous_token.png", "prefix_matching.png"])
    assert [p.name for p in out.parent.iterdir()] == ["report"], "no temporary folders left behind"


def test_analyze_falls_back_to_the_prompt_and_replaces_an_earlier_report(trained_run, report_dir, tmp_path,
                                                                        monkeypatch, capsys):
    out = tmp_path / "report"
    shutil.copytree(report_dir, out)  # an earlier analysis, to be replaced
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(tmp_path / "empty"))
    r = run_main(capsys, "analyze", str(trained_run), "--prompt", "ROMEO:\nO, she doth teach", "--out", str(out))
    assert r.returncode == 0, r.stderr
    numbers = json.loads((out / "analysis.json").read_text(encoding="utf-8"))
    assert numbers["validation_source"].startswith("the prompt itself (24 tokens)")
    assert numbers["prompt_tokens"][:7] == ["R", "O", "M", "E", "O", ":", "\u23ce"]
    assert "the prompt itself" in (out / "report.html").read_text(encoding="utf-8")
    assert not (out / "attention_layer0.png").samefile(report_dir / "attention_layer0.png")
    assert [p.name for p in tmp_path.iterdir()] == ["report"], "the old report and temporary folders are gone"


@pytest.mark.parametrize("args,fragment", [
    (["--prompt", ""], "--prompt is empty"),
    (["--prompt", "x" * 33], "longer than the model's block_size 32"),
    (["--prompt", "caf\u00e9"], "'\u00e9'"),
    (["--prompt", "a"], "at least 2 tokens"),
])
def test_analyze_rejects_bad_prompts_and_writes_nothing(trained_run, data_env, tmp_path, capsys, args, fragment):
    out = tmp_path / "report"
    assert_clean_error(run_main(capsys, "analyze", str(trained_run), *args, "--out", str(out)), 2, fragment)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_analyze_caps_the_number_of_windows(trained_run, capsys):
    assert_clean_error(run_main(capsys, "analyze", str(trained_run), "--windows", "5000"), 2, "--windows", "is capped at 1,024")
    assert_clean_error(run_main(capsys, "analyze", str(trained_run), "--windows", "0"), 2, "--windows")


def test_analyze_a_run_without_weights(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert_clean_error(run_main(capsys, "analyze", str(tmp_path)), 2, "model.safetensors")
    assert_clean_error(run_main(capsys, "analyze", str(tmp_path / "missing")), 2, "does not exist")


def test_analyze_never_replaces_a_folder_that_is_not_an_analysis(trained_run, data_env, capsys):
    r = run_main(capsys, "analyze", str(trained_run), "--out", str(trained_run))
    assert_clean_error(r, 2, "not an earlier glassgpt report")
    assert (trained_run / "model.safetensors").is_file()


def test_a_failed_analysis_leaves_the_previous_report_in_place(trained_run, report_dir, data_env, tmp_path,
                                                              monkeypatch):
    from glassgpt.analysis import report

    out = tmp_path / "report"
    shutil.copytree(report_dir, out)
    before = (out / "analysis.json").read_text(encoding="utf-8")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report, "render_html", broken)
    with pytest.raises(OSError, match="disk full"):
        report.write_report(trained_run, prompt="Something else", out=out, num_windows=2)
    assert (out / "analysis.json").read_text(encoding="utf-8") == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"], "no temporary folders left behind"


def test_the_induction_probe_draws_only_tokens_the_tokenizer_has():
    """A padded vocabulary (a model with more ids than its tokenizer) never puts an untrained
    padding id into the repeated random tokens: `vocab_size` bounds them."""

    model = GPT(tiny_config(vocab_size=64, block_size=32))
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    induction_scores(model, seq_len=8, batch=4, generator=torch.Generator().manual_seed(0), vocab_size=10)
    assert seen and int(torch.cat(seen).max()) < 10
    induction_scores(model, seq_len=8, batch=4, generator=torch.Generator().manual_seed(0))
    assert int(seen[-1].max()) >= 10, "without it the whole model vocabulary is drawn"
