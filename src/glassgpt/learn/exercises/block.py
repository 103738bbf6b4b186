"""The pre-LN block: glassgpt.model.Block."""

from __future__ import annotations

import torch

from glassgpt.learn.core import Case, Exercise, catalogue
from glassgpt.learn.exercises import TITLES
from glassgpt.learn.probing import close, randn, small_model, small_run


def block(x, ln_1, attn, ln_2, mlp):
    """A pre-LN transformer block, GPT-2's.

    x: (B, T, C), the residual stream. ln_1, attn, ln_2, mlp: functions (B, T, C) -> (B, T, C).
    Each sublayer reads a normalised copy of the stream and adds its output back to the stream:
    attention first, then the MLP. Returns the stream after both, (B, T, C).
    """
    x = x + attn(ln_1(x))  # (B, T, C): the stream after attention
    return x + mlp(ln_2(x))  # (B, T, C): after the MLP


# ---------------------------------------------------------------- the catalogue's mutations

def post_ln(x, ln_1, attn, ln_2, mlp):
    x = ln_1(x + attn(x))
    return ln_2(x + mlp(x))


def no_residual(x, ln_1, attn, ln_2, mlp):
    x = attn(ln_1(x))
    return mlp(ln_2(x))


def residual_from_normalised(x, ln_1, attn, ln_2, mlp):
    h = ln_1(x)
    x = h + attn(h)
    h = ln_2(x)
    return h + mlp(h)


def parallel_sublayers(x, ln_1, attn, ln_2, mlp):
    return x + attn(ln_1(x)) + mlp(ln_2(x))


def swapped_norms(x, ln_1, attn, ln_2, mlp):
    x = x + attn(ln_2(x))
    return x + mlp(ln_1(x))


# ---------------------------------------------------------------- the detectors

class Recorder:
    """A sublayer for the probes: a fixed function that remembers the first input it was given, and
    what it returned for it."""

    def __init__(self, fn):
        self.fn = fn
        self.first = self.first_output = None

    def __call__(self, x):
        out = self.fn(x)
        if self.first is None and isinstance(x, torch.Tensor):
            self.first, self.first_output = x.detach().clone(), out.detach().clone()
        return out


def sublayer_functions():
    return {"ln_1": lambda x: 2 * x + 1, "attn": torch.sin, "ln_2": lambda x: 3 * x - 1,
            "mlp": lambda x: 0.5 * torch.cos(x)}


def probe(learner):
    """What each sublayer received when the learner's block ran on (1, 3, 4), with the sublayers'
    functions to compute what it should have received."""
    f = sublayer_functions()
    recorders = {name: Recorder(fn) for name, fn in f.items()}
    x = randn(1, 3, 4, seed=41)
    learner("block", x, recorders["ln_1"], recorders["attn"], recorders["ln_2"], recorders["mlp"])
    return x, f, {name: r.first for name, r in recorders.items()}, recorders["attn"].first_output


def detect_post_ln(learner):
    x, _, seen, _ = probe(learner)
    if close(seen["attn"], x):
        return ("attention received the residual stream itself, not ln_1(x): that is a post-LN block (the original "
                "transformer's); GPT-2 normalises each sublayer's input and adds its output to the raw stream")


def detect_no_residual(learner):
    _, _, seen, attention_output = probe(learner)
    if any(close(seen[norm], attention_output) for norm in ("ln_1", "ln_2")):
        return ("a norm received attention's output alone: your block drops the residual stream; "
                "add each sublayer's output to its input (x = x + attn(ln_1(x)))")


def detect_residual_from_normalised(learner):
    x, f, seen, _ = probe(learner)
    h = f["ln_1"](x)
    if close(seen["ln_2"], h + f["attn"](h)):
        return ("you add attention's output to ln_1(x), not to x: the normalised copy is only the sublayer's input; "
                "the stream itself goes on unnormalised")


def detect_parallel(learner):
    x, f, seen, _ = probe(learner)
    if close(seen["ln_2"], x) and close(seen["attn"], f["ln_1"](x)):
        return ("ln_2 sees the block's input, not x + attn(ln_1(x)): your sublayers run in parallel (GPT-J's); "
                "GPT-2's MLP reads the stream after attention")


def detect_swapped_norms(learner):
    x, f, seen, _ = probe(learner)
    if close(seen["attn"], f["ln_2"](x)):
        return "attention's input comes from ln_2: ln_1 normalises attention's input, ln_2 the MLP's"


MISTAKES = catalogue(
    "block",
    ("post-ln", "normalise after the residual add", post_ln, detect_post_ln),
    ("no-residual", "the residual stream dropped", no_residual, detect_no_residual),
    ("residual-from-normalised", "the normalised copy carried on", residual_from_normalised,
     detect_residual_from_normalised),
    ("parallel-sublayers", "attention and MLP read the same input", parallel_sublayers, detect_parallel),
    ("swapped-norms", "ln_1 and ln_2 swapped", swapped_norms, detect_swapped_norms),
)


# ---------------------------------------------------------------- the cases

def random_sublayers(C: int, seed: int):
    """Four different functions (B, T, C) -> (B, T, C), as a block's sublayers are."""
    w = [randn(C, C, seed=seed + i) / C ** 0.5 for i in range(4)]
    return (lambda x: x @ w[0] + 0.1, lambda x: torch.tanh(x @ w[1]), lambda x: x @ w[2] - 0.2,
            lambda x: torch.relu(x @ w[3]))


def cases() -> list[Case]:
    def case(label, x, seed):
        sub = random_sublayers(x.size(-1), seed)
        return Case(label, "block", (x, *sub), block(x, *sub))

    model = small_model()
    _, _, cache = small_run()
    b = model.blocks[1]
    return [
        case("random input (2, 5, 8)", randn(2, 5, 8, seed=1), seed=10),
        case("length 1 (1, 1, 8)", randn(1, 1, 8, seed=2), seed=20),
        Case("a glassgpt model's block (blocks.1 of a small GPT: resid_pre -> resid_post)", "block",
             (cache["blocks.1.resid_pre"], b.ln_1, b.attn, b.ln_2, b.mlp), cache["blocks.1.resid_post"]),
    ]


EXERCISE = Exercise(
    name="block", title=TITLES["block"], reference={"block": block}, outputs={"block": ("stream",)},
    cases=cases, mistakes=MISTAKES, glassgpt_code="glassgpt.model.Block")
