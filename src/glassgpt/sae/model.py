"""A sparse autoencoder (SAE): a wide dictionary of directions, few of them active per token.

    f = TopK(W_enc (x - b_dec) + b_enc)        (N, width): at most k non-zero per row
    x_hat = f W_dec + b_dec                    (N, d_in)

- TopK (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): each token keeps
  its k largest pre-activations (after a ReLU) and zeroes the rest, so L0 is k by
  construction and no L1 penalty shrinks the kept values. BatchTopK (Bussmann et al.
  2024) keeps the k x N largest of a batch of N tokens instead: k on average, more for
  a busy token, fewer for a plain one; at inference a threshold learned in training
  (the mean of the smallest kept values) replaces the batch.
- `b_dec` is subtracted before encoding (the pre-encoder bias) and added back after.
- The decoder's rows (one direction per feature) have unit norm, kept so after every
  step, so a feature's activation is its size along its direction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from glassgpt.errors import UsageError


@dataclass
class SAEConfig:
    d_in: int
    width: int
    k: int
    batch_topk: bool = False
    aux_k: int = 0  # dead features the auxiliary loss may use per token; 0: d_in // 2 (Gao et al.)
    aux_coef: float = 1 / 32
    dead_tokens: int = 200_000  # a feature that has not fired for this many tokens is dead

    def __post_init__(self):
        for name in ("d_in", "width", "k", "dead_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UsageError(f"{name} must be a whole number of at least 1, got {getattr(self, name)!r}")
        if self.k > self.width:
            raise UsageError(f"k ({self.k}) must not exceed the width ({self.width}): at most every feature is active")
        if self.aux_k < 0:
            raise UsageError(f"aux_k must not be negative, got {self.aux_k}")

    @property
    def aux_features(self) -> int:
        return min(self.aux_k or max(self.d_in // 2, 1), self.width)

    def to_dict(self) -> dict:
        return asdict(self)


class SAE(nn.Module):
    def __init__(self, config: SAEConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        d, w = config.d_in, config.width
        directions = torch.randn(w, d, generator=generator)
        directions /= directions.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(directions)  # (width, d_in): one unit direction per feature
        self.W_enc = nn.Parameter(directions.t().clone())  # (d_in, width): starts as the decoder's transpose
        self.b_enc = nn.Parameter(torch.zeros(w))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.register_buffer("threshold", torch.tensor(0.0))  # BatchTopK at inference

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d_in) -> (N, width), before the sparsity."""
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def sparsify(self, pre: torch.Tensor) -> torch.Tensor:
        """Keep the k largest of each row (TopK), or the k x N largest of the batch (BatchTopK
        in training; its threshold in eval)."""
        k = self.config.k
        if self.config.batch_topk:
            if not self.training:
                return pre * (pre > self.threshold)
            flat = pre.flatten()
            kept = flat.topk(min(k * pre.size(0), flat.numel()))
            out = torch.zeros_like(flat).scatter(0, kept.indices, kept.values).view_as(pre)
            with torch.no_grad():  # the running threshold: the smallest value kept, averaged
                smallest = kept.values[kept.values > 0].min() if bool((kept.values > 0).any()) else self.threshold
                self.threshold.mul_(0.99).add_(0.01 * smallest)
            return out
        top = pre.topk(k, dim=-1)  # (N, k)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d_in) activations -> (N, width) sparse feature activations."""
        return self.sparsify(self.pre_activations(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """(N, width) features -> (N, d_in) reconstruction."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, d_in) -> (reconstruction (N, d_in), features (N, width))."""
        f = self.encode(x)
        return self.decode(f), f

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        """Drop the part of W_dec's gradient along each row: the step then moves a direction, not
        its length, which `normalize_decoder` would undo anyway (Gao et al.)."""
        if self.W_dec.grad is not None:
            along = (self.W_dec.grad * self.W_dec).sum(dim=1, keepdim=True)
            self.W_dec.grad -= along * self.W_dec

    @classmethod
    def identity(cls, d_in: int, shift: float = 64.0) -> "SAE":
        """The SAE whose dictionary is the identity (width = k = d_in): every feature is one
        coordinate. `b_dec = -shift` moves inputs above zero before the ReLU and back after,
        so any input with coordinates above -shift is reconstructed exactly (to rounding)."""
        sae = cls(SAEConfig(d_in=d_in, width=d_in, k=d_in))
        with torch.no_grad():
            sae.W_dec.copy_(torch.eye(d_in))
            sae.W_enc.copy_(torch.eye(d_in))
            sae.b_enc.zero_()
            sae.b_dec.fill_(-shift)
        return sae
