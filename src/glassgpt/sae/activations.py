"""Activations of one hook point, streamed from a run's data: never a file of all of them.

A hook point's activation becomes rows of a matrix, one row per token:
- (B, T, C) (the residual stream, `attn.out`, `mlp.out`, `mlp.hidden`, ...): (B*T, C);
- (B, nh, T, hs) (`attn.q|k|v|z`): one head's (B*T, hs) with `head`, else all heads
  side by side, (B*T, nh*hs).
`to_rows` and `from_rows` go there and back, so a reconstruction can be spliced in
where the activation was.

`ActivationStream` draws windows of the training split in chunks, runs the model on
them, shuffles each chunk's rows and hands them out in batches. A chunk is a pure
function of (seed, chunk index): the stream for step s can be rebuilt exactly after a
resume, and memory is bounded by one chunk.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from glassgpt.data import windows_at
from glassgpt.errors import UsageError


def check_hook(model, hook: str, head: int | None = None) -> int:
    """The width of a row of `hook`'s activation (UsageError, with a did-you-mean, for a name
    that is no hook point or an activation that is not a vector per token)."""
    if hook not in model.hook_points:
        from glassgpt.errors import did_you_mean

        raise UsageError(f"--hook {hook!r} is no hook point of this model{did_you_mean(hook, model.hook_points)}; "
                         "e.g. blocks.0.resid_post")
    if hook.endswith((".attn.scores", ".attn.pattern")):
        raise UsageError(f"--hook {hook}: attention scores and patterns are (B, nh, T, T), not a vector per token; "
                         "choose a (B, T, C) or per-head (B, nh, T, hs) hook point")
    probe = torch.zeros(1, 2, dtype=torch.long, device=next(model.parameters()).device)
    _, cache = model.run_with_cache(probe, names=[hook])
    act = cache[hook]
    if act.dim() == 4:
        if head is not None and not 0 <= head < act.size(1):
            raise UsageError(f"--head must be in 0..{act.size(1) - 1} for {hook}, got {head}")
        return act.size(-1) if head is not None else act.size(1) * act.size(-1)
    if act.dim() != 3:
        raise UsageError(f"--hook {hook} has shape {tuple(act.shape)}, not (B, T, C) or (B, nh, T, hs)")
    if head is not None:
        raise UsageError(f"--head applies to per-head hook points (attn.q, k, v, z), not {hook}")
    return act.size(-1)


def to_rows(act: torch.Tensor, head: int | None = None) -> torch.Tensor:
    """(B, T, C) -> (B*T, C); (B, nh, T, hs) -> (B*T, hs) for one head or (B*T, nh*hs) for all."""
    if act.dim() == 3:
        return act.reshape(-1, act.size(-1))
    if head is not None:
        return act[:, head].reshape(-1, act.size(-1))  # (B, T, hs) -> (B*T, hs)
    B, nh, T, hs = act.shape
    return act.transpose(1, 2).reshape(B * T, nh * hs)  # (B, T, nh, hs) -> (B*T, nh*hs)


def from_rows(rows: torch.Tensor, like: torch.Tensor, head: int | None = None) -> torch.Tensor:
    """`to_rows` undone: rows back into an activation of `like`'s shape (one head replaced, with `head`)."""
    rows = rows.to(like.dtype)
    if like.dim() == 3:
        return rows.reshape(like.shape)
    B, nh, T, hs = like.shape
    if head is not None:
        out = like.clone()
        out[:, head] = rows.reshape(B, T, hs)
        return out
    return rows.reshape(B, T, nh, hs).transpose(1, 2).contiguous()


@torch.no_grad()
def activation_rows(model, hook: str, idx: torch.Tensor, head: int | None = None) -> torch.Tensor:
    """idx (B, T) -> the hook's activation as fp32 rows (B*T, d)."""
    _, cache = model.run_with_cache(idx, names=[hook])
    return to_rows(cache[hook], head).float()


class ActivationStream:
    """Shuffled batches of `batch_tokens` rows of `hook`'s activation on random windows of `data`."""

    def __init__(self, model, data: np.ndarray, hook: str, *, batch_tokens: int, seed: int,
                 head: int | None = None, windows_per_chunk: int = 64):
        self.model, self.data, self.hook, self.head = model, data, hook, head
        self.block_size = model.config.block_size
        if len(data) <= self.block_size + 1:
            raise UsageError(f"the training split has {len(data)} tokens, too few for one window of "
                             f"{self.block_size}: prepare more data")
        self.batch_tokens, self.seed, self.windows_per_chunk = batch_tokens, seed, windows_per_chunk
        chunk_tokens = windows_per_chunk * self.block_size
        if batch_tokens > chunk_tokens:  # a chunk holds at least one batch
            self.windows_per_chunk = -(-batch_tokens // self.block_size)
            chunk_tokens = self.windows_per_chunk * self.block_size
        self.batches_per_chunk = chunk_tokens // batch_tokens
        self.device = next(model.parameters()).device

    def chunk(self, index: int) -> torch.Tensor:
        """Chunk `index`: (batches_per_chunk * batch_tokens, d) shuffled rows, the same every time."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        starts = torch.randint(len(self.data) - self.block_size, (self.windows_per_chunk,), generator=generator)
        idx, _ = windows_at(self.data, starts.tolist(), self.block_size)  # (W, T)
        rows = activation_rows(self.model, self.hook, idx.to(self.device), self.head)  # (W*T, d)
        order = torch.randperm(rows.size(0), generator=generator)[: self.batches_per_chunk * self.batch_tokens]
        return rows[order.to(rows.device)]

    def batches(self, start_step: int = 0) -> Iterator[torch.Tensor]:
        """The batches of steps start_step, start_step + 1, ... (an endless stream)."""
        index, skip = divmod(start_step, self.batches_per_chunk)
        while True:
            rows = self.chunk(index)
            for b in range(skip, self.batches_per_chunk):
                yield rows[b * self.batch_tokens: (b + 1) * self.batch_tokens]
            index, skip = index + 1, 0
