"""Whether a model shows what the natural-text recipes grow, measured on its own validation text.

Two recipes (the presets `induction-text` and `depth-scan`) each promise a phenomenon, and
this module holds what they promise, as numbers and as checks:

- an **induction circuit**: one head that scores at least `INDUCTION_MIN` on the standard
  probe (distinct random tokens repeated, `induction_stripe`) and at least `PREFIX_MATCHING_MIN`
  in prefix matching on the validation text (`prefix_matching`): it does induction on text
  as well as on the probe. Removing it (mean ablation of its output, `mean_head`) must cost
  measurable loss (above 0 by two standard errors) on the text's *repeated spans*, the positions whose last `SPAN_TOKENS`
  tokens occurred earlier in the window (`repeated_spans`), where copying what followed helps;
- the **depth scan** of the seed: layer 0 local (mean attention distance at most
  `LOCAL_DISTANCE_MAX` tokens) and the last layer sinking (at least `LAST_SINK_RATE_MIN` of its
  heads with a sink share of at least Gu et al.'s 0.3), with at most `EARLY_SINK_RATE_MAX` of
  the heads of layers 0-1 sinking.

`induction_circuit` and `depth_scan_scores` give the numbers the training-time analysis row
carries (glassgpt.analysis.dynamics); `induction_text_check` and `depth_scan_check` read such a
row and say, clause by clause, whether the promise was kept.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from glassgpt.analysis.measures import SINK_EPSILON, as_batch, device_of, mean_head, mean_z
from glassgpt.analysis.uncertainty import clears, plus_minus, ratio_and_se
from glassgpt.inference.mode import inference
from glassgpt.model import GPT

INDUCTION_MIN = 0.3  # induction score on repeated random tokens
PREFIX_MATCHING_MIN = 0.3  # prefix matching on the validation text, the same head
SPAN_TOKENS = 3  # a repeated span: the current token and the two before it occurred together earlier
LOCAL_DISTANCE_MAX = 3.0  # tokens: layer 0's mean attention distance
LAST_SINK_RATE_MIN = 0.5  # of the last layer's heads, with sink share >= SINK_EPSILON
EARLY_SINK_RATE_MAX = 0.1  # of the heads of layers 0-1
EARLY_LAYERS = 2


# ---------------------------------------------------------------- where copying helps

def repeated_spans(idx: torch.Tensor, span: int = SPAN_TOKENS) -> torch.Tensor:
    """(B, T) bool: positions i whose tokens i-span+1..i also occur, in order, ending at an earlier
    position j < i of the same window. There the token that followed the earlier occurrence
    (j + 1 <= i, already seen) is a guess at the next one: an induction head's use."""
    if span < 1:
        raise ValueError(f"span must be at least 1, got {span}")
    idx = as_batch(idx)
    B, T = idx.shape
    same = idx[:, :, None] == idx[:, None, :]  # (B, T, T): token i equals token j
    match = same.clone()
    for k in range(1, span):  # ... and token i - k equals token j - k
        shifted = torch.zeros_like(same)
        shifted[:, k:, k:] = same[:, :-k, :-k]
        match &= shifted
    earlier = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril(diagonal=-1)  # (T, T): j < i
    return (match & earlier).any(dim=-1)  # (B, T)


def spans_mean(values: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, int]:
    """The mean of `values` (B, T) over the positions in `mask` (B, T), its standard error with the windows
    as the independent unit (`ratio_and_se`; windows without such a position left out, so that one window
    alone gives no error rather than zero), and how many positions that is. NaN when there are none."""
    mask = mask.double()
    totals, counts = (values.double() * mask).sum(dim=1), mask.sum(dim=1)  # (B,) each
    some = counts > 0
    if not some.any():
        return math.nan, math.nan, 0
    value, se = ratio_and_se(totals[some], counts[some])
    return float(value), float(se), int(counts.sum())


def position_losses(model: GPT, windows: torch.Tensor, targets: torch.Tensor, fwd_hooks=(),
                    logit_budget: int = 2 ** 24) -> torch.Tensor:
    """Cross-entropy at every position (B, T) with `fwd_hooks` attached; 0 where the target is -1.
    A few windows per pass, so that their logits stay under `logit_budget` numbers."""
    chunk = max(1, logit_budget // (windows.size(1) * model.config.vocab_size))
    with inference(model):
        return torch.cat([F.cross_entropy(model.run_with_hooks(windows[i: i + chunk], fwd_hooks=fwd_hooks)[0]
                                          .float().transpose(1, 2), targets[i: i + chunk], ignore_index=-1,
                                          reduction="none") for i in range(0, windows.size(0), chunk)])  # (B, T)


def span_ablation(model: GPT, windows: torch.Tensor, targets: torch.Tensor, layer: int, head: int) -> dict:
    """The loss increase (nats) when head (layer, head)'s output is replaced by its mean over the windows,
    on the windows' repeated spans (`repeated_spans`) and on the other positions, each with its
    standard error over windows: `ablation_repeated`, `ablation_repeated_se`, `ablation_other`,
    `ablation_other_se`, and `repeated_positions` (how many positions were repeated spans)."""
    device = device_of(model)
    windows, targets = as_batch(windows).to(device), as_batch(targets).to(device)
    hook = (f"blocks.{layer}.attn.z", mean_head(head, mean_z(model, windows)[layer, head]))
    rise = (position_losses(model, windows, targets, [hook]) - position_losses(model, windows, targets)).cpu()  # (B, T)
    valid = (targets != -1).cpu()
    repeated = repeated_spans(windows).cpu() & valid
    on_spans, on_spans_se, count = spans_mean(rise, repeated)
    other, other_se, _ = spans_mean(rise, valid & ~repeated)
    return {"ablation_repeated": on_spans, "ablation_repeated_se": on_spans_se,
            "ablation_other": other, "ablation_other_se": other_se, "repeated_positions": count}


# ---------------------------------------------------------------- what the analysis row carries

def induction_circuit(model: GPT, windows: torch.Tensor, targets: torch.Tensor, induction: torch.Tensor,
                      induction_se: torch.Tensor, prefix: torch.Tensor, prefix_se: torch.Tensor) -> dict:
    """The head that does induction on both the probe and the text, and what removing it costs.

    windows, targets (B, T): validation text, for the ablation; induction, prefix (L, H): every head's
    induction score on the repeated-random-token probe and prefix matching on validation windows, with
    their standard errors (L, H). The head is the one whose smaller score of the two is largest.
    Returns its `layer`, `head`, `induction`, `prefix_matching` (each with `_se`) and `span_ablation`'s
    figures for it."""
    both = torch.minimum(induction, prefix)  # (L, H)
    layer, head = divmod(int(both.argmax()), both.size(1))
    return {"layer": layer, "head": head,
            "induction": float(induction[layer, head]), "induction_se": float(induction_se[layer, head]),
            "prefix_matching": float(prefix[layer, head]), "prefix_matching_se": float(prefix_se[layer, head]),
            **span_ablation(model, windows, targets, layer, head)}


def depth_scan_scores(distance: torch.Tensor, distance_se: torch.Tensor, rate: torch.Tensor) -> dict:
    """Per layer: `attention_distance` (L,), the mean over the layer's heads in tokens, with `_se`, and
    `sink_rate` (L,), the fraction of its heads sinking (`sink_rate`'s any-key figure)."""
    return {"attention_distance": [round(float(d), 4) for d in distance],
            "attention_distance_se": [None if e != e else round(float(e), 4) for e in distance_se.tolist()],
            "sink_rate": [round(float(r), 4) for r in rate]}


# ---------------------------------------------------------------- the promises, checked

def induction_text_check(row: dict) -> list[tuple[str, bool]]:
    """The induction-text recipe's promise, clause by clause, from an analysis row: [(clause, kept)].
    Each score must clear its threshold by two standard errors (`clears`)."""
    c = row.get("induction_circuit")
    if not c:
        return [("an induction circuit was measured (the context is long enough for the probe)", False)]
    name = f"layer {c['layer']} head {c['head']}"
    return [
        (f"{name}: induction {plus_minus(c['induction'], c['induction_se'])} on repeated random tokens, "
         f">= {INDUCTION_MIN}", _clears(c["induction"], c["induction_se"], INDUCTION_MIN)),
        (f"{name}: prefix matching {plus_minus(c['prefix_matching'], c['prefix_matching_se'])} on the validation "
         f"text, >= {PREFIX_MATCHING_MIN}", _clears(c["prefix_matching"], c["prefix_matching_se"], PREFIX_MATCHING_MIN)),
        (f"ablating it costs {plus_minus(c['ablation_repeated'], c['ablation_repeated_se'], '+.3f')} nats on the "
         f"text's repeated spans, above 0", _clears(c["ablation_repeated"], c["ablation_repeated_se"], 0.0, strict=True)),
    ]


def depth_scan_check(row: dict, min_layers: int = 6) -> list[tuple[str, bool]]:
    """The depth-scan recipe's promise, clause by clause, from an analysis row: [(clause, kept)]."""
    distance, rate = row.get("attention_distance", []), row.get("sink_rate", [])
    errors = row.get("attention_distance_se") or [None] * len(distance)
    early = rate[:EARLY_LAYERS]
    early_rate = sum(early) / max(len(early), 1)
    return [
        (f"{len(rate)} layers, >= {min_layers}", len(rate) >= min_layers),
        (f"layer 0 attends {plus_minus(distance[0], errors[0])} tokens back on average, <= {LOCAL_DISTANCE_MAX:g}"
         if distance else "layer 0's attention distance was measured",
         bool(distance) and _clears(distance[0], errors[0], LOCAL_DISTANCE_MAX, above=False)),
        (f"{rate[-1]:.0%} of the last layer's heads sink (share >= {SINK_EPSILON} by two errors), "
         f">= {LAST_SINK_RATE_MIN:.0%}" if rate else "the sink rate was measured",
         bool(rate) and rate[-1] >= LAST_SINK_RATE_MIN),
        (f"{early_rate:.0%} of the heads of layers 0-1 sink, <= {EARLY_SINK_RATE_MAX:.0%}",
         bool(early) and early_rate <= EARLY_SINK_RATE_MAX),
    ]


def kept(clauses: list[tuple[str, bool]]) -> bool:
    return all(ok for _, ok in clauses)


def _clears(value, se, threshold: float, above: bool = True, strict: bool = False) -> bool:
    """`clears` for one number from a row (an error of None: none measured, the value decides); `strict`:
    a value only at the threshold does not count (an ablation that costs exactly nothing)."""
    if value is None or not math.isfinite(value):
        return False
    ok = bool(clears(value, math.nan if se is None else se, threshold, above))
    return ok and (not strict or value != threshold)
