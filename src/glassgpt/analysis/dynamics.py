"""Analysis during training: watch induction heads, sinks and in-context learning form.

With `analysis_interval = N` in `[train]`, every N steps the training loop measures
the model on fixed inputs (`AnalysisProbe`: the same validation windows and the same
repeated-random-token batch every time, so the curves show the model changing, not
the sample) and logs one row of kind "analysis" to metrics.jsonl (`analysis_row`).
`plot_dynamics` draws those rows against step, beside the loss: `dynamics.png`.

Per layer, each row holds the largest value over the layer's heads (and which head):
- `entropy`: mean normalised attention entropy (the depth scan; mean over heads);
- `sink_share`: the report's *sink share* (`window_sink_scores`): in each window a head's largest
  mean weight on one key, from the rows that can see it, averaged over the windows (Gu et al.'s
  sink threshold is 0.3), with the head and its most frequent key; `first_position_share` on key 0;
- `induction`: induction score on repeated random tokens (`induction_stripe`);
- `previous_token`: attention to the previous token on the same batch (`previous_token_stripe`).
Per layer over all its heads (the depth scan's figures, `glassgpt.analysis.phenomena`):
- `attention_distance`: mean attention distance in tokens; `sink_rate`: the fraction of heads whose
  sink share reaches the threshold by two standard errors (`sink_rate`).
`induction_circuit`: the head that scores best at both induction on the probe and prefix matching
on the validation windows, and the loss its mean ablation costs on the text's repeated spans and
elsewhere, read on CIRCUIT_TOKENS tokens of windows (`phenomena.induction_circuit`).
And one number for the model, the in-context-learning score of Olsson et al. (2022):
the mean loss at late positions of a window minus that at early positions (negative:
the model predicts better with more context), read on ICL_TOKENS tokens of windows.
Every number has its standard error beside it (`<name>_se`: over the probe's windows, or
its random sequences for induction), drawn as a band of two standard errors.

The measures are the report's own (`glassgpt.analysis.streaming`): each layer's attention is
reduced inside its hook and dropped, a few windows at a time, so the probe of a GPT-2-shaped
model holds one layer of `PROBE_BATCH` windows at once, not every layer of all 16.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from glassgpt.training.log import loss_curves, plottable
from glassgpt.analysis.measures import (
    SINK_EPSILON, induction_probe_length, previous_token_stripe, repeated_random_tokens, sink_rate,
)
from glassgpt.analysis.phenomena import depth_scan_scores, induction_circuit
from glassgpt.inference.mode import inference
from glassgpt.analysis.streaming import (
    SINK_REDUCERS, WINDOW_REDUCERS, induction_reducer, per_window, stream_patterns, window_sink_scores,
)
from glassgpt.analysis.uncertainty import difference_and_se, ratio_and_se

DYNAMICS = "dynamics.png"
PROBE_WINDOWS = 16  # validation windows measured at every analysis step
PROBE_REPEATS = 16  # sequences of repeated random tokens
MIN_INDUCTION_CONTEXT = 4  # two repeats of at least 2 tokens
PROBE_BATCH = 2  # windows per forward pass of the probe: one layer of their attention is held at a time
ICL_TOKENS = 8192  # validation tokens the in-context-learning score reads (at least PROBE_WINDOWS windows): its
# bands hold T/16 positions each, so at T = 64 the 16 windows alone leave a standard error of about 0.3 nats,
# 8,192 tokens (128 windows) about 0.1, for 0.4 s of CPU per row on cpu-baby (16,384: 0.07, 0.8 s)
CIRCUIT_TOKENS = 32768  # validation tokens the induction circuit's ablation reads: its error is over the windows
# holding repeated spans, which are rare in plain text (Tiny Shakespeare in word pieces: about 190 in 8,192 tokens,
# a standard error of 0.25 nats on an effect of 0.5); 32,768 tokens halve it, for about 0.4 s of CPU per row
# on the induction-text model
LOGIT_BUDGET = 2 ** 24  # logits (windows x positions x vocabulary) one pass of `token_losses` may hold


@dataclass
class AnalysisProbe:
    """The fixed inputs measured at every analysis step."""

    windows: torch.Tensor  # (B, T) validation windows
    targets: torch.Tensor  # (B, T) their next tokens (-1: none)
    repeated: torch.Tensor | None  # (R, 2 S) distinct random tokens, then the same again; None if T < 4
    seq_len: int  # S
    icl_windows: torch.Tensor | None = None  # (B', T) the windows of the in-context-learning score (default: windows)
    icl_targets: torch.Tensor | None = None
    offset: int = 0  # tokens before the repeats: 1, the BOS, for a model trained with bos=true
    circuit_windows: torch.Tensor | None = None  # (B'', T) the windows of the circuit's ablation (default: icl_windows)
    circuit_targets: torch.Tensor | None = None

    def __post_init__(self):
        if self.icl_windows is None:
            self.icl_windows, self.icl_targets = self.windows, self.targets
        if self.circuit_windows is None:
            self.circuit_windows, self.circuit_targets = self.icl_windows, self.icl_targets

    @classmethod
    def build(cls, val_data: np.ndarray, block_size: int, vocab_size: int, seed: int,
              num_windows: int = PROBE_WINDOWS, num_repeats: int = PROBE_REPEATS, bos: int | None = None) -> "AnalysisProbe":
        """Windows spread evenly over the validation split, and a repeated-random-token batch drawn
        from `seed` over the tokenizer's `vocab_size` tokens (the model's may be padded); the
        in-context-learning score reads ICL_TOKENS tokens of windows (at least `num_windows`), the induction
        circuit's ablation CIRCUIT_TOKENS (at least as many; fewer where the split has fewer, so that its
        windows do not overlap and its error, over windows, stays honest). With `bos`, every window and every repeated sequence starts with that id, as the model's
        training windows did."""
        from glassgpt.data import eval_windows

        windows, targets = next(eval_windows(val_data, block_size, num_windows, max_batches=1, bos=bos))
        icl_count = max(num_windows, ICL_TOKENS // block_size)
        icl_windows, icl_targets = next(eval_windows(val_data, block_size, icl_count, max_batches=1, bos=bos))
        circuit_count = max(icl_count, min(CIRCUIT_TOKENS, len(val_data)) // block_size)  # windows that do not overlap
        circuit_windows, circuit_targets = next(eval_windows(val_data, block_size, circuit_count, max_batches=1, bos=bos))
        offset = int(bos is not None)
        seq_len = induction_probe_length(block_size - offset, vocab_size)
        repeated = None
        if 2 * seq_len >= MIN_INDUCTION_CONTEXT:
            repeated = repeated_random_tokens(vocab_size, seq_len, num_repeats, torch.Generator().manual_seed(seed))
            if bos is not None:
                repeated = torch.cat([torch.full_like(repeated[:, :1], bos), repeated], dim=1)  # (R, 1 + 2 S)
        return cls(windows, targets, repeated, seq_len, icl_windows, icl_targets, offset, circuit_windows, circuit_targets)

    def to(self, device) -> "AnalysisProbe":
        move = lambda t: t.to(device) if t is not None else None  # noqa: E731
        return AnalysisProbe(move(self.windows), move(self.targets), move(self.repeated), self.seq_len,
                             move(self.icl_windows), move(self.icl_targets), self.offset,
                             move(self.circuit_windows), move(self.circuit_targets))


def icl_bands(T: int) -> tuple[slice, slice]:
    """The early and late positions of a T-token window compared by the in-context-learning score:
    T/16 positions from a tenth of the way in, and the last T/16 (Olsson et al.: token 50 and 500 of 512)."""
    width = max(1, T // 16)
    start = min(max(0, T // 10 - width // 2), max(0, T - 2 * width))
    return slice(start, start + width), slice(T - width, T)


def token_losses(model, windows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss on every target of the windows (B, T): -> (B, T), 0 where the target is -1. A few
    windows per pass, so that their logits (b, T, V) stay under LOGIT_BUDGET numbers."""
    chunk = max(1, LOGIT_BUDGET // (windows.size(1) * model.config.vocab_size))
    with inference(model):
        return torch.cat([F.cross_entropy(model(windows[i: i + chunk])[0].float().transpose(1, 2),
                                          targets[i: i + chunk], ignore_index=-1, reduction="none")
                          for i in range(0, windows.size(0), chunk)]).cpu()  # (B, T)


def in_context_learning(model, windows: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """`loss_early`, `loss_late` (nats) and `icl_score` = late - early over the windows (B, T), each with
    its standard error over the windows (`_se`; the score's keeps the pairing of early and late)."""
    losses = token_losses(model, windows, targets)  # (B, T)
    keep = (targets != -1).float().cpu()
    early, late = icl_bands(windows.size(1))
    sums = {band: ((losses[:, where] * keep[:, where]).sum(dim=1), keep[:, where].sum(dim=1))  # (B,) each
            for band, where in (("early", early), ("late", late))}
    score, score_se = difference_and_se(*sums["late"], *sums["early"])
    out = {"icl_score": score, "icl_score_se": score_se}
    for band, (totals, counts) in sums.items():
        value, se = ratio_and_se(totals, counts)
        out[f"loss_{band}"], out[f"loss_{band}_se"] = float(value), float(se)
    return out


def _best_per_layer(values: torch.Tensor, se: torch.Tensor) -> tuple[list[float], list[float], list[int]]:
    """(L, H) values and their standard errors -> the largest value in each layer, its error and the head."""
    best, head = values.max(dim=1)
    errors = se.gather(1, head[:, None])[:, 0]
    return [round(float(v), 6) for v in best], [_json_number(e) for e in errors], [int(h) for h in head]


def _json_number(value) -> float | None:
    """6 digits, or None (JSON null) for a NaN error (one window)."""
    value = float(value)
    return None if value != value else round(value, 6)


def analysis_row(model, probe: AnalysisProbe, step: int) -> dict:
    """One row of kind "analysis" for metrics.jsonl (see the module's docstring); every score has its
    standard error over the probe's windows (or sequences) beside it as `<name>_se`."""
    started = time.perf_counter()
    reducers = {"entropy": WINDOW_REDUCERS["layer_entropy"], **SINK_REDUCERS,
                **{k: WINDOW_REDUCERS[k] for k in ("layer_distance", "prefix_matching")}}
    stats = stream_patterns(model, probe.windows, reducers, batch_size=PROBE_BATCH)
    scores = window_sink_scores(stats)  # each (L, H), over the windows: the report's sink share
    sink_share, sink_share_se, sink_head = _best_per_layer(scores["max_key_share"], scores["max_key_share_se"])
    keys = scores["max_key_index"]  # (L, H): the key most often each head's sink
    first_share, first_share_se, first_head = _best_per_layer(scores["first_position_share"],
                                                              scores["first_position_share_se"])
    row = {
        "kind": "analysis", "step": step,
        "entropy": [round(float(e), 6) for e in stats["entropy"][:, 0]],
        "entropy_se": [_json_number(e) for e in stats["entropy_se"][:, 0]],
        "sink_share": sink_share, "sink_share_se": sink_share_se, "sink_head": sink_head,
        "sink_key": [int(keys[layer, head]) for layer, head in enumerate(sink_head)],
        "first_position_share": first_share, "first_position_share_se": first_share_se,
        "first_position_head": first_head, "sink_threshold": SINK_EPSILON,
        **depth_scan_scores(stats["layer_distance"][:, 0], stats["layer_distance_se"][:, 0],
                            sink_rate(scores)["any_key"]),
    }
    if probe.repeated is not None:
        repeated = stream_patterns(model, probe.repeated, {"induction": induction_reducer(probe.seq_len, probe.offset),
                                                           "previous_token": per_window(previous_token_stripe)},
                                   batch_size=PROBE_BATCH)  # (L, H) each
        for name in ("induction", "previous_token"):
            row[name], row[f"{name}_se"], row[f"{name}_head"] = _best_per_layer(repeated[name], repeated[f"{name}_se"])
        row["induction_seq_len"] = probe.seq_len
        circuit = induction_circuit(model, probe.circuit_windows, probe.circuit_targets, repeated["induction"],
                                    repeated["induction_se"],
                                    stats["prefix_matching"], stats["prefix_matching_se"])
        row["induction_circuit"] = {k: _json_number(v) if isinstance(v, float) else v for k, v in circuit.items()}
    icl = in_context_learning(model, probe.icl_windows, probe.icl_targets)
    row.update({k: _json_number(v) for k, v in icl.items()})
    row["analysis_seconds"] = round(time.perf_counter() - started, 4)
    return row


def has_analysis(rows: list[dict], step: int) -> bool:
    return any(r.get("kind") == "analysis" and r.get("step") == step for r in rows)


PER_LAYER = ("entropy", "sink_share", "first_position_share", "induction", "previous_token")


def analysis_rows(rows: list[dict], n_layer: int | None = None) -> list[dict]:
    """The rows of kind "analysis", by step; given the model's `n_layer`, only those with one
    value per layer of it (a row of a thousand layers for a model of two is not this run's)."""
    return sorted((r for r in rows if r.get("kind") == "analysis"
                   and (n_layer is None or all(len(r[k]) == n_layer for k in PER_LAYER if k in r))),
                  key=lambda r: r["step"])


# ---------------------------------------------------------------- the picture

LEGEND_LAYERS = 10  # matplotlib's colour cycle; a legend of hundreds of entries takes minutes to place


def _band(ax, steps: list, values: list, errors: list, color: str) -> None:
    """A shaded band of two standard errors either side of a curve (rows written before errors
    were kept, or with one window, have none: no band there; nor where it is too wide to draw)."""
    low = [plottable(v - 2 * plottable(e)) for v, e in zip(values, errors)]
    high = [plottable(v + 2 * plottable(e)) for v, e in zip(values, errors)]
    ax.fill_between(steps, low, high, color=color, alpha=0.18, linewidth=0)


def _at(values, layer: int):
    """A row's per-layer list at `layer`, or None where it has none (an older row, or not a list)."""
    return values[layer] if isinstance(values, list) and layer < len(values) else None


def _per_layer(ax, rows: list[dict], key: str, title: str, style: str = "-", label: str = "") -> None:
    steps = [float(r["step"]) for r in rows]
    for layer in range(len(rows[-1][key])):
        values = [plottable(r[key][layer]) if layer < len(r.get(key, [])) else math.nan for r in rows]
        color = f"C{layer % 10}"
        named = layer < LEGEND_LAYERS  # the colours repeat after ten: a longer legend would name a colour twice
        ax.plot(steps, values, style, marker=".", markersize=3, linewidth=1.2, color=color,
                label=f"{label}layer {layer}" if named else "_unnamed")
        errors = [_at(r.get(f"{key}_se"), layer) for r in rows]
        _band(ax, steps, values, errors, color)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)


def plot_dynamics(rows: list[dict], n_layer: int | None = None) -> Figure:
    """The analysis rows of a run (with its train and eval rows) against step: loss, in-context
    learning score, induction and previous-token scores, sink shares and entropy, per layer; each
    curve in a band of two standard errors either side (given `n_layer`, the rows of a model of that
    many layers only)."""
    found = analysis_rows(rows, n_layer)
    if not found:
        raise ValueError("no analysis rows: train with analysis_interval > 0")
    fig = Figure(figsize=(15, 8), dpi=100, layout="constrained")
    axes = fig.subplots(2, 3)
    ax = axes[0, 0]
    train, val = loss_curves(rows)
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1, alpha=0.8)
    if val:
        ax.plot(*zip(*val), "o-", label="val", linewidth=1.5, markersize=3)
    ax.set_title("loss (nats / token)", fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    steps = [float(r["step"]) for r in found]
    icl = [plottable(r["icl_score"]) for r in found]
    ax.plot(steps, icl, ".-", color="k", label="late - early loss")
    _band(ax, steps, icl, [r.get("icl_score_se") for r in found], "k")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_title("in-context learning score (nats; below 0: context helps)\nshaded: two standard errors either side",
                 fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)

    ax = axes[0, 2]
    if "induction" in found[-1]:
        with_induction = [r for r in found if "induction" in r]
        _per_layer(ax, with_induction, "induction", "best induction (solid) and previous-token (dashed) score")
        _per_layer(ax, with_induction, "previous_token", "best induction (solid) and previous-token (dashed) score",
                   style="--", label="prev. ")
        circuit = [r for r in with_induction if "induction_circuit" in r]
        if circuit:  # the head best at both: does it do induction on the text too?
            ax.plot([r["step"] for r in circuit], [r["induction_circuit"]["prefix_matching"] for r in circuit], ":",
                    color="k", linewidth=1.5, label="prefix matching on text (head best at both)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.set_title("induction: the context is too short to measure", fontsize=10)

    ax = axes[1, 0]
    _per_layer(ax, found, "sink_share", "largest sink share (attention on one key)")
    ax.axhline(found[-1].get("sink_threshold", SINK_EPSILON), color="red", linewidth=0.8, linestyle=":",
               label="Gu et al. threshold")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)

    ax = axes[1, 1]
    _per_layer(ax, found, "first_position_share", "largest share on position 0")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)

    ax = axes[1, 2]
    _per_layer(ax, found, "entropy", "mean normalised entropy (1 = uniform)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    return fig


def write_dynamics(rows: list[dict], path: Path, n_layer: int | None = None) -> None:
    plot_dynamics(rows, n_layer).savefig(path, format="png")
