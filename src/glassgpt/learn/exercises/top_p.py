"""Top-p (nucleus) filtering: glassgpt.inference.generate.apply_top_p."""

from __future__ import annotations

import math

import torch

from glassgpt.inference.generate import apply_top_p
from glassgpt.learn.core import Case, Exercise, catalogue
from glassgpt.learn.exercises import TITLES
from glassgpt.learn.probing import randn, small_run


def top_p_filter(logits, p):
    """Nucleus filtering: logits (B, V) and 0 < p <= 1. The nucleus of a row is the smallest set of
    its most likely tokens whose probabilities add up to at least p, and always holds at least one
    token. Returns (B, V): the logits with every token outside the nucleus set to -inf.
    """
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V), most likely first
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # (B, V): the probability of the tokens ranked above
    drop_sorted = mass_before >= p  # the set had reached p already without this token
    drop_sorted[..., 0] = False  # the most likely token always stays
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


# ---------------------------------------------------------------- the catalogue's mutations

def _sorted(logits):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    return torch.softmax(sorted_logits.float(), dim=-1), order


def drops_crossing_token(logits, p):
    probs, order = _sorted(logits)
    drop_sorted = torch.cumsum(probs, dim=-1) > p
    drop_sorted[..., 0] = False
    return logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))


def can_keep_nothing(logits, p):
    probs, order = _sorted(logits)
    drop_sorted = torch.cumsum(probs, dim=-1) > p
    return logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))


def unsorted(logits, p):
    probs = torch.softmax(logits.float(), dim=-1)
    drop = torch.cumsum(probs, dim=-1) - probs >= p
    drop[..., 0] = False
    return logits.masked_fill(drop, float("-inf"))


def mask_in_sorted_order(logits, p):
    probs, _ = _sorted(logits)
    drop_sorted = torch.cumsum(probs, dim=-1) - probs >= p
    drop_sorted[..., 0] = False
    return logits.masked_fill(drop_sorted, float("-inf"))


def dropped_to_zero(logits, p):
    return top_p_filter(logits, p).nan_to_num(neginf=0.0)


# ---------------------------------------------------------------- the detectors

def kept(learner, probs: list[float], p: float) -> list[int] | None:
    """The tokens the learner's filter keeps from one row with these probabilities."""
    logits = torch.tensor([[math.log(x) for x in probs]])
    out = learner("top_p_filter", logits, p)
    if not isinstance(out, torch.Tensor) or out.shape != logits.shape:
        return None
    return torch.isfinite(out[0]).nonzero().flatten().tolist()


def detect_drops_crossing(learner):
    if kept(learner, [0.5, 0.3, 0.2], 0.6) == [0] and kept(learner, [0.5, 0.3, 0.2], 0.3) == [0]:
        return ("with probabilities 0.5, 0.3, 0.2 and p=0.6 your top-p keeps only the first token: it drops the "
                "token that crosses p; the nucleus is the smallest set whose probability reaches p (0.5 + 0.3)")


def detect_can_keep_nothing(learner):
    if kept(learner, [0.5, 0.3, 0.2], 0.3) == []:
        return ("with probabilities 0.5, 0.3, 0.2 and p=0.3 your top-p keeps no token at all (every logit -inf): "
                "the most likely token is always in the nucleus")


def detect_unsorted(learner):
    if kept(learner, [0.1, 0.2, 0.4, 0.3], 0.65) == [0, 1, 2]:
        return ("with probabilities 0.1, 0.2, 0.4, 0.3 and p=0.65 your nucleus is tokens 0, 1, 2: you add up the "
                "probabilities in vocabulary order; sort them, most likely first, and keep tokens 2 and 3")


def detect_sorted_order(learner):
    if kept(learner, [0.1, 0.2, 0.4, 0.3], 0.65) == [0, 1]:
        return ("with probabilities 0.1, 0.2, 0.4, 0.3 and p=0.65 you keep tokens 0 and 1, the right number in the "
                "wrong places: your mask is in sorted order; scatter it back to the vocabulary's order (tokens 2, 3)")


def detect_dropped_to_zero(learner):
    logits = torch.tensor([[math.log(x) for x in (0.5, 0.3, 0.2)]])
    out = learner("top_p_filter", logits, 0.6)
    if isinstance(out, torch.Tensor) and not bool(torch.isinf(out).any()) and float(out[0, 2]) == 0.0:
        return ("the logits you drop become 0, not -inf: a logit of 0 still gets probability after the softmax; "
                "set them to -inf")


MISTAKES = catalogue(
    "top_p_filter",
    ("top-p-drops-crossing-token", "the token that crosses p dropped", drops_crossing_token,
            detect_drops_crossing),
    ("top-p-can-keep-nothing", "no token kept when the first alone passes p", can_keep_nothing,
            detect_can_keep_nothing),
    ("top-p-unsorted", "probabilities added in vocabulary order", unsorted, detect_unsorted),
    ("top-p-mask-in-sorted-order", "the mask not scattered back", mask_in_sorted_order, detect_sorted_order),
    ("top-p-zero-not-inf", "dropped logits set to 0", dropped_to_zero, detect_dropped_to_zero),
)


# ---------------------------------------------------------------- the cases

def cases() -> list[Case]:
    def case(label, logits, p):
        return Case(label, "top_p_filter", (logits, p), top_p_filter(logits, p))

    _, model_logits, _ = small_run()
    last = model_logits[:, -1, :]  # (B, V)
    return [
        case("p=0.9 on random logits (2, 11)", randn(2, 11, seed=1), 0.9),
        case("p=0.5 on sharp logits (2, 11)", 3 * randn(2, 11, seed=2), 0.5),
        case("p smaller than the top probability (keeps one)", torch.tensor([[4.0, 1.0, 0.0, -1.0]]), 0.1),
        case("p=1 keeps every token", randn(1, 6, seed=3), 1.0),
        case("one token in the vocabulary", torch.tensor([[0.3]]), 0.5),
        *(Case(f"glassgpt's top-p (apply_top_p) on a small GPT's last logits, p={p}", "top_p_filter", (last, p),
               apply_top_p(last, p)) for p in (0.5, 0.9)),
    ]


EXERCISE = Exercise(
    name="top_p", title=TITLES["top_p"], reference={"top_p_filter": top_p_filter},
    outputs={"top_p_filter": ("logits",)}, cases=cases, mistakes=MISTAKES,
    glassgpt_code="glassgpt.inference.generate.apply_top_p")
