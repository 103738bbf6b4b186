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
from torch.utils.checkpoint import checkpoint

from glassgpt.config import GPTConfig
from glassgpt.hooks import HookedModule, HookPoint
from glassgpt.kv_cache import KVCache


class LayerNorm(nn.Module):
    """LayerNorm from scratch: normalise over the last dimension, then scale and shift."""

    def __init__(self, ndim: int, bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None
        self.out = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C)
        x32 = x.float()  # the statistics in fp32 whatever the weights' precision (a no-op in fp32)
        mean = x32.mean(dim=-1, keepdim=True)  # (..., 1)
        var = (x32 - mean).pow(2).mean(dim=-1, keepdim=True)  # biased, as nn.LayerNorm
        x_hat = ((x32 - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)  # (..., C), zero mean, unit variance
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
    angle proportional to the position, so q.k depends on the distance between them.

    The angles depend on the positions only: their cos and sin are computed once, at
    construction, for positions 0 .. max_positions - 1 (the model's block_size), kept as
    buffers (fp32, not saved with the weights) and sliced by position; every layer of a
    forward pass shares the slice. Positions past the table are computed when asked.
    Both tables are a head wide, laid out as `apply_rotary` uses them: cos is (cos, cos)
    and sin is (-sin, sin), the sign of each half folded in."""

    def __init__(self, head_size: int, theta: float = 10000.0, max_positions: int = 1024):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_size, 2).float() / head_size)  # (hs/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        cos, sin = self.angles(torch.arange(max_positions))
        self.register_buffer("cos", cos, persistent=False)  # (max_positions, hs)
        self.register_buffer("sin", sin, persistent=False)  # (max_positions, hs)

    def angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cos and signed sin tables of `positions` (T,): (T, hs) each, in fp32."""
        angles = positions.to(self.inv_freq.device)[:, None].float() * self.inv_freq.float()[None, :]  # (T, hs/2)
        cos, sin = angles.cos(), angles.sin()
        return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)

    def forward(self, start: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The tables for positions start .. start + T - 1: (T, hs) each."""
        if start + T <= self.cos.size(0):
            return self.cos[start: start + T].float(), self.sin[start: start + T].float()  # a no-op in fp32
        return self.angles(torch.arange(start, start + T))


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, heads, T, hs) by the angles whose tables (RotaryEmbedding) are (T, hs), in fp32:
    each pair (x1, x2) becomes (x1 cos - x2 sin, x2 cos + x1 sin), that is x * cos + partner * sin,
    where each feature's partner is the other half's and sin carries the sign. Three passes over x."""
    xf = x.float()  # a no-op in fp32
    x1, x2 = xf.chunk(2, dim=-1)  # (B, heads, T, hs/2) each
    partner = torch.cat([x2, x1], dim=-1)  # (B, heads, T, hs)
    return torch.addcmul(xf * cos, partner, sin).to(x.dtype)


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
        self.qk_norm = config.qk_norm  # RMS-normalise each head's q and k (no weights) before the dot product
        self.q, self.k, self.v = HookPoint(), HookPoint(), HookPoint()  # (B, nh, T, hs)
        if config.pos_encoding == "rope":  # learned positions have no rotation, so no rot_q / rot_k
            self.rot_q, self.rot_k = HookPoint(), HookPoint()  # (B, nh, T, hs) after the rotation
        self.scores = HookPoint(needs_weights=True)  # (B, nh, T, Tk) pre-softmax, masked with -inf
        # Sink remedies (attn_sink): a head that has nothing to look up need not dump its attention on a key.
        self.sink_logit = None  # "learned": (nh,) one more logit in each softmax, for attending to nothing
        self.c_gate = None  # "gate": (C -> nh) a sigmoid gate on each head's output, from the block's input
        if config.attn_sink == "learned":
            self.sink_logit = nn.Parameter(torch.zeros(config.n_head))  # 0: "softmax off by one" at the start
            self.sink_weight = HookPoint(needs_weights=True)  # (B, nh, T) the weight each query gives to nothing (read-only)
        self.pattern = HookPoint(needs_weights=True)  # (B, nh, T, Tk) attention weights, rows sum to 1 (less with a learned sink)
        if config.attn_sink == "gate":
            self.c_gate = nn.Linear(config.n_embd, config.n_head, bias=True)
            self.gate = HookPoint()  # (B, nh, T) each head's gate, in (0, 1)
        self.z = HookPoint()  # (B, nh, T, hs) each head's weighted values
        self.out = HookPoint()  # (B, T, C) after the output projection
        # the hook points that exist on the manual path only (they say so themselves): a tuple, not submodules
        self.weight_hooks = tuple(m for m in self.children() if isinstance(m, HookPoint) and m.needs_weights)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, T, C) -> (B, nh, T, hs)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, nh, T, hs = x.shape
        return x.transpose(1, 2).contiguous().view(B, T, nh * hs)  # (B, nh, T, hs) -> (B, T, C)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                kv_cache: KVCache | None = None) -> torch.Tensor:
        """x (B, T, C); rope: the (cos, sin) tables of the positions' angles, (T, hs) each, for RoPE models."""
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # 3 x (B, nh, T, hs)
        q, k, v = self.q(q), self.k(k), self.v(v)
        if self.qk_norm:
            q, k = F.rms_norm(q, (self.head_size,)), F.rms_norm(k, (self.head_size,))  # (B, nh, T, hs)
        if rope is not None:  # each from its view of c_attn's output (stacking q and k first costs a copy)
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)  # (B, nh, T, hs) each
            q, k = self.rot_q(q), self.rot_k(k)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, nh, Tk, hs): the past and the new
        if self.attn_impl == "manual" or any(hook.active for hook in self.weight_hooks):
            y = self.manual_attention(q, k, v)
        elif self.sink_logit is not None:
            y = self.sdpa_attention_with_sink(q, k, v)
        else:
            y = self.sdpa_attention(q, k, v)
        if self.c_gate is not None:  # Gated Attention (Qiu et al. 2025): each head scaled by its gate
            gate = self.gate(torch.sigmoid(self.c_gate(x)).transpose(1, 2))  # (B, T, nh) -> (B, nh, T)
            y = y * gate[..., None]  # (B, nh, T, hs) x (B, nh, T, 1)
        y = self.z(y)  # (B, nh, T, hs)
        y = self.resid_dropout(self.c_proj(self.merge_heads(y)))  # (B, T, C)
        return self.out(y)

    def manual_attention(self, q, k, v) -> torch.Tensor:
        T, Tk = q.size(2), k.size(2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_size)  # (B, nh, T, hs) x (B, nh, hs, Tk) -> (B, nh, T, Tk)
        scores = scores.masked_fill(~causal_mask(T, Tk, q.device), float("-inf"))  # no looking ahead
        scores = self.scores(scores)
        if self.sink_logit is not None:  # one more column, the learned sink logit: the head may attend to nothing
            B, nh = scores.shape[:2]
            sink = self.sink_logit.float().view(1, nh, 1, 1).expand(B, nh, T, 1)  # (B, nh, T, 1)
            weights = F.softmax(torch.cat([scores.float(), sink], dim=-1), dim=-1)  # (B, nh, T, Tk + 1)
            self.sink_weight(weights[..., -1])  # (B, nh, T)
            weights = weights[..., :-1]  # (B, nh, T, Tk): the weights used, rows sum to 1 - sink weight
        else:
            weights = F.softmax(scores.float(), dim=-1)  # (B, nh, T, Tk)
        pattern = self.pattern(weights.to(v.dtype))  # (B, nh, T, Tk)
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

    def sdpa_attention_with_sink(self, q, k, v) -> torch.Tensor:
        """The learned sink on the fused path: one more key, first, with k = 0 and v = 0, so q.k is 0
        for it and an additive float mask sets its score to the head's sink logit (the real keys get
        0, or -inf in the future): the same softmax as the manual path's extra column, at head size."""
        B, nh, T, hs = q.shape
        Tk = k.size(2)
        k = torch.cat([k.new_zeros(B, nh, 1, hs), k], dim=2)  # (B, nh, 1 + Tk, hs)
        v = torch.cat([v.new_zeros(B, nh, 1, hs), v], dim=2)  # (B, nh, 1 + Tk, hs)
        future = torch.zeros(T, Tk, dtype=q.dtype, device=q.device).masked_fill(
            ~causal_mask(T, Tk, q.device), float("-inf"))  # (T, Tk): 0 where a query may look, -inf ahead
        sink = self.sink_logit.to(q.dtype).view(1, nh, 1, 1).expand(1, nh, T, 1)  # (1, nh, T, 1)
        mask = torch.cat([sink, future.expand(1, nh, T, Tk)], dim=-1)  # (1, nh, T, 1 + Tk)
        dropout_p = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


class ReLUSquared(nn.Module):
    """relu(x)^2, the modded-nanogpt speedrun's MLP activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # mlp_act, chosen once: "gelu" is GPT-2's tanh GELU, "relu2" relu(x)^2
        self.act = nn.GELU(approximate="tanh") if config.mlp_act == "gelu" else ReLUSquared()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.hidden = HookPoint()  # (B, T, 4C) after the activation
        self.out = HookPoint()  # (B, T, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, 4C)
        h = self.hidden(self.act(h))  # (B, T, 4C)
        return self.out(self.dropout(self.c_proj(h)))  # (B, T, C)


class Block(nn.Module):
    """Pre-LN transformer block: normalise, transform, add back to the residual stream."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()  # modules in the order they run, so hook names list in that order
        self.resid_pre = HookPoint()  # (B, T, C)
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.resid_mid = HookPoint()  # (B, T, C) after attention, before the MLP
        self.ln_2 = None if config.attn_only else make_norm(config)
        self.mlp = None if config.attn_only else MLP(config)  # attn_only: resid_post equals resid_mid
        self.resid_post = HookPoint()  # (B, T, C)

    def forward(self, x: torch.Tensor, rope=None, kv_cache: KVCache | None = None) -> torch.Tensor:
        x = self.resid_pre(x)
        x = self.resid_mid(x + self.attn(self.ln_1(x), rope, kv_cache))
        if self.mlp is not None:
            x = x + self.mlp(self.ln_2(x))
        return self.resid_post(x)


class GPT(HookedModule):
    def __init__(self, config: GPTConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.pos_encoding == "learned" else None
        self.rotary = (RotaryEmbedding(config.head_size, config.rope_theta, config.block_size)
                       if config.pos_encoding == "rope" else None)
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
                if config.zero_init_proj:  # each block starts as the identity (the modded-nanogpt speedrun's)
                    nn.init.zeros_(p)
        # Set by glassgpt.training.parallel.wrap (activation_checkpointing): in training, each block keeps only its
        # input for the backward pass and runs its forward again there (torch.utils.checkpoint).
        self.checkpoint_blocks = False
        self.name_hook_points()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache: KVCache | None = None,
                last_position_only: bool = False):
        """idx (B, T) token ids -> logits (B, T, V) for every position, and the mean
        cross-entropy against targets (B, T) when given (-1 marks positions to skip).
        With a `kv_cache`, idx holds only the new tokens; the cache holds the past
        (its protocol, `length`, `update` and `advance`, is all in `glassgpt.kv_cache`).
        `last_position_only` gives logits (B, 1, V) for the last position alone: all that
        generation needs, without the (T, C) x (C, V) product for the others."""
        if last_position_only and targets is not None:
            raise ValueError("the loss needs the logits of every position: last_position_only=False")
        B, T = idx.shape
        start = kv_cache.length if kv_cache is not None else 0
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            if start + T > self.config.block_size:
                raise ValueError(
                    f"sequence of {start + T} tokens is longer than block_size {self.config.block_size}; "
                    "learned positions stop there: crop the context"
                )
            positions = torch.arange(start, start + T, device=idx.device)  # (T,)
            x = x + self.wpe(positions)  # (T, C) broadcast over B
        rope = self.rotary(start, T) if self.rotary is not None else None  # (cos, sin), once for all layers
        x = self.embed(self.drop(x))
        recompute = self.checkpoint_blocks and self.training and torch.is_grad_enabled() and kv_cache is None
        for block in self.blocks:
            x = checkpoint(block, x, rope, kv_cache, use_reentrant=False) if recompute else block(x, rope, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        if last_position_only:
            x = x[:, -1:, :]  # (B, 1, C); ln_f works per position, so normalising the last alone is the same
        logits = self.unembed(x)  # (B, T, V), or (B, 1, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T), ignore_index=-1)  # logits: fp32
        return logits, loss

    def unembed(self, x: torch.Tensor, softcap: bool = True) -> torch.Tensor:
        """The one way from the residual stream to logits: (..., C) -> (..., V) in fp32, through
        the final norm, the head and (with `logit_softcap`) the cap. `forward`, the logit lens and
        every streamed measure call it; `softcap=False` gives the logits before the cap, the
        quantity that direct logit attribution splits into a sum."""
        logits = self.lm_head(self.ln_f(x)).float()  # (..., V): fp32 whatever the weights' precision
        if softcap and self.config.logit_softcap:  # squash into (-cap, cap) smoothly (the modded-nanogpt speedrun's)
            logits = self.config.logit_softcap * torch.tanh(logits / self.config.logit_softcap)
        return logits

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
