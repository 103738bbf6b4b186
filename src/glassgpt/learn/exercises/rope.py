"""RoPE: glassgpt.model.RotaryEmbedding and apply_rotary."""

from __future__ import annotations

import math

import torch

from glassgpt.learn.core import Case, Exercise, catalogue
from glassgpt.learn.exercises import TITLES
from glassgpt.learn.probing import BF16_TOL, close, randn, small_run
from glassgpt.model import RotaryEmbedding, apply_rotary


def apply_rope(x, start=0, theta=10000.0):
    """Rotary position embedding (RoPE), in glassgpt's layout.

    x: (B, nh, T, hs) queries or keys, hs even. The T positions are start .. start + T - 1 (start > 0
    for new tokens after a KV cache). Feature i is paired with feature i + hs/2 (the first half
    with the second), and pair i turns by the angle position * theta ** (-2i / hs): (x1, x2) becomes
    (x1 cos - x2 sin, x2 cos + x1 sin). Compute in float32; return x's dtype.
    """
    hs, T = x.size(-1), x.size(-2)
    inv_freq = 1.0 / theta ** (torch.arange(0, hs, 2).float() / hs)  # (hs/2,): pair i turns this much per position
    positions = torch.arange(start, start + T).float()  # (T,)
    angles = positions[:, None] * inv_freq[None, :]  # (T, hs/2)
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, nh, T, hs/2) each: the pairs' first and second features
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


# ---------------------------------------------------------------- the catalogue's mutations

def _rope(x, positions, inv_freq, sign=1.0):
    angles = positions[:, None] * inv_freq[None, :]
    cos, sin = angles.cos(), sign * angles.sin()
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def _inv_freq(hs, theta):
    return 1.0 / theta ** (torch.arange(0, hs, 2).float() / hs)


def interleaved_pairs(x, start=0, theta=10000.0):
    hs, T = x.size(-1), x.size(-2)
    angles = torch.arange(start, start + T).float()[:, None] * _inv_freq(hs, theta)[None, :]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2).to(x.dtype)


def ignores_start(x, start=0, theta=10000.0):
    return _rope(x, torch.arange(x.size(-2)).float(), _inv_freq(x.size(-1), theta))


def turns_backwards(x, start=0, theta=10000.0):
    return _rope(x, torch.arange(start, start + x.size(-2)).float(), _inv_freq(x.size(-1), theta), sign=-1.0)


def frequencies_of_i(x, start=0, theta=10000.0):
    hs = x.size(-1)
    return _rope(x, torch.arange(start, start + x.size(-2)).float(), theta ** (-torch.arange(hs // 2).float() / hs))


def positions_from_one(x, start=0, theta=10000.0):
    return _rope(x, torch.arange(start + 1, start + 1 + x.size(-2)).float(), _inv_freq(x.size(-1), theta))


# ---------------------------------------------------------------- the detectors

T, HS, THETA = 4, 8, 10000.0
HALF = HS // 2


def unit(feature: int) -> torch.Tensor:
    x = torch.zeros(1, 1, T, HS)
    x[..., feature] = 1.0
    return x


def rotated(learner, feature: int, start: int = 0):
    out = learner("apply_rope", unit(feature), start, THETA)
    return out.float()[0, 0] if isinstance(out, torch.Tensor) and out.shape == (1, 1, T, HS) else None  # (T, hs)


def halves_paired(out) -> bool:
    """Feature 0 at position 1 went to features 0 and hs/2 only (glassgpt's pairing)."""
    rest = torch.cat([out[1, 1:HALF], out[1, HALF + 1:]])
    return bool((rest.abs() < 1e-5).all()) and abs(float(out[1, HALF])) > 1e-3


def angle(out, position: int, pair: int) -> float:
    return math.atan2(float(out[position, pair + HALF]), float(out[position, pair]))


def detect_interleaved(learner):
    out = rotated(learner, 0)
    if out is not None and abs(float(out[1, 1])) > 1e-3 and abs(float(out[1, HALF])) < 1e-5:
        return (f"feature 0 turns with feature 1 (its neighbour): you paired neighbours (2i, 2i + 1), the "
                f"interleaved layout; glassgpt pairs feature i with feature i + hs/2 (here 0 with {HALF})")


def detect_backwards(learner):
    out = rotated(learner, 0)
    if out is not None and halves_paired(out) and abs(angle(out, 1, 0) + 1.0) < 1e-4:
        return ("pair 0 at position 1 turns by -1 radian, expected +1: your rotation runs backwards; "
                "(x1, x2) becomes (x1 cos - x2 sin, x2 cos + x1 sin)")


def detect_frequencies(learner):
    out = rotated(learner, 1)
    if out is None:
        return None
    wrong = THETA ** (-1 / HS)
    if abs(angle(out, 1, 1) - wrong) < 1e-4:
        return (f"pair 1 turns by {wrong:.4f} per position, expected {THETA ** (-2 / HS):.4f}: your frequencies "
                "are theta ** (-i / hs); pair i's is theta ** (-2i / hs) (torch.arange(0, hs, 2) / hs)")


def detect_ignores_start(learner):
    at_zero, at_five = rotated(learner, 0, 0), rotated(learner, 0, 5)
    if at_zero is not None and close(at_five, at_zero, atol=1e-5):
        return ("with start=5 your rotation is the one of start=0: the positions are start .. start + T - 1 "
                "(new tokens after a KV cache sit past it)")


def detect_positions_from_one(learner):
    out = rotated(learner, 0)
    if out is not None and halves_paired(out) and abs(angle(out, 0, 0) - 1.0) < 1e-4:
        return ("position 0 is turned by 1 radian, one position's angle: your positions start at 1; "
                "position 0 is left as it is")


MISTAKES = catalogue(
    "apply_rope",
    ("interleaved-pairs", "pairs (2i, 2i + 1)", interleaved_pairs, detect_interleaved),
    ("ignores-start", "positions from 0 whatever start is", ignores_start, detect_ignores_start),
    ("turns-backwards", "rotation by minus the angle", turns_backwards, detect_backwards),
    ("frequencies-of-i", "frequencies theta ** (-i / hs)", frequencies_of_i, detect_frequencies),
    ("rope-positions-from-one", "positions counted from 1", positions_from_one, detect_positions_from_one),
)


# ---------------------------------------------------------------- the cases

def cases() -> list[Case]:
    def case(label, x, start=0, theta=10000.0, **tol):
        return Case(label, "apply_rope", (x, start, theta), apply_rope(x, start, theta), **tol)

    _, _, cache = small_run("rope")
    q = cache["blocks.0.attn.q"]  # (B, nh, T, hs) before the rotation
    rotary = RotaryEmbedding(q.size(-1), 10000.0, max_positions=16)
    past = randn(1, 2, 3, q.size(-1), seed=6)
    return [
        case("random input (2, 2, 5, 8)", randn(2, 2, 5, 8, seed=1)),
        case("length 1 (1, 1, 1, 8)", randn(1, 1, 1, 8, seed=2)),
        case("positions past a cache (start=7)", randn(1, 2, 3, 8, seed=3), start=7),
        case("theta=100, head size 16", randn(1, 1, 4, 16, seed=4), theta=100.0),
        case("bfloat16 input", randn(2, 2, 5, 8, seed=5, dtype=torch.bfloat16), **BF16_TOL),
        Case("a glassgpt model's queries (blocks.0.attn.q -> rot_q of a small RoPE GPT)", "apply_rope",
             (q, 0, 10000.0), cache["blocks.0.attn.rot_q"]),
        Case("positions 20..22, past glassgpt's table of 16", "apply_rope", (past, 20, 10000.0),
             apply_rotary(past, *rotary(20, 3)), atol=1e-5, rtol=1e-4),
    ]


EXERCISE = Exercise(
    name="rope", title=TITLES["rope"], reference={"apply_rope": apply_rope},
    outputs={"apply_rope": ("rotated",)}, cases=cases, mistakes=MISTAKES, glassgpt_code="glassgpt.model.apply_rotary")
