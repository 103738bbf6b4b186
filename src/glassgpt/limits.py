"""How much memory a request would take, refused before anything is allocated.

A size with no upper bound (`n_embd=10**7`, `--num-samples 10**6`, `batch_size=10**5`)
would otherwise end in an allocator traceback minutes later, or push the machine
into swap. Each estimate here counts the tensors a job cannot do without, in bytes,
from the config alone; `check_fits` compares it with the device's memory and refuses
in one sentence with the figure. The estimates for inference are deliberately rough (within a
small factor): they are a guard against sizes that cannot work. Training is checked against
`glassgpt.training.plan.memory_plan`, the one memory model of a training run.
"""

from __future__ import annotations

import math
import os

import torch

from glassgpt.errors import UsageError

FP32 = 4


def units(cfg) -> dict[str, list[tuple[int, ...]]]:
    """The shapes of the parameters of a `GPTConfig`, by FSDP unit (`blocks.{i}`, and `root` for the
    rest), each shared tensor once (a tied head is the embedding): the model's own parameters,
    listed from the config alone (building even a meta model costs seconds the first time).
    A test holds it to `GPT(cfg).named_parameters()` for every option."""
    C, V, H = cfg.n_embd, cfg.vocab_size, cfg.n_head
    bias = cfg.bias

    def linear(n_out: int, n_in: int) -> list[tuple[int, ...]]:
        return [(n_out, n_in)] + ([(n_out,)] if bias else [])

    norm = [(C,)] + ([(C,)] if bias else [])
    block = list(norm)
    block += [(H,)] if cfg.attn_sink == "learned" else []
    block += linear(3 * C, C) + linear(C, C)
    block += [(H, C), (H,)] if cfg.attn_sink == "gate" else []  # the gate always has its bias
    if not cfg.attn_only:
        block += norm + linear(4 * C, C) + linear(C, 4 * C)
    root = [(V, C)] + ([(cfg.block_size, C)] if cfg.pos_encoding == "learned" else []) + norm
    root += [] if cfg.tie_weights else [(V, C)]
    return {**{f"blocks.{i}": list(block) for i in range(cfg.n_layer)}, "root": root}


def parameter_count(cfg) -> int:
    """The parameters of a `GPTConfig`, from `units` -- the count `GPT.num_params()` gives and
    `glassgpt plan` prints."""
    return sum(math.prod(shape) for shapes in units(cfg).values() for shape in shapes)


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
