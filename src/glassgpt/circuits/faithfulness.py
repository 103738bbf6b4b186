"""From scores to a circuit, and how faithful it is, measured by patching.

A circuit is a set of edges, a (U, D) bool tensor. Its faithfulness is

    (metric with only the circuit's edges clean - metric fully corrupted) / (metric clean - metric fully corrupted)

with the metric averaged over the task's pairs and the first term measured by a real forward
pass in which every edge outside the circuit carries the corrupted run's value: 1 when the
circuit alone brings back all of the clean behaviour, 0 when it brings back none.

- `top_edges`: the n edges of largest |score|;
- `prune`: drop the edges that cannot matter, those whose source no kept path reaches from the
  embeddings or whose destination reaches the logits by no kept path (patching them or not gives
  the same forward pass, so the faithfulness is unchanged);
- `faithfulness_curve`: faithfulness against the number of edges;
- `smallest_circuit`: the fewest top edges whose circuit reaches a target faithfulness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from glassgpt.circuits.graph import Graph
from glassgpt.circuits.patching import PairRuns

BOOTSTRAP = 200  # resamples of the pairs for a faithfulness's standard error


def top_edges(graph: Graph, scores: torch.Tensor, n: int) -> torch.Tensor:
    """(U, D) bool: the n edges of largest |score| (the graph's edge order breaks ties)."""
    values = scores[graph.mask].abs()  # (E,) in edge order
    keep = torch.zeros(values.shape, dtype=torch.bool)
    keep[torch.argsort(values, descending=True, stable=True)[: max(0, n)]] = True
    mask = torch.zeros_like(graph.mask)
    mask[graph.mask] = keep
    return mask


def prune(graph: Graph, keep: torch.Tensor) -> torch.Tensor:
    """The edges of `keep` on a path embed -> ... -> logits made of kept edges only."""
    keep = keep.bool() & graph.mask  # (U, D)
    owner = graph.slot_owner  # (D,): the node each slot feeds, an index into graph.nodes (U: the logits)
    U = len(graph.sources)
    reached = torch.zeros(U + 1, dtype=torch.bool)  # forward from the embeddings, in the order the nodes run
    reached[0] = True
    for u in range(1, U):
        reached[u] = (keep[:, owner == u] & reached[:U, None]).any()
    useful = torch.zeros(U + 1, dtype=torch.bool)  # backward from the logits
    useful[U] = True
    for u in reversed(range(U)):
        useful[u] = (keep[u] & useful[owner]).any()
    return keep & reached[:U, None] & useful[owner][None, :]


@dataclass
class Faithfulness:
    value: float
    se: float  # bootstrap standard error over the pairs
    metric: float  # the mean metric with only the circuit clean


def ratio(circuit: torch.Tensor, clean: torch.Tensor, corrupted: torch.Tensor) -> float:
    gap = float(clean.mean() - corrupted.mean())
    return float(circuit.mean() - corrupted.mean()) / gap if gap != 0 else math.nan


def bootstrap_se(circuit: torch.Tensor, clean: torch.Tensor, corrupted: torch.Tensor, seed: int = 0) -> float:
    """The standard error of the faithfulness ratio, from resampling the pairs (BOOTSTRAP times)."""
    N = circuit.numel()
    if N < 2:
        return math.nan
    rows = torch.randint(0, N, (BOOTSTRAP, N), generator=torch.Generator().manual_seed(seed))  # (R, N)
    c, k, x = circuit.double()[rows].mean(1), clean.double()[rows].mean(1), corrupted.double()[rows].mean(1)  # (R,)
    values = (c - x) / (k - x)
    values = values[values.isfinite()]
    return float(values.std()) if values.numel() > 1 else math.nan


def faithfulness(runs: PairRuns, keep: torch.Tensor) -> Faithfulness:
    """The faithfulness of the circuit `keep` (U, D), by one patched pass over every pair."""
    circuit = runs.circuit_metric(keep).double()
    clean, corrupted = runs.clean_metric.double(), runs.corrupted_metric.double()
    return Faithfulness(ratio(circuit, clean, corrupted), bootstrap_se(circuit, clean, corrupted),
                        float(circuit.mean()))


def curve_sizes(n_edges: int, points: int = 24) -> list[int]:
    """0, then about `points` sizes spaced evenly on a log scale up to every edge."""
    sizes = {0, n_edges}
    sizes.update(max(1, round(n_edges ** (i / (points - 1)))) for i in range(points))
    return sorted(sizes)


@dataclass
class Circuit:
    top: int  # how many top-scored edges it was cut from
    keep: torch.Tensor  # (U, D) bool, pruned
    faithfulness: Faithfulness

    @property
    def n_edges(self) -> int:
        return int(self.keep.sum())


def measure_top(runs: PairRuns, scores: torch.Tensor, n: int) -> Circuit:
    keep = prune(runs.graph, top_edges(runs.graph, scores, n))
    return Circuit(n, keep, faithfulness(runs, keep))


def faithfulness_curve(runs: PairRuns, scores: torch.Tensor, sizes: list[int] | None = None) -> list[Circuit]:
    """The circuit of the top n edges for each n of `sizes` (default: `curve_sizes`), measured."""
    return [measure_top(runs, scores, n) for n in (sizes or curve_sizes(runs.graph.n_edges))]


def smallest_circuit(runs: PairRuns, scores: torch.Tensor, target: float, curve: list[Circuit]) -> Circuit | None:
    """The fewest top edges whose circuit reaches `target`: the first curve point that does, then
    a bisection between it and the point before (faithfulness is not always monotone in the
    number of edges; the bisection assumes it is between two neighbouring points). None when no
    point of the curve reaches the target."""
    reached = [i for i, c in enumerate(curve) if c.faithfulness.value >= target]
    if not reached:
        return None
    best = curve[reached[0]]
    low = curve[reached[0] - 1].top if reached[0] > 0 else -1  # the largest size known to fall short
    while best.top - low > 1:
        middle = measure_top(runs, scores, (low + best.top) // 2)
        if middle.faithfulness.value >= target:
            best = middle
        else:
            low = middle.top
    return best
