"""Where each node of the graph sits in a picture (circuit.png and the graph view share it).

Nodes by layer, bottom to top: the embeddings, then each layer's heads (and its MLP above
them), then the logits. An edge ends at its slot: a head's query, key and value inputs
are three points along the bottom of its box, left to right, so that K-composition (an edge
into `:k`) can be told from Q- and V-composition at a glance.
"""

from __future__ import annotations

from glassgpt.circuits.graph import Graph, slot_node

SLOT_OFFSET = {"q": -0.3, "k": 0.0, "v": 0.3}  # along a head's box, in units of its half-width
BOX = (0.36, 0.22)  # a node's half-width and half-height, in grid units


def positions(graph: Graph) -> dict[str, tuple[float, float]]:
    """Each node's centre (x, y) in grid units: x from 0 to n_head - 1, y one row per sub-layer."""
    H, middle = graph.n_head, (graph.n_head - 1) / 2
    rows_per_layer = 1 if graph.attn_only else 2
    place = {"embed": (middle, 0.0)}
    for layer in range(graph.n_layer):
        y = 1.0 + rows_per_layer * layer
        place.update({f"L{layer}.H{h}": (float(h), y) for h in range(H)})
        if not graph.attn_only:
            place[f"L{layer}.mlp"] = (middle, y + 1.0)
    place["logits"] = (middle, 1.0 + rows_per_layer * graph.n_layer)
    return place


def slot_point(place: dict, slot: str) -> tuple[float, float]:
    """Where an edge into `slot` ends: the bottom of its node's box (a head's at the q, k or v point)."""
    x, y = place[slot_node(slot)]
    kind = slot.split(":")[1] if ":" in slot else ""
    return x + SLOT_OFFSET.get(kind, 0.0) * BOX[0] * 2, y - BOX[1]


def source_point(place: dict, node: str) -> tuple[float, float]:
    x, y = place[node]
    return x, y + BOX[1]
