"""Circuit discovery (glassgpt.circuits): the graph, patching one edge, EAP and EAP-IG scores, faithfulness,
each checked against an independent computation: a hand-written hook, a linear model whose every
effect is exactly its first-order term, and a model whose induction circuit is known because it was
built by hand."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_config, twin_models
from induction_model import handmade_induction_model

from glassgpt.circuits import (Batch, Graph, LogitDifference, PairRuns, PositionLoss, eap_scores, exact_edge_effects,
                               exact_node_effects, faithfulness, faithfulness_curve, induction_task, node_scores, prune,
                               rank_correlation, smallest_circuit, top_edges, wired_forward)
from glassgpt.errors import UsageError
from glassgpt.hooks import HookPoint
from glassgpt.model import GPT


def randomised(model: GPT) -> GPT:
    """Larger random weights than GPT-2's init (and random biases and LayerNorm gains), so every
    edge matters and the model is far from linear."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and "ln" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p) if p.dim() > 1 else 0.1 * torch.randn_like(p))
    return model.eval()


def logit_diff_batch(B: int = 4, T: int = 8, V: int = 50, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    clean, corrupted = torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)
    answer, wrong = torch.randint(0, V, (B,), generator=g), torch.randint(0, V, (B,), generator=g)
    return Batch(clean, corrupted, LogitDifference(answer, wrong, torch.full((B,), T - 1)))


# ---------------------------------------------------------------- the graph

def test_the_graph_names_every_node_slot_and_edge_of_a_model_with_mlps():
    graph = Graph.of(GPT(tiny_config(n_layer=2, n_head=2)))
    assert graph.nodes == ["embed", "L0.H0", "L0.H1", "L0.mlp", "L1.H0", "L1.H1", "L1.mlp", "logits"]
    assert graph.slots_of("L1.H0") == ["L1.H0:q", "L1.H0:k", "L1.H0:v"] and graph.slots_of("L0.mlp") == ["L0.mlp:in"]
    assert graph.parents("L1.H0:k") == ["embed", "L0.H0", "L0.H1", "L0.mlp"]
    assert graph.parents("L0.mlp:in") == ["embed", "L0.H0", "L0.H1"]  # the heads of its own layer run before it
    assert graph.children("L1.mlp") == ["logits"]
    assert graph.children("L0.H1") == ["L0.mlp:in", "L1.H0:q", "L1.H1:q", "L1.H0:k", "L1.H1:k", "L1.H0:v", "L1.H1:v",
                                       "L1.mlp:in", "logits"]
    # embed feeds all 15 slots; each layer-0 head 9; the layer-0 MLP 8; each layer-1 head 2; the layer-1 MLP 1
    assert graph.n_edges == 15 + 2 * 9 + 8 + 2 * 2 + 1 == len(graph.edges)
    assert "8 nodes, 15 input slots, 46 edges" in str(graph)
    with pytest.raises(ValueError, match="L1.H0 does not run before L0.mlp:in"):
        graph.edge_index(("L1.H0", "L0.mlp:in"))
    with pytest.raises(ValueError, match="no slot named 'L1.H0:x'"):
        graph.slot_index("L1.H0:x")


def test_an_attention_only_graph_has_no_mlp_nodes():
    graph = Graph.of(GPT(tiny_config(n_layer=2, n_head=4, attn_only=True)))
    assert not any("mlp" in n for n in graph.nodes + list(graph.slots))
    assert graph.n_edges == 25 + 4 * 13 + 4  # the induction preset's shape: 81 edges


# ---------------------------------------------------------------- patching, against hand-written hooks

def head_output(model: GPT, z: torch.Tensor, layer: int, head: int) -> torch.Tensor:
    """What one head writes into the residual stream, from its z (B, nh, T, hs): (B, T, C)."""
    hs = model.config.head_size
    return z[:, head] @ model.blocks[layer].attn.c_proj.weight[:, head * hs: (head + 1) * hs].T


def by_hand(model: GPT, batch: Batch, edge: tuple[str, str]) -> float:
    """metric(edge patched) - metric(clean), with hooks written here for the five edges below."""
    cfg, names = model.config, ["embed", "blocks.0.attn.z", "blocks.0.mlp.out", "blocks.1.attn.z",
                                "blocks.1.resid_pre", "blocks.0.resid_mid", "blocks.1.resid_post"]
    clean_logits, clean = model.run_with_cache(batch.clean, names=names)
    _, corrupted = model.run_with_cache(batch.corrupted, names=names)
    C, nh, hs = cfg.n_embd, cfg.n_head, cfg.head_size
    src, dst = edge
    if src == "embed":
        diff = corrupted["embed"] - clean["embed"]
    elif src.endswith("mlp"):
        diff = corrupted["blocks.0.mlp.out"] - clean["blocks.0.mlp.out"]
    else:
        layer, head = int(src[1]), int(src[4])
        z = f"blocks.{layer}.attn.z"
        diff = head_output(model, corrupted[z], layer, head) - head_output(model, clean[z], layer, head)
    if dst == "logits":
        logits = model.unembed(clean["blocks.1.resid_post"] + diff)
    elif dst == "L0.mlp:in":
        ln_2 = model.blocks[0].ln_2
        normed = F.layer_norm(clean["blocks.0.resid_mid"] + diff, (C,), ln_2.weight, ln_2.bias, ln_2.eps)
        logits, _ = model.run_with_hooks(batch.clean, fwd_hooks=[("blocks.0.ln_2.out", lambda x, h: normed)])
    else:  # a head of layer 1: its own q, k or v from its own copy of the residual stream
        head, kind = int(dst[4]), "qkv".index(dst[-1])
        block = model.blocks[1]
        qkv = block.attn.c_attn(block.ln_1(clean["blocks.1.resid_pre"] + diff))  # (B, T, 3C)
        mine = qkv[..., kind * C: (kind + 1) * C].view(*qkv.shape[:2], nh, hs)[:, :, head]  # (B, T, hs)

        def hook(x, _hook):
            x = x.clone()
            x[:, head] = mine
            return x
        logits, _ = model.run_with_hooks(batch.clean, fwd_hooks=[(f"blocks.1.attn.{'qkv'[kind]}", hook)])
    return float(batch.metric(logits).mean() - batch.metric(clean_logits).mean())


EDGES = [("L0.H1", "L1.H0:k"), ("L0.mlp", "L1.H1:v"), ("L0.H0", "L0.mlp:in"), ("L1.H0", "logits"), ("embed", "L1.H0:q")]


def test_exact_patching_of_an_edge_equals_a_hand_written_hook():
    model = randomised(GPT(tiny_config(n_layer=2, n_head=2)))
    batch = logit_diff_batch()
    runs = PairRuns(model, [batch])
    effects = exact_edge_effects(runs)
    with torch.no_grad():
        for edge in EDGES:
            expected = by_hand(model, batch, edge)
            assert abs(expected) > 1e-3, edge  # the edge matters, so a wrong one shows
            assert effects[runs.graph.edge_index(edge)].item() == pytest.approx(expected, rel=1e-4, abs=1e-5), edge


def test_patching_a_nodes_every_edge_equals_patching_its_output():
    model = randomised(GPT(tiny_config(n_layer=2, n_head=2)))
    batch = logit_diff_batch()
    runs = PairRuns(model, [batch])
    _, corrupted = model.run_with_cache(batch.corrupted, names=["blocks.0.attn.z"])

    def patch_head_1(z, _hook):
        z = z.clone()
        z[:, 1] = corrupted["blocks.0.attn.z"][:, 1]
        return z

    with torch.no_grad():
        patched, _ = model.run_with_hooks(batch.clean, fwd_hooks=[("blocks.0.attn.z", patch_head_1)])
        expected = batch.metric(patched).mean() - batch.metric(model(batch.clean)[0]).mean()
    assert exact_node_effects(runs)[runs.graph.source_index("L0.H1")].item() == pytest.approx(expected.item(), rel=1e-4)


OPTIONS = [{}, {"attn_only": True}, {"pos_encoding": "rope"}, {"attn_sink": "learned"}, {"qk_norm": True},
           {"logit_softcap": 5.0}, {"norm": "torch", "attn_impl": "sdpa", "bias": False}]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_faithfulness_is_1_with_every_edge_and_0_with_none_and_the_wired_pass_is_the_models(options):
    model = randomised(GPT(tiny_config(n_layer=2, n_head=2, **options)))
    batch = logit_diff_batch()
    runs = PairRuns(model, [batch])
    with torch.no_grad():
        torch.testing.assert_close(wired_forward(model, runs.graph, batch.clean).logits, model(batch.clean)[0])
    everything, nothing = runs.graph.mask, torch.zeros_like(runs.graph.mask)
    assert faithfulness(runs, everything).value == pytest.approx(1.0, abs=1e-4)
    assert faithfulness(runs, nothing).value == pytest.approx(0.0, abs=1e-4)
    torch.testing.assert_close(runs.circuit_metric(nothing), runs.corrupted_metric, atol=1e-4, rtol=1e-4)


def test_a_gated_model_is_refused_in_one_sentence():
    with pytest.raises(UsageError, match="attn_sink='gate'"):
        PairRuns(GPT(tiny_config(attn_sink="gate")), [logit_diff_batch()])


# ---------------------------------------------------------------- scores

class Affine(nn.Module):
    """A LayerNorm stand-in that does not normalise: the model becomes linear."""

    def __init__(self, n: int):
        super().__init__()
        self.weight = nn.Parameter(1.0 + 0.3 * torch.randn(n))
        self.out = HookPoint()

    def forward(self, x):
        return self.out(x * self.weight)


def linear_model() -> GPT:
    """Attention-only, every query and key weight zero (uniform causal attention, whatever the
    input) and affine norms: the logits are a linear function of the embeddings."""
    model = randomised(GPT(tiny_config(n_layer=2, n_head=2, attn_only=True)))
    C = model.config.n_embd
    with torch.no_grad():
        for block in model.blocks:
            block.ln_1 = Affine(C)
            block.attn.c_attn.weight[: 2 * C] = 0
            block.attn.c_attn.bias[: 2 * C] = 0
        model.ln_f = Affine(C)
    model.name_hook_points()
    return model.eval()


def test_eap_on_a_linear_model_equals_the_exact_effect_of_every_edge():
    runs = PairRuns(linear_model(), [logit_diff_batch(), logit_diff_batch(B=3, T=5, seed=1)])  # two lengths
    exact = exact_edge_effects(runs)
    assert exact[runs.graph.mask].abs().max() > 0.1
    for steps in (1, 3):
        torch.testing.assert_close(eap_scores(runs, steps=steps), exact, atol=1e-4, rtol=1e-4)


def test_scores_are_the_same_with_manual_and_sdpa_attention():
    manual, sdpa = twin_models(init=lambda m: randomised(m), n_layer=2, n_head=2, pos_encoding="rope")
    batch = logit_diff_batch()
    a, b = PairRuns(manual.eval(), [batch]), PairRuns(sdpa.eval(), [batch])
    torch.testing.assert_close(eap_scores(a, steps=3), eap_scores(b, steps=3), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(exact_edge_effects(a), exact_edge_effects(b), atol=1e-5, rtol=1e-4)


def test_node_scores_sum_each_nodes_edges():
    runs = PairRuns(randomised(GPT(tiny_config())), [logit_diff_batch()])
    scores = eap_scores(runs, steps=1)
    u = runs.graph.source_index("L0.H1")
    assert node_scores(scores)[u].item() == pytest.approx(sum(
        scores[runs.graph.edge_index(("L0.H1", slot))].item() for slot in runs.graph.children("L0.H1")), rel=1e-5)


def test_rank_correlation_is_spearmans():
    assert rank_correlation(torch.tensor([1.0, 2, 3, 4]), torch.tensor([10.0, 20, 30, 40])) == pytest.approx(1.0)
    assert rank_correlation(torch.tensor([1.0, 2, 3, 4]), torch.tensor([4.0, 3, 2, 1])) == pytest.approx(-1.0)
    # ties take their mean rank: ranks (1.5, 1.5, 3) against (1, 2, 3)
    assert rank_correlation(torch.tensor([0.0, 0, 1]), torch.tensor([1.0, 2, 3])) == pytest.approx(0.8660254)


# ---------------------------------------------------------------- a known circuit

@pytest.fixture(scope="module")
def induction():
    """The hand-made induction model on the induction task: its runs, EAP-IG scores and exact effects."""
    model = handmade_induction_model(block_size=24, seed=1)
    task = induction_task(vocab_size=12, block_size=24, pairs=16, seed=1)
    runs = PairRuns(model, task.batches)
    return runs, eap_scores(runs, steps=5), exact_edge_effects(runs)


def test_eap_ig_agrees_with_exact_patching_edge_by_edge(induction):
    runs, scores, exact = induction
    mask = runs.graph.mask
    assert runs.corrupted_metric.mean() - runs.clean_metric.mean() > 4  # the repeat is predicted, the corrupted not
    assert rank_correlation(scores[mask].abs(), exact[mask].abs()) >= 0.8  # over all 81 edges
    top = exact[mask].abs().argsort(descending=True)[:4]  # the four edges that matter most (the circuit) ...
    assert set(scores[mask].abs().argsort(descending=True)[:4].tolist()) == set(top.tolist())  # ... score highest
    assert (scores[mask][top].sign() == exact[mask][top].sign()).all()  # ... with their sign


def test_the_induction_circuit_is_found_and_is_faithful(induction):
    runs, scores, _ = induction
    graph = runs.graph
    circuit = smallest_circuit(runs, scores, 0.9, faithfulness_curve(runs, scores))
    edges = {(e.src, e.dst) for e in graph.edges_in(circuit.keep)}
    assert circuit.faithfulness.value >= 0.9
    assert circuit.n_edges <= 0.1 * graph.n_edges
    assert {("L0.H0", "L1.H0:k"), ("L1.H0", "logits"), ("embed", "L0.H0:v"), ("embed", "L1.H0:v")} <= edges


def test_pruning_keeps_the_faithfulness_and_drops_what_cannot_matter(induction):
    runs, scores, _ = induction
    graph = runs.graph
    top = top_edges(graph, scores, 12)
    assert not top[graph.source_index("L1.H3")].any() and not top[:, graph.slot_index("L0.H2:v")].any()
    dangling = [("embed", "L1.H3:q"), ("L0.H2", "logits")]  # L1.H3 feeds no kept edge; nothing kept feeds L0.H2
    keep = top | graph.edge_mask(dangling)
    pruned = prune(graph, keep)
    assert not any(pruned[graph.edge_index(edge)] for edge in dangling)
    assert torch.equal(pruned, prune(graph, top)) and torch.equal(prune(graph, pruned), pruned)
    assert faithfulness(runs, pruned).value == pytest.approx(faithfulness(runs, keep).value, abs=1e-5)


def test_the_loss_metric_counts_only_the_chosen_positions():
    logits = torch.randn(2, 5, 7)
    targets = torch.full((2, 5), -1)
    targets[0, 1], targets[1, 2], targets[1, 3] = 3, 4, 5
    got = PositionLoss(targets)(logits)
    expected = [F.cross_entropy(logits[0, 1:2], torch.tensor([3])),
                F.cross_entropy(logits[1, 2:4], torch.tensor([4, 5]))]
    torch.testing.assert_close(got, torch.stack(expected))
