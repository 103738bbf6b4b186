"""The MLP with GPT-2's GELU: glassgpt.model.MLP."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from glassgpt.learn.core import Case, Exercise, catalogue
from glassgpt.learn.exercises import TITLES
from glassgpt.learn.probing import BF16_TOL, close, randn, small_model, small_run


def gelu(x):
    """GPT-2's GELU, the tanh approximation, elementwise on any shape:
    0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).
    """
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def mlp(x, w_fc, b_fc, w_proj, b_proj):
    """The transformer's MLP: widen, GELU, project back.

    x: (B, T, C). Weights laid out as nn.Linear's (out, in): w_fc (4C, C), w_proj (C, 4C); biases
    b_fc (4C,) and b_proj (C,), or None (a model with bias=false).
    Returns (B, T, C): gelu(x @ w_fc.T + b_fc) @ w_proj.T + b_proj.
    """
    h = gelu(F.linear(x, w_fc, b_fc))  # (B, T, 4C): x @ w_fc.T + b_fc, then the GELU
    return F.linear(h, w_proj, b_proj)  # (B, T, C)


# ---------------------------------------------------------------- the catalogue's mutations

def exact_gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def relu_for_gelu(x):
    return torch.relu(x)


def gelu_without_cube(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * x))


def activation_after_projection(x, w_fc, b_fc, w_proj, b_proj):
    return gelu(F.linear(F.linear(x, w_fc, b_fc), w_proj, b_proj))


def ignores_biases(x, w_fc, b_fc, w_proj, b_proj):
    return F.linear(gelu(F.linear(x, w_fc)), w_proj)


# ---------------------------------------------------------------- the detectors

GRID = torch.linspace(-4, 4, 33)


def gelu_is(learner, variant) -> bool:
    return close(learner("gelu", GRID.clone()), variant(GRID), atol=1e-6, rtol=1e-5)


def detect_exact_gelu(learner):
    if gelu_is(learner, exact_gelu):
        return ("your GELU is the exact one, x * Phi(x) with erf: GPT-2's is the tanh approximation "
                "0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))); they differ by up to 5e-4")


def detect_relu(learner):
    if gelu_is(learner, relu_for_gelu):
        return "your gelu is a ReLU (gelu(-1) is 0): GPT-2's GELU lets a little of the negative side through"


def detect_no_cube(learner):
    if gelu_is(learner, gelu_without_cube):
        return "your GELU leaves out the 0.044715 x^3 term inside the tanh"


C = 4


def mlp_probe(learner, b_fc=True, b_proj=True):
    x, w_fc, w_proj = randn(1, 3, C, seed=31), randn(4 * C, C, seed=32), randn(C, 4 * C, seed=33)
    biases = (randn(4 * C, seed=34) if b_fc else torch.zeros(4 * C), randn(C, seed=35) if b_proj else torch.zeros(C))
    return learner("mlp", x, w_fc, biases[0], w_proj, biases[1]), (x, w_fc, biases[0], w_proj, biases[1])


def detect_activation_after(learner):
    out, args = mlp_probe(learner)
    if close(out, activation_after_projection(*args)):
        return ("your GELU comes after the output projection: the MLP is linear, GELU, linear "
                "(gelu(x @ w_fc.T + b_fc) @ w_proj.T + b_proj), and its output is not squashed")


def detect_ignores_biases(learner):
    with_both, _ = mlp_probe(learner)
    ignored = [name for name, flags in (("b_fc", (False, True)), ("b_proj", (True, False)))
               if close(mlp_probe(learner, *flags)[0], with_both)]
    if ignored and isinstance(with_both, torch.Tensor):
        return f"your MLP gives the same output whatever {' and '.join(ignored)} is: add the biases after each product"


MISTAKES = catalogue(
    "gelu",
    ("exact-gelu", "erf GELU, not GPT-2's tanh one", exact_gelu, detect_exact_gelu),
    ("relu-for-gelu", "ReLU in place of GELU", relu_for_gelu, detect_relu),
    ("gelu-without-cube", "the x^3 term left out", gelu_without_cube, detect_no_cube),
) + catalogue(
    "mlp",
    ("activation-after-projection", "GELU after the second linear", activation_after_projection,
     detect_activation_after),
    ("ignores-biases", "biases not added", ignores_biases, detect_ignores_biases),
)


# ---------------------------------------------------------------- the cases

def cases() -> list[Case]:
    def activation(label, x, **tol):
        return Case(label, "gelu", (x,), gelu(x), **tol)

    def block(label, x, w_fc, b_fc, w_proj, b_proj):
        return Case(label, "mlp", (x, w_fc, b_fc, w_proj, b_proj), mlp(x, w_fc, b_fc, w_proj, b_proj))

    model = small_model()
    _, _, cache = small_run()
    m = model.blocks[0].mlp
    weights = tuple(t.detach() for t in (m.c_fc.weight, m.c_fc.bias, m.c_proj.weight, m.c_proj.bias))
    with torch.no_grad():
        pre_activation = m.c_fc(cache["blocks.0.ln_2.out"])
    w = (randn(16, 4, seed=2), randn(16, seed=3), randn(4, 16, seed=4), randn(4, seed=5))
    return [
        activation("gelu on random input (2, 5, 8)", randn(2, 5, 8, seed=1)),
        activation("gelu from -10 to 10", torch.linspace(-10, 10, 41)),
        activation("gelu on bfloat16 input", randn(2, 5, 8, seed=6, dtype=torch.bfloat16), **BF16_TOL),
        Case("gelu as glassgpt's MLP applies it (blocks.0.mlp.hidden of a small GPT)", "gelu", (pre_activation,),
             cache["blocks.0.mlp.hidden"]),
        block("mlp on random input (2, 5, 4)", randn(2, 5, 4, seed=7), *w),
        block("mlp at length 1 (1, 1, 4)", randn(1, 1, 4, seed=8), *w),
        block("mlp without biases (None)", randn(2, 3, 4, seed=9), w[0], None, w[2], None),
        Case("mlp with a glassgpt model's weights (blocks.0.mlp of a small GPT)", "mlp",
             (cache["blocks.0.ln_2.out"], *weights), cache["blocks.0.mlp.out"]),
    ]


EXERCISE = Exercise(
    name="mlp", title=TITLES["mlp"], reference={"gelu": gelu, "mlp": mlp},
    outputs={"gelu": ("activation",), "mlp": ("output",)}, cases=cases, mistakes=MISTAKES,
    glassgpt_code="glassgpt.model.MLP")
