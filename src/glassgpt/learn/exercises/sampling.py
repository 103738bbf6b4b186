"""Temperature and top-k: glassgpt.inference.generate.sampling_probs and apply_top_k."""

from __future__ import annotations

import torch

from glassgpt.inference.generate import apply_top_k
from glassgpt.learn.core import Case, Exercise, catalogue
from glassgpt.learn.exercises import TITLES
from glassgpt.learn.probing import close, randn, small_run


def apply_temperature(logits, temperature):
    """Logits (B, V) divided by the temperature (> 0), in float32: below 1 the distribution
    sharpens towards the most likely token, above 1 it flattens.
    """
    return logits.float() / temperature


def top_k_filter(logits, k):
    """Keep the k largest logits of each row of (B, V), and every logit tied with the k-th largest;
    the others become -inf (a probability of exactly 0 after the softmax). A k larger than V keeps
    them all. Returns (B, V) in the logits' dtype.
    """
    k = min(k, logits.size(-1))
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


# ---------------------------------------------------------------- the catalogue's mutations

def temperature_multiplies(logits, temperature):
    return logits.float() * temperature


def keeps_k_minus_one(logits, k):
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[..., -1:]
    return logits.masked_fill(logits <= kth, float("-inf"))


def keeps_smallest(logits, k):
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1, largest=False).values[..., -1:]
    return logits.masked_fill(logits > kth, float("-inf"))


def dropped_to_zero(logits, k):
    kth = torch.topk(logits, min(k, logits.size(-1)), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, 0.0)


def drops_ties(logits, k):
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep.scatter_(-1, torch.topk(logits, min(k, logits.size(-1)), dim=-1).indices, True)
    return logits.masked_fill(~keep, float("-inf"))


# ---------------------------------------------------------------- the detectors

LOGITS = torch.tensor([[0.5, 2.0, -1.0, 3.0, 1.0, -0.5]])  # distinct; descending order: 3, 1, 4, 0, 5, 2


def filtered(learner, logits=LOGITS, k=3):
    out = learner("top_k_filter", logits.clone(), k)
    return out if isinstance(out, torch.Tensor) and out.shape == logits.shape else None


def kept(out) -> list[int]:
    return torch.isfinite(out[0]).nonzero().flatten().tolist() if out is not None else []


def detect_temperature_multiplies(learner):
    logits = randn(2, 5, seed=81)
    if close(learner("apply_temperature", logits.clone(), 2.0), logits * 2.0):
        return ("at temperature 2 your logits double: divide by the temperature, so that a high temperature "
                "flattens the distribution")


def detect_k_minus_one(learner):
    out = filtered(learner)
    if out is not None and kept(out) == [1, 3]:
        return ("with k=3 your filter keeps 2 tokens: it drops the k-th largest itself; keep the logits >= the "
                "k-th largest (mask those < it)")


def detect_keeps_smallest(learner):
    out = filtered(learner)
    if out is not None and kept(out) == [0, 2, 5]:
        return "with k=3 your filter keeps the 3 smallest logits: keep the largest"


def detect_dropped_to_zero(learner):
    out = filtered(learner)
    if out is not None and not bool(torch.isinf(out).any()) and int((out == 0).sum()) == 3:
        return ("the logits you drop become 0, not -inf: a logit of 0 still gets probability after the softmax; "
                "set them to -inf")


def detect_drops_ties(learner):
    tied = torch.tensor([[1.0, 2.0, 2.0, 0.5, 3.0]])
    out = filtered(learner, tied, 2)
    if out is not None and len(kept(out)) == 2 and 4 in kept(out):
        return ("with k=2 and two logits tied at the 2nd largest your filter keeps one of them: keep every logit "
                "tied with the k-th largest (logits >= it), which gives the same answer whatever the order")


MISTAKES = catalogue(
    "apply_temperature",
    ("temperature-multiplies", "logits times the temperature", temperature_multiplies, detect_temperature_multiplies),
) + catalogue(
    "top_k_filter",
    ("top-k-keeps-k-minus-one", "the k-th largest dropped", keeps_k_minus_one, detect_k_minus_one),
    ("top-k-keeps-smallest", "the k smallest kept", keeps_smallest, detect_keeps_smallest),
    ("top-k-zero-not-inf", "dropped logits set to 0", dropped_to_zero, detect_dropped_to_zero),
    ("top-k-drops-ties", "ties with the k-th largest dropped", drops_ties, detect_drops_ties),
)


# ---------------------------------------------------------------- the cases

def cases() -> list[Case]:
    def temperature(label, logits, t):
        return Case(label, "apply_temperature", (logits, t), apply_temperature(logits, t))

    def top_k(label, logits, k):
        return Case(label, "top_k_filter", (logits, k), top_k_filter(logits, k))

    _, model_logits, _ = small_run()
    last = model_logits[:, -1, :]  # (B, V): what generation samples from
    return [
        temperature("temperature 0.7 on (2, 11)", randn(2, 11, seed=1), 0.7),
        temperature("temperature 2 on one row (1, 5)", randn(1, 5, seed=2), 2.0),
        top_k("k=3 of (2, 11)", randn(2, 11, seed=3), 3),
        top_k("k=1 (greedy)", randn(2, 7, seed=4), 1),
        top_k("k larger than the vocabulary", randn(1, 5, seed=5), 9),
        top_k("ties at the k-th largest", torch.tensor([[1.0, 2.0, 2.0, 0.5, 3.0]]), 2),
        Case("glassgpt's top-k (apply_top_k) on a small GPT's last logits, k=5", "top_k_filter", (last, 5),
             apply_top_k(last, 5)),
    ]


EXERCISE = Exercise(
    name="sampling", title=TITLES["sampling"],
    reference={"apply_temperature": apply_temperature, "top_k_filter": top_k_filter},
    outputs={"apply_temperature": ("logits",), "top_k_filter": ("logits",)}, cases=cases, mistakes=MISTAKES,
    glassgpt_code="glassgpt.inference.generate.sampling_probs")
