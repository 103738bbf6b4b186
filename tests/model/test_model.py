import pytest
import torch
from torch import nn

from glassgpt.config import GPTConfig
from glassgpt.model import GPT, LayerNorm, causal_mask

from glassgpt.limits import parameter_count, units

from conftest import tiny_config


def test_scratch_layernorm_matches_torch_forward_and_backward():
    ours, ref = LayerNorm(32), nn.LayerNorm(32)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(32))
        ours.bias.copy_(torch.randn(32))
        ref.weight.copy_(ours.weight)
        ref.bias.copy_(ours.bias)
    x = (torch.randn(4, 7, 32) * 3 + 1).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = ours(x), ref(x_ref)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    upstream = torch.randn_like(y)
    (y * upstream).sum().backward()
    (y_ref * upstream).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, atol=1e-5, rtol=1e-5)


def test_scratch_and_torch_norm_models_compute_the_same_function():
    scratch = GPT(tiny_config(norm="scratch"))
    fused = GPT(tiny_config(norm="torch"))
    fused.load_state_dict(scratch.state_dict())
    idx = torch.randint(0, 50, (2, 16))
    torch.testing.assert_close(scratch(idx)[0], fused(idx)[0], atol=1e-5, rtol=1e-5)


def test_causal_mask_with_cached_past():
    # 2 new queries after 3 cached positions: query 0 sits at position 3.
    expected = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(2, 5, "cpu"), expected)


@pytest.mark.parametrize("name,count", [
    ("gpt2", 124_439_808),
    ("gpt2-163m", 163_037_184),
    ("shakespeare-char", 10_770_816),
    ("cpu-baby", 801_664),  # RoPE: no position table
])
def test_preset_parameter_counts_are_exact(name, count):
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = GPT(GPTConfig.preset(name))
    assert model.num_params() == count == parameter_count(GPTConfig.preset(name))


@pytest.mark.parametrize("options", [{}, {"bias": False}, {"pos_encoding": "rope"}, {"attn_sink": "learned"},
                                     {"attn_sink": "gate", "bias": False}, {"attn_only": True},
                                     {"tie_weights": False}, {"qk_norm": True, "mlp_act": "relu2"}])
def test_the_parameter_shapes_from_the_config_are_the_models(options):
    cfg = tiny_config(n_layer=2, **options)
    listed = [shape for shapes in units(cfg).values() for shape in shapes]
    assert sorted(listed) == sorted(tuple(p.shape) for p in GPT(cfg).parameters())
    assert units(cfg)["blocks.1"] == [tuple(p.shape) for p in GPT(cfg).blocks[1].parameters()]


def test_weight_tying_shares_one_matrix():
    tied, untied = GPT(tiny_config(tie_weights=True)), GPT(tiny_config(tie_weights=False))
    assert tied.lm_head.weight is tied.wte.weight
    assert untied.lm_head.weight is not untied.wte.weight
    assert untied.num_params() - tied.num_params() == 50 * 16


def test_rope_model_has_no_position_table():
    assert GPT(tiny_config(pos_encoding="rope")).wpe is None


@pytest.mark.parametrize("bad,fragment", [
    (dict(n_embd=30, n_head=4), "divisible by n_head"),
    (dict(n_embd=24, n_head=8, pos_encoding="rope"), "even head size"),
    (dict(attn_impl="flash"), "attn_impl"),
    (dict(dropout=1.5), "dropout"),
    (dict(n_layer=0), "n_layer"),
])
def test_invalid_shapes_raise_value_error_with_advice(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        tiny_config(**bad)


def test_forward_returns_logits_for_every_position_and_mean_loss():
    model = GPT(tiny_config())
    idx = torch.randint(0, 50, (2, 10))
    logits, loss = model(idx)
    assert logits.shape == (2, 10, 50) and loss is None
    targets = idx.clone()
    targets[:, :5] = -1  # ignored positions
    _, loss = model(idx, targets)
    expected = nn.functional.cross_entropy(logits[:, 5:].reshape(-1, 50), idx[:, 5:].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_last_position_only_gives_the_last_row_of_the_full_logits():
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 50, (2, 10))
    last, _ = model(idx, last_position_only=True)
    assert last.shape == (2, 1, 50)
    torch.testing.assert_close(last, model(idx)[0][:, -1:])
    with pytest.raises(ValueError, match="every position"):
        model(idx, idx, last_position_only=True)


def test_learned_positions_refuse_a_sequence_longer_than_the_block():
    with pytest.raises(ValueError, match="block_size"):
        GPT(tiny_config())(torch.zeros(1, 17, dtype=torch.long))


def test_flops_per_token_follows_the_palm_formula():
    model = GPT(tiny_config())
    n = model.num_params(non_embedding=True)
    assert model.estimate_flops_per_token() == 6 * n + 12 * 2 * 2 * 8 * 16


def test_flops_per_token_and_mfu_of_the_gpt2_shape_computed_by_hand(monkeypatch):
    """GPT-2 small: 124,439,808 parameters, 123,653,376 without the 1024 x 768 position table.
    6 N = 741,920,256; attention 12 L nh hs T = 12 * 12 * 12 * 64 * 1024 = 113,246,208."""
    from glassgpt.training.flops import mfu, peak_flops

    model = GPT(GPTConfig.preset("gpt2"))
    assert model.num_params() == 124_439_808
    assert model.num_params(non_embedding=True) == 123_653_376
    assert model.estimate_flops_per_token() == 855_166_464
    assert model.estimate_flops_per_token(seq_len=512) == 741_920_256 + 56_623_104
    # 100,000 tokens/s on an A100 in bf16 (312 TFLOP/s): 855,166,464e5 / 312e12 = 27.41%
    monkeypatch.delenv("GLASSGPT_PEAK_FLOPS", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    peak = peak_flops(torch.device("cuda"), "bfloat16")
    assert peak == 312e12
    assert abs(mfu(model.estimate_flops_per_token(), 1e5, peak) - 0.274092) < 1e-6
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert peak_flops(torch.device("cuda"), "bfloat16") == 756e12  # the PCIe card, not the SXM figure
