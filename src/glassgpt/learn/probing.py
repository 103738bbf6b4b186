"""Small helpers the exercises' cases and detectors share: seeded tensors, closeness that never
raises on whatever a learner's function returned, and the small glassgpt model built in memory
whose weights and activations some cases use."""

from __future__ import annotations

import functools

import torch

from glassgpt.config import GPTConfig
from glassgpt.learn.core import within
from glassgpt.model import GPT

BF16_TOL = dict(atol=3e-2, rtol=3e-2)
FP16_TOL = dict(atol=5e-3, rtol=5e-3)


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def close(a, b, atol: float = 1e-4, rtol: float = 1e-3) -> bool:
    """Whether two outputs are the same tensor up to a tolerance; False (never an exception) for
    anything that is not a tensor of b's shape."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return False
    return bool(within(a, b, atol, rtol).all())


def number(value) -> float | None:
    """A one-element output as a float, or None."""
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return None


SMALL = dict(vocab_size=29, block_size=16, n_layer=2, n_head=2, n_embd=16, attn_impl="manual", norm="scratch")


@functools.lru_cache(maxsize=None)
def small_model(pos_encoding: str = "learned") -> GPT:
    """A small glassgpt model, seeded, with weights spread as training spreads them (norms away from
    1 and 0, matrices large enough that attention is sharp): built in memory, never downloaded."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(pos_encoding=pos_encoding, **SMALL))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.mul_(10)  # std 0.2 instead of 0.02
    return model.eval()


def small_tokens(T: int = 12, B: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, SMALL["vocab_size"], (B, T), generator=g)


@functools.lru_cache(maxsize=None)
def small_run(pos_encoding: str = "learned") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(tokens (2, 12), logits (2, 12, V), every activation of the small model on them)."""
    model = small_model(pos_encoding)
    idx = small_tokens()
    with torch.no_grad():
        logits, cache = model.run_with_cache(idx)
    return idx, logits, cache
