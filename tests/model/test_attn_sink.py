"""Attention-sink remedies (`attn_sink = "learned" | "gate"`): each changes the function, and the
hooks show the weights actually used, the sink weight and the gate. Both attention paths, the KV
cache, export and resume with each remedy: tests/commands/test_options_contract.py."""

import pytest
import torch

from glassgpt.model import GPT

from conftest import assert_clean_error, run_cli, tiny_config

REMEDIES = ["learned", "gate"]


@pytest.mark.parametrize("attn_sink", ["none", *REMEDIES])
def test_each_remedy_changes_the_function(attn_sink):
    """The remedy is really applied: the same shared weights give other logits than without it."""
    base = GPT(tiny_config(attn_sink="none")).eval()
    model = GPT(tiny_config(attn_sink=attn_sink)).eval()
    model.load_state_dict(base.state_dict(), strict=False)
    idx = torch.randint(0, 50, (2, 16))
    same = torch.allclose(base(idx)[0], model(idx)[0], atol=1e-6)
    assert same == (attn_sink == "none")


def test_learned_sink_pattern_shows_the_weights_used_and_a_hook_shows_the_sink_weight():
    model = GPT(tiny_config(attn_sink="learned", attn_impl="sdpa")).eval()
    with torch.no_grad():
        model.blocks[1].attn.sink_logit.copy_(torch.tensor([8.0, -8.0]))  # head 0 attends to nothing
    idx = torch.randint(0, 50, (2, 16))
    _, cache = model.run_with_cache(idx, names=["blocks.1.attn.pattern", "blocks.1.attn.sink_weight"])
    pattern, sink = cache["blocks.1.attn.pattern"], cache["blocks.1.attn.sink_weight"]  # (B, H, T, T), (B, H, T)
    assert sink.shape == (2, 2, 16)
    torch.testing.assert_close(pattern.sum(dim=-1) + sink, torch.ones(2, 2, 16))
    assert sink[:, 0].min() > 0.9 and pattern[:, 0].sum(dim=-1).max() < 0.1  # the sink head looks at nothing
    assert sink[:, 1].max() < 0.01
    z = model.run_with_cache(idx, names=["blocks.1.attn.z"])[1]["blocks.1.attn.z"]
    assert z[:, 0].abs().max() < 0.1 * z[:, 1].abs().max()  # what it does not attend to, it does not output


def test_gate_hook_shows_the_gate_and_a_closed_gate_silences_the_head():
    model = GPT(tiny_config(attn_sink="gate", attn_impl="sdpa")).eval()
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.c_gate.weight.zero_()
        attn.c_gate.bias.copy_(torch.tensor([-30.0, 0.0]))  # head 0 shut, head 1 at one half
    idx = torch.randint(0, 50, (2, 16))
    _, cache = model.run_with_cache(idx, names=["blocks.0.attn.gate", "blocks.0.attn.z"])
    gate, z = cache["blocks.0.attn.gate"], cache["blocks.0.attn.z"]  # (B, H, T), (B, H, T, hs)
    assert gate.shape == (2, 2, 16)
    torch.testing.assert_close(gate[:, 1], torch.full((2, 16), 0.5))
    assert z[:, 0].abs().max() < 1e-10 < z[:, 1].abs().max()


def test_attn_sink_out_of_range_is_one_line_exit_2(tmp_path):
    result = run_cli("train", "cpu-baby", "attn_sink=softmax1", "--out", str(tmp_path / "run"))
    assert_clean_error(result, 2, "attn_sink")
    assert not (tmp_path / "run").exists()
