"""Single-head causal attention: glassgpt.model.CausalSelfAttention.manual_attention."""

from __future__ import annotations

import math

import torch

from glassgpt.learn.core import Case, Exercise, catalogue
from glassgpt.learn.exercises import TITLES
from glassgpt.learn.probing import BF16_TOL, FP16_TOL, close, randn, small_run


def causal_attention(q, k, v):
    """Single-head causal self-attention.

    q, k, v: (B, T, hs). Query i may look at keys 0..i (itself and the past), never the future.
    Returns (out, pattern):
    pattern (B, T, T): the attention weights, query rows by key columns: the softmax over the keys
    of the scores q.k / sqrt(hs), the future's scores set to -inf first, so each row sums to 1
    (do the softmax in float32, then cast the pattern to v's dtype);
    out (B, T, hs) = pattern @ v: each query's weighted sum of the values.
    """
    T, hs = q.size(-2), q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, T, hs) x (B, hs, T) -> (B, T, T)
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # True where key j <= query i
    scores = scores.masked_fill(~mask, float("-inf"))  # no looking ahead
    pattern = torch.softmax(scores.float(), dim=-1).to(v.dtype)  # (B, T, T), rows sum to 1
    return pattern @ v, pattern  # (B, T, T) x (B, T, hs) -> (B, T, hs)


# ---------------------------------------------------------------- the catalogue's mutations

def _attend(q, k, v, mask_diagonal=0, fill=float("-inf"), scale=None, dim=-1):
    T, hs = q.size(-2), q.size(-1)
    scores = q @ k.transpose(-2, -1) * (scale if scale is not None else 1 / math.sqrt(hs))
    if mask_diagonal is not None:
        mask = torch.ones(T, T, dtype=torch.bool).tril(diagonal=mask_diagonal)
        scores = scores.masked_fill(~mask, fill)
    pattern = torch.softmax(scores.float(), dim=dim).to(v.dtype)
    return pattern @ v, pattern


def no_mask(q, k, v):
    return _attend(q, k, v, mask_diagonal=None)


def mask_hides_diagonal(q, k, v):
    return _attend(q, k, v, mask_diagonal=-1)


def mask_one_ahead(q, k, v):
    return _attend(q, k, v, mask_diagonal=1)


def masked_to_zero(q, k, v):
    return _attend(q, k, v, fill=0.0)


def mask_after_softmax(q, k, v):
    T = q.size(-2)
    pattern = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1)
    pattern = (pattern * torch.ones(T, T).tril()).to(v.dtype)
    return pattern @ v, pattern


def no_scale(q, k, v):
    return _attend(q, k, v, scale=1.0)


def scale_by_hs(q, k, v):
    return _attend(q, k, v, scale=1.0 / q.size(-1))


def softmax_over_queries(q, k, v):
    return _attend(q, k, v, dim=-2)


def out_from_transposed_pattern(q, k, v):
    _, pattern = causal_attention(q, k, v)
    return pattern.transpose(-2, -1) @ v, pattern


def out_mixes_keys(q, k, v):
    _, pattern = causal_attention(q, k, v)
    return pattern @ k, pattern


def returns_scores(q, k, v):
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(),
                                                                           float("-inf"))
    return torch.softmax(scores, dim=-1) @ v, scores


# ---------------------------------------------------------------- the detectors

T, HS = 6, 16


def probe(learner):
    """The learner's (out, pattern) on one sequence of 6 queries, and the raw dot products q.k."""
    q, k, v = 0.25 * randn(1, T, HS, seed=21), 0.25 * randn(1, T, HS, seed=22), randn(1, T, HS, seed=23)
    result = learner("causal_attention", q, k, v)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return None
    out, pattern = result
    if not isinstance(pattern, torch.Tensor) or pattern.shape != (1, T, T) or not isinstance(out, torch.Tensor):
        return None
    return out.float()[0], pattern.float()[0], (q @ k.transpose(-2, -1))[0], q, k, v


def future(pattern) -> torch.Tensor:
    return torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)


def first_leak(pattern, min_offset: int):
    """(query, key) of the first weight on a key at least `min_offset` places ahead, or None."""
    ahead = torch.ones(T, T, dtype=torch.bool).triu(diagonal=min_offset)
    leaks = torch.isfinite(pattern) & (pattern.abs() > 1e-6) & ahead
    return tuple(int(i) for i in leaks.nonzero()[0]) if bool(leaks.any()) else None


def zero_scores_ahead(pattern) -> bool:
    """Every query's future keys share one nonzero weight: scores set to 0 rather than -inf."""
    row = pattern[0, 1:]
    return bool((row > 1e-6).all()) and bool(((row - row[0]).abs() <= 1e-5 * row[0].abs()).all())


def detect_no_mask(learner):
    seen = probe(learner)
    if seen is None or zero_scores_ahead(seen[1]):
        return None
    leak = first_leak(seen[1], 2)
    if leak:
        i, j = leak
        return (f"query {i} can see key {j} (weight {float(seen[1][i, j]):.3f}): your mask lets the future in; "
                "set the scores of keys j > i to -inf before the softmax")


def detect_one_ahead(learner):
    seen = probe(learner)
    if seen is None or first_leak(seen[1], 2) or not first_leak(seen[1], 1):
        return None
    i, j = first_leak(seen[1], 1)
    return (f"query {i} can see key {j}, one place ahead, and no further: your mask is shifted into the future; "
            "query i sees keys 0..i (tril() with diagonal 0)")


def detect_masked_to_zero(learner):
    seen = probe(learner)
    if seen is not None and zero_scores_ahead(seen[1]):
        return (f"every future key of query 0 gets the same weight {float(seen[1][0, 1]):.3f}: you set the future's "
                "scores to 0, and softmax turns 0 into a weight; set them to -inf")


def detect_hidden_diagonal(learner):
    seen = probe(learner)
    if seen is None:
        return None
    pattern = seen[1]
    if bool((pattern.diagonal()[1:].nan_to_num(0).abs() < 1e-6).all()) and bool((pattern[1:, 0] > 1e-6).all()):
        return ("query 1 gives no weight to key 1, itself: your mask hides the diagonal (tril(diagonal=-1)), "
                "which leaves query 0 no key at all (a row of NaN); query i sees keys 0..i")


def row_and_column_sums(pattern):
    visible = pattern.nan_to_num(0) * torch.ones(T, T).tril()
    return visible.sum(-1), visible.sum(-2)


def detect_softmax_over_queries(learner):
    seen = probe(learner)
    if seen is None:
        return None
    rows, cols = row_and_column_sums(seen[1])
    if not bool(((rows - 1).abs() < 1e-4).all()) and bool(((cols - 1).abs() < 1e-4).all()):
        return (f"the columns of your pattern sum to 1 and its rows do not (row 0 sums to {float(rows[0]):.3f}): "
                "your softmax runs over the queries (dim=-2); each query's weights over the keys (dim=-1) sum to 1")


def detect_mask_after_softmax(learner):
    seen = probe(learner)
    if seen is None:
        return None
    pattern = seen[1]
    rows, cols = row_and_column_sums(pattern)
    no_future = bool((pattern[future(pattern)].nan_to_num(0).abs() < 1e-6).all())
    columns_sum_to_1 = bool(((cols - 1).abs() < 1e-4).all())
    if no_future and bool(torch.isfinite(pattern).all()) and float(rows[0]) < 1 - 1e-3 and not columns_sum_to_1:
        return (f"row 0 of your pattern sums to {float(rows[0]):.3f}: you zeroed the future after the softmax, so "
                "the rows no longer sum to 1; mask the scores with -inf before the softmax")


def scale_estimates(seen) -> torch.Tensor | None:
    """The factor c in pattern[i, j] / pattern[i, 0] = exp(c (q_i.k_j - q_i.k_0)), from every past pair
    (rows 2..T-1, keys 1..i-1); None unless the rows are a softmax of c times the dot products."""
    pattern, dots = seen[1].double(), seen[2].double()
    estimates = [torch.log(pattern[i, j] / pattern[i, 0]) / (dots[i, j] - dots[i, 0])
                 for i in range(2, T) for j in range(1, i)]
    c = torch.stack(estimates)
    if not bool(torch.isfinite(c).all()) or float(c.std()) > 0.01 * float(c.abs().mean()):
        return None
    return c.mean()


def detect_scale(learner, wanted: float, text: str):
    seen = probe(learner)
    c = scale_estimates(seen) if seen is not None else None
    if c is not None and abs(float(c) - wanted) < 0.02 * wanted:
        return text


def detect_no_scale(learner):
    return detect_scale(learner, 1.0, f"your scores are q.k, not q.k / sqrt(hs): with hs = {HS} the softmax is "
                                      f"{math.sqrt(HS):.0f}x too sharp; divide the scores by sqrt(hs)")


def detect_scale_by_hs(learner):
    return detect_scale(learner, 1 / HS, "you divide the scores by hs, not by sqrt(hs): the softmax comes out too flat")


def detect_returns_scores(learner):
    seen = probe(learner)
    if seen is None:
        return None
    pattern = seen[1]
    if bool(torch.isinf(pattern).any()) or close(pattern, seen[2] / math.sqrt(HS), atol=1e-4) or \
            close(pattern.masked_fill(future(pattern), 0), (seen[2] / math.sqrt(HS)).masked_fill(future(pattern), 0)):
        return ("the pattern you return holds the scores (with -inf ahead), not the weights: return the softmax "
                "of the scores, whose rows sum to 1")


def detect_transposed_pattern(learner):
    seen = probe(learner)
    if seen is None:
        return None
    out, pattern, _, _, _, v = seen
    if close(out, pattern.nan_to_num(0).T @ v[0]) and not close(out, pattern @ v[0]):
        return ("your output is pattern.T @ v: key 0's value is spread to the queries that look at it; each "
                "query's output is its own row of the pattern times v (pattern @ v)")


def detect_mixes_keys(learner):
    seen = probe(learner)
    if seen is None:
        return None
    out, pattern, _, _, k, v = seen
    if close(out, pattern @ k[0]) and not close(out, pattern @ v[0]):
        return "your output is a weighted sum of the keys: the pattern weighs the values (pattern @ v)"


MISTAKES = catalogue(
    "causal_attention",
    ("no-mask", "the future is not masked", no_mask, detect_no_mask),
    ("mask-one-ahead", "the mask lets in one key ahead", mask_one_ahead, detect_one_ahead),
    ("mask-hides-diagonal", "the mask hides each query's own key", mask_hides_diagonal, detect_hidden_diagonal),
    ("masked-to-zero", "future scores set to 0, not -inf", masked_to_zero, detect_masked_to_zero),
    ("mask-after-softmax", "the future zeroed after the softmax", mask_after_softmax, detect_mask_after_softmax),
    ("no-scale", "scores not divided by sqrt(hs)", no_scale, detect_no_scale),
    ("scale-by-hs", "scores divided by hs", scale_by_hs, detect_scale_by_hs),
    ("softmax-over-queries", "softmax over dim -2", softmax_over_queries, detect_softmax_over_queries),
    ("returns-scores", "the scores returned as the pattern", returns_scores, detect_returns_scores),
    ("transposed-pattern", "out = pattern.T @ v", out_from_transposed_pattern, detect_transposed_pattern),
    ("mixes-keys", "out = pattern @ k", out_mixes_keys, detect_mixes_keys),
)


# ---------------------------------------------------------------- the cases

def cases() -> list[Case]:
    def case(label, B, T, hs, seed, dtype=torch.float32, **tol):
        q, k, v = (randn(B, T, hs, seed=seed + i, dtype=dtype) for i in range(3))
        return Case(label, "causal_attention", (q, k, v), causal_attention(q, k, v), **tol)

    _, _, cache = small_run()
    q, k, v = (cache[f"blocks.1.attn.{name}"][:, 0] for name in "qkv")  # head 0: (B, T, hs)
    glassgpt = (cache["blocks.1.attn.z"][:, 0], cache["blocks.1.attn.pattern"][:, 0])
    return [
        case("random input (2, 5, 8)", 2, 5, 8, seed=1),
        case("length 1 (2, 1, 8)", 2, 1, 8, seed=4),
        case("a batch of one (1, 7, 4)", 1, 7, 4, seed=7),
        case("bfloat16 input", 2, 5, 8, seed=10, dtype=torch.bfloat16, **BF16_TOL),
        case("float16 input", 2, 5, 8, seed=13, dtype=torch.float16, **FP16_TOL),
        Case("a glassgpt model's weights (blocks.1, head 0 of a small GPT)", "causal_attention", (q, k, v), glassgpt),
    ]


EXERCISE = Exercise(
    name="attention", title=TITLES["attention"], reference={"causal_attention": causal_attention},
    outputs={"causal_attention": ("out", "pattern")}, cases=cases, mistakes=MISTAKES,
    glassgpt_code="glassgpt.model.CausalSelfAttention.manual_attention")
