"""What each feature of an SAE is: where it fires, how strongly, and what it does to the logits.

For every feature, on validation windows (`--pages-tokens` of them in all):
- its top-activating contexts: the `top` places where it is largest, each with the tokens around
  it and the feature's activation on each of them; de-duplicated: a context whose tokens are the
  same as a stronger one's, or that overlaps a stronger one in the same window, is passed over
  for the next;
- a histogram of its non-zero activations (log10 bins from its smallest to its largest) and its
  density (the share of tokens it is active on);
- its logit effect: its decoder direction read through the final norm's gain and the
  unembedding, the tokens it promotes and suppresses most (a linear reading: the norm's
  scale and a softcap are left out).

The activations are read a batch of windows at a time and kept sparse (a TopK SAE has about k
non-zero features per token), so many tokens cost memory in proportion to k, not to the width.
"""

from __future__ import annotations

from typing import Callable

import torch

from glassgpt.sae.activations import to_rows
from glassgpt.sae.model import SAE

HISTOGRAM_BINS = 20
BATCH_TOKENS = 8192  # tokens whose dense activations are held at once
CANDIDATES = 64  # of a feature's strongest places, how many are looked at to find `top` distinct ones


@torch.no_grad()
def feature_activations(model, sae: SAE, hook: str, windows: torch.Tensor, head: int | None = None,
                        batch_size: int = 16) -> torch.Tensor:
    """(B, T, width): every feature's activation at every position of `windows` (B, T)."""
    sae.eval()
    out = []
    for i in range(0, windows.size(0), batch_size):
        x = windows[i: i + batch_size]
        _, cache = model.run_with_cache(x, names=[hook])
        out.append(sae.encode(to_rows(cache[hook], head).float()).view(x.size(0), x.size(1), -1).cpu())
    return torch.cat(out)


@torch.no_grad()
def sparse_activations(model, sae: SAE, hook: str, windows: torch.Tensor, head: int | None = None,
                       progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor,
                                                                                       torch.Tensor]:
    """The non-zero activations on `windows` (B, T) as (token, feature, value), sorted by feature and
    then token; token = b * T + t. Read BATCH_TOKENS at a time; `progress(done, total)` hears windows."""
    sae.eval()
    B, T = windows.shape
    per_batch = max(1, BATCH_TOKENS // T)
    tokens, features, values = [], [], []
    for i in range(0, B, per_batch):
        x = windows[i: i + per_batch]
        _, cache = model.run_with_cache(x, names=[hook])
        acts = sae.encode(to_rows(cache[hook], head).float()).cpu()  # (b*T, width)
        row, feature = acts.nonzero(as_tuple=True)
        tokens.append(row + i * T)
        features.append(feature)
        values.append(acts[row, feature])
        if progress is not None:
            progress(min(i + per_batch, B), B)
    token, feature, value = torch.cat(tokens), torch.cat(features), torch.cat(values)
    order = torch.argsort(feature * (B * T) + token)
    return token[order], feature[order], value[order]


@torch.no_grad()
def logit_effects(model, sae: SAE, count: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(width, count) ids of the tokens each feature's direction promotes most, and suppresses most.
    Only for SAEs of the residual stream's width."""
    gain = model.ln_f.weight.float()  # (C,)
    effect = (sae.W_dec.float() * gain) @ model.lm_head.weight.float().t()  # (width, V)
    return effect.topk(count, dim=-1).indices, (-effect).topk(count, dim=-1).indices


def histogram(values: torch.Tensor) -> dict | list:
    """Counts of log10(values) in HISTOGRAM_BINS bins from the smallest to the largest ([] for none)."""
    if not values.numel():
        return []
    logs = values.log10()
    lo, hi = float(logs.min()), float(logs.max())
    counts = torch.histc(logs, bins=HISTOGRAM_BINS, min=lo, max=hi if hi > lo else lo + 1e-6)
    return {"log10_min": lo, "log10_max": hi, "counts": [int(c) for c in counts]}


def distinct_contexts(tokens: torch.Tensor, values: torch.Tensor, windows: torch.Tensor, labels, top: int,
                      context: int) -> list[dict]:
    """A feature's `top` strongest places (from its `tokens`, sorted, and their `values`), de-duplicated
    (the module's docstring), each with `context` tokens before it and 2 after, and the activation on each."""
    B, T = windows.shape
    chosen: list[tuple[int, int, int]] = []  # (window, start, end) of each context taken
    seen: set[tuple[int, ...]] = set()
    out = []
    for k in values.topk(min(CANDIDATES, len(values))).indices.tolist():
        b, t = divmod(int(tokens[k]), T)
        start, end = max(0, t - context), min(T, t + 3)
        ids = tuple(windows[b, start:end].tolist())
        if ids in seen or any(b == cb and start < ce and cs < end for cb, cs, ce in chosen):
            continue
        seen.add(ids)
        chosen.append((b, start, end))
        span = torch.arange(b * T + start, b * T + end)  # the context's token numbers
        where = torch.searchsorted(tokens, span).clamp(max=len(tokens) - 1)
        around = torch.where(tokens[where] == span, values[where], torch.zeros(()))  # 0 where it is silent
        out.append({"activation": round(float(values[k]), 4), "at": t - start, "tokens": labels(list(ids)),
                    "activations": [round(float(a), 4) for a in around]})
        if len(out) == top:
            break
    return out


def feature_stats(model, sae: SAE, hook: str, windows: torch.Tensor, labels, head: int | None = None,
                  top: int = 8, context: int = 12,
                  progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """One dict per feature (see the module's docstring); `labels(ids) -> [str]` names tokens;
    `progress(done, total)` hears the windows read."""
    B, T = windows.shape
    token, feature, value = sparse_activations(model, sae, hook, windows, head, progress)
    width = sae.config.width
    counts = torch.bincount(feature, minlength=width)  # (W,)
    ends = counts.cumsum(0)
    per_head = ".attn." in hook and not hook.endswith(".attn.out")  # q, k, v, z: not the residual basis
    residual = sae.config.d_in == model.config.n_embd and head is None and not per_head
    promoted, suppressed = logit_effects(model, sae) if residual else (None, None)
    windows = windows.cpu()
    features = []
    for f in range(width):
        lo, hi = int(ends[f] - counts[f]), int(ends[f])
        tokens, values = token[lo:hi], value[lo:hi]  # this feature's, by token
        entry = {"feature": f, "density": (hi - lo) / (B * T), "max": float(values.max()) if hi > lo else 0.0,
                 "histogram": histogram(values),
                 "contexts": distinct_contexts(tokens, values, windows, labels, top, context) if hi > lo else []}
        if promoted is not None:
            entry["promotes"], entry["suppresses"] = labels(promoted[f].tolist()), labels(suppressed[f].tolist())
        features.append(entry)
    return features


@torch.no_grad()
def features_per_token(model, sae: SAE, hook: str, ids: list[int], head: int | None = None,
                       count: int = 3) -> list[list[tuple[int, float]]]:
    """For each token of `ids`, its `count` most active features as (feature, activation)."""
    acts = feature_activations(model, sae, hook, torch.tensor([ids], device=next(model.parameters()).device),
                               head)[0]  # (T, width)
    top = acts.topk(min(count, acts.size(-1)), dim=-1)
    return [[(int(f), round(float(v), 4)) for f, v in zip(fs, vs) if v > 0]
            for fs, vs in zip(top.indices.tolist(), top.values.tolist())]


def steering_hook(sae: SAE, feature: int, strength: float, head: int | None = None):
    """A hook function that adds `strength` times the feature's decoder direction to the
    activation at every position: generation then runs with the feature pushed on."""
    from glassgpt.sae.activations import from_rows, to_rows

    direction = sae.W_dec[feature].detach()  # (d_in,)

    def steer(act: torch.Tensor, hook) -> torch.Tensor:
        rows = to_rows(act, head)
        return from_rows(rows + strength * direction.to(rows.dtype), act, head)
    return steer
