"""Measures reduced inside the hook, layer by layer: analysis at GPT-2 scale.

`batch_patterns` holds every layer's attention at once, (L, B, H, T, T): for GPT-2
with 8 windows of 1024 tokens that is 4.8 GB in float32. Here each layer's pattern
is reduced to a few numbers per head by a hook on `blocks.{i}.attn.pattern` as soon
as that layer has made it, and dropped; windows go through `batch_size` at a time.
At most one layer's (b, H, T, T) pattern lives at once.

A reducer is `fn(pattern (b, H, T, T) float32, idx (b, T)) -> (totals, counts)`: for each
of the b windows, the sum of a per-head statistic over what it saw (b, ...), and how many
things it summed (b,), or one number for every window. The stream adds them up over windows,
layers apart, and divides at the end; the spread of the windows gives each measure its
standard error (`glassgpt.analysis.uncertainty`), returned beside it as `<name>_se`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from glassgpt.analysis.measures import (
    device_of, as_batch, attention_distance, default_induction_seq_len, induction_stripe, key_shares,
    normalized_entropy, prefix_matching_sums, previous_token_stripe, repeated_random_tokens, sink_scores_of_shares,
)
from glassgpt.analysis.uncertainty import Mean, bootstrap_se
from glassgpt.inference.mode import inference
from glassgpt.model import GPT

Reducer = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor | int]"]
Progress = Callable[[int], None]  # called with the number of windows just finished


def per_window(measure) -> Reducer:
    """A reducer from a measure `(b, H, T, T) -> (b, H)`: the mean over windows."""
    def reduce(pattern: torch.Tensor, idx: torch.Tensor):
        return measure(pattern), 1  # (b, H), one value per window
    return reduce


class _Stripe:
    """`induction_stripe` at one repeat length, as a measure of patterns alone (picklable); `offset`
    positions before the repeats (a BOS) are left out."""

    def __init__(self, seq_len: int, offset: int = 0):
        self.seq_len, self.offset = seq_len, offset

    def __call__(self, pattern: torch.Tensor) -> torch.Tensor:
        return induction_stripe(pattern[..., self.offset:, self.offset:], self.seq_len)


class LayerMean:
    """A measure `(b, H, T, T) -> (b, H)` averaged over the layer's heads: -> (b, 1) (picklable)."""

    def __init__(self, measure):
        self.measure = measure

    def __call__(self, pattern: torch.Tensor) -> torch.Tensor:
        return self.measure(pattern).mean(dim=-1, keepdim=True)


key_share_reducer = per_window(key_shares)  # (H, T): mean weight on each key from the rows that can see it


def sink_share_reducer(pattern: torch.Tensor, idx: torch.Tensor):
    """Each window's sink share (`sink_scores`' max_key_share), over windows: (H,)."""
    return sink_scores_of_shares(key_shares(pattern))["max_key_share"], 1  # (b, H)


def sink_key_votes_reducer(pattern: torch.Tensor, idx: torch.Tensor):
    """The fraction of windows that have each key as a head's sink (max_key_index): (H, T); its
    argmax is the most frequent sink key."""
    index = sink_scores_of_shares(key_shares(pattern))["max_key_index"]  # (b, H)
    return F.one_hot(index, pattern.size(-1)).float(), 1  # (b, H, T)


def prefix_matching_reducer(pattern: torch.Tensor, idx: torch.Tensor):
    """`prefix_matching` pooled over windows (its sums, `prefix_matching_sums`): attention on the keys
    that followed an earlier occurrence of the query's token, and how many queries have one."""
    return prefix_matching_sums(pattern, idx)  # (b, H), (b,)


def induction_reducer(seq_len: int, offset: int = 0) -> Reducer:
    """`induction_stripe` (query seq_len + s -> key s + 1) of repeated tokens that start `offset`
    positions in (1 after a BOS), over sequences: (H,)."""
    return per_window(_Stripe(seq_len, offset))


WINDOW_REDUCERS: dict[str, Reducer] = {
    "depth_scan": per_window(normalized_entropy),  # (L, H)
    "attention_distance": per_window(attention_distance),  # (L, H)
    "previous_token": per_window(previous_token_stripe),  # (L, H)
    "prefix_matching": prefix_matching_reducer,  # (L, H)
    "key_shares": key_share_reducer,  # (L, H, T)
    "sink_share": sink_share_reducer,  # (L, H)
    "sink_key_votes": sink_key_votes_reducer,  # (L, H, T)
    "layer_entropy": per_window(LayerMean(normalized_entropy)),  # (L, 1): each layer's mean over its heads
    "layer_distance": per_window(LayerMean(attention_distance)),  # (L, 1)
}
SINK_REDUCERS = {k: WINDOW_REDUCERS[k] for k in ("key_shares", "sink_share", "sink_key_votes")}


def pattern_hooks(model: GPT, reducers: dict[str, Reducer], sums: dict[str, list[Mean]], idx: torch.Tensor):
    """One hook per layer on `blocks.{i}.attn.pattern` that feeds the pattern (in float32) to every
    reducer and keeps only what they return."""
    if not reducers:
        return []  # nothing to reduce: attention may take the fused path

    def hook_for(layer: int):
        def reduce(pattern: torch.Tensor, _hook) -> None:
            pattern = pattern.float()  # (b, H, T, T); bfloat16 weights give bfloat16 patterns
            for name, reducer in reducers.items():
                sums[name][layer].add(*reducer(pattern, idx))
        return reduce
    return [(f"blocks.{layer}.attn.pattern", hook_for(layer)) for layer in range(model.config.n_layer)]


def stream_patterns(model: GPT, windows: torch.Tensor, reducers: dict[str, Reducer], batch_size: int = 1,
                    extra_hooks: Callable[[torch.Tensor, torch.Tensor], list] | None = None,
                    progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """Run `windows` (B, T) through the model `batch_size` at a time and reduce every layer's
    attention pattern inside its hook: `{name: (L, ...)}`, each reducer's mean over the windows, and
    `{name_se: (L, ...)}` its standard error over them (NaN for one window).
    `extra_hooks(chunk, start)` may add hooks to the same passes (the logit lens does)."""
    windows = as_batch(windows).to(device_of(model))
    sums = {name: [Mean() for _ in range(model.config.n_layer)] for name in reducers}
    with inference(model):
        for start in range(0, windows.size(0), batch_size):
            chunk = windows[start: start + batch_size]  # (b, T)
            hooks = pattern_hooks(model, reducers, sums, chunk)
            if extra_hooks is not None:
                hooks += extra_hooks(chunk, start)
            model.run_with_hooks(chunk, fwd_hooks=hooks, last_position_only=True)  # the hooks read what they need
            if progress is not None:
                progress(chunk.size(0))
    stats = {name: torch.stack([mean.value for mean in layers]) for name, layers in sums.items()}
    return stats | {f"{name}_se": torch.stack([mean.se for mean in layers]) for name, layers in sums.items()}


def depth_scan(model: GPT, windows: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
    """Mean normalised entropy of every head over validation windows (B, T): -> (L, H).
    Low in a layer means focused (local or sink) heads; near 1 means diffuse ones."""
    return stream_patterns(model, windows, {"entropy": per_window(normalized_entropy)}, batch_size)["entropy"]


def induction_scores(model: GPT, seq_len: int | None = None, batch: int = 8,
                     generator: torch.Generator | None = None, vocab_size: int | None = None,
                     bos: int | None = None) -> torch.Tensor:
    """The standard induction score of every head: on distinct random tokens repeated twice, the
    mean attention from each token of the second repeat to the token that followed its
    earlier occurrence (query seq_len + s -> key s + 1): -> (L, H). An induction head
    scores near 1; a head attending evenly scores about 1 / (1.5 seq_len).
    `seq_len` defaults to a quarter of the context, at most 64 and at most the vocabulary size.
    `vocab_size` (default the model's) bounds the random tokens: pass the tokenizer's for a
    model with a padded vocabulary, whose padding ids were never trained. `bos`: put this id before
    every sequence (a model trained with bos=true has only seen windows that start with it)."""
    return induction_statistics(model, seq_len, batch, generator, vocab_size, bos)["induction"]


def induction_statistics(model: GPT, seq_len: int | None = None, batch: int = 8,
                         generator: torch.Generator | None = None, vocab_size: int | None = None,
                         bos: int | None = None) -> dict:
    """`induction_scores` (L, H) as `induction`, with `induction_se` its standard error over the `batch`
    random sequences."""
    offset = int(bos is not None)
    seq_len = seq_len or default_induction_seq_len(model.config, vocab_size, bool(offset))
    longest = (model.config.block_size - offset) // 2
    if seq_len < 2 or seq_len > longest:
        raise ValueError(f"seq_len must be between 2 and {longest} (half the context{' after the BOS' * offset}), got {seq_len}")
    tokens = repeated_random_tokens(vocab_size or model.config.vocab_size, seq_len, batch, generator)  # (B, 2 seq_len)
    if bos is not None:
        tokens = torch.cat([torch.full_like(tokens[:, :1], bos), tokens], dim=1)  # (B, 1 + 2 seq_len)
    return stream_patterns(model, tokens, {"induction": induction_reducer(seq_len, offset)}, batch_size=batch)


def window_sink_scores(stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`sink_scores` over windows, from the stream's `SINK_REDUCERS`: `max_key_share` (L, H) the mean of
    the windows' sink shares (the one definition of *sink share*, used by the report, the sink rate
    and the training-time analysis alike), `max_key_index` (L, H) the key most often the sink,
    `first_position_share` (L, H) the mean weight on key 0; and the shares' `_se` when the stream gave them."""
    scores = {"first_position_share": stats["key_shares"][..., 0], "max_key_share": stats["sink_share"],
              "max_key_index": stats["sink_key_votes"].argmax(dim=-1)}
    if "sink_share_se" in stats:  # their standard errors over the windows
        scores |= {"first_position_share_se": stats["key_shares_se"][..., 0], "max_key_share_se": stats["sink_share_se"]}
    return scores


# ---------------------------------------------------------------- the logit lens, streamed

def lens_positions(T: int, max_positions: int | None) -> torch.Tensor:
    """Every position of a window, or an evenly strided subset of at most max_positions of them.
    Decoding costs (C x V) per position and point, the largest cost of the analysis at GPT-2 scale;
    the loss is a mean over positions, so an even subset estimates it without bias."""
    stride = 1 if max_positions is None or max_positions >= T else -(-T // max_positions)
    return torch.arange(0, T, stride)


class LensSums:
    """The logit lens's running sums: per point (the embedding, then each block), the loss and the
    top-1 hits over each window's decoded positions. The losses keep their per-window values, for the
    bootstrap of the share of the loss gap each point closes."""

    def __init__(self, points: int):
        self.losses = [Mean(keep_windows=True) for _ in range(points)]
        self.correct = [Mean() for _ in range(points)]

    def result(self, model: GPT, targets: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """`loss`, `accuracy` (L+1,) and their `_se`; `gap_closed` (L,): the share of the gap from uniform
        (ln V) to the final loss closed after each block, with `gap_closed_se` (bootstrap over windows);
        `labels`; the baselines."""
        L = len(self.losses) - 1
        baselines = lens_baselines(model, targets)
        uniform = baselines["uniform_loss"]
        totals = torch.stack([m.windows()[0] for m in self.losses], dim=-1)  # (n, L+1)
        counts = self.losses[0].windows()[1]  # (n,)

        def closed(loss: torch.Tensor) -> torch.Tensor:  # (L+1,) -> (L,)
            return (uniform - loss[1:]) / (uniform - loss[-1])
        loss = torch.stack([m.value for m in self.losses])
        return {"loss": loss, "loss_se": torch.stack([m.se for m in self.losses]),
                "accuracy": torch.stack([m.value for m in self.correct]),
                "accuracy_se": torch.stack([m.se for m in self.correct]),
                "gap_closed": closed(loss), "gap_closed_se": bootstrap_se(closed, totals, counts, generator=generator),
                "labels": ["embed"] + [f"block {i}" for i in range(L)], **baselines}


def lens_hooks(model: GPT, targets: torch.Tensor, positions: torch.Tensor, sums: LensSums):
    """`extra_hooks` for `stream_patterns`: decode the residual stream after the embedding and after
    every block at `positions`, through `model.unembed`, and add up each window's loss and top-1 hits."""
    names = ["embed"] + [f"blocks.{i}.resid_post" for i in range(model.config.n_layer)]
    targets = as_batch(targets).to(device_of(model))

    def make(chunk: torch.Tensor, start: int) -> list:
        chunk_targets = targets[start: start + chunk.size(0)][:, positions]  # (b, P)
        keep = chunk_targets != -1
        counts = keep.sum(dim=-1)  # (b,)

        def hook_for(point: int):
            def decode(resid: torch.Tensor, _hook) -> None:
                logits = model.unembed(resid[:, positions])  # (b, P, C) -> (b, P, V)
                loss = F.cross_entropy(logits.transpose(1, 2), chunk_targets, ignore_index=-1,
                                       reduction="none")  # (b, P), 0 where skipped
                sums.losses[point].add(loss.sum(dim=-1), counts)
                sums.correct[point].add(((logits.argmax(dim=-1) == chunk_targets) & keep).sum(dim=-1), counts)
            return decode
        return [(name, hook_for(point)) for point, name in enumerate(names)]
    return make


def logit_lens(model: GPT, idx: torch.Tensor, targets: torch.Tensor) -> dict:
    """Decode the residual stream after the embedding and after every block through
    `model.unembed` (final norm, head, softcap), as if the model stopped there: `loss` (L+1,)
    mean cross-entropy and `accuracy` (L+1,) top-1 accuracy against targets (B, T)
    (-1 marks positions to skip), each with its standard error over the sequences (`_se`); `labels`
    names the L+1 points. The last point is the model itself: it equals forward's loss. Beside them,
    the baselines a loss is read against: `uniform_loss` (ln V, knowing nothing) and `unigram_entropy`
    (the targets' own token frequencies, knowing nothing of the context), and `gap_closed`: how much
    of the way from uniform to the final loss each block has come. With tied weights the embedding
    alone can do worse than uniform, so it is no baseline. The same decoding as `window_statistics`'s
    lens (`lens_hooks`), every position, one pass."""
    idx, targets = as_batch(idx), as_batch(targets)
    positions = lens_positions(idx.size(1), None)
    sums = LensSums(model.config.n_layer + 1)
    stream_patterns(model, idx, {}, batch_size=idx.size(0), extra_hooks=lens_hooks(model, targets, positions, sums))
    return sums.result(model, targets)


def unigram_entropy(targets: torch.Tensor) -> float:
    """Entropy (nats) of the targets' own token frequencies: the loss of the best prediction
    that ignores the context. Targets of -1 are left out."""
    targets = targets[targets != -1].flatten()
    if targets.numel() == 0:
        return float("nan")
    counts = torch.bincount(targets).float()
    p = counts[counts > 0] / targets.numel()
    return float(-(p * p.log()).sum())


def lens_baselines(model: GPT, targets: torch.Tensor) -> dict:
    """What a lens loss is measured against: `uniform_loss` ln V (a model that knows nothing) and
    `unigram_entropy` of the targets (one that knows only how often each token comes)."""
    import math

    return {"uniform_loss": math.log(model.config.vocab_size), "unigram_entropy": unigram_entropy(as_batch(targets))}


def window_statistics(model: GPT, windows: torch.Tensor, targets: torch.Tensor, batch_size: int = 1,
                      max_lens_positions: int | None = None, progress: Progress | None = None,
                      reducers: dict[str, Reducer] | None = None, generator: torch.Generator | None = None) -> dict:
    """Everything measured on validation windows, in one pass over them, never holding more than
    one layer's attention of `batch_size` windows:
    `depth_scan`, `attention_distance`, `previous_token`, `prefix_matching` (L, H); `key_shares`
    (L, H, T): mean weight on each key from the rows that see it; each with its `_se`; `logit_lens`
    (`LensSums.result`) and the positions it decoded per window. `reducers` adds more measures to the
    same pass (the head descriptions' shares); `generator` seeds the lens's bootstrap."""
    windows, targets = as_batch(windows), as_batch(targets)
    positions = lens_positions(windows.size(1), max_lens_positions)
    sums = LensSums(model.config.n_layer + 1)
    stats = stream_patterns(model, windows, {**WINDOW_REDUCERS, **(reducers or {})}, batch_size=batch_size,
                            extra_hooks=lens_hooks(model, targets, positions, sums), progress=progress)
    stats["logit_lens"] = {**sums.result(model, targets[:, positions], generator),
                           "positions_per_window": int(positions.numel())}
    return stats
