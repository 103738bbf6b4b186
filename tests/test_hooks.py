import torch

from glassgpt.model import GPT

from conftest import tiny_config

BLOCK_HOOKS = ["resid_pre", "ln_1.out", "attn.q", "attn.k", "attn.v", "attn.scores", "attn.pattern",
               "attn.z", "attn.out", "resid_mid", "ln_2.out", "mlp.hidden", "mlp.out", "resid_post"]


def test_hook_names_are_a_pinned_contract_in_execution_order():
    model = GPT(tiny_config(n_layer=2))
    expected = ["embed"] + [f"blocks.{i}.{h}" for i in range(2) for h in BLOCK_HOOKS] + ["ln_f.out"]
    assert model.hook_names() == expected


def test_run_with_cache_returns_detached_activations_of_the_documented_shapes():
    model = GPT(tiny_config(attn_impl="sdpa"))
    idx = torch.randint(0, 50, (3, 12))
    logits, cache = model.run_with_cache(idx)
    assert set(cache) == set(model.hook_names())
    assert cache["embed"].shape == (3, 12, 16)
    assert cache["blocks.1.attn.q"].shape == (3, 2, 12, 8)
    pattern = cache["blocks.0.attn.pattern"]
    assert pattern.shape == (3, 2, 12, 12)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(3, 2, 12))
    assert torch.all(pattern.triu(diagonal=1) == 0), "no attention to the future"
    assert not pattern.requires_grad
    torch.testing.assert_close(logits, model(idx)[0], atol=1e-5, rtol=1e-5)
    assert all(not hp.fns for hp in model.hook_points.values()), "hooks removed after the call"


def test_a_hook_can_replace_an_activation_and_is_removed():
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 50, (1, 8))
    base, _ = model(idx)
    model.add_hook("blocks.1.mlp.out", lambda x, hook: torch.zeros_like(x))
    ablated, _ = model(idx)
    assert not torch.allclose(base, ablated)
    model.remove_hooks()
    torch.testing.assert_close(model(idx)[0], base)
