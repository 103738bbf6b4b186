"""One forward pass through the graph, with any set of edges patched, done with hooks.

The model's own forward pass reads one residual stream per layer; here every input slot
gets its own copy of it, so that one slot can be given a different input from the others:

- `blocks.{l}.attn.q|k|v` (B, nh, T, hs): each head's query, key and value are computed again
  from its own residual (B, nh, T, C), through the layer's `ln_1` and that head's rows of `c_attn`;
- `blocks.{l}.mlp.hidden` (B, T, 4C): the MLP's hidden layer computed again from its own residual;
- `blocks.{L-1}.resid_post` (B, T, C): the last residual stream, which only the logits read.

Every node's output is read as it is made: `embed`, each head's share of `c_proj` from
`attn.z` (its slice of the projection: the biases are constants, the same in every run) and
`mlp.out`. Patching edge (u, d) from a corrupted run means: slot d's residual is the one the
model made, minus u's output in this run, plus u's output in the corrupted run. With every
edge patched each slot reads the corrupted run's residual, so the logits are the corrupted
run's; with none, the model runs as it always does.

`PairRuns` holds the clean and corrupted runs of a task's batches and measures patched runs
against them; `wired_forward` is the single pass, which EAP's gradients use too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from glassgpt.circuits.graph import SLOT_KINDS, Graph
from glassgpt.circuits.metrics import Batch
from glassgpt.errors import UsageError
from glassgpt.inference.mode import inference


def check_model(model) -> None:
    """Refuse what the graph cannot model, in one sentence."""
    if model.config.attn_sink == "gate":
        raise UsageError("this model's heads are gated (attn_sink='gate'): each gate reads the residual stream "
                         "as a fourth input of its head, which the circuit graph does not model")


@dataclass
class Wired:
    """What a wired forward pass gives back."""
    logits: torch.Tensor  # (B, T, V)
    outputs: torch.Tensor  # (U, B, T, C): every source node's output in this pass
    inputs: list[torch.Tensor]  # the slots' inputs, groups of (B, n, T, C) in slot order (when tracked)


class Wiring:
    """The hooks of one wired pass. `patch` (U, D), 1 where an edge carries the corrupted run's
    value (`corrupted` (U, B, T, C)), 0 where it carries this run's; `embed` (B, T, C) replaces the
    embeddings; `track` keeps each slot's input in the autograd graph, for gradients."""

    def __init__(self, model, graph: Graph, patch: torch.Tensor | None = None,
                 corrupted: torch.Tensor | None = None, embed: torch.Tensor | None = None, track: bool = False):
        self.model, self.graph, self.patch, self.corrupted = model, graph, patch, corrupted
        self.embed, self.track = embed, track
        self.outputs: list[torch.Tensor] = []  # (B, T, C) each, in source order
        self.inputs: list[torch.Tensor] = []  # (B, n, T, C) each, in slot order
        self.residual: dict[str, torch.Tensor] = {}
        self.next_slot = 0

    # ------------------------------------------------------------ a slot group's input

    def slot_input(self, base: torch.Tensor, n: int) -> torch.Tensor | None:
        """The next n slots' inputs (B, n, T, C) from the residual `base` (B, T, C) this pass made,
        patched edge by edge; None when nothing changes and nothing is tracked."""
        d0, self.next_slot = self.next_slot, self.next_slot + n
        delta = None
        if self.patch is not None:
            U = len(self.outputs)
            weight = self.patch[:U, d0: d0 + n].to(base.dtype)  # (U, n): the sources written so far
            if bool(weight.any()):
                diff = torch.stack(self.outputs) - self.corrupted[:U]  # (U, B, T, C): this run - corrupted
                delta = -torch.einsum("ubtc,un->bntc", diff, weight)  # (B, n, T, C)
        if delta is None and not self.track:
            return None
        x = base.unsqueeze(1) + delta if delta is not None else base.unsqueeze(1).repeat(1, n, 1, 1)  # (B, n, T, C)
        if self.track:
            self.inputs.append(x)
        return x

    # ------------------------------------------------------------ the hooks

    def on_embed(self, x, hook):
        if self.embed is not None or self.track:
            x = (self.embed if self.embed is not None else x).to(x.dtype).detach()
            x.requires_grad_(self.track)  # the root of the gradients to the slots
        self.outputs.append(x)
        return x

    def keep(self, key: str):
        def hook(x, _hook):
            self.residual[key] = x
        return hook

    def on_qkv(self, layer: int, kind: int):
        attn, ln_1 = self.model.blocks[layer].attn, self.model.blocks[layer].ln_1
        nh, hs, C = attn.n_head, attn.head_size, attn.n_embd

        def hook(x, _hook):  # x: (B, nh, T, hs)
            inputs = self.slot_input(self.residual[f"{layer}.pre"], nh)  # (B, nh, T, C)
            if inputs is None:
                return None
            weight = attn.c_attn.weight[kind * C: (kind + 1) * C].view(nh, hs, C)  # this input's rows, per head
            out = torch.einsum("bhtc,hdc->bhtd", ln_1(inputs), weight)  # (B, nh, T, C) -> (B, nh, T, hs)
            if attn.c_attn.bias is not None:
                out = out + attn.c_attn.bias[kind * C: (kind + 1) * C].view(1, nh, 1, hs)
            return out
        return hook

    def on_z(self, layer: int):
        attn = self.model.blocks[layer].attn

        def hook(z, _hook):  # z: (B, nh, T, hs)
            w_o = attn.c_proj.weight.view(attn.n_embd, attn.n_head, attn.head_size)  # (C, nh, hs)
            self.outputs.extend(torch.einsum("bhtd,chd->hbtc", z, w_o).unbind(0))  # nh x (B, T, C)
        return hook

    def on_mlp_hidden(self, layer: int):
        block = self.model.blocks[layer]

        def hook(x, _hook):  # x: (B, T, 4C)
            inputs = self.slot_input(self.residual[f"{layer}.mid"], 1)  # (B, 1, T, C)
            return None if inputs is None else block.mlp.act(block.mlp.c_fc(block.ln_2(inputs[:, 0])))
        return hook

    def on_out(self, x, _hook):
        self.outputs.append(x)

    def on_final(self, x, _hook):  # the last resid_post: only the logits read it
        inputs = self.slot_input(x, 1)  # (B, 1, T, C)
        return None if inputs is None else inputs[:, 0]

    def hooks(self) -> list:
        pairs = [("embed", self.on_embed)]
        for layer, block in enumerate(self.model.blocks):
            pairs.append((f"blocks.{layer}.resid_pre", self.keep(f"{layer}.pre")))
            pairs += [(f"blocks.{layer}.attn.{name}", self.on_qkv(layer, kind)) for kind, name in enumerate(SLOT_KINDS)]
            pairs.append((f"blocks.{layer}.attn.z", self.on_z(layer)))
            if block.mlp is not None:
                pairs += [(f"blocks.{layer}.resid_mid", self.keep(f"{layer}.mid")),
                          (f"blocks.{layer}.mlp.hidden", self.on_mlp_hidden(layer)),
                          (f"blocks.{layer}.mlp.out", self.on_out)]
        pairs.append((f"blocks.{len(self.model.blocks) - 1}.resid_post", self.on_final))
        return pairs


def wired_forward(model, graph: Graph, idx: torch.Tensor, patch: torch.Tensor | None = None,
                  corrupted: torch.Tensor | None = None, embed: torch.Tensor | None = None,
                  track: bool = False) -> Wired:
    """Run idx (B, T) through the graph (see Wiring for the arguments). Gradients flow only when
    `track` is set (call it under torch.enable_grad then)."""
    wiring = Wiring(model, graph, patch, corrupted, embed, track)
    logits, _ = model.run_with_hooks(idx, fwd_hooks=wiring.hooks())
    return Wired(logits, torch.stack(wiring.outputs).detach(), wiring.inputs)


# ---------------------------------------------------------------- a task's runs, and patched ones

@dataclass
class BatchRuns:
    batch: Batch
    clean: torch.Tensor  # (U, B, T, C) source outputs of the clean run
    corrupted: torch.Tensor  # (U, B, T, C) of the corrupted run
    clean_metric: torch.Tensor  # (B,)
    corrupted_metric: torch.Tensor  # (B,)


class PairRuns:
    """The clean and corrupted runs of every batch of a task, made once; then any circuit's
    patched runs measured against them. Metrics are per pair, in the order of the batches."""

    def __init__(self, model, batches: list[Batch], graph: Graph | None = None):
        check_model(model)
        self.model, self.graph = model, graph or Graph.of(model)
        self.device = next(model.parameters()).device
        self.runs = []
        with inference(model):
            for batch in batches:
                clean = wired_forward(model, self.graph, batch.clean.to(self.device))
                corrupted = wired_forward(model, self.graph, batch.corrupted.to(self.device))
                self.runs.append(BatchRuns(batch, clean.outputs, corrupted.outputs,
                                           batch.metric(clean.logits).cpu(), batch.metric(corrupted.logits).cpu()))

    @property
    def n_pairs(self) -> int:
        return sum(r.batch.clean.size(0) for r in self.runs)

    @property
    def clean_metric(self) -> torch.Tensor:  # (N,)
        return torch.cat([r.clean_metric for r in self.runs])

    @property
    def corrupted_metric(self) -> torch.Tensor:  # (N,)
        return torch.cat([r.corrupted_metric for r in self.runs])

    def patched_metric(self, patch: torch.Tensor) -> torch.Tensor:
        """The metric of each pair (N,) when the clean prompts run with the edges where `patch`
        (U, D) is 1 carrying the corrupted run's values."""
        patch = (patch.float() * self.graph.mask).to(self.device)
        with inference(self.model):
            return torch.cat([r.batch.metric(wired_forward(self.model, self.graph, r.batch.clean.to(self.device),
                                                           patch, r.corrupted).logits).cpu() for r in self.runs])

    def circuit_metric(self, keep: torch.Tensor) -> torch.Tensor:
        """The metric of each pair (N,) with only the edges where `keep` (U, D) is True clean."""
        return self.patched_metric(~keep.bool())
