"""The picture of a circuit (circuit.png): the graph as `layout` places it, beside the
faithfulness curve."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from glassgpt.circuits.graph import Graph, slot_node
from glassgpt.circuits.layout import BOX, positions, slot_point, source_point


def picture(graph: Graph, scores: torch.Tensor, keep: torch.Tensor, curve: list[tuple[int, float]],
            target: float, title: str = "") -> Figure:
    """The circuit (its edges, width by |score|, blue where patching raises the metric, red where it
    lowers it; the other edges faint) beside the faithfulness curve."""
    place = positions(graph)
    rows = max(y for _, y in place.values())
    fig = Figure(figsize=(max(7.0, 1.3 * graph.n_head + 5.0), max(4.0, 0.8 * rows + 1.5)), dpi=100,
                 layout="constrained")
    ax, ax_curve = fig.subplots(1, 2, width_ratios=[max(2.0, graph.n_head / 2), 1.2])
    top = float(scores[graph.mask].abs().max()) or 1.0
    for kept in (False, True):  # faint edges first, the circuit's on top
        for u, d in (graph.mask & (keep if kept else ~keep)).nonzero().tolist():
            value = float(scores[u, d])
            (x0, y0), (x1, y1) = source_point(place, graph.sources[u]), slot_point(place, graph.slots[d])
            ax.plot([x0, x1], [y0, y1], color="#2166ac" if value >= 0 else "#b2182b",
                    alpha=0.9 if kept else 0.08, linewidth=0.4 + 4.0 * abs(value) / top, zorder=2 if kept else 1)
    used = {graph.sources[u] for u in keep.nonzero()[:, 0].tolist()} | {slot_node(graph.slots[d])
                                                                          for d in keep.nonzero()[:, 1].tolist()}
    for node, (x, y) in place.items():
        ax.add_patch(_box(x, y, node in used))
        ax.text(x, y, node, ha="center", va="center", fontsize=7, zorder=4)
    ax.set_xlim(-0.7, graph.n_head - 0.3)
    ax.set_ylim(-0.6, rows + 0.6)
    ax.axis("off")
    ax.set_title(title or f"circuit: {int(keep.sum())} of {graph.n_edges} edges", fontsize=9)
    sizes, values = [c[0] for c in curve], [c[1] for c in curve]
    ax_curve.plot(sizes, values, marker="o", markersize=3)
    ax_curve.axhline(target, color="#888", linestyle="--", linewidth=0.8)
    ax_curve.set_xscale("symlog", linthresh=1)
    ax_curve.set_xlim(left=0)
    ax_curve.set_xlabel("edges in the circuit")
    ax_curve.set_ylabel("faithfulness (by patching)")
    ax_curve.set_title("faithfulness against size", fontsize=9)
    return fig


def _box(x: float, y: float, used: bool):
    from matplotlib.patches import FancyBboxPatch

    w, h = BOX
    return FancyBboxPatch((x - w, y - h), 2 * w, 2 * h, boxstyle="round,pad=0.02", zorder=3,
                          facecolor="#fde8c8" if used else "#f2f2f2", edgecolor="#555" if used else "#bbb")
