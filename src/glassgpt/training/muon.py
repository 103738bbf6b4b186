"""Muon: momentum, then each update matrix replaced by the nearest semi-orthogonal one (by a
Newton-Schulz iteration), computed in the precision the device multiplies matrices fast in.

The update is torch.optim.Muon's (Keller Jordan's Muon, with torch's defaults, Nesterov momentum,
decoupled weight decay and its shape-based learning-rate adjustment), and so is the state: one
momentum buffer per matrix, in the weight's dtype. One thing differs: torch orthogonalises in
bfloat16 on every device, and a CPU without bfloat16 instructions (AVX2 machines: AMD Zen 3,
most laptops) emulates those products at several times the cost of float32 ones, which made a
cpu-speedrun step cost 14x a cpu-baby step there. Here the orthogonalisation runs in bfloat16 on
CUDA GPUs of compute capability 8.0 or later and on CPUs that multiply bfloat16 natively
(`glassgpt.cpu.native_matmul`), in float32 everywhere else. The precision is no part of the
state, so a checkpoint written under one resumes under the other.
"""

from __future__ import annotations

import math

import torch

from glassgpt.device import fast_matmul

# The quintic Newton-Schulz step (Keller Jordan's): each singular value s of X becomes
# p(s) = a s + b s^3 + c s^5, the singular vectors stay. a = 3.4445 is p's slope at 0, so small
# singular values grow 3.4x a step; b and c bend p back before 1 (p(1) = 0.70, its maximum 1.20
# at s = 0.55). It does not converge to exactly 1, but five steps take every singular value from
# [0.003, 1] into [0.68, 1.20]: near enough to U V^T for an update direction, in fewer steps than
# a cubic iteration that does converge.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
EPS = 1e-7


def orthogonalisation_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the device multiplies it natively (`glassgpt.device.fast_matmul`), else float32."""
    return torch.bfloat16 if fast_matmul(torch.bfloat16, device) else torch.float32


def orthogonalise(update: torch.Tensor, dtype: torch.dtype, steps: int = NS_STEPS,
                  coefficients: tuple[float, float, float] = NS_COEFFICIENTS, eps: float = EPS) -> torch.Tensor:
    """About U V^T for update = U S V^T (its SVD): the update's directions with every singular
    value near 1. (m, n) -> (m, n), computed and returned in `dtype`."""
    a, b, c = coefficients
    x = update.to(dtype)  # (m, n)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T  # (n, m): iterate on the wide side, so that the Gram matrix is the smaller one
    x = x / x.norm().clamp(min=eps)  # Frobenius norm >= spectral norm: every singular value in [0, 1]
    for _ in range(steps):
        gram = x @ x.T  # (r, r), r = min(m, n): X X^T = U S^2 U^T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b G + c G^2, (r, r)
        x = torch.addmm(x, poly, x, beta=a)  # a X + b (X X^T) X + c (X X^T)^2 X = U p(S) V^T
    return x.T if tall else x


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """torch.optim.Muon's learning rate for an (A, B) matrix, so that updates of every shape have a
    comparable size: "original" (Keller Jordan's, the default) lr * sqrt(max(1, A / B));
    "match_rms_adamw" (Moonshot's) lr * 0.2 * sqrt(max(A, B)), an update whose RMS matches AdamW's,
    so that AdamW's learning rate and weight decay carry over."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon's update, with the same arguments and state_dict, orthogonalised in the
    device's fast precision. `ns_dtype` fixes that precision instead (for tests)."""

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                 eps: float = EPS, ns_steps: int = NS_STEPS, adjust_lr_fn: str | None = None,
                 ns_dtype: torch.dtype | None = None):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"Muon needs lr, momentum and weight_decay >= 0, got {lr}, {momentum}, {weight_decay}")
        if adjust_lr_fn not in (None, "original", "match_rms_adamw"):
            raise ValueError(f"adjust_lr_fn must be 'original' or 'match_rms_adamw', got {adjust_lr_fn!r}")
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "nesterov": nesterov,
                    "ns_coefficients": ns_coefficients, "eps": eps, "ns_steps": ns_steps, "adjust_lr_fn": adjust_lr_fn}
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype  # not in param_groups: loading a state_dict must not bring another's back
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D weights only, got one of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]  # (m, n), the weight's dtype
                buf.lerp_(p.grad, 1 - mu)  # B <- mu B + (1 - mu) g
                update = p.grad.lerp(buf, mu) if group["nesterov"] else buf  # Nesterov: g + mu (B - g)
                dtype = self.ns_dtype or orthogonalisation_dtype(p.device)
                ortho = orthogonalise(update, dtype, group["ns_steps"], group["ns_coefficients"], group["eps"])
                p.mul_(1 - lr * group["weight_decay"])  # decoupled weight decay
                p.add_(ortho, alpha=-adjusted_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss
