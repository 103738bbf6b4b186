"""The same GPT-2 weights in Hugging Face `transformers`, for the side-by-side benchmark.

`glassgpt.hf.to_hf` is used when it exists; otherwise a small mapping here does
the same: parameter names match GPT-2's, and HF's `Conv1D` layers store their
weights transposed relative to `nn.Linear`.
"""

from __future__ import annotations

import torch

from glassgpt.model import GPT

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_config(model: GPT, attn_implementation: str = "sdpa"):
    from transformers import GPT2Config

    cfg = model.config
    return GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
                      n_layer=cfg.n_layer, n_head=cfg.n_head, activation_function="gelu_new",
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                      tie_word_embeddings=cfg.tie_weights, bos_token_id=None, eos_token_id=None,
                      attn_implementation=attn_implementation)


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """glassgpt parameter names and layouts -> GPT2LMHeadModel's."""
    out = {}
    for name, tensor in model.state_dict().items():
        hf_name = "lm_head.weight" if name == "lm_head.weight" else "transformer." + name.replace("blocks.", "h.", 1)
        out[hf_name] = tensor.t().contiguous() if name.endswith(CONV1D_WEIGHTS) else tensor
    return out


def check_gpt2_family(model: GPT) -> None:
    cfg = model.config
    if cfg.pos_encoding != "learned" or not cfg.bias:
        raise ValueError("only GPT-2-shaped models (learned positions, biases) map to transformers' GPT-2")


def to_transformers(model: GPT):
    """A `GPT2LMHeadModel` holding the same weights as `model`, in eval mode, on the same device."""
    check_gpt2_family(model)
    try:
        from glassgpt.hf import to_hf  # the project's own converter, when present
    except ImportError:
        to_hf = None
    if to_hf is not None:
        hf = to_hf(model)
    else:
        from transformers import GPT2LMHeadModel

        hf = GPT2LMHeadModel(hf_config(model))
        missing, unexpected = hf.load_state_dict(hf_state_dict(model), strict=False)
        missing = [m for m in missing if not (m == "lm_head.weight" and model.config.tie_weights)]
        if missing or unexpected:
            raise RuntimeError(f"weight mapping to transformers failed: missing {missing}, unexpected {unexpected}")
        if model.config.tie_weights:
            hf.tie_weights()
    return hf.to(next(model.parameters()).device).eval()
