"""Scores for every edge: how much the metric moves when that edge carries the corrupted run's value.

- `exact_edge_effects`: the reference. One patched forward pass per edge:
  metric(clean, edge patched) - metric(clean), averaged over the pairs.
- `eap_scores` (edge attribution patching; Syed, Rager & Conmy 2023): the same effect to first
  order, for every edge at once: (corrupted output of u - clean output of u) . d metric / d input of d,
  the gradient taken on the clean run. One forward and one backward pass per batch.
- EAP-IG (`eap_scores(..., steps=k)`; Hanna, Pezzelle & Belinkov 2024): the gradient averaged
  over k runs whose embeddings go in a straight line from the corrupted prompt's to the clean
  one's (alpha = 1/k, 2/k, ..., 1): integrated gradients, which follow the effect where it
  is far from linear (an attention pattern that flips). k forward and backward passes per batch;
  steps=1 is EAP.

A score's sign is the metric's: for a loss, a positive score means patching the edge raises the
loss. Scores are (U, D) tensors over the graph's sources and slots, 0 where there is no edge.
`node_scores` sums a node's outgoing edges: the effect, to first order, of patching its output.
"""

from __future__ import annotations

import torch

from glassgpt.circuits.patching import PairRuns, wired_forward


def eap_scores(runs: PairRuns, steps: int = 5) -> torch.Tensor:
    """EAP-IG edge scores (U, D) with `steps` interpolation steps (1: plain EAP)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    graph, model = runs.graph, runs.model
    scores = torch.zeros(graph.mask.shape, dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for run in runs.runs:
            diff = run.corrupted - run.clean  # (U, B, T, C): each source's corrupted output minus its clean one
            grads = slot_gradients(runs, run, steps)  # (B, D, T, C)
            scores += torch.einsum("ubtc,bdtc->ud", diff.double(), grads.double()).cpu()
    finally:
        model.train(was_training)
    return (scores * graph.mask).float()


def slot_gradients(runs: PairRuns, run, steps: int) -> torch.Tensor:
    """d (mean metric) / d (each slot's input) for one batch, averaged over the `steps` runs whose
    embeddings are corrupted + alpha (clean - corrupted), alpha = 1/steps, ..., 1: (B, D, T, C)."""
    idx = run.batch.clean.to(runs.device)
    clean_embed, corrupted_embed = run.clean[0], run.corrupted[0]  # (B, T, C): source 0 is the embeddings
    total = None
    for step in range(1, steps + 1):
        embed = corrupted_embed + (step / steps) * (clean_embed - corrupted_embed)
        with torch.enable_grad():
            wired = wired_forward(runs.model, runs.graph, idx, embed=embed, track=True)
            metric = run.batch.metric(wired.logits).sum() / runs.n_pairs  # this batch's share of the mean
            grads = torch.cat(torch.autograd.grad(metric, wired.inputs), dim=1)  # (B, D, T, C)
        total = grads if total is None else total + grads
    return total / steps


def exact_edge_effects(runs: PairRuns, edges: torch.Tensor | None = None) -> torch.Tensor:
    """metric(edge patched) - metric(clean), averaged over the pairs, for every edge where `edges`
    (U, D) bool is True (default: all): (U, D), 0 elsewhere. One forward pass per edge."""
    graph = runs.graph
    todo = graph.mask if edges is None else edges.bool() & graph.mask
    clean = runs.clean_metric.double().mean()
    effects = torch.zeros(graph.mask.shape)
    for u, d in todo.nonzero().tolist():
        patch = torch.zeros(graph.mask.shape)
        patch[u, d] = 1
        effects[u, d] = float(runs.patched_metric(patch).double().mean() - clean)
    return effects


def exact_node_effects(runs: PairRuns, per_pair: bool = False) -> torch.Tensor:
    """metric(node's output patched everywhere) - metric(clean), per source node: averaged over the
    pairs (U,), or for each pair (U, N) with `per_pair`."""
    graph = runs.graph
    clean = runs.clean_metric.double()
    effects = torch.zeros(len(graph.sources), runs.n_pairs, dtype=torch.float64)
    for u in range(len(graph.sources)):
        patch = torch.zeros(graph.mask.shape)
        patch[u] = 1
        effects[u] = runs.patched_metric(patch).double() - clean
    return effects.float() if per_pair else effects.mean(1).float()


def node_scores(scores: torch.Tensor) -> torch.Tensor:
    """Each source node's score (U,): the sum of its outgoing edges' (U, D) scores."""
    return scores.sum(dim=1)


def rank_correlation_se(a: torch.Tensor, b: torch.Tensor, resamples: int = 200, seed: int = 0) -> float:
    """The standard error of `rank_correlation(a, b)` over the items (edges), by the bootstrap."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, a.numel(), (resamples, a.numel()), generator=generator)
    values = torch.tensor([rank_correlation(a.flatten()[r], b.flatten()[r]) for r in rows])
    values = values[values.isfinite()]
    return float(values.std()) if values.numel() > 1 else float("nan")


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two equal-length vectors (ties get their mean rank)."""
    def ranks(x: torch.Tensor) -> torch.Tensor:  # (n,) -> (n,) 0-based ranks, ties at the mean of theirs
        _, inverse, counts = x.double().flatten().unique(return_inverse=True, return_counts=True)
        first = (counts.cumsum(0) - counts).double()  # the rank of each distinct value's first copy
        return first[inverse] + (counts[inverse] - 1) / 2

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))
