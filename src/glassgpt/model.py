"""The GPT model, written to be read in one sitting.

Shapes: B batch, T query positions, Tk key positions (T, or more with a KV
cache), C = n_embd, nh = n_head, hs = head size = C / nh, V = vocab size.

Two faces, one function:
- readable: explicit causal mask + softmax (`attn_impl="manual"`), LayerNorm
  from scratch (`norm="scratch"`), every head reshape spelled out;
- fast: `F.scaled_dot_product_attention` (`attn_impl="sdpa"`), `nn.LayerNorm`
  (`norm="torch"`).
Tests check that both give the same outputs and gradients.

Parameter names follow GPT-2 (`wte`, `wpe`, `ln_1`, `c_attn`, `c_proj`, `c_fc`,
`ln_f`, `lm_head`) so weights map to and from Hugging Face by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from glassgpt.config import GPTConfig
from glassgpt.hooks import HookedModule, HookPoint


class LayerNorm(nn.Module):
    """LayerNorm from scratch: normalise over the last dimension, then scale and shift."""

    def __init__(self, ndim: int, bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None
        self.out = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C)
        mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
        var = (x - mean).pow(2).mean(dim=-1, keepdim=True)  # biased, as nn.LayerNorm
        x_hat = (x - mean) * torch.rsqrt(var + self.eps)  # (..., C), zero mean, unit variance
        y = x_hat * self.weight
        if self.bias is not None:
            y = y + self.bias
        return self.out(y)


class TorchLayerNorm(nn.LayerNorm):
    """`nn.LayerNorm` (a fused kernel) with the same hook point as the scratch one."""

    def __init__(self, ndim: int, bias: bool = True, eps: float = 1e-5):
        super().__init__(ndim, eps=eps, bias=bias)
        self.out = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(super().forward(x))


def make_norm(config: GPTConfig) -> nn.Module:
    norm_cls = LayerNorm if config.norm == "scratch" else TorchLayerNorm
    return norm_cls(config.n_embd, bias=config.bias)


class RotaryEmbedding(nn.Module):
    """RoPE: rotate each (first half, second half) pair of a head's features by an
    angle proportional to the position, so q.k depends on the distance between them."""

    def __init__(self, head_size: int, theta: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_size, 2).float() / head_size)  # (hs/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # x: (B, nh, T, hs), positions: (T,) absolute positions of the T rows
        angles = positions[:, None].float() * self.inv_freq[None, :]  # (T, hs/2)
        cos, sin = angles.cos(), angles.sin()
        x1, x2 = x.float().chunk(2, dim=-1)  # (B, nh, T, hs/2) each
        rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, nh, T, hs)
        return rotated.to(x.dtype)


def causal_mask(T: int, Tk: int, device) -> torch.Tensor:
    """(T, Tk) bool, True where query i may look at key j. The T queries are the
    last T of the Tk positions, so query i sits at position Tk - T + i."""
    return torch.ones(T, Tk, dtype=torch.bool, device=device).tril(diagonal=Tk - T)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.head_size = config.head_size
        self.attn_impl = config.attn_impl
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.rotary = RotaryEmbedding(config.head_size, config.rope_theta) if config.pos_encoding == "rope" else None
        self.q, self.k, self.v = HookPoint(), HookPoint(), HookPoint()  # (B, nh, T, hs)
        if self.rotary is not None:  # learned positions have no rotation, so no rot_q / rot_k
            self.rot_q, self.rot_k = HookPoint(), HookPoint()  # (B, nh, T, hs) after the rotation
        self.scores = HookPoint()  # (B, nh, T, Tk) pre-softmax, masked with -inf
        self.pattern = HookPoint()  # (B, nh, T, Tk) attention weights, rows sum to 1
        self.z = HookPoint()  # (B, nh, T, hs) each head's weighted values
        self.out = HookPoint()  # (B, T, C) after the output projection

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, T, C) -> (B, nh, T, hs)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, nh, T, hs = x.shape
        return x.transpose(1, 2).contiguous().view(B, T, nh * hs)  # (B, nh, T, hs) -> (B, T, C)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, kv_cache=None) -> torch.Tensor:
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # 3 x (B, nh, T, hs)
        q, k, v = self.q(q), self.k(k), self.v(v)
        if self.rotary is not None:
            q, k = self.rotary(q, positions), self.rotary(k, positions)
            q, k = self.rot_q(q), self.rot_k(k)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, nh, Tk, hs): the past and the new
        if self.attn_impl == "manual" or self.scores.active or self.pattern.active:
            y = self.manual_attention(q, k, v)
        else:
            y = self.sdpa_attention(q, k, v)
        y = self.z(y)  # (B, nh, T, hs)
        y = self.resid_dropout(self.c_proj(self.merge_heads(y)))  # (B, T, C)
        return self.out(y)

    def manual_attention(self, q, k, v) -> torch.Tensor:
        T, Tk = q.size(2), k.size(2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_size)  # (B, nh, T, hs) x (B, nh, hs, Tk) -> (B, nh, T, Tk)
        scores = scores.masked_fill(~causal_mask(T, Tk, q.device), float("-inf"))  # no looking ahead
        scores = self.scores(scores)
        pattern = self.pattern(F.softmax(scores.float(), dim=-1).to(v.dtype))  # (B, nh, T, Tk)
        return self.attn_dropout(pattern) @ v  # (B, nh, T, Tk) x (B, nh, Tk, hs) -> (B, nh, T, hs)

    def sdpa_attention(self, q, k, v) -> torch.Tensor:
        T, Tk = q.size(2), k.size(2)
        dropout_p = self.dropout if self.training else 0.0
        if T == Tk:  # no cached past: the usual lower-triangular mask, fused
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        if T == 1:  # one new token after a cached past: it may see every key, no mask needed
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        mask = causal_mask(T, Tk, q.device)  # queries offset by the cached past
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's GELU
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.hidden = HookPoint()  # (B, T, 4C) after the GELU
        self.out = HookPoint()  # (B, T, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(self.gelu(self.c_fc(x)))  # (B, T, 4C)
        return self.out(self.dropout(self.c_proj(h)))  # (B, T, C)


class Block(nn.Module):
    """Pre-LN transformer block: normalise, transform, add back to the residual stream."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()  # modules in the order they run, so hook names list in that order
        self.resid_pre = HookPoint()  # (B, T, C)
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.resid_mid = HookPoint()  # (B, T, C) after attention, before the MLP
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)
        self.resid_post = HookPoint()  # (B, T, C)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, kv_cache=None) -> torch.Tensor:
        x = self.resid_pre(x)
        x = self.resid_mid(x + self.attn(self.ln_1(x), positions, kv_cache))
        x = x + self.mlp(self.ln_2(x))
        return self.resid_post(x)


class GPT(HookedModule):
    def __init__(self, config: GPTConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.pos_encoding == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.embed = HookPoint()  # (B, T, C) token (+ position) embeddings
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight  # one matrix embeds and unembeds
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale the residual projections by depth
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        self.name_hook_points()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache=None,
                last_position_only: bool = False):
        """idx (B, T) token ids -> logits (B, T, V) for every position, and the mean
        cross-entropy against targets (B, T) when given (-1 marks positions to skip).
        With a `kv_cache`, idx holds only the new tokens; the cache holds the past.
        `last_position_only` gives logits (B, 1, V) for the last position alone: all that
        generation needs, without the (T, C) x (C, V) product for the others."""
        if last_position_only and targets is not None:
            raise ValueError("the loss needs the logits of every position: last_position_only=False")
        B, T = idx.shape
        start = kv_cache.length if kv_cache is not None else 0
        positions = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            if start + T > self.config.block_size:
                raise ValueError(
                    f"sequence of {start + T} tokens is longer than block_size {self.config.block_size}; "
                    "learned positions stop there: crop the context"
                )
            x = x + self.wpe(positions)  # (T, C) broadcast over B
        x = self.embed(self.drop(x))
        for block in self.blocks:
            x = block(x, positions, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        x = self.ln_f(x)
        if last_position_only:
            x = x[:, -1:, :]  # (B, 1, C)
        logits = self.lm_head(x)  # (B, T, V), or (B, 1, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(B * T, -1), targets.reshape(B * T), ignore_index=-1)
        return logits, loss

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, each shared tensor counted once. `non_embedding` leaves out
        the position table (and the token table when it is not tied to the head)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if self.wpe is not None:
                n -= self.wpe.weight.numel()
            if not self.config.tie_weights:
                n -= self.wte.weight.numel()
        return n

    def estimate_flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), as in the PaLM paper:
        6 per weight, plus 12 * L * nh * hs * T for the attention scores and mixing."""
        cfg = self.config
        T = seq_len or cfg.block_size
        return 6 * self.num_params(non_embedding=True) + 12 * cfg.n_layer * cfg.n_head * cfg.head_size * T
