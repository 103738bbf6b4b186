"""Two measures of a head: glassgpt.analysis.measures.previous_token_stripe and induction_stripe."""

from __future__ import annotations

import torch

from glassgpt.analysis.measures import batch_patterns, induction_stripe, previous_token_stripe, repeated_random_tokens
from glassgpt.learn.core import Case, Exercise, catalogue
from glassgpt.learn.exercises import TITLES
from glassgpt.learn.probing import number, randn, small_model


def previous_token_score(pattern):
    """How much a head attends to the token just before each query.

    pattern: (..., T, T) attention weights, query rows by key columns, T >= 2. Returns (...): the
    mean over the queries i = 1 .. T-1 of pattern[..., i, i - 1] (query 0 has no previous token).
    A head that always looks one token back scores 1.
    """
    return pattern.float().diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=-1)  # entries (i, i - 1)


def induction_score(pattern, seq_len):
    """How much a head does induction on a repeated sequence.

    pattern: (..., 2 seq_len, 2 seq_len), the head's attention on seq_len random tokens followed by
    the same tokens again. Returns (...): the mean, over the second repeat's queries seq_len + s
    (s = 0 .. seq_len-1), of their weight on key s + 1, the token that followed the earlier
    occurrence of the query's token. A perfect induction head scores 1.
    """
    second_repeat = pattern.float()[..., seq_len:, :]  # (..., seq_len, 2 seq_len): queries seq_len + s
    return second_repeat.diagonal(offset=1, dim1=-2, dim2=-1).mean(dim=-1)  # entries (s, s + 1)


# ---------------------------------------------------------------- the catalogue's mutations

def reads_next_token(pattern):
    return pattern.float().diagonal(offset=1, dim1=-2, dim2=-1).mean(dim=-1)


def reads_own_token(pattern):
    return pattern.float().diagonal(dim1=-2, dim2=-1).mean(dim=-1)


def counts_query_zero(pattern):
    return pattern.float().diagonal(offset=-1, dim1=-2, dim2=-1).sum(dim=-1) / pattern.size(-1)


def duplicate_token_stripe(pattern, seq_len):
    return pattern.float()[..., seq_len:, :].diagonal(dim1=-2, dim2=-1).mean(dim=-1)


def averages_every_query(pattern, seq_len):
    return pattern.float()[..., seq_len:, :].diagonal(offset=1, dim1=-2, dim2=-1).sum(dim=-1) / (2 * seq_len)


# ---------------------------------------------------------------- the detectors

T, L = 6, 4  # previous-token probes of 6 positions; induction probes of 2 x 4


def stripe(T: int, key_of) -> torch.Tensor:
    """(T, T) weights putting everything of query i on key key_of(i)."""
    pattern = torch.zeros(T, T)
    for i in range(T):
        pattern[i, key_of(i)] = 1.0
    return pattern


def score_of(learner, function, *args) -> float | None:
    return number(learner(function, *args))


def scores_1(learner, function, pattern, *args) -> bool:
    value = score_of(learner, function, pattern, *args)
    return value is not None and abs(value - 1.0) < 1e-5


def detect_reads_next(learner):
    if scores_1(learner, "previous_token_score", stripe(T, lambda i: min(i + 1, T - 1))):
        return ("a head that looks one token ahead scores 1 on your measure: you read the diagonal above "
                "(key i + 1); the previous token is key i - 1, diagonal(offset=-1)")


def detect_reads_own(learner):
    if scores_1(learner, "previous_token_score", torch.eye(T)):
        return ("a head that looks at its own token scores 1 on your measure: you read the main diagonal; the previous "
                "token is key i - 1, diagonal(offset=-1)")


def detect_counts_query_zero(learner):
    value = score_of(learner, "previous_token_score", stripe(T, lambda i: max(i - 1, 0)))
    if value is not None and abs(value - (T - 1) / T) < 1e-5:
        return (f"a perfect previous-token head scores {value:.3f} = (T-1)/T on your measure: you average over all T "
                "queries; query 0 has no previous token, average over the T-1 others")


def induction_pattern(key_in_second_half) -> torch.Tensor:
    """(2L, 2L): the first repeat looks at key 0; query L + s looks at key_in_second_half(s)."""
    return stripe(2 * L, lambda i: 0 if i < L else key_in_second_half(i - L))


def detect_duplicate_stripe(learner):
    if scores_1(learner, "induction_score", induction_pattern(lambda s: s), L):
        return ("a duplicate-token head (query L + s looking at key s, the earlier copy of its own token) scores 1 on "
                "your measure: induction looks one further, at key s + 1, the token that came next last time")


def detect_averages_every_query(learner):
    value = score_of(learner, "induction_score", induction_pattern(lambda s: s + 1), L)
    if value is not None and abs(value - 0.5) < 1e-5:
        return ("a perfect induction head scores 0.5 on your measure: you divide by all 2 seq_len queries; only the "
                "seq_len queries of the second repeat can do induction, average over them")


MISTAKES = catalogue(
    "previous_token_score",
    ("previous-reads-next", "the diagonal above read", reads_next_token, detect_reads_next),
    ("previous-reads-own", "the main diagonal read", reads_own_token, detect_reads_own),
    ("previous-counts-query-zero", "averaged over T queries", counts_query_zero, detect_counts_query_zero),
) + catalogue(
    "induction_score",
    ("induction-duplicate-stripe", "key s read, not s + 1", duplicate_token_stripe, detect_duplicate_stripe),
    ("induction-every-query", "averaged over all 2 seq_len queries", averages_every_query, detect_averages_every_query),
)


# ---------------------------------------------------------------- the cases

def random_patterns(*shape: int, seed: int) -> torch.Tensor:
    """(..., T, T) causal attention weights: a softmax over each query's visible keys."""
    T = shape[-1]
    scores = 2 * randn(*shape, T, seed=seed)
    return torch.softmax(scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")), dim=-1)


def cases() -> list[Case]:
    def previous(label, pattern):
        return Case(label, "previous_token_score", (pattern,), previous_token_score(pattern))

    def induction(label, pattern, seq_len):
        return Case(label, "induction_score", (pattern, seq_len), induction_score(pattern, seq_len))

    model = small_model()
    tokens = repeated_random_tokens(model.config.vocab_size, 6, 2, torch.Generator().manual_seed(0))  # (2, 12)
    patterns = batch_patterns(model, tokens)  # (L, B, H, 12, 12)
    return [
        previous("random patterns (2, 3, 7, 7)", random_patterns(2, 3, 7, seed=1)),
        previous("two positions (T=2)", random_patterns(1, 2, seed=2)),
        previous("one pattern, no batch dimensions (5, 5)", random_patterns(5, seed=3)),
        Case("glassgpt's previous_token_stripe on a small GPT's patterns (L, B, H, 12, 12)", "previous_token_score",
             (patterns,), previous_token_stripe(patterns)),
        induction("random patterns of 2 x 5 (3, 10, 10)", random_patterns(3, 10, seed=4), 5),
        induction("a repeat of one token (2, 2)", random_patterns(2, seed=5), 1),
        Case("glassgpt's induction_stripe on a small GPT's patterns of repeated random tokens", "induction_score",
             (patterns, 6), induction_stripe(patterns, 6)),
    ]


EXERCISE = Exercise(
    name="measures", title=TITLES["measures"],
    reference={"previous_token_score": previous_token_score, "induction_score": induction_score},
    outputs={"previous_token_score": ("score",), "induction_score": ("score",)}, cases=cases, mistakes=MISTAKES,
    glassgpt_code="glassgpt.analysis.measures.induction_stripe")
