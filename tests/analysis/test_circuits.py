"""Measures reduced inside the hook, and the circuit tools: each against a known answer."""

import math

import pytest
import torch

from glassgpt.analysis import (
    activation_patching, attention_distance, batch_patterns, depth_scan, direct_logit_attribution, head_ablation,
    induction_scores, induction_stripe, key_shares, logit_lens, mean_z, normalized_entropy, patched_logits,
    prefix_matching, previous_token_stripe, repeated_random_tokens, unigram_entropy, window_statistics,
)
from glassgpt.model import GPT

from conftest import tiny_config


def randomised(model: GPT) -> GPT:
    """Random LayerNorm weights and every bias too, so a term on the wrong side of a bias shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
            elif name.endswith("bias"):  # zero at init: randomised, so a dropped bias term shows
                p.copy_(torch.randn_like(p) * 0.1)
    return model.eval()


# ---------------------------------------------------------------- streamed = held, at a fraction of the memory

def test_window_statistics_in_one_streamed_pass_equal_the_measures_on_held_patterns():
    model = randomised(GPT(tiny_config(n_layer=3, attn_impl="sdpa")))
    windows = torch.randint(0, 12, (5, 16))  # a small alphabet: tokens repeat, so prefix matching has queries
    targets = torch.randint(0, 50, (5, 16))
    targets[0, :3] = -1
    stats = window_statistics(model, windows, targets, batch_size=2)
    held = batch_patterns(model, windows)  # (L, B, H, T, T)
    torch.testing.assert_close(stats["depth_scan"], normalized_entropy(held).mean(dim=1))
    torch.testing.assert_close(stats["attention_distance"], attention_distance(held).mean(dim=1))
    torch.testing.assert_close(stats["previous_token"], previous_token_stripe(held).mean(dim=1))
    torch.testing.assert_close(stats["prefix_matching"], prefix_matching(held, windows))
    torch.testing.assert_close(stats["key_shares"], key_shares(held).mean(dim=1))
    lens = logit_lens(model, windows, targets)
    torch.testing.assert_close(stats["logit_lens"]["loss"], lens["loss"])
    torch.testing.assert_close(stats["logit_lens"]["accuracy"], lens["accuracy"])
    torch.testing.assert_close(depth_scan(model, windows, batch_size=3), stats["depth_scan"])


def test_the_streamed_pass_never_holds_more_than_one_layer_of_attention():
    model = GPT(tiny_config(n_layer=4)).eval()
    alive, most = [], [0]

    def count(x, hook):  # patterns still referenced when the next one is made
        alive[:] = [p for p in alive if p() is not None]
        most[0] = max(most[0], len(alive))
        import weakref
        alive.append(weakref.ref(x))
    model.add_hook("blocks.0.attn.pattern", count)  # model-global: seen by the stream's passes too
    for i in range(1, 4):
        model.add_hook(f"blocks.{i}.attn.pattern", count)
    window_statistics(model, torch.randint(0, 50, (3, 16)), torch.randint(0, 50, (3, 16)))
    model.remove_hooks()
    assert most[0] <= 1, f"{most[0]} earlier patterns still alive"


def test_a_strided_logit_lens_decodes_a_subset_and_reports_the_baselines():
    model = GPT(tiny_config()).eval()
    windows, targets = torch.randint(0, 50, (2, 16)), torch.tensor([[3] * 8 + [4] * 8] * 2)
    stats = window_statistics(model, windows, targets, max_lens_positions=4)["logit_lens"]
    assert stats["positions_per_window"] == 4
    assert stats["uniform_loss"] == pytest.approx(math.log(50))
    assert stats["unigram_entropy"] == pytest.approx(math.log(2))  # every 4th position: 3, 3, 4, 4
    assert unigram_entropy(torch.tensor([5, 5, 5, -1])) == 0.0


def test_measures_work_on_bfloat16_weights():
    model = GPT(tiny_config(n_layer=2, attn_impl="sdpa")).eval()
    windows, targets = torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16))
    reference = window_statistics(model, windows, targets)
    ablation = head_ablation(model, windows, targets)
    exact = direct_logit_attribution(model, windows[0], token=7)
    parts = exact["heads"].sum() + exact["mlp"].sum() + exact["rest"]
    assert parts == pytest.approx(exact["logit"], abs=1e-5)  # the decomposition is exact in fp32
    model.to(torch.bfloat16)
    stats = window_statistics(model, windows, targets)
    for name in ("depth_scan", "attention_distance", "previous_token", "key_shares"):
        assert stats[name].dtype == torch.float32
        torch.testing.assert_close(stats[name], reference[name], atol=0.03, rtol=0.05)
    torch.testing.assert_close(stats["logit_lens"]["loss"], reference["logit_lens"]["loss"], atol=0.05, rtol=0.02)
    assert induction_scores(model, seq_len=8, batch=2).dtype == torch.float32
    assert head_ablation(model, windows, targets, mode="mean").shape == ablation.shape
    dla = direct_logit_attribution(model, windows[0], token=7)
    scale = float(exact["heads"].abs().sum() + exact["mlp"].abs().sum() + abs(exact["rest"]))  # bf16 error grows with it
    assert dla["heads"].sum() + dla["mlp"].sum() + dla["rest"] == pytest.approx(dla["logit"], abs=0.02 * scale)
    torch.testing.assert_close(dla["heads"], exact["heads"], atol=0.02 * scale, rtol=0)


def test_streamed_induction_scores_equal_the_stripe_of_held_patterns():
    model = GPT(tiny_config(n_layer=2)).eval()
    tokens = repeated_random_tokens(50, 8, 4, torch.Generator().manual_seed(3))
    held = induction_stripe(batch_patterns(model, tokens), 8).mean(dim=1)
    torch.testing.assert_close(induction_scores(model, seq_len=8, batch=4, generator=torch.Generator().manual_seed(3)), held)


# ---------------------------------------------------------------- ablation

def test_mean_ablation_equals_replacing_the_head_by_its_mean_in_the_weights():
    model = randomised(GPT(tiny_config()))
    idx, targets = torch.randint(0, 50, (2, 10)), torch.randint(0, 50, (2, 10))
    reference = torch.randint(0, 50, (3, 7))
    increase = head_ablation(model, idx, targets, mode="mean", reference=reference)
    layer, head, hs = 1, 0, model.config.head_size
    mean = mean_z(model, reference)[layer, head]  # (hs,)
    z = model.run_with_cache(reference, names=[f"blocks.{layer}.attn.z"])[1][f"blocks.{layer}.attn.z"]  # (B, nh, T, hs)
    torch.testing.assert_close(mean, z[:, head].reshape(-1, hs).mean(dim=0))  # over every position of every sequence
    by_hand = GPT(tiny_config()).eval()
    by_hand.load_state_dict(model.state_dict())
    proj = by_hand.blocks[layer].attn.c_proj
    with torch.no_grad():
        cols = slice(head * hs, (head + 1) * hs)
        proj.bias += proj.weight[:, cols] @ mean  # the head's constant output, moved into the bias
        proj.weight[:, cols] = 0  # and its own output gone
    with torch.no_grad():
        base, ablated = model(idx, targets)[1], by_hand(idx, targets)[1]
    assert increase[layer, head] == pytest.approx(float(ablated - base), abs=1e-5)
    zero = head_ablation(model, idx, targets, mode="zero")
    assert not torch.allclose(zero, increase)
    with pytest.raises(ValueError, match="mode must be one of"):
        head_ablation(model, idx, targets, mode="resample")


# ---------------------------------------------------------------- activation patching

def test_patching_the_whole_residual_restores_the_clean_logits_exactly():
    model = randomised(GPT(tiny_config(n_layer=3)))
    clean, corrupted = torch.randint(0, 50, (1, 9)), torch.randint(0, 50, (1, 9))
    clean_logits, cache = model.run_with_cache(clean, names=["blocks.1.resid_pre"])
    torch.testing.assert_close(patched_logits(model, corrupted, cache, "blocks.1.resid_pre"), clean_logits)


def test_patching_the_one_changed_position_at_the_embedding_restores_the_clean_answer():
    model = randomised(GPT(tiny_config(n_layer=3)))
    clean = torch.randint(0, 50, (1, 9))
    corrupted = clean.clone()
    corrupted[0, 4] = (clean[0, 4] + 1) % 50  # the prompts differ at position 4 only
    result = activation_patching(model, clean, corrupted, answer=3, wrong=5)
    assert result["restored"].shape == (3, 9)
    assert result["restored"][0, 4] == pytest.approx(result["clean"], abs=1e-5)  # the whole difference lies there
    others = torch.cat([result["restored"][0, :4], result["restored"][0, 5:]])
    torch.testing.assert_close(others, torch.full_like(others, result["corrupted"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(result["fraction"][0, 4], torch.tensor(1.0), atol=1e-4, rtol=0)
    heads = activation_patching(model, clean, corrupted, answer=3, wrong=5, over="heads")
    assert heads["restored"].shape == (3, 2)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(clean=torch.zeros(1, 5, dtype=torch.long), corrupted=torch.zeros(1, 6, dtype=torch.long)), "same shape"),
    (dict(answer=50), "answer must be a token id in 0..49"),
    (dict(wrong=-1), "wrong must be a token id"),
    (dict(site="attn.patern"), "site must be one of"),
    (dict(over="layers"), "over must be"),
])
def test_patching_refuses_bad_input_naming_the_argument(kwargs, fragment):
    model = GPT(tiny_config()).eval()
    args = dict(clean=torch.zeros(1, 5, dtype=torch.long), corrupted=torch.ones(1, 5, dtype=torch.long),
                answer=1, wrong=2)
    with pytest.raises(ValueError, match=fragment):
        activation_patching(model, **{**args, **kwargs})


# ---------------------------------------------------------------- direct logit attribution

@pytest.mark.parametrize("pos_encoding", ["learned", "rope"])
def test_direct_logit_attribution_terms_add_up_to_the_final_logit(pos_encoding):
    model = randomised(GPT(tiny_config(n_layer=3, pos_encoding=pos_encoding)))
    idx = torch.randint(0, 50, (10,))
    dla = direct_logit_attribution(model, idx, token=17, position=6)
    assert dla["heads"].shape == (3, 2) and dla["mlp"].shape == (3,)
    total = float(dla["heads"].sum() + dla["mlp"].sum()) + dla["rest"]
    assert total == pytest.approx(dla["logit"], abs=1e-4)
    assert dla["logit"] == pytest.approx(float(model(idx[None])[0][0, 6, 17]), abs=1e-5)
    with pytest.raises(ValueError, match="token must be a token id in 0..49"):
        direct_logit_attribution(model, idx, token=50)


def test_with_a_softcap_dla_splits_the_logit_before_the_cap_and_says_so():
    """The cap is not additive: the terms add up to the logit before it (a bug once summed them
    to 3.77 against a capped logit of 1.91, and called that logit the model's)."""
    model = randomised(GPT(tiny_config(n_layer=3, logit_softcap=2.0)))
    idx = torch.randint(0, 50, (10,))
    dla = direct_logit_attribution(model, idx, token=17, position=6)
    total = float(dla["heads"].sum() + dla["mlp"].sum()) + dla["rest"]
    assert total == pytest.approx(dla["logit"], abs=1e-4)
    assert dla["attributed"] == "logit before the softcap"
    model_logit = float(model(idx[None])[0][0, 6, 17])
    assert dla["model_logit"] == pytest.approx(model_logit, abs=1e-6)
    assert model_logit == pytest.approx(2.0 * math.tanh(dla["logit"] / 2.0), abs=1e-5)
    assert direct_logit_attribution(randomised(GPT(tiny_config())), idx, token=3)["attributed"] == "logit"


def test_direct_logit_attribution_of_a_silenced_head_is_zero():
    model = randomised(GPT(tiny_config(n_layer=2)))
    with torch.no_grad():
        model.blocks[1].attn.c_proj.weight[:, 8:] = 0  # head 1 of layer 1 writes nothing
    dla = direct_logit_attribution(model, torch.randint(0, 50, (8,)), token=3)
    assert dla["heads"][1, 1] == 0 and dla["heads"][1, 0] != 0


def test_the_logit_lens_plot_draws_the_baselines():
    from glassgpt.analysis import plot_logit_lens

    fig = plot_logit_lens({"loss": torch.tensor([9.8, 2.0]), "accuracy": torch.tensor([0.1, 0.4]),
                           "labels": ["embed", "block 0"], "uniform_loss": 4.17, "unigram_entropy": 3.3})
    levels = sorted(line.get_ydata()[0] for line in fig.axes[0].lines[1:])
    assert levels == [3.3, 4.17]


# ---------------------------------------------------------------- the suite: budgets and progress

def test_the_suite_reports_progress_stage_by_stage_and_the_bars_draw_it(capsys):
    from glassgpt.analysis import analyze
    from glassgpt.analysis.report import progress_bars

    model = GPT(tiny_config()).eval()
    heard = []
    windows, targets = torch.randint(0, 50, (3, 16)), torch.randint(0, 50, (3, 16))
    results = analyze(model, torch.randint(0, 50, (8,)), windows, targets,
                      progress=lambda stage, done, total: heard.append((stage, done, total)))
    stages = list(dict.fromkeys(stage for stage, _, _ in heard))
    assert stages == ["validation windows", "induction", "head ablation"]
    assert ("validation windows", 3, 3) in heard and heard[-1] == ("head ablation", 4, 4)
    assert results["ablation_tokens"] == [3, 16] and results["logit_lens"]["positions_per_window"] == 16
    with progress_bars(disable=False) as progress:
        for stage, done, total in heard:
            progress(stage, done, total)
    drawn = capsys.readouterr().out
    assert "validation windows" in drawn and "head ablation" in drawn


def test_a_model_too_large_for_the_budgets_ablates_on_the_first_tokens_and_decodes_a_subset(monkeypatch):
    from glassgpt.analysis import suite

    model = GPT(tiny_config()).eval()
    windows, targets = torch.randint(0, 50, (4, 16)), torch.randint(0, 50, (4, 16))
    per_token = suite.forward_flops_per_token(model, 16)
    monkeypatch.setattr(suite, "ABLATION_FLOPS", 5 * 20 * per_token)  # 5 passes x 20 tokens: more than one window
    assert [t.shape for t in suite.ablation_slice(model, windows, targets)] == [(1, 16), (1, 16)]
    monkeypatch.setattr(suite, "ABLATION_FLOPS", 5 * 10 * per_token)  # 10 tokens each: cut to MIN_ABLATION_TOKENS
    assert suite.ablation_slice(model, windows, targets)[0].shape == (1, 16)
    monkeypatch.setattr(suite, "MIN_ABLATION_TOKENS", 4)
    assert suite.ablation_slice(model, windows, targets)[0].shape == (1, 10)
    monkeypatch.setattr(suite, "LENS_FLOPS", 2 * 16 * 50 * 3 * 4 * 4)  # 4 positions of each of the 4 windows
    assert suite.lens_position_budget(model, 4) == 4
