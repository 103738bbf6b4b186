"""Attention-sink remedies (`attn_sink = "learned" | "gate"`): both attention paths compute the
same function (outputs and gradients), the hooks show the weights actually used, the sink
weight and the gate, the KV cache and generation work, and GPT-2 export refuses them."""

import pytest
import torch

from glassgpt.errors import UsageError
from glassgpt.generate import generate
from glassgpt.model import GPT

from conftest import assert_clean_error, assert_same_outputs_and_gradients, run_cli, tiny_config, twin_models

REMEDIES = ["learned", "gate"]


def spread_sink_logits(model) -> None:
    """Sink logits away from their zero start, so the test sees them matter."""
    for name, p in model.named_parameters():
        if name.endswith("sink_logit"):
            p.copy_(torch.randn_like(p) * 2)


def remedy_twins(**cfg):
    """The same weights under attn_impl=manual and sdpa, sink logits spread."""
    return twin_models(init=spread_sink_logits, **cfg)


@pytest.mark.parametrize("pos_encoding", ["learned", "rope"])
@pytest.mark.parametrize("attn_sink", REMEDIES)
def test_both_attention_paths_agree_with_each_remedy_in_output_and_gradients(attn_sink, pos_encoding):
    params = assert_same_outputs_and_gradients(*remedy_twins(attn_sink=attn_sink, pos_encoding=pos_encoding))
    assert any(("sink_logit" if attn_sink == "learned" else "c_gate") in n for n in params)


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


@pytest.mark.parametrize("attn_impl", ["manual", "sdpa"])
@pytest.mark.parametrize("attn_sink", REMEDIES)
def test_kv_cache_and_generation_work_with_each_remedy(attn_sink, attn_impl):
    model = GPT(tiny_config(attn_sink=attn_sink, attn_impl=attn_impl, pos_encoding="rope")).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("sink_logit"):
                p.copy_(torch.randn_like(p))
    prompt = torch.randint(0, 50, (2, 5))
    cached = generate(model, prompt, 20, temperature=0, use_cache=True)  # runs past block_size 16
    uncached = generate(model, prompt, 20, temperature=0, use_cache=False)
    assert torch.equal(cached, uncached)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(generate(model, prompt, 8, generator=g1), generate(model, prompt, 8, use_cache=False, generator=g2))


@pytest.mark.parametrize("attn_sink", REMEDIES)
def test_hf_export_refuses_a_model_with_a_remedy(attn_sink):
    from glassgpt.hf import to_hf

    with pytest.raises(UsageError, match=f"attn_sink={attn_sink}.*cannot be exported"):
        to_hf(GPT(tiny_config(attn_sink=attn_sink)))


def test_attn_sink_out_of_range_is_one_line_exit_2(tmp_path):
    result = run_cli("train", "cpu-baby", "attn_sink=softmax1", "--out", str(tmp_path / "run"))
    assert_clean_error(result, 2, "attn_sink")
    assert not (tmp_path / "run").exists()


def test_resuming_with_another_remedy_is_refused(tmp_path, data_env):
    from glassgpt.config import RunConfig, TrainConfig
    from glassgpt.train import train

    cfg = tiny_config(vocab_size=65, block_size=16)
    train(RunConfig(cfg, TrainConfig(max_iters=2, eval_interval=2, eval_iters=1, batch_size=2, device="cpu")),
          tmp_path / "run", log=lambda s: None)
    result = run_cli("train", "--out", str(tmp_path / "run"), "--resume", "attn_sink=gate", "max_iters=4",
                     env={"GLASSGPT_DATA_DIR": str(data_env)})
    assert_clean_error(result, 2, "attn_sink none -> gate")
