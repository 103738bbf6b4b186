"""What attention does, measured: functions from patterns (and token ids) to tensors, and the
model-level tools that hold what they measure (patterns of a short prompt, head ablation).
The measures of a model over many windows stream, one layer at a time: `glassgpt.analysis.streaming`
(which builds on the functions here; this module imports nothing from it).

Shapes: L layers, H heads, B sequences, T positions. A pattern `(..., T, T)` holds
attention weights, query rows by key columns, each row summing to 1 over the
keys it may see (keys 0..i for query i).

Row 0 can only attend to itself, so the per-row measures below (entropy, sink
shares, distance) average over query rows 1..T-1, where a head has a choice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glassgpt.analysis.uncertainty import Mean, clears
from glassgpt.inference.mode import inference
from glassgpt.model import GPT

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


def device_of(model: GPT) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------- attention patterns

def batch_patterns(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Attention patterns of every layer for a batch: idx (B, T) -> (L, B, H, T, T)."""
    idx = as_batch(idx).to(device_of(model))
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


def attention_distance(patterns: torch.Tensor) -> torch.Tensor:
    """Mean distance (query position - key position) weighted by attention, over query
    rows 1..T-1: (..., T, T) -> (...). A previous-token head scores 1, uniform attention T / 4."""
    T = patterns.size(-2)
    positions = torch.arange(T, device=patterns.device, dtype=torch.float32)
    distance = (positions[:, None] - positions[None, :]).clamp(min=0)  # (T, T): i - j, 0 in the future
    return (_choice_rows(patterns.float()) * distance[1:]).sum(dim=-1).mean(dim=-1)  # (...)


# ---------------------------------------------------------------- attention sinks

SINK_EPSILON = 0.3  # Gu et al. (2024): a head whose mean attention to a key exceeds this is sinking into it


def key_shares(patterns: torch.Tensor) -> torch.Tensor:
    """Mean weight each key receives from the query rows that can see it: (..., T, T) -> (..., T).

    Key j is visible to rows j..T-1 (row 0 is left out of key 0's mean: it has no choice), so
    a head that puts all its attention on key j from the moment it can see it scores 1
    wherever j is. Averaging over every row instead would cap key j at (T - j) / (T - 1)."""
    T = patterns.size(-2)
    if T < 2:
        raise ValueError("attention measures need at least 2 positions (row 0 can only attend to itself)")
    received = patterns.float()[..., 1:, :].sum(dim=-2)  # (..., T): rows 1..T-1; rows before j give 0
    keys = torch.arange(T, device=patterns.device)
    visible_rows = (T - keys.clamp(min=1)).float()  # (T,): key 0 -> T-1 rows, key j -> T-j rows
    return received / visible_rows


def sink_candidates(T: int, device=None) -> torch.Tensor:
    """(T,) bool: the keys that can be named a sink, those seen by at least a quarter of the
    rows (and 2), and key 0 always. A key near the end is seen by so few rows that a head attending to
    itself or to the previous token would give it a high share by accident."""
    keys = torch.arange(T, device=device)
    return ((T - keys.clamp(min=1)) >= max(2, T // 4)) | (keys == 0)


def sink_scores(patterns: torch.Tensor) -> dict[str, torch.Tensor]:
    """How much attention lands on one key, from the rows that can see it, for (..., T, T) patterns:
    `first_position_share` (...): mean weight on key 0 (rows 1..T-1);
    `max_key_share` (...): the largest mean weight on one key among the `sink_candidates`;
    `max_key_index` (...): that key's position.
    A perfect sink on key 0 and one on key 30 of a 48-token window both score 1."""
    return sink_scores_of_shares(key_shares(patterns))


def sink_scores_of_shares(shares: torch.Tensor) -> dict[str, torch.Tensor]:
    """`sink_scores` from one window's key shares (..., T). A head's *sink share* in a window is
    `max_key_share`: the largest mean weight on one key (among the `sink_candidates`) from the rows
    that can see it. Over many windows it is the mean of the windows' sink shares (a sink may sit
    on a different position in each: a newline, a full stop), `glassgpt.analysis.streaming`."""
    candidates = sink_candidates(shares.size(-1), shares.device)
    max_share, max_index = shares.masked_fill(~candidates, -1.0).max(dim=-1)  # (...)
    return {"first_position_share": shares[..., 0], "max_key_share": max_share, "max_key_index": max_index}


def _reaches(scores: dict[str, torch.Tensor], name: str, threshold: float) -> torch.Tensor:
    """Where `scores[name]` reaches `threshold`, by two standard errors when `scores` has `name_se`."""
    value = torch.as_tensor(scores[name]).float()
    if f"{name}_se" not in scores:
        return value >= threshold
    return clears(value, scores[f"{name}_se"], threshold)


def sink_rate(scores: dict[str, torch.Tensor], epsilon: float = SINK_EPSILON) -> dict[str, torch.Tensor]:
    """The metric of Gu et al. (2024), "When Attention Sink Emerges": per layer, the fraction of
    heads whose mean attention to a key reaches `epsilon` (as `find_sinks` names them; by two standard
    errors when the scores carry them, `<name>_se`). From `sink_scores` of (L, H) heads:
    `first_position` (L,): heads sinking into key 0 (the paper's figure);
    `any_key` (L,): heads sinking into any one key."""
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    return {"first_position": _reaches(scores, "first_position_share", epsilon).float().mean(dim=-1),
            "any_key": _reaches(scores, "max_key_share", epsilon).float().mean(dim=-1)}


def find_sinks(scores: dict[str, torch.Tensor], threshold: float = SINK_EPSILON, tokens: list[str] | None = None) -> list[dict]:
    """Heads whose most-attended key takes at least `threshold` of their attention (by two standard
    errors when the scores carry `max_key_share_se`), most extreme first: [{layer, head, key_index,
    share, share_se, first_position_share, token}] (share_se None without errors; token is the label
    at key_index when `tokens` is given, else None)."""
    share, index, first = scores["max_key_share"], scores["max_key_index"], scores["first_position_share"]
    errors = scores.get("max_key_share_se")
    sinks = []
    for layer, head in _reaches(scores, "max_key_share", threshold).nonzero().tolist():
        key = int(index[layer, head])
        se = float(errors[layer, head]) if errors is not None else None
        sinks.append({
            "layer": layer, "head": head, "key_index": key,
            "share": float(share[layer, head]), "share_se": None if se is None or se != se else se,
            "first_position_share": float(first[layer, head]),
            "token": tokens[key] if tokens is not None and key < len(tokens) else None,
        })
    return sorted(sinks, key=lambda s: -s["share"])


# ---------------------------------------------------------------- reading the residual stream

# ---------------------------------------------------------------- circuits

def repeated_random_tokens(vocab_size: int, seq_len: int, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, 2 * seq_len): seq_len distinct random tokens, then the same tokens again.

    Distinct, so that every token of the second repeat has exactly one earlier occurrence and
    "the token that followed it" is unambiguous: drawn with repeats from 65 characters, a
    perfect induction head would score only about 0.6. That needs `vocab_size >= seq_len`;
    a smaller vocabulary cannot fill the first half without repeats and is refused."""
    if seq_len > vocab_size:
        raise ValueError(f"seq_len ({seq_len}) must be at most vocab_size ({vocab_size}): "
                         "the first half of the sequence holds seq_len distinct tokens")
    keys = torch.rand(batch, vocab_size, generator=generator)  # a random order of the vocabulary per row
    first = keys.argsort(dim=-1)[:, :seq_len]  # (batch, seq_len), no token twice in a row
    return torch.cat([first, first], dim=1)


def induction_probe_length(block_size: int, vocab_size: int) -> int:
    """The standard probe's repeat length: a quarter of the context (at least 2), at most 64 and
    at most the vocabulary. A quarter, not half: a model trained on short contexts has learned to
    look back as far as its data made it, and half its context asks for the longest lookback it
    can have seen (TransformerLens's tutorials probe 1024-token models with 50)."""
    return min(max(block_size // 4, 2), block_size // 2, 64, vocab_size)


def default_induction_seq_len(config, vocab_size: int | None = None, bos: bool = False) -> int:
    """`induction_probe_length` of the model's context (less one position for a BOS) and vocabulary
    (the tokenizer's, when given)."""
    return induction_probe_length(config.block_size - int(bos), vocab_size or config.vocab_size)


def induction_stripe(patterns: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Mean attention from each token of the second repeat to the token that followed its
    earlier occurrence (query seq_len + s -> key s + 1), for patterns (..., 2 seq_len, 2 seq_len)
    of repeated tokens: -> (...). The induction score of Olsson et al. / TransformerLens."""
    second_repeat = patterns.float()[..., seq_len:, :]  # (..., seq_len, 2 seq_len): queries seq_len + s
    return second_repeat.diagonal(offset=1, dim1=-2, dim2=-1).mean(dim=-1)  # keys s + 1


def previous_token_stripe(patterns: torch.Tensor) -> torch.Tensor:
    """Mean attention from each query i >= 1 to key i - 1: (..., T, T) -> (...). A previous-token
    head, the first half of the induction circuit, scores 1."""
    return patterns.float().diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=-1)


def prefix_matching(patterns: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Prefix matching (Olsson et al. 2022) on any text: for each query whose token occurred
    before, the attention it puts on the keys that *followed* an earlier occurrence of its
    token (key j with idx[j - 1] == idx[i], j <= i), averaged over those queries.
    patterns (..., B, H, T, T) with idx (B, T) -> (..., H). On repeated distinct random tokens it
    equals `induction_stripe`; on natural text it asks whether the head does induction there."""
    total, count = prefix_matching_sums(patterns, idx)  # (..., B, H), (B,)
    return total.sum(dim=-2) / count.sum().clamp(min=1)


def prefix_matching_sums(patterns: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What `prefix_matching` averages, before dividing, per sequence: the attention on the keys that
    followed an earlier occurrence of the query's token, summed over the queries that have one
    (..., B, H), and how many queries those are (B,); the streamed reducer adds these up over windows."""
    idx = as_batch(idx).to(patterns.device)
    T = idx.size(1)
    same = idx[:, :, None] == idx[:, None, :]  # (B, T, T): token i equals token j
    follows = torch.zeros_like(same)
    follows[:, :, 1:] = same[:, :, :-1]  # key j follows an occurrence (at j - 1) of query i's token
    follows &= causal_keys(T, patterns.device)  # j - 1 < j <= i: an earlier occurrence
    weight = (patterns.float() * follows[:, None]).sum(dim=-1)  # (..., B, H, T)
    has_match = follows.any(dim=-1)[:, None].float()  # (B, 1, T)
    return (weight * has_match).sum(dim=-1), has_match.sum(dim=(-1, -2))  # (..., B, H), (B,)


def causal_keys(T: int, device=None) -> torch.Tensor:
    """(T, T) bool, True where key j <= query i."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def zero_head(head: int):
    """A hook for `blocks.{i}.attn.z` (B, nh, T, hs) that zeroes one head's output."""
    def hook(z: torch.Tensor, _hook) -> torch.Tensor:
        z = z.clone()
        z[:, head] = 0
        return z
    return hook


def mean_head(head: int, mean: torch.Tensor):
    """A hook for `blocks.{i}.attn.z` (B, nh, T, hs) that replaces one head's output by `mean` (hs,)."""
    def hook(z: torch.Tensor, _hook) -> torch.Tensor:
        z = z.clone()
        z[:, head] = mean.to(z.dtype)
        return z
    return hook


def mean_z(model: GPT, reference: torch.Tensor) -> torch.Tensor:
    """Each head's output `attn.z` averaged over every position of a reference batch (B, T): -> (L, H, hs)."""
    reference = as_batch(reference).to(device_of(model))
    with inference(model):
        _, cache = model.run_with_cache(reference, names=lambda name: name.endswith("attn.z"))
    return torch.stack([cache[f"blocks.{i}.attn.z"].float().mean(dim=(0, 2)) for i in range(model.config.n_layer)])


ABLATION_MODES = ("zero", "mean")


def head_ablation(model: GPT, idx: torch.Tensor, targets: torch.Tensor, mode: str = "zero",
                  reference: torch.Tensor | None = None, progress=None) -> torch.Tensor:
    """How much the loss on (idx, targets) rises when each head's output is removed (through a
    hook on `blocks.{i}.attn.z`, before the output projection): -> (L, H).
    `mode="zero"` sets it to 0; `mode="mean"` to its mean over every position of `reference`
    (B', T') token ids (default: idx), which keeps the head's constant part and removes what it
    says about this particular text. `progress(done, total)` is told after each head.
    `head_ablation_statistics` gives the same with its standard error over the sequences."""
    return head_ablation_statistics(model, idx, targets, mode, reference, progress)["ablation"]


def head_ablation_statistics(model: GPT, idx: torch.Tensor, targets: torch.Tensor, mode: str = "zero",
                             reference: torch.Tensor | None = None, progress=None) -> dict[str, torch.Tensor]:
    """`head_ablation` (L, H) as `ablation`, and `ablation_se` (L, H): its standard error over the
    B sequences of idx (each sequence's loss rise, paired with itself unablated)."""
    if mode not in ABLATION_MODES:
        raise ValueError(f"mode must be one of {ABLATION_MODES}, got {mode!r}")
    idx, targets = as_batch(idx).to(device_of(model)), as_batch(targets).to(device_of(model))
    L, H = model.config.n_layer, model.config.n_head
    means = mean_z(model, idx if reference is None else reference) if mode == "mean" else None
    counts = (targets != -1).sum(dim=-1)  # (B,)

    def losses(hooks: list) -> torch.Tensor:  # -> (B,): each sequence's summed loss
        logits, _ = model.run_with_hooks(idx, fwd_hooks=hooks)
        return F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-1, reduction="none").sum(dim=-1)

    rise = [[Mean() for _ in range(H)] for _ in range(L)]
    with inference(model):
        base = losses([])
        for layer in range(L):
            for head in range(H):
                ablate = zero_head(head) if means is None else mean_head(head, means[layer, head])
                rise[layer][head].add(losses([(f"blocks.{layer}.attn.z", ablate)]) - base, counts)
                if progress is not None:
                    progress(layer * H + head + 1, L * H)
    return {"ablation": torch.stack([torch.stack([m.value for m in row]) for row in rise]),
            "ablation_se": torch.stack([torch.stack([m.se for m in row]) for row in rise])}
