"""One AdamW step with decoupled weight decay: torch.optim.AdamW, as glassgpt.training.optim.adamw_for builds it."""

from __future__ import annotations

import torch
from torch.optim.adamw import adamw as torch_adamw

from glassgpt.config import TrainConfig
from glassgpt.learn.core import Case, Exercise, catalogue
from glassgpt.learn.exercises import TITLES
from glassgpt.learn.probing import close, randn


def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1):
    """One AdamW update of one tensor, as torch.optim.AdamW (glassgpt's optimizer) takes it.

    param, grad, exp_avg (the moving mean of the gradient), exp_avg_sq (of its square): tensors of
    one shape; step: this step's number, counted from 1. The weight decay is decoupled: the weight
    first shrinks by lr * weight_decay of itself, apart from the gradient. The moments are corrected
    for their start at zero (divided by 1 - beta ** step), and eps is added to the square root of
    the corrected second moment. Returns (param, exp_avg, exp_avg_sq) after the step, as new tensors.
    """
    param = param * (1 - lr * weight_decay)  # decoupled decay: the weight shrinks, whatever the gradient
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    m_hat = exp_avg / (1 - beta1 ** step)  # bias-corrected moments
    v_hat = exp_avg_sq / (1 - beta2 ** step)
    param = param - lr * m_hat / (v_hat.sqrt() + eps)
    return param, exp_avg, exp_avg_sq


# ---------------------------------------------------------------- the catalogue's mutations

def _adam(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, correct=True, eps_inside=False):
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    m_hat = exp_avg / (1 - beta1 ** step) if correct else exp_avg
    v_hat = exp_avg_sq / (1 - beta2 ** step) if correct else exp_avg_sq
    denom = (v_hat + eps).sqrt() if eps_inside else v_hat.sqrt() + eps
    return param - lr * m_hat / denom, exp_avg, exp_avg_sq


def l2_in_gradient(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1):
    return _adam(param, grad + weight_decay * param, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps)


def no_decay(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1):
    return _adam(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps)


def decay_without_lr(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1):
    return _adam(param * (1 - weight_decay), grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps)


def no_bias_correction(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.99, eps=1e-8,
                       weight_decay=0.1):
    return _adam(param * (1 - lr * weight_decay), grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, correct=False)


def eps_inside_sqrt(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1):
    return _adam(param * (1 - lr * weight_decay), grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
                 eps_inside=True)


def stale_moments(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1):
    new_param, _, _ = adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay)
    return new_param, exp_avg, exp_avg_sq


# ---------------------------------------------------------------- the detectors

P = torch.tensor([1.0, -2.0, 3.0])


def decay_probe(learner):
    """The weights after one step with a zero gradient (lr 0.1, weight_decay 0.5): AdamW gives 0.95 p."""
    out = learner("adamw_step", P.clone(), torch.zeros(3), torch.zeros(3), torch.zeros(3), 1, 0.1, 0.9, 0.99, 1e-8, 0.5)
    return out[0] if isinstance(out, (tuple, list)) and len(out) == 3 else None


def update_probe(learner, grad, lr=0.1, betas=(0.9, 0.999)):
    """The first step's change of zero weights with no decay."""
    zero = torch.zeros_like(grad)
    out = learner("adamw_step", zero.clone(), grad, zero.clone(), zero.clone(), 1, lr, *betas, 1e-8, 0.0)
    return out if isinstance(out, (tuple, list)) and len(out) == 3 else None


def detect_l2(learner):
    if close(decay_probe(learner), P - 0.1 * P.sign()):
        return ("with a zero gradient each of your weights moves by lr towards 0 whatever its size: the decay went "
                "into the gradient (L2, Adam's), where the moments normalise it away; AdamW shrinks the weight "
                "itself: param * (1 - lr * weight_decay), apart from the gradient")


def detect_no_decay(learner):
    if close(decay_probe(learner), P):
        return ("with a zero gradient your weights do not change: apply the weight decay, "
                "param * (1 - lr * weight_decay)")


def detect_decay_without_lr(learner):
    if close(decay_probe(learner), P * 0.5):
        return ("with a zero gradient, lr 0.1 and weight_decay 0.5 your weights halve: the decay is scaled by the "
                "learning rate, param * (1 - lr * weight_decay)")


def detect_no_bias_correction(learner):
    grad = torch.tensor([1.0, -2.0, 0.5])
    out = update_probe(learner, grad)
    if out is not None and close(out[0], -0.1 * (0.1 / 0.001 ** 0.5) * grad.sign(), rtol=1e-3):
        return ("your first step is 3.16 lr, not lr: the moments start at zero and must be divided by "
                "1 - beta1 ** step and 1 - beta2 ** step")


def detect_eps_inside(learner):
    grad = torch.tensor([1e-6, -2e-6])
    out = update_probe(learner, grad, lr=1.0)
    if out is not None and close(out[0], -grad / (grad * grad + 1e-8).sqrt(), rtol=1e-3):
        return ("for a gradient of 1e-6 your step is 0.01 lr, not about lr: you add eps under the square root; "
                "it goes outside, sqrt(v_hat) + eps")


def detect_stale_moments(learner):
    grad = torch.tensor([1.0, -2.0, 0.5])
    out = update_probe(learner, grad)
    if out is not None and close(out[1], torch.zeros(3)) and close(out[2], torch.zeros(3)):
        return ("the moments you return are the ones you were given: return the updated exp_avg and exp_avg_sq, "
                "the next step starts from them")


MISTAKES = catalogue(
    "adamw_step",
    ("l2-in-gradient", "weight decay added to the gradient (Adam + L2)", l2_in_gradient, detect_l2),
    ("no-decay", "no weight decay", no_decay, detect_no_decay),
    ("decay-without-lr", "decay not scaled by lr", decay_without_lr, detect_decay_without_lr),
    ("no-bias-correction", "moments not bias-corrected", no_bias_correction, detect_no_bias_correction),
    ("eps-inside-sqrt", "eps under the square root", eps_inside_sqrt, detect_eps_inside),
    ("stale-moments", "the old moments returned", stale_moments, detect_stale_moments),
)


# ---------------------------------------------------------------- the cases

def torch_adamw_step(param, grad, exp_avg, exp_avg_sq, step: int, tc: TrainConfig):
    """(param, exp_avg, exp_avg_sq) after torch's fused AdamW update, the function
    torch.optim.AdamW.step runs, with the settings glassgpt.training.optim.adamw_for gives a 2-D weight
    (building the optimizer itself costs seconds of imports; the test suite steps one)."""
    param, exp_avg, exp_avg_sq = param.clone(), exp_avg.clone(), exp_avg_sq.clone()
    torch_adamw([param], [grad], [exp_avg], [exp_avg_sq], [], [torch.tensor(float(step - 1))], foreach=False,
                fused=True, capturable=False, differentiable=False, grad_scale=None, found_inf=None, amsgrad=False,
                beta1=tc.beta1, beta2=tc.beta2, lr=tc.learning_rate, weight_decay=tc.weight_decay, eps=1e-8,
                maximize=False)
    return param, exp_avg, exp_avg_sq


def cases() -> list[Case]:
    def case(label, p, g, m, v, step, lr, b1=0.9, b2=0.99, eps=1e-8, wd=0.1):
        args = (p, g, m, v, step, lr, b1, b2, eps, wd)
        return Case(label, "adamw_step", args, adamw_step(*args), atol=1e-6, rtol=1e-5)

    tc = TrainConfig(learning_rate=0.01, weight_decay=0.1, beta1=0.9, beta2=0.99)
    p, g, m, v = randn(4, 3, seed=5), randn(4, 3, seed=6), 0.1 * randn(4, 3, seed=7), 0.01 * randn(4, 3, seed=8).abs()
    return [
        case("the first step (step=1, zero moments)", randn(5, seed=1), randn(5, seed=2), torch.zeros(5),
             torch.zeros(5), 1, 0.01),
        case("step 10, moments under way", randn(3, 4, seed=3), randn(3, 4, seed=4), 0.1 * randn(3, 4, seed=7),
             0.01 * randn(3, 4, seed=8).abs(), 10, 3e-3, 0.9, 0.95, 1e-8, 0.3),
        case("a large learning rate and decay (lr 0.5, weight_decay 0.5)", randn(6, seed=9), randn(6, seed=10),
             torch.zeros(6), torch.zeros(6), 1, 0.5, 0.9, 0.999, 1e-8, 0.5),
        case("a gradient of 1e-7 (eps matters)", randn(4, seed=11), 1e-7 * randn(4, seed=12), torch.zeros(4),
             torch.zeros(4), 1, 0.01),
        Case("glassgpt's optimizer (torch's fused AdamW update, glassgpt's settings), step 3", "adamw_step",
             (p, g, m, v, 3, tc.learning_rate, tc.beta1, tc.beta2, 1e-8, tc.weight_decay),
             torch_adamw_step(p, g, m, v, 3, tc), atol=1e-6, rtol=1e-5),
    ]


EXERCISE = Exercise(
    name="adamw", title=TITLES["adamw"], reference={"adamw_step": adamw_step},
    outputs={"adamw_step": ("param", "exp_avg", "exp_avg_sq")}, cases=cases, mistakes=MISTAKES,
    glassgpt_code="glassgpt.training.optim.adamw_for")
