"""Cross-check against TransformerLens 3.9 (a test-only dependency, in the `dev` extra).

On the same random weights (LayerNorm weights and biases randomised too, so a hook on the
wrong side of a bias shows), every activation glassgpt caches, the rotated q and k of a
RoPE model, the induction score and the logit lens equal TransformerLens's. TransformerLens
is built offline from a config and a converted state dict, never from a hub.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glassgpt.analysis import induction_scores, logit_lens, repeated_random_tokens
from glassgpt.model import GPT

from conftest import LazyModule, tiny_config

pytestmark = [pytest.mark.slow,  # building and running TransformerLens models
              pytest.mark.filterwarnings("ignore:HookedTransformer is deprecated:DeprecationWarning")]

transformer_lens = LazyModule("transformer_lens", reason="pip install 'glassgpt[dev]' for transformer_lens")


def random_model(**cfg) -> GPT:
    model = GPT(tiny_config(n_layer=2, n_head=2, n_embd=16, vocab_size=50, block_size=32, **cfg)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
            elif name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
    return model


def to_transformer_lens(model: GPT) -> transformer_lens.HookedTransformer:
    """The same weights in a HookedTransformer, parameter by parameter."""
    cfg = model.config
    C, nh, hs = cfg.n_embd, cfg.n_head, cfg.head_size
    rope = cfg.pos_encoding == "rope"
    tl_cfg = transformer_lens.HookedTransformerConfig(
        n_layers=cfg.n_layer, d_model=C, n_ctx=cfg.block_size, d_head=hs, n_heads=nh, d_mlp=4 * C,
        d_vocab=cfg.vocab_size, act_fn="gelu_new", normalization_type="LN", eps=1e-5,
        positional_embedding_type="rotary" if rope else "standard", rotary_dim=hs if rope else None,
        rotary_base=cfg.rope_theta, rotary_adjacent_pairs=False, default_prepend_bos=False, device="cpu",
    )
    sd = {"embed.W_E": model.wte.weight, "unembed.W_U": model.lm_head.weight.T,
          "unembed.b_U": torch.zeros(cfg.vocab_size),
          "ln_final.w": model.ln_f.weight, "ln_final.b": model.ln_f.bias}
    if not rope:
        sd["pos_embed.W_pos"] = model.wpe.weight
    for i, block in enumerate(model.blocks):
        w_q, w_k, w_v = block.attn.c_attn.weight.split(C, dim=0)  # each (C, C): out x in
        b_q, b_k, b_v = block.attn.c_attn.bias.split(C)
        for name, w, b in (("Q", w_q, b_q), ("K", w_k, b_k), ("V", w_v, b_v)):
            sd[f"blocks.{i}.attn.W_{name}"] = w.view(nh, hs, C).transpose(1, 2)  # (nh, C, hs)
            sd[f"blocks.{i}.attn.b_{name}"] = b.view(nh, hs)
        sd[f"blocks.{i}.attn.W_O"] = block.attn.c_proj.weight.view(C, nh, hs).permute(1, 2, 0)  # (nh, hs, C)
        sd[f"blocks.{i}.attn.b_O"] = block.attn.c_proj.bias
        sd[f"blocks.{i}.mlp.W_in"], sd[f"blocks.{i}.mlp.b_in"] = block.mlp.c_fc.weight.T, block.mlp.c_fc.bias
        sd[f"blocks.{i}.mlp.W_out"], sd[f"blocks.{i}.mlp.b_out"] = block.mlp.c_proj.weight.T, block.mlp.c_proj.bias
        for ours, theirs in (("ln_1", "ln1"), ("ln_2", "ln2")):
            norm = getattr(block, ours)
            sd[f"blocks.{i}.{theirs}.w"], sd[f"blocks.{i}.{theirs}.b"] = norm.weight, norm.bias
    tl = transformer_lens.HookedTransformer(tl_cfg)
    missing, unexpected = tl.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    assert not unexpected and all(k.endswith(("IGNORE", "mask", "rotary_sin", "rotary_cos")) for k in missing), missing
    return tl.eval()


def affine(tl: transformer_lens.HookedTransformer, norm: str, tl_cache) -> torch.Tensor:
    """TransformerLens's `hook_normalized` is before the LayerNorm's weight and bias; glassgpt's
    `ln_*.out` is the LayerNorm's output, after them."""
    module = tl.get_submodule(norm)
    return tl_cache[f"{norm}.hook_normalized"] * module.w + module.b


HEAD_FIRST = ("attn.q", "attn.k", "attn.v", "attn.rot_q", "attn.rot_k", "attn.z")  # ours (B, nh, T, hs), theirs (B, T, nh, hs)
PAIRS = {  # ours: theirs
    "resid_pre": "hook_resid_pre", "ln_1.out": "ln1.hook_normalized",  # (after the affine, see `affine`) "attn.q": "attn.hook_q", "attn.k": "attn.hook_k",
    "attn.v": "attn.hook_v", "attn.rot_q": "attn.hook_rot_q", "attn.rot_k": "attn.hook_rot_k",
    "attn.scores": "attn.hook_attn_scores", "attn.pattern": "attn.hook_pattern", "attn.z": "attn.hook_z",
    "attn.out": "hook_attn_out", "resid_mid": "hook_resid_mid", "ln_2.out": "ln2.hook_normalized",
    "mlp.hidden": "mlp.hook_post", "mlp.out": "hook_mlp_out", "resid_post": "hook_resid_post",
}


@pytest.mark.parametrize("pos_encoding", ["learned", "rope"])
def test_every_cached_activation_equals_transformer_lens(pos_encoding):
    model = random_model(pos_encoding=pos_encoding)
    tl = to_transformer_lens(model)
    idx = torch.randint(0, 50, (2, 12))
    logits, cache = model.run_with_cache(idx)
    tl_logits, tl_cache = tl.run_with_cache(idx)
    torch.testing.assert_close(logits, tl_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache["embed"], tl_cache["blocks.0.hook_resid_pre"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cache["ln_f.out"], affine(tl, "ln_final", tl_cache), atol=1e-5, rtol=1e-5)
    compared = 0
    for i in range(model.config.n_layer):
        for ours, theirs in PAIRS.items():
            if f"blocks.{i}.{ours}" not in cache:  # rot_q / rot_k: RoPE models only
                assert pos_encoding == "learned" and ours.startswith("attn.rot_")
                continue
            mine, other = cache[f"blocks.{i}.{ours}"], tl_cache[f"blocks.{i}.{theirs}"]
            if theirs.endswith("hook_normalized"):
                other = affine(tl, f"blocks.{i}.{theirs.split('.')[0]}", tl_cache)
            if ours in HEAD_FIRST:
                other = other.transpose(1, 2)  # (B, T, nh, hs) -> (B, nh, T, hs)
            torch.testing.assert_close(mine, other, atol=1e-5, rtol=1e-5, msg=f"blocks.{i}.{ours}")
            compared += 1
    assert compared == model.config.n_layer * (len(PAIRS) - (2 if pos_encoding == "learned" else 0))


def test_induction_score_equals_the_stripe_of_transformer_lens_patterns():
    model = random_model()
    tl = to_transformer_lens(model)
    seq_len, batch = 10, 4
    tokens = repeated_random_tokens(50, seq_len, batch, torch.Generator().manual_seed(7))
    ours = induction_scores(model, seq_len=seq_len, batch=batch, generator=torch.Generator().manual_seed(7))
    _, tl_cache = tl.run_with_cache(tokens)
    for layer in range(model.config.n_layer):
        pattern = tl_cache["pattern", layer]  # (B, nh, 2 seq_len, 2 seq_len)
        stripe = pattern.diagonal(offset=1 - seq_len, dim1=-2, dim2=-1)[..., 1:]  # queries seq_len.., keys 1..
        torch.testing.assert_close(ours[layer], stripe.mean(dim=(0, 2)), atol=1e-6, rtol=1e-5)


def test_logit_lens_equals_decoding_transformer_lens_residuals():
    model = random_model()
    tl = to_transformer_lens(model)
    idx, targets = torch.randint(0, 50, (3, 16)), torch.randint(0, 50, (3, 16))
    ours = logit_lens(model, idx, targets)
    with torch.no_grad():
        _, tl_cache = tl.run_with_cache(idx)
    L = model.config.n_layer
    # embed, then after each block: TransformerLens's resid_pre of the next block, and the last resid_post
    stack = [tl_cache[f"blocks.{i}.hook_resid_pre"] for i in range(L)] + [tl_cache[f"blocks.{L - 1}.hook_resid_post"]]
    for point, resid in enumerate(stack):
        with torch.no_grad():
            logits = tl.unembed(tl.ln_final(resid))
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        assert float(ours["loss"][point]) == pytest.approx(float(loss), abs=1e-5), point
