"""Circuits: the sub-graph of a model that does a task, found automatically and checked by patching.

    from glassgpt.circuits import Graph, PairRuns, eap_scores, induction_task, faithfulness
    task = induction_task(vocab_size=64, block_size=32)
    runs = PairRuns(model, task.batches)          # the clean and corrupted runs of every pair
    scores = eap_scores(runs, steps=5)             # EAP-IG: (sources, slots), one score per edge
    keep = prune(runs.graph, top_edges(runs.graph, scores, 20))
    faithfulness(runs, keep).value                 # by a forward pass with every other edge patched

`find_circuit` (behind `glassgpt circuit`) does it all for a run directory and writes circuit/.
"""

from glassgpt.circuits.faithfulness import (Circuit, Faithfulness, faithfulness, faithfulness_curve, prune,
                                            smallest_circuit, top_edges)
from glassgpt.circuits.graph import Edge, Graph
from glassgpt.circuits.job import find_circuit
from glassgpt.circuits.metrics import Batch, LogitDifference, PositionLoss
from glassgpt.circuits.patching import PairRuns, check_model, wired_forward
from glassgpt.circuits.scoring import (eap_scores, exact_edge_effects, exact_node_effects, node_scores,
                                       rank_correlation)
from glassgpt.circuits.tasks import PAIRS_FORMAT, Task, induction_task, read_pairs, repeat_task

__all__ = ["Batch", "Circuit", "Edge", "Faithfulness", "Graph", "LogitDifference", "PAIRS_FORMAT", "PairRuns",
           "PositionLoss", "Task", "check_model", "eap_scores", "exact_edge_effects", "exact_node_effects",
           "faithfulness", "faithfulness_curve", "find_circuit", "induction_task", "node_scores", "prune",
           "rank_correlation", "read_pairs", "repeat_task", "smallest_circuit", "top_edges", "wired_forward"]
