"""What attention does, measured: functions from (model, tokens) or from patterns to tensors.

Shapes: L layers, H heads, B sequences, T positions. A pattern `(..., T, T)` holds
attention weights, query rows by key columns, each row summing to 1 over the
keys it may see (keys 0..i for query i).

Row 0 can only attend to itself, so the per-row measures below (entropy, sink
shares, distance) average over query rows 1..T-1, where a head has a choice.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from glassgpt.model import GPT


@contextlib.contextmanager
def inference(model: GPT):
    """Eval mode (no dropout) and no gradients for a measurement; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def pattern_names(model: GPT) -> list[str]:
    return [f"blocks.{i}.attn.pattern" for i in range(model.config.n_layer)]


def as_batch(idx: torch.Tensor) -> torch.Tensor:
    """(T,) or (B, T) token ids -> (B, T) long on the model's device."""
    idx = torch.as_tensor(idx)
    if idx.dim() == 1:
        idx = idx[None, :]
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError(f"expected token ids of shape (T,) or (B, T) with T >= 1, got {tuple(idx.shape)}")
    return idx.long()


def _device(model: GPT) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------- attention patterns

def batch_patterns(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Attention patterns of every layer for a batch: idx (B, T) -> (L, B, H, T, T)."""
    idx = as_batch(idx).to(_device(model))
    with inference(model):
        _, cache = model.run_with_cache(idx, names=pattern_names(model))
    return torch.stack([cache[name].float() for name in pattern_names(model)])  # (L, B, H, T, T)


def attention_patterns(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Attention patterns of one sequence: idx (T,) or (1, T) -> (L, H, T, T)."""
    idx = as_batch(idx)
    if idx.size(0) != 1:
        raise ValueError(f"attention_patterns takes one sequence, got a batch of {idx.size(0)}")
    return batch_patterns(model, idx)[:, 0]  # (L, H, T, T)


def _choice_rows(patterns: torch.Tensor) -> torch.Tensor:
    """Query rows 1..T-1 of (..., T, Tk) patterns: the rows where a head has a choice."""
    if patterns.size(-2) < 2:
        raise ValueError("attention measures need at least 2 positions (row 0 can only attend to itself)")
    return patterns[..., 1:, :]  # (..., T-1, Tk)


def normalized_entropy(patterns: torch.Tensor) -> torch.Tensor:
    """Entropy of each query row divided by that of uniform causal attention over the
    same row (log(i + 1) for row i), averaged over rows 1..T-1: (..., T, T) -> (...).
    1 means spread evenly over the past, 0 means all weight on one key."""
    rows = _choice_rows(patterns.float())  # (..., T-1, T)
    entropy = -torch.special.xlogy(rows, rows).sum(dim=-1)  # (..., T-1); 0 log 0 = 0
    visible = torch.arange(2, patterns.size(-2) + 1, device=patterns.device, dtype=torch.float32)  # i + 1 keys
    return (entropy / visible.log()).mean(dim=-1)  # (...)


def window_average(model: GPT, windows: torch.Tensor, measure, batch_size: int = 8) -> torch.Tensor:
    """`measure(patterns (L, b, H, T, T)) -> (L, b, H)` averaged over a batch of windows
    (B, T), taken `batch_size` windows at a time to bound memory: -> (L, H)."""
    windows = as_batch(windows)
    total = None
    for start in range(0, windows.size(0), batch_size):
        chunk = windows[start: start + batch_size]
        values = measure(batch_patterns(model, chunk)).sum(dim=1)  # (L, H) summed over the chunk
        total = values if total is None else total + values
    return total / windows.size(0)


def depth_scan(model: GPT, windows: torch.Tensor) -> torch.Tensor:
    """Mean normalised entropy of every head over validation windows (B, T): -> (L, H).
    Low in a layer means focused (local or sink) heads; near 1 means diffuse ones."""
    return window_average(model, windows, normalized_entropy)


def attention_distance(patterns: torch.Tensor) -> torch.Tensor:
    """Mean distance (query position - key position) weighted by attention, over query
    rows 1..T-1: (..., T, T) -> (...). A previous-token head scores 1, uniform attention T / 4."""
    T = patterns.size(-2)
    positions = torch.arange(T, device=patterns.device, dtype=torch.float32)
    distance = (positions[:, None] - positions[None, :]).clamp(min=0)  # (T, T): i - j, 0 in the future
    return (_choice_rows(patterns.float()) * distance[1:]).sum(dim=-1).mean(dim=-1)  # (...)


# ---------------------------------------------------------------- attention sinks

def sink_scores(patterns: torch.Tensor) -> dict[str, torch.Tensor]:
    """How much attention lands on a few keys, over query rows 1..T-1 of (..., T, T) patterns:
    `first_position_share` (...): mean weight on key 0;
    `max_key_share` (...): mean weight on the single most-attended key;
    `max_key_index` (...): that key's position."""
    key_share = _choice_rows(patterns.float()).mean(dim=-2)  # (..., T): mean weight each key gets
    max_share, max_index = key_share.max(dim=-1)  # (...)
    return {"first_position_share": key_share[..., 0], "max_key_share": max_share, "max_key_index": max_index}


def find_sinks(scores: dict[str, torch.Tensor], threshold: float = 0.5, tokens: list[str] | None = None) -> list[dict]:
    """Heads whose most-attended key takes at least `threshold` of their attention, most
    extreme first: [{layer, head, key_index, share, first_position_share, token}] (token
    is the label at key_index when `tokens` is given, else None)."""
    share, index, first = scores["max_key_share"], scores["max_key_index"], scores["first_position_share"]
    sinks = []
    for layer, head in (share >= threshold).nonzero().tolist():
        key = int(index[layer, head])
        sinks.append({
            "layer": layer, "head": head, "key_index": key,
            "share": float(share[layer, head]), "first_position_share": float(first[layer, head]),
            "token": tokens[key] if tokens is not None and key < len(tokens) else None,
        })
    return sorted(sinks, key=lambda s: -s["share"])


# ---------------------------------------------------------------- reading the residual stream

def logit_lens(model: GPT, idx: torch.Tensor, targets: torch.Tensor) -> dict:
    """Decode the residual stream after the embedding and after every block through the
    final LayerNorm and the unembedding, as if the model stopped there: `loss` (L+1,)
    mean cross-entropy and `accuracy` (L+1,) top-1 accuracy against targets (B, T)
    (-1 marks positions to skip); `labels` names the L+1 points. The last point is the model itself."""
    idx, targets = as_batch(idx).to(_device(model)), as_batch(targets).to(_device(model))
    names = ["embed"] + [f"blocks.{i}.resid_post" for i in range(model.config.n_layer)]
    with inference(model):
        _, cache = model.run_with_cache(idx, names=names)
        losses, accuracies = [], []
        keep = targets != -1  # (B, T)
        for name in names:
            logits = model.lm_head(model.ln_f(cache[name])).float()  # (B, T, C) -> (B, T, V)
            losses.append(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1))
            correct = (logits.argmax(dim=-1) == targets) & keep  # (B, T)
            accuracies.append(correct.sum() / keep.sum().clamp(min=1))
    labels = ["embed"] + [f"block {i}" for i in range(model.config.n_layer)]
    return {"loss": torch.stack(losses).cpu(), "accuracy": torch.stack(accuracies).float().cpu(), "labels": labels}


# ---------------------------------------------------------------- circuits

def repeated_random_tokens(vocab_size: int, seq_len: int, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, 2 * seq_len): random tokens, then the same tokens again."""
    first = torch.randint(vocab_size, (batch, seq_len), generator=generator)
    return torch.cat([first, first], dim=1)


def induction_scores(model: GPT, seq_len: int | None = None, batch: int = 8,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The standard induction score of every head: on random tokens repeated twice, the
    mean attention from each token of the second repeat to the token that followed its
    earlier occurrence (query seq_len + s -> key s + 1): -> (L, H). An induction head
    scores near 1; a head attending evenly scores about 1 / (1.5 seq_len).
    `seq_len` defaults to half the context, at most 64."""
    seq_len = seq_len or min(model.config.block_size // 2, 64)
    if seq_len < 2 or 2 * seq_len > model.config.block_size:
        raise ValueError(f"seq_len must be between 2 and block_size / 2 = {model.config.block_size // 2}, got {seq_len}")
    tokens = repeated_random_tokens(model.config.vocab_size, seq_len, batch, generator)  # (B, 2 seq_len)
    patterns = batch_patterns(model, tokens)  # (L, B, H, 2 seq_len, 2 seq_len)
    second_repeat = patterns[..., seq_len:, :]  # (L, B, H, seq_len, 2 seq_len): queries seq_len + s
    stripe = second_repeat.diagonal(offset=1, dim1=-2, dim2=-1)  # (L, B, H, seq_len): keys s + 1
    return stripe.mean(dim=(1, 3))  # (L, H)


def zero_head(head: int):
    """A hook for `blocks.{i}.attn.z` (B, nh, T, hs) that zeroes one head's output."""
    def hook(z: torch.Tensor, _hook) -> torch.Tensor:
        z = z.clone()
        z[:, head] = 0
        return z
    return hook


def head_ablation(model: GPT, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """How much the loss on (idx, targets) rises when each head's output is zeroed
    (through a hook on `blocks.{i}.attn.z`, before the output projection): -> (L, H)."""
    idx, targets = as_batch(idx).to(_device(model)), as_batch(targets).to(_device(model))
    L, H = model.config.n_layer, model.config.n_head
    increase = torch.zeros(L, H)
    with inference(model):
        _, base = model(idx, targets)
        for layer in range(L):
            for head in range(H):
                with model.hooks([(f"blocks.{layer}.attn.z", zero_head(head))]):
                    _, loss = model(idx, targets)
                increase[layer, head] = (loss - base).item()
    return increase

