"""LayerNorm from scratch: glassgpt.model.LayerNorm."""

from __future__ import annotations

import torch

from glassgpt.learn.core import Case, Exercise, catalogue
from glassgpt.learn.exercises import TITLES
from glassgpt.learn.probing import BF16_TOL, FP16_TOL, close, randn, small_model, small_run


def layernorm(x, weight, bias, eps=1e-5):
    """LayerNorm over the last dimension.

    x: (..., C), any float dtype; weight: (C,); bias: (C,) or None (a model with bias=false).
    Returns (..., C) in x's dtype: each row minus its mean, divided by sqrt(its variance + eps),
    times weight, plus bias. The variance is the biased one (the mean of the squared deviations,
    divided by C), as torch.nn.LayerNorm. Compute the statistics in float32 whatever x's dtype,
    and cast the normalised rows back to x's dtype before the weight and bias.
    """
    x32 = x.float()
    mean = x32.mean(dim=-1, keepdim=True)  # (..., 1)
    var = (x32 - mean).pow(2).mean(dim=-1, keepdim=True)  # (..., 1), divided by C
    x_hat = ((x32 - mean) / torch.sqrt(var + eps)).to(x.dtype)  # (..., C): zero mean, unit variance
    y = x_hat * weight
    return y + bias if bias is not None else y


# ---------------------------------------------------------------- the catalogue's mutations

def _affine(x_hat, x, weight, bias):
    y = x_hat.to(x.dtype) * weight
    return y + bias if bias is not None else y


def unbiased_variance(x, weight, bias, eps=1e-5):
    x32 = x.float()
    x_hat = (x32 - x32.mean(-1, keepdim=True)) / torch.sqrt(x32.var(-1, keepdim=True, unbiased=True) + eps)
    return _affine(x_hat, x, weight, bias)


def eps_outside_sqrt(x, weight, bias, eps=1e-5):
    x32 = x.float()
    mean = x32.mean(-1, keepdim=True)
    var = (x32 - mean).pow(2).mean(-1, keepdim=True)
    return _affine((x32 - mean) / (torch.sqrt(var) + eps), x, weight, bias)


def no_eps(x, weight, bias, eps=1e-5):
    x32 = x.float()
    mean = x32.mean(-1, keepdim=True)
    var = (x32 - mean).pow(2).mean(-1, keepdim=True)
    return _affine((x32 - mean) / torch.sqrt(var), x, weight, bias)


def over_batch_dim(x, weight, bias, eps=1e-5):
    x32 = x.float()
    mean = x32.mean(0, keepdim=True)
    var = (x32 - mean).pow(2).mean(0, keepdim=True)
    return _affine((x32 - mean) / torch.sqrt(var + eps), x, weight, bias)


def no_mean(x, weight, bias, eps=1e-5):
    x32 = x.float()
    return _affine(x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + eps), x, weight, bias)


def no_affine(x, weight, bias, eps=1e-5):
    x32 = x.float()
    mean = x32.mean(-1, keepdim=True)
    var = (x32 - mean).pow(2).mean(-1, keepdim=True)
    return ((x32 - mean) / torch.sqrt(var + eps)).to(x.dtype)


def swapped_affine(x, weight, bias, eps=1e-5):
    x32 = x.float()
    mean = x32.mean(-1, keepdim=True)
    var = (x32 - mean).pow(2).mean(-1, keepdim=True)
    x_hat = ((x32 - mean) / torch.sqrt(var + eps)).to(x.dtype)
    return x_hat * bias + weight if bias is not None else x_hat * weight


def float32_output(x, weight, bias, eps=1e-5):
    x32 = x.float()
    mean = x32.mean(-1, keepdim=True)
    var = (x32 - mean).pow(2).mean(-1, keepdim=True)
    y = (x32 - mean) / torch.sqrt(var + eps) * weight.float()
    return y + bias.float() if bias is not None else y


# ---------------------------------------------------------------- the detectors

C = 8


def standard_rows(n: int, seed: int) -> torch.Tensor:
    """(n, C) rows of exactly zero mean and unit (biased) variance."""
    z = randn(n, C, seed=seed)
    z = z - z.mean(-1, keepdim=True)
    return z / z.pow(2).mean(-1, keepdim=True).sqrt()


def unit_output(learner):
    """The learner's rows with weight 1 and bias 0, on (2, 3, C) rows of mean 1 and variance 9."""
    x = 1.0 + 3.0 * randn(2, 3, C, seed=11)
    return x, learner("layernorm", x, torch.ones(C), torch.zeros(C), 1e-5)


def rows_centred(y) -> bool:
    return isinstance(y, torch.Tensor) and bool((y.float().mean(-1).abs() < 1e-3).all())


def rows_proportional(y, x) -> bool:
    cos = torch.nn.functional.cosine_similarity(y.float(), x, dim=-1)
    return bool((cos > 1 - 1e-5).all())


def detect_no_mean(learner):
    x, y = unit_output(learner)
    if not rows_centred(y) and rows_proportional(y, x):
        return ("your output rows are your input rows rescaled, their mean kept (row 0 has mean "
                f"{float(y[0, 0].mean()):.3f}): subtract each row's mean first (that is RMSNorm, not LayerNorm)")


def detect_wrong_dim(learner):
    x, y = unit_output(learner)
    if not isinstance(y, torch.Tensor) or y.shape != x.shape or rows_centred(y) or rows_proportional(y, x):
        return None
    for dim, what in ((0, "dim 0 (the batch)"), (1, "dim 1 (the positions)")):
        if bool((y.float().mean(dim).abs() < 1e-3).all()):
            return (f"your output has mean 0 along {what}, not along the last dimension: "
                    "take the mean and variance over dim=-1 (each row of C features)")
    if abs(float(y.float().mean())) < 1e-3:
        return "you normalise the whole tensor at once: take the mean and variance of each row (dim=-1, keepdim=True)"
    return None


def detect_unbiased(learner):
    _, y = unit_output(learner)
    if not rows_centred(y):
        return None
    mean_square = float(y.float().pow(2).mean())  # 1 - eps/9 for the biased estimate
    if abs(mean_square - (C - 1) / C) < 1e-3:
        return ("your variance divides by C - 1 (each row's output has variance "
                f"{mean_square:.4f} = (C - 1) / C): LayerNorm uses the biased estimate, the mean over C "
                "(torch.var's unbiased=False, or .pow(2).mean())")


def eps_ratio(learner) -> float | None:
    """How much smaller a row of variance 1e-6 comes out than one of variance 1: sqrt(1e-6 / 1.1e-5)
    = 0.30 with eps inside the square root; about 1 when eps is missing or added outside it."""
    _, y = unit_output(learner)
    if not rows_centred(y):
        return None
    z = standard_rows(2, seed=12)
    x = torch.stack([z[0] * 1e-3, z[1]])  # variances 1e-6 and 1
    out = learner("layernorm", x, torch.ones(C), torch.zeros(C), 1e-5)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        return None
    scale = out.float().pow(2).mean(-1).sqrt()
    return float(scale[0] / scale[1])


def detect_no_eps(learner):
    ratio = eps_ratio(learner)
    if ratio is not None and ratio > 0.995:
        return ("a row of variance 1e-6 comes out with the same scale as a row of variance 1: you leave eps out "
                "(a constant row divides 0 by 0): divide by sqrt(var + eps)")


def detect_eps_outside(learner):
    ratio = eps_ratio(learner)
    if ratio is not None and 0.95 < ratio <= 0.995:
        return (f"a row of variance 1e-6 comes out at {ratio:.3f} of the scale of a row of variance 1, expected 0.302: "
                "you add eps outside the square root; LayerNorm divides by sqrt(var + eps)")


def affine_outputs(learner):
    """The learner's rows with weight 1 and bias 0, with a random weight and bias, and the latter
    as the right normalisation would give it with weight and bias swapped."""
    x = 1.0 + 3.0 * randn(2, 3, C, seed=13)
    w, b = 1 + randn(C, seed=14), randn(C, seed=15)
    plain = learner("layernorm", x, torch.ones(C), torch.zeros(C), 1e-5)
    swapped = layernorm(x, torch.ones(C), torch.zeros(C)) * b + w
    return plain, learner("layernorm", x, w, b, 1e-5), swapped


def detect_no_affine(learner):
    plain, scaled, _ = affine_outputs(learner)
    if close(scaled, plain):
        return "your output does not change with weight and bias: multiply by weight and add bias at the end"


def detect_swapped_affine(learner):
    _, scaled, swapped = affine_outputs(learner)
    if close(scaled, swapped):
        return "you multiply by bias and add weight: the normalised rows are scaled by weight, then bias is added"


def detect_float32_output(learner):
    x = randn(2, 3, C, seed=16, dtype=torch.bfloat16)
    y = learner("layernorm", x, torch.ones(C, dtype=torch.bfloat16), torch.zeros(C, dtype=torch.bfloat16), 1e-5)
    if isinstance(y, torch.Tensor) and y.dtype == torch.float32:
        return ("for bfloat16 input your output is float32: compute the statistics in float32, then cast the "
                "normalised rows back with .to(x.dtype)")


MISTAKES = catalogue(
    "layernorm",
    ("unbiased-variance", "the variance divides by C - 1", unbiased_variance, detect_unbiased),
    ("eps-outside-sqrt", "eps added to the standard deviation", eps_outside_sqrt, detect_eps_outside),
    ("no-eps", "no eps in the denominator", no_eps, detect_no_eps),
    ("wrong-dim", "statistics over the batch, not the features", over_batch_dim, detect_wrong_dim),
    ("no-mean", "the mean is not subtracted (RMSNorm)", no_mean, detect_no_mean),
    ("no-affine", "weight and bias ignored", no_affine, detect_no_affine),
    ("swapped-affine", "weight and bias swapped", swapped_affine, detect_swapped_affine),
    ("float32-output", "float32 out for bfloat16 in", float32_output, detect_float32_output),
)


# ---------------------------------------------------------------- the cases

def cases() -> list[Case]:
    def case(label, x, w, b, eps=1e-5, **tol):
        return Case(label, "layernorm", (x, w, b, eps), layernorm(x, w, b, eps), **tol)

    w, b = 1 + 0.5 * randn(C, seed=1), randn(C, seed=2)
    constant = randn(2, 3, C, seed=5)
    constant[0, 1] = 3.0
    small = standard_rows(4, seed=6).view(1, 4, C) * 1e-3
    model = small_model()
    _, _, cache = small_run()
    ln = model.blocks[0].ln_1
    bf16, fp16 = (torch.bfloat16, BF16_TOL), (torch.float16, FP16_TOL)
    return [
        case("random input (2, 5, 8)", 0.5 + 2 * randn(2, 5, C, seed=3), w, b),
        case("length 1 (1, 1, 8)", randn(1, 1, C, seed=4), w, b),
        case("a row of constant features (variance 0)", constant, w, b),
        case("rows of variance 1e-6", small, w, b),
        case("no bias (bias=None)", randn(3, C, seed=7), w, None),
        case("eps=0.1", randn(2, 4, C, seed=8), w, b, 0.1),
        *(case(f"{str(dt).removeprefix('torch.')} input", randn(2, 5, C, seed=9, dtype=dt), w.to(dt), b.to(dt), **tol)
          for dt, tol in (bf16, fp16)),
        Case("a glassgpt model's weights (blocks.0.ln_1 of a small GPT)", "layernorm",
             (cache["blocks.0.resid_pre"], ln.weight.detach(), ln.bias.detach(), ln.eps), cache["blocks.0.ln_1.out"]),
    ]


EXERCISE = Exercise(
    name="layernorm", title=TITLES["layernorm"], reference={"layernorm": layernorm}, outputs={"layernorm": ("output",)},
    cases=cases, mistakes=MISTAKES, glassgpt_code="glassgpt.model.LayerNorm")
