"""Cross-entropy from logits: the loss of glassgpt.model.GPT.forward (F.cross_entropy, ignore_index=-1)."""

from __future__ import annotations

import math

import torch

from glassgpt.learn.core import Case, Exercise, catalogue
from glassgpt.learn.exercises import TITLES
from glassgpt.learn.probing import number, randn, small_model, small_run


def cross_entropy(logits, targets):
    """The mean cross-entropy of next-token predictions, in nats.

    logits: (N, V) raw scores; targets: (N,) the right token ids, -1 marking a position to skip.
    Returns a 0-dim float32 tensor: the mean, over the positions not skipped, of -log softmax(logits)[target].
    Compute it stably: log softmax(z) = z - logsumexp(z), with each row's max subtracted before exp.
    """
    keep = targets != -1  # (N,)
    logits, targets = logits.float()[keep], targets[keep]  # (n, V), (n,)
    top = logits.max(dim=-1, keepdim=True).values  # (n, 1)
    log_z = top.squeeze(-1) + torch.log(torch.exp(logits - top).sum(dim=-1))  # (n,): logsumexp, no overflow
    right = logits.gather(1, targets[:, None]).squeeze(1)  # (n,): the logit of the right token
    return (log_z - right).mean()


# ---------------------------------------------------------------- the catalogue's mutations

def _losses(logits, targets):
    keep = targets != -1
    return torch.logsumexp(logits.float()[keep], -1) - logits.float()[keep].gather(1, targets[keep, None]).squeeze(1)


def without_max(logits, targets):
    keep = targets != -1
    z = logits.float()[keep]
    return (torch.log(torch.exp(z).sum(-1)) - z.gather(1, targets[keep, None]).squeeze(1)).mean()


def counts_skipped(logits, targets):
    z = logits.float()
    return (torch.logsumexp(z, -1) - z[torch.arange(len(targets)), targets]).mean()


def sum_not_mean(logits, targets):
    return _losses(logits, targets).sum()


def divides_by_all(logits, targets):
    return _losses(logits, targets).sum() / len(targets)


def sign_flipped(logits, targets):
    return -_losses(logits, targets).mean()


def softmax_over_positions(logits, targets):
    keep = targets != -1
    log_probs = torch.log_softmax(logits.float(), dim=0)[keep]
    return -log_probs.gather(1, targets[keep, None]).mean()


# ---------------------------------------------------------------- the detectors

N, V = 5, 6
TARGETS = torch.tensor([1, -1, 3, 0, -1])


def probe(learner, offset: float = 0.0) -> tuple[float | None, float]:
    """The learner's loss and the right one on (5, 6) logits, two of the five positions skipped."""
    logits = 2 * randn(N, V, seed=61) + offset
    return number(learner("cross_entropy", logits, TARGETS.clone())), float(cross_entropy(logits, TARGETS))


def matching(variant, text: str):
    """A detector: `text` when the learner's loss on the probe is the one `variant` gives."""
    def detect(learner):
        got, _ = probe(learner)
        wanted = float(variant(2 * randn(N, V, seed=61), TARGETS))
        if got is not None and abs(got - wanted) <= 1e-5 * max(1.0, abs(wanted)):
            return text
    return detect


def detect_without_max(learner):
    got, _ = probe(learner, offset=1000.0)
    plain, _ = probe(learner)
    if got is not None and plain is not None and not math.isfinite(got) and math.isfinite(plain):
        return (f"with logits near 1000 your loss is {got}: exp(1000) overflows; subtract each row's max before exp "
                "(log softmax(z) = z - max - log sum exp(z - max))")


KEPT = int((TARGETS != -1).sum())
MISTAKES = catalogue(
    "cross_entropy",
    ("no-max-subtraction", "exp overflows on large logits", without_max, detect_without_max),
    ("counts-skipped", "targets of -1 not skipped", counts_skipped, matching(
        counts_skipped, "positions whose target is -1 count in your loss, as the last token (index -1): skip them, "
                        "and average over the rest")),
    ("sum-not-mean", "summed, not averaged", sum_not_mean, matching(
        sum_not_mean, "your loss is the sum over positions: take the mean, so that it does not grow with the batch")),
    ("divides-by-all", "averaged over the skipped positions too", divides_by_all, matching(
        divides_by_all, f"you divide by all {N} positions, the skipped ones too: average over the {KEPT} positions "
                        "whose target is not -1")),
    ("sign-flipped", "the log-probability, not minus it", sign_flipped, matching(
        sign_flipped, "your loss is negative: the cross-entropy is minus the log-probability of the right token")),
    ("softmax-over-positions", "softmax over dim 0", softmax_over_positions, matching(
        softmax_over_positions, "your softmax runs over the positions (dim=0): each position's probabilities are "
                                "over the vocabulary (dim=-1)")),
)


# ---------------------------------------------------------------- the cases

def cases() -> list[Case]:
    def case(label, logits, targets, **tol):
        return Case(label, "cross_entropy", (logits, targets), cross_entropy(logits, targets), **tol)

    g = torch.Generator().manual_seed(0)
    idx, _, _ = small_run()
    targets = torch.cat([idx[:, 1:], torch.full((idx.size(0), 1), -1)], dim=1)  # the next token; the last skipped
    with torch.no_grad():
        logits, loss = small_model()(idx, targets)
    skipped = torch.randint(0, 11, (8,), generator=g)
    skipped[[1, 4]] = -1
    return [
        case("random logits (8, 11)", randn(8, 11, seed=1), torch.randint(0, 11, (8,), generator=g)),
        case("two targets of -1 (skipped)", randn(8, 11, seed=2), skipped),
        case("one position (1, 11)", randn(1, 11, seed=3), torch.tensor([4])),
        case("logits near 1000", 1000 + randn(4, 11, seed=4), torch.tensor([0, 3, 10, 2])),
        Case("a glassgpt model's loss (a small GPT's logits, the last target -1)", "cross_entropy",
             (logits.reshape(-1, logits.size(-1)), targets.reshape(-1)), loss),
    ]


EXERCISE = Exercise(
    name="cross_entropy", title=TITLES["cross_entropy"], reference={"cross_entropy": cross_entropy},
    outputs={"cross_entropy": ("loss",)}, cases=cases, mistakes=MISTAKES, glassgpt_code="glassgpt.model.GPT.forward")
