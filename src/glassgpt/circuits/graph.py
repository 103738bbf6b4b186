"""The computation graph a circuit is a piece of: nodes, input slots and the edges between them.

Nodes are what writes into the residual stream: the embeddings (`embed`), every attention
head (`L{l}.H{h}`), every MLP (`L{l}.mlp`); and what reads the end of it, the `logits`.
Every node but the embeddings reads its input from the residual stream through *slots*:
a head has three, its query, key and value inputs (`L1.H2:q`, `:k`, `:v`), an MLP one
(`L0.mlp:in`), the logits one (`logits`). Because the residual stream is a sum, a slot's
input is the sum of the outputs of every node before it (plus constant biases): one *edge*
per (upstream node, downstream slot) pair. Patching an edge replaces that one term of that
one slot's input, and nothing else.

Upstream nodes come in the order they run (`sources`), slots too (`slots`); a score or a
circuit over the edges is a (sources, slots) tensor, and `mask` says which pairs are edges:
a head feeds the slots of later layers, its own layer's MLP and the logits; an MLP the
slots of later layers and the logits; the embeddings every slot.

    graph = Graph.of(model)
    print(graph)                          # sizes and the first edges
    graph.parents("L1.H0:k")              # ['embed', 'L0.H0', 'L0.H1', ...]
    graph.children("L0.H3")               # ['L1.H0:q', ..., 'logits']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

SLOT_KINDS = ("q", "k", "v")  # a head's three inputs, in the order c_attn computes them


class Edge(NamedTuple):
    src: str  # an upstream node: embed, L{l}.H{h}, L{l}.mlp
    dst: str  # a slot: L{l}.H{h}:q|k|v, L{l}.mlp:in, logits


def head_name(layer: int, head: int) -> str:
    return f"L{layer}.H{head}"


def slot_node(slot: str) -> str:
    """The node a slot belongs to: 'L1.H2:k' -> 'L1.H2', 'L0.mlp:in' -> 'L0.mlp', 'logits' -> 'logits'."""
    return slot.split(":", 1)[0]


@dataclass(frozen=True)
class Graph:
    """The edges of a model with `n_layer` layers of `n_head` heads (and an MLP each, unless
    `attn_only`). `sources[u]`, `slots[d]` and `mask[u, d]` (True where u feeds d) index every
    (U, D) tensor of scores or of a circuit."""

    n_layer: int
    n_head: int
    attn_only: bool
    sources: tuple[str, ...] = field(init=False)
    slots: tuple[str, ...] = field(init=False)
    mask: torch.Tensor = field(init=False, repr=False, compare=False)  # (U, D) bool

    def __post_init__(self):
        L, H = self.n_layer, self.n_head
        sources, slots = ["embed"], []
        source_step, slot_step = [-1], []  # when each writes / reads: 2l for heads, 2l + 1 for the MLP of layer l
        for layer in range(L):
            sources += [head_name(layer, h) for h in range(H)]
            source_step += [2 * layer] * H
            slots += [f"{head_name(layer, h)}:{kind}" for kind in SLOT_KINDS for h in range(H)]  # every q, then k, v
            slot_step += [2 * layer] * (3 * H)
            if not self.attn_only:
                sources.append(f"L{layer}.mlp")
                source_step.append(2 * layer + 1)
                slots.append(f"L{layer}.mlp:in")
                slot_step.append(2 * layer + 1)
        slots.append("logits")
        slot_step.append(2 * L)
        object.__setattr__(self, "sources", tuple(sources))
        object.__setattr__(self, "slots", tuple(slots))
        mask = torch.tensor(source_step)[:, None] < torch.tensor(slot_step)[None, :]  # (U, D): written before read
        object.__setattr__(self, "mask", mask)

    @classmethod
    def of(cls, model) -> "Graph":
        cfg = model.config
        return cls(cfg.n_layer, cfg.n_head, bool(cfg.attn_only))

    @classmethod
    def from_nodes(cls, nodes: list[str]) -> "Graph":
        """The graph whose `nodes` these are (as circuit.json lists them); ValueError if none is."""
        heads = [n for n in nodes if isinstance(n, str) and n.startswith("L") and ".H" in n]
        layers = {n.split(".")[0] for n in heads}
        graph = cls(len(layers), len(heads) // max(len(layers), 1), not any("mlp" in str(n) for n in nodes))
        if graph.nodes != list(nodes):
            raise ValueError("these nodes are not the graph of a glassgpt model")
        return graph

    # ------------------------------------------------------------ names

    @property
    def nodes(self) -> list[str]:
        """Every node, upstream ones in the order they run, then `logits`."""
        return [*self.sources, "logits"]

    @property
    def edges(self) -> list[Edge]:
        """Every edge, in (source, slot) order."""
        return [Edge(self.sources[u], self.slots[d]) for u, d in self.mask.nonzero().tolist()]

    @property
    def slot_owner(self) -> torch.Tensor:
        """(D,) long: the node each slot feeds, as an index into `nodes` (len(sources) for the logits)."""
        nodes = self.nodes
        return torch.tensor([nodes.index(slot_node(s)) for s in self.slots])

    @property
    def n_edges(self) -> int:
        return int(self.mask.sum())

    def source_index(self, node: str) -> int:
        return self._index(self.sources, node, "node")

    def slot_index(self, slot: str) -> int:
        return self._index(self.slots, slot, "slot")

    def edge_index(self, edge: Edge | tuple[str, str]) -> tuple[int, int]:
        """(u, d) of an edge; a pair that is no edge (a slot before its source) raises ValueError."""
        u, d = self.source_index(edge[0]), self.slot_index(edge[1])
        if not self.mask[u, d]:
            raise ValueError(f"{edge[0]} -> {edge[1]} is no edge: {edge[0]} does not run before {edge[1]}")
        return u, d

    @staticmethod
    def _index(names: tuple[str, ...], name: str, what: str) -> int:
        try:
            return names.index(name)
        except ValueError:
            from glassgpt.errors import did_you_mean

            raise ValueError(f"no {what} named {name!r} in this graph{did_you_mean(name, names)}") from None

    # ------------------------------------------------------------ walking

    def parents(self, slot: str) -> list[str]:
        """The upstream nodes whose outputs sum into `slot`."""
        d = self.slot_index(slot)
        return [self.sources[u] for u in self.mask[:, d].nonzero()[:, 0].tolist()]

    def children(self, node: str) -> list[str]:
        """The slots that read `node`'s output."""
        u = self.source_index(node)
        return [self.slots[d] for d in self.mask[u].nonzero()[:, 0].tolist()]

    def slots_of(self, node: str) -> list[str]:
        """A node's input slots: three for a head, one for an MLP or the logits, none for the embeddings."""
        return [s for s in self.slots if slot_node(s) == node]

    # ------------------------------------------------------------ (U, D) tensors <-> edges

    def edge_mask(self, edges) -> torch.Tensor:
        """(U, D) bool, True on the given edges."""
        mask = torch.zeros_like(self.mask)
        for edge in edges:
            mask[self.edge_index(edge)] = True
        return mask

    def edges_in(self, mask: torch.Tensor) -> list[Edge]:
        """The edges where a (U, D) bool tensor is True (pairs that are no edge never are)."""
        keep = mask.bool() & self.mask
        return [Edge(self.sources[u], self.slots[d]) for u, d in keep.nonzero().tolist()]

    def __str__(self) -> str:
        kind = "attention only" if self.attn_only else "attention and MLPs"
        shown = ", ".join(f"{e.src} -> {e.dst}" for e in self.edges[:4])
        return (f"Graph: {self.n_layer} layers x {self.n_head} heads ({kind}); {len(self.nodes)} nodes, "
                f"{len(self.slots)} input slots, {self.n_edges} edges ({shown}, ...)")
