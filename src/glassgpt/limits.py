"""How much memory a request would take, refused before anything is allocated.

A size with no upper bound (`n_embd=10**7`, `--num-samples 10**6`, `batch_size=10**5`)
would otherwise end in an allocator traceback minutes later, or push the machine
into swap. Each estimate here counts the tensors a job cannot do without, in bytes,
from the config alone; `check_fits` compares it with the device's memory and refuses
in one sentence with the figure. The estimates are deliberately rough (within a small
factor): they are a guard against sizes that cannot work, not a planner.
"""

from __future__ import annotations

import os

import torch

from glassgpt.errors import UsageError

FP32 = 4


def parameter_count(cfg) -> int:
    """The parameters of a `GPTConfig`, counted from its sizes (no model is built)."""
    C, V, L = cfg.n_embd, cfg.vocab_size, cfg.n_layer
    bias = C if cfg.bias else 0
    norm = C + bias  # weight (and bias)
    attention = C * 3 * C + 3 * bias + C * C + bias
    mlp = 0 if cfg.attn_only else C * 4 * C + 4 * bias + 4 * C * C + bias
    sink = {"learned": cfg.n_head, "gate": C * cfg.n_head + cfg.n_head}.get(cfg.attn_sink, 0)
    per_layer = norm + attention + sink + (0 if cfg.attn_only else norm) + mlp
    embeddings = V * C + (cfg.block_size * C if cfg.pos_encoding == "learned" else 0)
    head = 0 if cfg.tie_weights else V * C
    return embeddings + L * per_layer + norm + head


def inference_bytes(cfg, batch: int, tokens: int) -> int:
    """Weights in fp32, the KV cache of `batch` rows of `tokens`, and one step's
    activations: attention scores (B, nh, T, T) on the manual path and the logits (B, T, V)."""
    T = min(tokens, cfg.block_size)
    kv_cache = 2 * cfg.n_layer * batch * T * cfg.n_embd * FP32
    activations = batch * T * (8 * cfg.n_embd + cfg.vocab_size) * FP32 + batch * cfg.n_head * T * T * FP32
    return parameter_count(cfg) * FP32 + kv_cache + activations


def activation_bytes(cfg, batch_size: int, dtype_bytes: int = FP32, checkpointing: bool = False) -> int:
    """The activations kept for the backward pass of one micro-batch: per layer about 16 vectors
    of (B, T, C) and, on the manual path, the (B, nh, T, T) scores and pattern, in the compute
    precision (`dtype_bytes`: 4, or 2 under bf16 autocast); the logits and their softmax (B, T, V)
    in fp32. With activation checkpointing each layer keeps its input (B, T, C) alone, and one
    layer's activations live again while it is recomputed."""
    B, T = batch_size, cfg.block_size
    per_layer = B * T * 16 * cfg.n_embd + (2 * B * cfg.n_head * T * T if cfg.attn_impl == "manual" else 0)
    logits = 2 * B * T * cfg.vocab_size * FP32
    kept = cfg.n_layer * B * T * cfg.n_embd + per_layer if checkpointing else cfg.n_layer * per_layer
    return kept * dtype_bytes + logits


def training_bytes(cfg, batch_size: int) -> int:
    """fp32 weights, gradients and AdamW's two moments, plus the activations kept for the
    backward pass (`activation_bytes`). glassgpt.training.plan splits this per GPU."""
    return parameter_count(cfg) * 4 * FP32 + activation_bytes(cfg, batch_size)


def device_memory(device: torch.device | str) -> int | None:
    """Bytes of memory on the device (all of it, not what is free now), or None when unknown."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_fits(nbytes: int, device: torch.device | str, what: str, fix: str) -> None:
    """Refuse, in one sentence with the figures, a job whose tensors alone exceed the device's memory."""
    total = device_memory(device)
    if total is not None and nbytes > total:
        raise UsageError(f"{what} would take about {human_bytes(nbytes)} ({nbytes:,} bytes), more than the "
                         f"{human_bytes(total)} of memory on {torch.device(device)}: {fix}")
