"""Your model: a glassgpt GPT whose pieces are the learner's own functions, checked against glassgpt's
loss on the same weights, trained by glassgpt's trainer.

`use_pieces(model, pieces)` swaps the learner's functions into a GPT in place: its norms compute the
learner's `layernorm`, its attention their `split_heads`, `apply_rope`, `causal_attention` (each head
folded into the batch) and `merge_heads`, its MLP their `gelu`, its blocks their `block`, the model
their `gpt_forward` and `cross_entropy`. A piece the file does not define stays glassgpt's. Parameter
names and hook points are the model's own, so checkpoints, hooks, the report and the views work
unchanged. Two limits, stated: `attn.scores` is computed by glassgpt for the hook (the learner's
function returns only the pattern), and a hook that replaces `resid_mid` changes what ln_2 reads,
not the learner's residual sum.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from glassgpt.config import GPTConfig, load_run_config
from glassgpt.errors import RunError, UsageError
from glassgpt.learn.core import LearnerError, describe_failure
from glassgpt.learn.stubs import load_functions
from glassgpt.model import GPT, CausalSelfAttention, apply_rotary, causal_mask

PIECES = ("layernorm", "split_heads", "merge_heads", "apply_rope", "causal_attention", "cached_attention", "gelu",
          "block", "gpt_forward", "cross_entropy")
# which piece computes each hook point's value (the first that differs names the piece to check)
HOOK_PIECES = {"ln_1.out": "layernorm", "ln_2.out": "layernorm", "ln_f.out": "layernorm", "attn.q": "split_heads",
               "attn.k": "split_heads", "attn.v": "split_heads", "attn.rot_q": "apply_rope", "attn.rot_k": "apply_rope",
               "attn.pattern": "causal_attention", "attn.z": "causal_attention", "attn.out": "merge_heads",
               "mlp.hidden": "gelu", "resid_mid": "block", "resid_post": "block", "embed": "gpt_forward"}
EXERCISE_OF = {"layernorm": "layernorm", "split_heads": "multihead", "merge_heads": "multihead", "apply_rope": "rope",
               "causal_attention": "attention", "cached_attention": "kv_cache", "gelu": "mlp", "block": "block",
               "gpt_forward": "forward", "cross_entropy": "cross_entropy"}
DEFAULT_CONFIG = dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32)


class Pieces:
    """The learner's functions that are pieces of a GPT, by name, and the file they came from."""

    def __init__(self, functions: dict[str, Callable], source: str):
        self.functions = functions
        self.source = source

    def get(self, name: str) -> Callable | None:
        return self.functions.get(name)

    def describe(self) -> str:
        theirs = [name for name in PIECES if name in self.functions]
        return f"{Path(self.source).name}'s {', '.join(theirs)}; glassgpt's for the rest"


def load_pieces(path: str | Path) -> Pieces:
    """The pieces a learner's file defines (imported into this process: the file runs here, unlimited)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} does not exist: give the Python file holding your pieces ({', '.join(PIECES)})")
    try:
        names = load_functions(path)
    except LearnerError as e:
        raise UsageError(str(e)) from None
    functions = {name: names[name] for name in PIECES if callable(names.get(name))}
    if not functions:
        raise UsageError(f"{path} defines none of the pieces of a GPT: {', '.join(PIECES)} "
                         "(glassgpt learn stub NAME writes each one's stub)")
    return Pieces(functions, str(path.resolve()))


def unsupported(config: GPTConfig) -> list[str]:
    """What a model built from the exercises' pieces cannot hold: one clause each."""
    wanted = {"qk_norm": False, "attn_sink": "none", "logit_softcap": 0.0, "mlp_act": "gelu", "attn_only": False,
              "tie_weights": True}
    return [f"{key}={getattr(config, key)} (use {key}={str(value).lower() if isinstance(value, bool) else value})"
            for key, value in wanted.items() if getattr(config, key) != value]


# ---------------------------------------------------------------- the learner's modules

class LearnerNorm(nn.Module):
    """A norm computed by the learner's layernorm, with the replaced norm's weight, bias and hook point."""

    def __init__(self, norm: nn.Module, fn: Callable):
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps
        self.out = norm.out
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C)
        return self.out(self.fn(x, self.weight, self.bias, self.eps))


class LearnerActivation(nn.Module):
    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class LearnerAttention(nn.Module):
    """Causal self-attention with the learner's split, rotation, attention and merge; the replaced
    module's weights and hook points under the same names."""

    def __init__(self, attn: CausalSelfAttention, pieces: Pieces, rope_theta: float):
        super().__init__()
        for name, child in attn.named_children():
            self.add_module(name, child)
        self.layer_idx, self.n_head, self.n_embd = attn.layer_idx, attn.n_head, attn.n_embd
        self.head_size = attn.head_size
        self.dropout, self.sink_logit, self.weight_hooks = attn.dropout, None, attn.weight_hooks
        self.pieces, self.rope_theta = pieces, rope_theta

    def split(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, nh, T, hs)
        fn = self.pieces.get("split_heads")
        return fn(x, self.n_head) if fn else CausalSelfAttention.split_heads(self, x)

    def merge(self, y: torch.Tensor) -> torch.Tensor:  # (B, nh, T, hs) -> (B, T, C)
        fn = self.pieces.get("merge_heads")
        return fn(y) if fn else CausalSelfAttention.merge_heads(self, y)

    def rotate(self, x: torch.Tensor, rope, start: int) -> torch.Tensor:  # (B, nh, T, hs)
        fn = self.pieces.get("apply_rope")
        return fn(x, start, self.rope_theta) if fn else apply_rotary(x, *rope)

    def forward(self, x: torch.Tensor, rope=None, kv_cache=None) -> torch.Tensor:
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q, k, v = self.q(self.split(q)), self.k(self.split(k)), self.v(self.split(v))  # 3 x (B, nh, T, hs)
        if rope is not None:
            start = kv_cache.length if kv_cache is not None else 0
            q, k = self.rot_q(self.rotate(q, rope, start)), self.rot_k(self.rotate(k, rope, start))
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, nh, Tk, hs)
        y = self.z(self.attend(q, k, v))  # (B, nh, T, hs)
        return self.out(self.resid_dropout(self.c_proj(self.merge(y))))  # (B, T, C)

    def attend(self, q, k, v) -> torch.Tensor:
        """The learner's one-head function on every head at once, heads folded into the batch."""
        B, nh, T, hs = q.shape
        Tk = k.size(2)
        fold = lambda t: t.reshape(B * nh, t.size(2), hs)  # noqa: E731  (B, nh, n, hs) -> (B * nh, n, hs)
        if self.scores.active:  # the learner's function returns the pattern only: glassgpt's scores, to read
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
            self.scores(scores.masked_fill(~causal_mask(T, Tk, q.device), float("-inf")))
        if T == Tk and self.pieces.get("causal_attention"):
            out, pattern = self.pieces.get("causal_attention")(fold(q), fold(k), fold(v))
            pattern = pattern.view(B, nh, T, Tk)
            seen = self.pattern(pattern)  # a hook may replace it; then the values are mixed by the new one
            if seen is not pattern or (self.training and self.dropout):
                return self.attn_dropout(seen) @ v
            return out.view(B, nh, T, hs)
        if T != Tk and self.pieces.get("cached_attention"):
            new = slice(Tk - T, Tk)
            past = slice(0, Tk - T)
            out, _, _ = self.pieces.get("cached_attention")(fold(q), fold(k[:, :, new]), fold(v[:, :, new]),
                                                            fold(k[:, :, past]), fold(v[:, :, past]))
            return out.view(B, nh, T, hs)
        return CausalSelfAttention.manual_attention(self, q, k, v)


class LearnerBlock(nn.Module):
    """A block wired by the learner's block function, with the replaced block's modules."""

    def __init__(self, block: nn.Module, fn: Callable):
        super().__init__()
        for name, child in block.named_children():
            self.add_module(name, child)
        self.fn = fn

    def norm_after_attention(self, x: torch.Tensor) -> torch.Tensor:
        """ln_2 as the learner's block calls it: its input is the stream after attention, resid_mid."""
        return self.ln_2(self.resid_mid(x))

    def forward(self, x: torch.Tensor, rope=None, kv_cache=None) -> torch.Tensor:
        x = self.resid_pre(x)
        attn = functools.partial(self.attn, rope=rope, kv_cache=kv_cache)
        return self.resid_post(self.fn(x, self.ln_1, attn, self.norm_after_attention, self.mlp))


def learner_forward(model: GPT, pieces: Pieces, idx: torch.Tensor, targets: torch.Tensor | None = None,
                    kv_cache=None, last_position_only: bool = False):
    """GPT.forward with the learner's gpt_forward and cross_entropy (glassgpt's where the file has none,
    and for cached or last-position-only calls, which the exercise leaves out)."""
    forward, loss_fn = pieces.get("gpt_forward"), pieces.get("cross_entropy")
    if forward is None or kv_cache is not None or last_position_only:
        logits, loss = GPT.forward(model, idx, None if loss_fn else targets, kv_cache, last_position_only)
    else:
        T = idx.size(1)
        if model.wpe is not None and T > model.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size {model.config.block_size}")
        rope = model.rotary(0, T) if model.rotary is not None else None
        blocks = [functools.partial(run_block, model, i, rope) for i in range(len(model.blocks))]
        wpe = model.wpe.weight if model.wpe is not None else None
        logits, loss = forward(idx, model.wte.weight, wpe, blocks, model.ln_f).float(), None  # (B, T, V)
    if targets is not None and loss is None:
        flat_logits, flat_targets = logits.reshape(-1, logits.size(-1)), targets.reshape(-1)
        loss = loss_fn(flat_logits, flat_targets) if loss_fn else F.cross_entropy(flat_logits, flat_targets,
                                                                                     ignore_index=-1)
    return logits, loss


def run_block(model: GPT, i: int, rope, x: torch.Tensor) -> torch.Tensor:
    """Block i of the model; the first one reads the embeddings through the `embed` hook."""
    if i == 0:
        x = model.embed(model.drop(x))
    return model.blocks[i](x, rope)


def use_pieces(model: GPT, pieces: Pieces) -> GPT:
    """Swap the learner's pieces into `model`, in place (the same parameters, names and hook points)."""
    refused = unsupported(model.config)
    if refused:
        raise UsageError(f"a model built from the exercises' pieces is GPT-2's kind; this one has {', '.join(refused)}")
    norm = pieces.get("layernorm")
    for block in model.blocks:
        if norm:
            block.ln_1, block.ln_2 = LearnerNorm(block.ln_1, norm), LearnerNorm(block.ln_2, norm)
        block.attn = LearnerAttention(block.attn, pieces, model.config.rope_theta)
        if pieces.get("gelu"):
            block.mlp.act = LearnerActivation(pieces.get("gelu"))
    if norm:
        model.ln_f = LearnerNorm(model.ln_f, norm)
    if pieces.get("block"):
        model.blocks = nn.ModuleList(LearnerBlock(block, pieces.get("block")) for block in model.blocks)
    model.forward = functools.partial(learner_forward, model, pieces)
    return model


# ---------------------------------------------------------------- the same loss as glassgpt's

def first_differing_hook(mine: GPT, theirs: GPT, idx: torch.Tensor) -> str | None:
    """The first hook point, in firing order, where the two models' activations differ."""
    _, a = mine.run_with_cache(idx)
    _, b = theirs.run_with_cache(idx)
    for name in theirs.hook_names():
        if name in a and name in b and not torch.allclose(a[name].float(), b[name].float(), atol=1e-4, rtol=1e-3):
            return name
    return None


def check_same_loss(mine: GPT, theirs: GPT, pieces: Pieces, seed: int = 0) -> tuple[float, float]:
    """(your loss, glassgpt's) on one batch of random tokens; RunError naming the first hook point that
    differs, and the exercise of the piece behind it, when the logits or the loss are not the same."""
    g = torch.Generator().manual_seed(seed)
    config = theirs.config
    device = next(theirs.parameters()).device
    idx = torch.randint(0, config.vocab_size, (2, min(config.block_size, 32)), generator=g).to(device)
    targets = torch.randint(0, config.vocab_size, idx.shape, generator=g).to(device)
    was = mine.training, theirs.training
    mine.eval(), theirs.eval()
    try:
        with torch.no_grad():
            expected_logits, expected = theirs(idx, targets)
            try:
                logits, loss = mine(idx, targets)
                loss = float(loss)
            except Exception as e:  # the learner's code
                raise RunError(f"your model failed: {describe_failure(e, 'a piece', pieces.source)}") from None
            same_logits = logits.shape == expected_logits.shape and torch.allclose(
                logits.float(), expected_logits, atol=1e-5, rtol=1e-4)
            if not same_logits or abs(loss - float(expected)) > 1e-4 * max(1.0, abs(float(expected))):
                raise RunError(mismatch(loss, float(expected), first_differing_hook(mine, theirs, idx)))
    finally:
        mine.train(was[0]), theirs.train(was[1])
    return loss, float(expected)


def mismatch(loss: float, expected: float, hook: str | None) -> str:
    if hook is None:
        where = "every activation agrees, so the logits or the loss differ: check forward and cross_entropy"
    else:
        piece = next((p for suffix, p in HOOK_PIECES.items() if hook.endswith(suffix)), "gpt_forward")
        where = (f"the first activation that differs is {hook}, computed by your {piece}: "
                 f"glassgpt learn check {EXERCISE_OF[piece]} FILE says what is wrong with it")
    return (f"your model's logits or loss differ from glassgpt's on the same weights (loss {loss:.6f}, glassgpt's "
            f"{expected:.6f}); {where}")


# ---------------------------------------------------------------- build it, train it

def build_model(path: str | Path, config: GPTConfig | None = None, seed: int = 0) -> GPT:
    """A GPT (by default a small one) whose pieces are those `path` defines, its loss checked against
    glassgpt's on the same weights (RunError naming the first activation that differs)."""
    pieces = load_pieces(path)
    torch.manual_seed(seed)
    theirs = GPT(config or GPTConfig(**DEFAULT_CONFIG))
    mine = use_pieces(copy.deepcopy(theirs), pieces)
    check_same_loss(mine, theirs, pieces)
    return mine


def pieces_installer(path: str | Path, log: Callable[[str], None] = print) -> Callable[[GPT], None]:
    """An `on_model` for glassgpt's trainer: swaps the pieces of `path` into the model it builds, after
    checking that its loss is glassgpt's on the same weights."""
    pieces = load_pieces(path)

    def install(model: GPT) -> None:
        theirs = copy.deepcopy(model)
        use_pieces(model, pieces)
        loss, _ = check_same_loss(model, theirs, pieces)
        log(f"your model: {pieces.describe()}; its loss on a random batch is glassgpt's ({loss:.4f})")
    return install


def train_model(path: str | Path, preset: str = "cpu-baby", overrides: Sequence[str] = (),
                out: str | Path = "runs/mine", log: Callable[[str], None] = print) -> dict:
    """Train a model built from the pieces of `path` with glassgpt's trainer (`glassgpt train PRESET
    model=PATH` from the command line); returns the trainer's summary. The run directory is an
    ordinary run: sample, analyze, sae and the views open it."""
    from glassgpt.training.loop import train

    return train(load_run_config(preset, list(overrides)), out, log=log, on_model=pieces_installer(path, log))


def split_model_override(overrides: Sequence[str]) -> tuple[str | None, list[str]]:
    """(`PATH` of a `model=PATH` override or None, the other overrides)."""
    paths = [item.partition("=")[2].strip() for item in overrides if item.partition("=")[0].strip() == "model"]
    if len(paths) > 1:
        raise UsageError("model=FILE.py is given twice: give your pieces' file once")
    return (paths[0] if paths else None), [item for item in overrides if item.partition("=")[0].strip() != "model"]
