import math
import threading

import pytest
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
    assert not any(point.active or point.scoped_count for point in model.hook_points.values()), \
        "hooks removed after the call"
    cached = cache["blocks.0.attn.pattern"]
    model(torch.randint(0, 50, (1, 5)))  # a later pass does not reach the caching hooks
    assert cache["blocks.0.attn.pattern"] is cached and len(cache) == len(model.hook_names())


def test_a_hook_can_replace_an_activation_and_is_removed():
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 50, (1, 8))
    base, _ = model(idx)
    model.add_hook("blocks.1.mlp.out", lambda x, hook: torch.zeros_like(x))
    ablated, _ = model(idx)
    assert not torch.allclose(base, ablated)
    model.remove_hooks()
    torch.testing.assert_close(model(idx)[0], base)


# ---------------------------------------------------------------- RoPE: after the rotation

def test_rope_models_have_rot_q_and_rot_k_after_the_rotation_and_learned_ones_do_not():
    model = GPT(tiny_config(n_layer=1, pos_encoding="rope")).eval()
    rope_hooks = BLOCK_HOOKS[:5] + ["attn.rot_q", "attn.rot_k"] + BLOCK_HOOKS[5:]
    assert model.hook_names() == ["embed"] + [f"blocks.0.{h}" for h in rope_hooks] + ["ln_f.out"]
    assert not any("rot_" in name for name in GPT(tiny_config()).hook_names())
    idx = torch.randint(0, 50, (2, 10))
    _, cache = model.run_with_cache(idx)
    q, k = cache["blocks.0.attn.rot_q"], cache["blocks.0.attn.rot_k"]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, T, T)
    scores = scores.masked_fill(torch.ones(10, 10).triu(1).bool(), float("-inf"))
    torch.testing.assert_close(scores, cache["blocks.0.attn.scores"])
    assert not torch.allclose(cache["blocks.0.attn.q"][:, :, 1:], q[:, :, 1:]), "q before, rot_q after the rotation"
    torch.testing.assert_close(cache["blocks.0.attn.q"][:, :, 0], q[:, :, 0])  # position 0: angle 0


# ---------------------------------------------------------------- names, filters, run_with_hooks

def test_names_may_be_a_filter_and_bad_names_or_filters_are_one_clear_error():
    model = GPT(tiny_config())
    idx = torch.randint(0, 50, (1, 6))
    _, cache = model.run_with_cache(idx, names=lambda name: name.endswith("attn.pattern"))
    assert list(cache) == ["blocks.0.attn.pattern", "blocks.1.attn.pattern"]
    with pytest.raises(ValueError, match="names: the filter matches no hook point"):
        model.run_with_cache(idx, names=lambda name: False)
    with pytest.raises(ValueError, match=r"names: no hook point named 'blocks.0.attn.patern' \(did you mean"):
        model.run_with_cache(idx, names=["blocks.0.attn.patern"])
    with pytest.raises(KeyError):  # still a KeyError, as it always was
        model.add_hook("nope", lambda x, hook: None)
    with pytest.raises(ValueError, match="fwd_hooks: no hook point"):
        model.run_with_hooks(idx, fwd_hooks=[("blocks.9.mlp.out", lambda x, hook: None)])


def test_run_with_hooks_replaces_activations_for_that_call_only():
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 50, (2, 8))
    base, _ = model(idx)
    seen = []
    zero = lambda x, hook: seen.append(hook.name) or torch.zeros_like(x)  # noqa: E731
    ablated, _ = model.run_with_hooks(idx, fwd_hooks=[(lambda n: n.endswith("mlp.out"), zero)])
    assert seen == ["blocks.0.mlp.out", "blocks.1.mlp.out"]
    by_hand = GPT(tiny_config()).eval()
    by_hand.load_state_dict(model.state_dict())
    for block in by_hand.blocks:
        block.mlp.c_proj.weight.data.zero_()
        block.mlp.c_proj.bias.data.zero_()
    torch.testing.assert_close(ablated, by_hand(idx)[0])
    torch.testing.assert_close(model(idx)[0], base)
    assert not any(point.active for point in model.hook_points.values())


# ---------------------------------------------------------------- hooks belong to the call, not the model

def test_a_call_scoped_hook_is_invisible_to_a_forward_pass_in_another_thread():
    """Thread A holds a replacing hook and a cache open while thread B runs the same model:
    B gets the clean logits on the fast path, and A's cache holds A's activations only."""
    model = GPT(tiny_config(attn_impl="sdpa")).eval()
    idx_a, idx_b = torch.randint(0, 50, (1, 8)), torch.randint(0, 50, (1, 8))
    clean_b = model(idx_b)[0]
    expected_a = model.run_with_cache(idx_a, names=["blocks.1.attn.pattern"])[1]["blocks.1.attn.pattern"]
    inside, done = threading.Event(), threading.Event()
    result = {}

    def wait_for_b(x, hook):  # in the middle of A's forward pass, let B run a whole one
        inside.set()
        assert done.wait(timeout=30)

    def run_b():
        assert inside.wait(timeout=30)
        result["b_manual_path"] = model.blocks[1].attn.pattern.active
        result["b"] = model(idx_b)[0]
        done.set()

    thread = threading.Thread(target=run_b)
    thread.start()
    with model.hooks([("blocks.0.mlp.out", wait_for_b)]):
        _, cache = model.run_with_cache(idx_a, names=["blocks.1.attn.pattern"])
    thread.join()
    assert result["b_manual_path"] is False
    torch.testing.assert_close(result["b"], clean_b)
    torch.testing.assert_close(cache["blocks.1.attn.pattern"], expected_a)


def test_threads_running_caches_ablations_and_plain_passes_on_one_model_get_single_threaded_results():
    model = GPT(tiny_config(attn_impl="sdpa")).eval()
    inputs = [torch.randint(0, 50, (1, 12)) for _ in range(3)]
    zero = lambda x, hook: torch.zeros_like(x)  # noqa: E731
    jobs = {
        "cache": lambda i: model.run_with_cache(inputs[i], names=lambda n: n.endswith("pattern"))[1],
        "ablate": lambda i: model.run_with_hooks(inputs[i], fwd_hooks=[("blocks.0.attn.z", zero)])[0],
        "plain": lambda i: model(inputs[i])[0],
    }
    expected = {(kind, i): job(i) for kind, job in jobs.items() for i in range(3)}
    errors, mismatches = [], []

    def worker(kind: str, i: int):
        try:
            for _ in range(30):
                got = jobs[kind](i)
                want = expected[(kind, i)]
                same = (all(torch.equal(got[k], want[k]) for k in want) and set(got) == set(want)
                        if isinstance(want, dict) else torch.equal(got, want))
                if not same:
                    mismatches.append((kind, i))
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=key) for key in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not mismatches, (errors[:3], mismatches[:3])


def test_idle_hook_points_do_not_break_a_compiled_graph_and_a_calls_hooks_still_run_under_compile():
    """The ContextVar that holds a call's hooks is read only while some call has hooks on that
    point; torch.compile cannot trace that read, and would otherwise break the graph at every hook."""
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 50, (2, 8))
    explained = torch._dynamo.explain(model)(idx)
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons][:2]
    compiled = torch.compile(model, backend="eager")
    clean = compiled(idx)[0]
    with model.hooks([("blocks.0.mlp.out", lambda x, hook: torch.zeros_like(x))]):
        ablated = compiled(idx)[0]
    assert not torch.allclose(clean, ablated)
    torch.testing.assert_close(compiled(idx)[0], clean)
    assert all(point.scoped_count == 0 for point in model.hook_points.values())


def test_hook_points_that_need_the_attention_weights_say_so_and_watching_one_takes_the_manual_path():
    model = GPT(tiny_config(attn_impl="sdpa", attn_sink="learned")).eval()
    needing = [name for name, point in model.hook_points.items() if point.needs_weights]
    assert needing == [f"blocks.{i}.attn.{h}" for i in range(2) for h in ("scores", "sink_weight", "pattern")]
    idx = torch.randint(0, 50, (1, 8))
    for name in needing:  # each alone is made, so the fused path was left for that call
        assert list(model.run_with_cache(idx, names=[name])[1]) == [name]
    assert model.run_with_cache(idx, names=["blocks.0.attn.z"])[1]["blocks.0.attn.z"].shape == (1, 2, 8, 8)
