"""The KV cache, written by hand: the keys and values of every layer for the positions
already seen, so a generation step runs the model on the new token only.

The protocol, all of it here: the model reads `length` (where the new tokens' positions
start), each attention layer calls `update(layer, k, v)` to store its new keys and
values and get back the whole past, and after the last layer the model calls
`advance(T)`. Whoever drives generation (`glassgpt.inference.generate`) creates the cache,
and `reset`s it to refill it from a window of tokens.
"""

from __future__ import annotations

import torch

from glassgpt.config import GPTConfig


class KVCache:
    """Keys and values of every layer, preallocated: (n_layer, B, nh, max_len, hs) each.
    `length` positions are filled; the model advances it after all layers have run."""

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.head_size)
        self.k = torch.empty(shape, device=device, dtype=dtype)  # only the first `length` positions are ever read
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys/values (B, nh, T, hs) of one layer after the past ones and
        return all of them, (B, nh, length + T, hs)."""
        end = self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked to hold {end}: reset it or crop the context")
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def reset(self) -> None:
        self.length = 0

