"""Standard errors: each formula against the spread of the estimate over fresh samples (synthetic
windows of known variance), shrinking as 1/sqrt(n); the streamed measures carry them; a score is
named only when it clears its threshold by two of them; and the sentences say only what they allow."""

import math

import pytest
import torch

from glassgpt.analysis.uncertainty import (
    Mean, bootstrap_se, clears, difference_and_se, paired_ratio_and_se, plus_minus, ratio_and_se,
)
from glassgpt.model import GPT

from conftest import tiny_config

RESAMPLES = 300


def spread_and_reported(draw, estimate, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """The empirical standard deviation of `estimate(sample)[0]` over fresh samples `draw(generator)`,
    and the mean of the standard errors `estimate(sample)[1]` it reported."""
    g = torch.Generator().manual_seed(seed)
    values, errors = [], []
    for _ in range(resamples):
        value, se = estimate(draw(g))
        values.append(float(value))
        errors.append(float(se))
    return float(torch.tensor(values).std()), float(torch.tensor(errors).mean())


def test_the_error_of_a_mean_over_windows_matches_the_spread_of_the_mean_and_shrinks_as_one_over_root_n():
    def draw(n):  # per-window values of known variance 0.04 (uniform on 0.4 +- 0.35 has variance 0.7^2 / 12)
        return lambda g: 0.05 + 0.7 * torch.rand(n, generator=g)

    for n in (16, 64):
        spread, reported = spread_and_reported(draw(n), lambda y: ratio_and_se(y, torch.ones(y.numel())))
        assert reported == pytest.approx(spread, rel=0.2)
        assert reported == pytest.approx(0.7 / math.sqrt(12 * n), rel=0.1)
    small = spread_and_reported(draw(16), lambda y: ratio_and_se(y, torch.ones(y.numel())))[1]
    large = spread_and_reported(draw(256), lambda y: ratio_and_se(y, torch.ones(y.numel())))[1]
    assert small / large == pytest.approx(4.0, rel=0.1), "16 times the windows: a quarter of the error"


def test_a_pooled_ratio_over_windows_of_unequal_size_gets_the_ratio_estimators_error():
    """Prefix matching and the lens pool rows over windows that hold different numbers of them."""
    def draw(g):
        counts = torch.randint(5, 60, (40,), generator=g).float()  # rows per window
        rate = 0.2 + 0.6 * torch.rand(40, generator=g)  # each window's own rate
        totals = torch.binomial(counts, rate, generator=g)
        return totals, counts

    spread, reported = spread_and_reported(draw, lambda s: ratio_and_se(*s))
    assert reported == pytest.approx(spread, rel=0.2)


def test_the_streamed_sums_give_the_same_error_as_all_windows_at_once():
    g = torch.Generator().manual_seed(1)
    totals, counts = torch.rand(30, 3, generator=g) * 10, torch.randint(1, 9, (30,), generator=g).float()
    mean = Mean()
    for start in range(0, 30, 7):  # in uneven chunks, as the stream adds them
        mean.add(totals[start: start + 7], counts[start: start + 7])
    direct = (totals.sum(0) / counts.sum())  # (3,)
    torch.testing.assert_close(mean.value, direct.float())
    r = direct[None]
    brute = torch.sqrt(30 / 29 * ((totals - r * counts[:, None]) ** 2).sum(0)) / counts.sum()
    torch.testing.assert_close(mean.se, brute.float())
    one = Mean()
    one.add(totals[:1], counts[:1])
    assert torch.isnan(one.se).all(), "one window: no spread to measure"


def test_a_paired_difference_keeps_the_pairing():
    """Early and late losses of the same windows move together: the score's error is that of the
    difference, far below what two separate errors would give."""
    def draw(g):
        hardness = 3 * torch.rand(64, generator=g)  # shared by both bands of a window
        early = (hardness + 0.2 * torch.randn(64, generator=g)) * 4
        late = (hardness - 0.05 + 0.2 * torch.randn(64, generator=g)) * 4
        return late, early

    four = torch.full((64,), 4.0)
    spread, reported = spread_and_reported(draw, lambda s: difference_and_se(s[0], four, s[1], four))
    assert reported == pytest.approx(spread, rel=0.2)
    late, early = draw(torch.Generator().manual_seed(5))
    separate = math.hypot(float(ratio_and_se(late, four)[1]), float(ratio_and_se(early, four)[1]))
    assert difference_and_se(late, four, early, four)[1] < separate / 5


def test_the_ratio_of_paired_means_and_its_bootstrap_agree_with_the_spread():
    """The patching fraction (restored - corrupted) / (clean - corrupted) over prompt pairs, and the
    bootstrap over windows used where no formula fits."""
    def draw(g):
        gap = 2 + torch.rand(48, generator=g)
        return 0.6 * gap + 0.3 * torch.randn(48, generator=g), gap

    spread, reported = spread_and_reported(draw, lambda s: paired_ratio_and_se(*s))
    assert reported == pytest.approx(spread, rel=0.2)
    gen = torch.Generator().manual_seed(2)
    boot = spread_and_reported(draw, lambda s: (paired_ratio_and_se(*s)[0], bootstrap_se(
        lambda r: r, s[0], s[1], resamples=200, generator=gen)), resamples=100)[1]
    assert boot == pytest.approx(spread, rel=0.2)


def forced_previous_token(weights_of):
    """Hooks that make head 0 of layer 0 put `weights_of(first token of the window)` on the previous
    token and spread the rest evenly over the keys up to the query: a window's score is known."""
    seen = []

    def remember(module, args):
        seen.append(args[0])

    def hook(pattern, _hook):
        idx = seen[-1]  # (b, T): the windows of this pass
        T = pattern.size(-1)
        w = weights_of(idx[:, 0]).float()[:, None, None]  # (b, 1, 1)
        rest = torch.ones(T, T).tril()
        rest.diagonal(-1).zero_()  # every key up to the query but the previous token
        rest = rest / rest.sum(-1, keepdim=True)
        previous = torch.diag(torch.ones(T - 1), -1)  # (T, T): key i - 1
        forced = (1 - w) * rest + w * previous  # (b, T, T)
        forced[:, 0] = 0.0
        forced[:, 0, 0] = 1.0  # row 0 has only itself
        pattern = pattern.clone()
        pattern[:, 0] = forced
        return pattern
    return remember, hook


def test_the_streamed_previous_token_score_carries_the_spread_of_its_windows():
    from glassgpt.analysis.streaming import WINDOW_REDUCERS, stream_patterns

    model = GPT(tiny_config(vocab_size=50, block_size=16)).eval()
    remember, hook = forced_previous_token(lambda first: first / 49.0)  # token 0..49 -> weight 0..1
    model.register_forward_pre_hook(remember)
    model.add_hook("blocks.0.attn.pattern", hook)
    reducers = {"previous_token": WINDOW_REDUCERS["previous_token"]}

    def estimate(windows):
        stats = stream_patterns(model, windows, reducers, batch_size=4)
        return stats["previous_token"][0, 0], stats["previous_token_se"][0, 0]

    def draw(n):
        return lambda g: torch.randint(0, 50, (n, 16), generator=g)

    spread, reported = spread_and_reported(draw(12), estimate, resamples=80)
    assert reported == pytest.approx(spread, rel=0.2)
    # uniform first tokens on 0..49 / 49: each row of 15 scores w + (1 - w) * 0 = w, so the SE is sd(w) / sqrt(n)
    assert reported == pytest.approx(math.sqrt((50 ** 2 - 1) / 12) / 49 / math.sqrt(12), rel=0.15)
    model.remove_hooks()


def test_a_score_is_named_only_when_it_clears_its_threshold_by_two_standard_errors():
    from glassgpt.analysis.summary import head_kinds, summarize

    assert clears(torch.tensor([0.32, 0.32, 0.29]), torch.tensor([0.05, 0.005, float("nan")]), 0.3).tolist() == [
        False, True, False]
    assert clears(torch.tensor(2.5), torch.tensor(0.2), 3.0, above=False)
    base = {"depth_scan": torch.full((1, 2), 0.5), "induction": torch.tensor([[0.32, 0.02]]), "induction_seq_len": 16}
    noisy = dict(base, induction_se=torch.tensor([[0.05, 0.01]]))
    assert head_kinds(noisy) == [["none of these", "none of these"]]
    assert ("No induction head that the noise allows: layer 0 head 0 scores 0.32 ± 0.05, above 0.3 but not by two "
            "standard errors") in summarize(noisy)
    sure = dict(base, induction_se=torch.tensor([[0.004, 0.01]]))
    assert head_kinds(sure) == [["induction", "none of these"]]
    assert "1 head looks like an induction head on repeated random tokens: layer 0 head 0 (0.32 ± 0.004)" in summarize(sure)


def test_the_in_context_learning_sentence_claims_only_what_its_error_allows():
    from glassgpt.analysis.summary import summarize

    def text(score, se):
        return summarize({"icl_score": score, "icl_score_se": se, "num_windows": 256, "window_length": 64})

    assert "+0.050 ± 0.120 nats: no measurable in-context learning at this context length." in text(0.05, 0.12)
    assert "-0.400 ± 0.050 nats: the context helps" in text(-0.4, 0.05)
    assert "later tokens are predicted worse" in text(0.4, 0.05)


def test_when_nothing_is_found_the_summary_says_when_it_is_expected_and_what_grows_it():
    from glassgpt.analysis.summary import expected_induction_tokens, summarize

    training = {"dataset": "shakespeare-char", "tokenizer": "char", "batch_size": 12, "block_size": 64,
                "tokens_seen": 1_228_800, "recipe_minutes": {"induction-text": 7.6, "depth-scan": None}}
    results = {"depth_scan": torch.full((4, 4), 0.5), "induction": torch.full((4, 4), 0.03),
               "induction_se": torch.full((4, 4), 0.004), "induction_seq_len": 16, "training": training,
               "sinks": [], "sink_scores": {}, "window_sink_scores": {"max_key_share": torch.full((4, 4), 0.2),
                                                                      "max_key_share_se": torch.full((4, 4), 0.02)}}
    text = summarize(results)
    assert expected_induction_tokens(12, 64) == pytest.approx(10 ** 5.7 * math.sqrt(768))
    assert ("No induction head: the best induction score is 0.03 ± 0.004 (layer 0 head 0; even attention would score "
            "about 0.04). At batch 12 and context 64 one is expected after about 13.9M tokens (Aoyama et al. 2025: "
            "10^5.7 x sqrt(B x C)); this run saw 1.2M. `glassgpt train induction-text` is the recipe that grows one "
            "in about 8 minutes on this machine (shown in `bpe:512` tokens on Tiny Shakespeare, Vim's help files and "
            "Python's standard library); this run's tokens are `char`, so prepare its text as the recipe's first: "
            "`glassgpt prepare shakespeare-bpe512`, then `dataset=shakespeare-bpe512`.") in text  # built in
    assert "No attention sinks: no head's sink share reaches 30% by two standard errors (the most concentrated, " \
           "layer 0 head 0, gives 20% ± 2%)." in text
    assert ("`glassgpt train depth-scan dataset=shakespeare-char` is the recipe that grows them (shown in `char` "
            "tokens on Tiny Shakespeare, and with `n_layer=8` on Vim's help files and Python's standard library).") in text, "no preset: no minutes; the run's own tokens: its own dataset"
    on_word_pieces = summarize({**results, "training": {**training, "dataset": "mine", "tokenizer": "bpe:512"}})
    assert "`glassgpt train induction-text dataset=mine` is the recipe that grows one in about 8 minutes" in on_word_pieces
    assert ("this run's tokens are `bpe:512`, so prepare its text as the recipe's first: `glassgpt prepare text PATH "
            "--name mine-char --tokenizer char`, then `dataset=mine-char`.") in on_word_pieces  # the depth scan's


def test_training_facts_count_the_tokens_and_time_a_recipe_from_the_runs_own_speed():
    from glassgpt.analysis.run_facts import recipe_minutes, training_facts
    from glassgpt.config import load_run_config
    from glassgpt.tokenizer import ByteTokenizer, CharTokenizer

    rc = load_run_config("cpu-baby")
    rows = [{"kind": "train", "step": 50, "tokens_per_s": 9000.0}, {"kind": "train", "step": 1600, "tokens_per_s": 8000.0},
            {"kind": "final", "step": 1600, "tokens_per_s": 7680.0, "train_seconds": 100.0}]  # a resumed run: its last session
    facts = training_facts(rc, rows)
    assert facts["tokens_seen"] == 1600 * 12 * 64 and facts["tokens_per_s"] == 7680.0 and facts["tokenizer"] is None
    assert [training_facts(rc, rows, t)["tokenizer"] for t in (CharTokenizer("ab"), ByteTokenizer())] == ["char", "byte"]
    assert (facts["batch_size"], facts["block_size"], facts["dataset"]) == (12, 64, "shakespeare-char")
    # the same recipe at the same speed: its own tokens over its own speed
    assert recipe_minutes("cpu-baby", rc, 7680.0) == pytest.approx(1600 * 12 * 64 / 7680.0 / 60)
    assert recipe_minutes("no-such-recipe", rc, 7680.0) is None and recipe_minutes("cpu-baby", rc, None) is None
    # a timed recipe ends at its max_minutes however many steps it allows
    timed = load_run_config("induction-text")
    assert timed.train.max_minutes > 0
    assert recipe_minutes("induction-text", rc, 1.0) == timed.train.max_minutes


def test_plus_minus_shows_the_error_where_the_value_is_shown():
    assert plus_minus(0.4234, 0.0123) == "0.42 ± 0.01"
    assert plus_minus(0.4234, 0.0042) == "0.42 ± 0.004", "an error below the last digit gets one significant digit"
    assert plus_minus(0.61, 0.031, percent=True) == "61% ± 3%"
    assert plus_minus(0.61, 0.004, percent=True) == "61% ± 0.4%"
    assert plus_minus(0.61, float("nan")) == "0.61" and plus_minus(0.61, None) == "0.61"


def test_patching_effects_carry_their_spread_over_the_prompt_pairs():
    """Each pair patched alone gives its own restored logit difference; the batch's error is their
    standard deviation over sqrt(B), and the fraction's is the paired ratio's."""
    from glassgpt.analysis import activation_patching

    model = GPT(tiny_config(n_layer=2)).eval()
    clean, corrupted = torch.randint(0, 50, (6, 7)), torch.randint(0, 50, (6, 7))
    batch = activation_patching(model, clean, corrupted, answer=3, wrong=5, over="heads")
    alone = [activation_patching(model, clean[b:b + 1], corrupted[b:b + 1], answer=3, wrong=5, over="heads")
             for b in range(6)]
    restored = torch.stack([a["restored"] for a in alone])  # (6, L, H)
    torch.testing.assert_close(batch["restored"], restored.mean(0))
    torch.testing.assert_close(batch["restored_se"], restored.std(0) / math.sqrt(6))
    gaps = torch.tensor([a["clean"] - a["corrupted"] for a in alone])
    corrupted_diffs = torch.tensor([a["corrupted"] for a in alone])
    moved = restored - corrupted_diffs[:, None, None]  # (6, L, H): what each pair's patch brought back
    fraction = moved.mean(0) / gaps.mean()
    z = (moved - fraction * gaps[:, None, None]) / gaps.mean()  # each pair's pull on the ratio
    torch.testing.assert_close(batch["fraction"], fraction)
    torch.testing.assert_close(batch["fraction_se"], torch.sqrt((z ** 2).sum(0) / (6 * 5)))
    assert math.isnan(alone[0]["clean_se"]) and torch.isnan(alone[0]["restored_se"]).all(), "one pair: no spread"
