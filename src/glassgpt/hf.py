"""GPT-2 weights to and from Hugging Face `transformers`.

Our parameter names are GPT-2's, so the mapping is by name:

    ours                           transformers GPT2LMHeadModel
    wte, wpe                       transformer.wte, transformer.wpe
    blocks.{i}.ln_1 / ln_2         transformer.h.{i}.ln_1 / ln_2
    blocks.{i}.attn.c_attn/c_proj  transformer.h.{i}.attn.c_attn/c_proj
    blocks.{i}.mlp.c_fc/c_proj     transformer.h.{i}.mlp.c_fc/c_proj
    ln_f, lm_head                  transformer.ln_f, lm_head

with one twist: GPT-2 keeps its linear layers as `Conv1D`, whose weight is
(in, out), the transpose of `nn.Linear`'s (out, in). The GPT-2 family is
learned positions, the tanh GELU, LayerNorm with eps 1e-5 and biases
everywhere; a model outside it is refused with a `UsageError` (a model of ours
without biases is exported with zero biases, which computes the same thing).

OpenAI's weights, with internet once:

    python -c "from transformers import GPT2LMHeadModel; GPT2LMHeadModel.from_pretrained('gpt2').save_pretrained('gpt2-hf')"
    glassgpt convert-hf gpt2-hf --out runs/gpt2
    glassgpt sample runs/gpt2 --prompt "Hello, I'm a language model,"
"""

from __future__ import annotations

import pickle  # only to catch the UnpicklingError transformers raises: glassgpt unpickles nothing itself
import re
from pathlib import Path

import torch
from safetensors import SafetensorError

from glassgpt.checkpoint import check_writable_run_dir, read_json, save_run, weights_shapes
from glassgpt.config import UPPER_BOUNDS, GPTConfig, RunConfig, TrainConfig, gpt2_refusals
from glassgpt.errors import RunError, UsageError, first_line
from glassgpt.model import GPT
from glassgpt.tokenizer import get_tokenizer

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # both are 0.5 x (1 + tanh(...)), our nn.GELU("tanh")
GPT2_VOCAB_SIZE = 50257


def import_transformers():
    try:
        import transformers
    except ImportError:
        raise UsageError("this needs Hugging Face transformers: pip install 'glassgpt[hf]'") from None
    return transformers


# ---------------------------------------------------------------- configs

def config_from_hf(hf_config, attn_impl: str = "sdpa", norm: str = "torch") -> GPTConfig:
    """GPTConfig of a transformers GPT2Config, or UsageError naming what we cannot represent."""
    if getattr(hf_config, "model_type", None) != "gpt2":
        raise UsageError(f"expected a GPT-2 model, got model_type {getattr(hf_config, 'model_type', None)!r}")
    unsupported = {
        "activation_function": (hf_config.activation_function not in TANH_GELUS, "the tanh GELU (gelu_new)"),
        "n_inner": (hf_config.n_inner not in (None, 4 * hf_config.n_embd), f"4 * n_embd = {4 * hf_config.n_embd}"),
        "layer_norm_epsilon": (hf_config.layer_norm_epsilon != 1e-5, "1e-5"),
        "scale_attn_weights": (not hf_config.scale_attn_weights, "True"),
        "scale_attn_by_inverse_layer_idx": (hf_config.scale_attn_by_inverse_layer_idx, "False"),
        "add_cross_attention": (hf_config.add_cross_attention, "False"),
    }
    for name, (bad, wanted) in unsupported.items():
        if bad:
            raise UsageError(f"this GPT-2 has {name}={getattr(hf_config, name)!r}; glassgpt supports only {wanted}")
    return GPTConfig(
        vocab_size=hf_config.vocab_size, block_size=hf_config.n_positions, n_layer=hf_config.n_layer,
        n_head=hf_config.n_head, n_embd=hf_config.n_embd, dropout=0.0, bias=True, pos_encoding="learned",
        norm=norm, attn_impl=attn_impl, tie_weights=bool(hf_config.tie_word_embeddings),
    )


def config_to_hf(config: GPTConfig):
    """transformers GPT2Config of a GPTConfig, or UsageError if GPT-2 cannot hold the model."""
    refusals = gpt2_refusals(config)  # each field declares what GPT-2 needs (glassgpt.config.option)
    if refusals:
        raise UsageError(f"{'; '.join(refusals)}: this model cannot be exported to transformers")
    transformers = import_transformers()
    in_vocab = GPT2_VOCAB_SIZE - 1 if config.vocab_size >= GPT2_VOCAB_SIZE else None  # <|endoftext|>
    return transformers.GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, n_inner=None, activation_function="gelu_new",
        resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
        layer_norm_epsilon=1e-5, tie_word_embeddings=config.tie_weights,
        bos_token_id=in_vocab, eos_token_id=in_vocab,
    )


# ---------------------------------------------------------------- weights

def hf_name(our_name: str) -> str:
    """`blocks.3.attn.c_attn.weight` -> `transformer.h.3.attn.c_attn.weight`, and so on."""
    if our_name.startswith("lm_head."):
        return our_name
    if our_name.startswith("blocks."):
        return "transformer.h." + our_name[len("blocks."):]
    return "transformer." + our_name


def is_conv1d_weight(our_name: str) -> bool:
    return our_name.startswith("blocks.") and our_name.endswith(CONV1D_WEIGHTS)


def state_dict_from_hf(hf_state: dict[str, torch.Tensor], model: GPT) -> dict[str, torch.Tensor]:
    """transformers' tensors under our names, Conv1D weights transposed to nn.Linear's layout."""
    ours = {}
    for name, param in model.state_dict().items():
        source = hf_state.get(hf_name(name))
        if source is None:
            raise RunError(f"the GPT-2 weights have no {hf_name(name)}")
        tensor = source.t() if is_conv1d_weight(name) else source  # Conv1D (in, out) -> Linear (out, in)
        if tensor.shape != param.shape:
            raise RunError(f"{hf_name(name)} has shape {tuple(source.shape)}, expected {tuple(param.shape)}")
        ours[name] = tensor.detach().clone().to(param.dtype)
    return ours


def state_dict_to_hf(model: GPT, hf_shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Our tensors under transformers' names. GPT-2 always has biases: a model without
    them gets zero biases, which computes the same function."""
    hf_state = {}
    for name, tensor in model.state_dict().items():
        hf_state[hf_name(name)] = (tensor.t() if is_conv1d_weight(name) else tensor).detach().clone()
    for name, shape in hf_shapes.items():
        if name not in hf_state and name.endswith(".bias") and not model.config.bias:
            hf_state[name] = torch.zeros(shape)
    return hf_state


# ---------------------------------------------------------------- models

def from_hf(hf_model, attn_impl: str = "sdpa", norm: str = "torch") -> GPT:
    """A `transformers.GPT2LMHeadModel` -> our `GPT` computing the same logits, in eval mode.
    `attn_impl` / `norm` pick our fast (default) or readable face; the weights are the same."""
    model = GPT(config_from_hf(hf_model.config, attn_impl=attn_impl, norm=norm))
    hf_state = {k: v.float() for k, v in hf_model.state_dict().items()}
    model.load_state_dict(state_dict_from_hf(hf_state, model))
    return model.eval()


def to_hf(model: GPT):
    """Our `GPT` -> a `transformers.GPT2LMHeadModel` computing the same logits, in eval mode.
    Refuses (UsageError) RoPE models, which GPT-2 cannot represent. A model without biases
    is exported with zero biases (the same function); an untied head stays untied
    (`tie_word_embeddings=False`)."""
    transformers = import_transformers()
    hf_model = transformers.GPT2LMHeadModel(config_to_hf(model.config))
    hf_shapes = {name: t.shape for name, t in hf_model.state_dict().items()}
    hf_model.load_state_dict(state_dict_to_hf(model, hf_shapes), strict=True)
    if model.config.tie_weights and hf_model.lm_head.weight is not hf_model.transformer.wte.weight:
        raise RunError("transformers did not tie lm_head to wte although tie_word_embeddings is set")
    return hf_model.eval()


# ---------------------------------------------------------------- a saved transformers folder -> a run

def convert_hf_dir(hf_dir: str | Path, run_dir: str | Path, attn_impl: str = "sdpa", norm: str = "torch") -> GPT:
    """Convert a folder written by `GPT2LMHeadModel.save_pretrained` into a glassgpt run
    directory (config.json, model.safetensors, tokenizer.json: GPT-2 BPE). Offline."""
    hf_dir, run_dir = Path(hf_dir), Path(run_dir)
    read_hf_config(hf_dir)  # refuse a wrong folder before loading anything big
    if (run_dir / "config.json").exists():
        raise UsageError(f"{run_dir} already holds a run: choose another --out")
    check_writable_run_dir(run_dir)
    transformers = import_transformers()
    transformers.utils.logging.set_verbosity_error()  # one line per problem, ours
    try:
        hf_model = transformers.GPT2LMHeadModel.from_pretrained(str(hf_dir), local_files_only=True)
    except pickle.UnpicklingError:  # transformers reads .bin files with torch.load(weights_only=True)
        raise RunError(f"refusing to load the weights in {hf_dir}: the pickle holds Python objects, not just "
                       "tensors (it could run code); convert a safetensors copy instead") from None
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise RunError(f"cannot load the GPT-2 in {hf_dir}: {first_line(e)}") from None
    if hf_model.config.vocab_size != GPT2_VOCAB_SIZE:
        raise UsageError(f"{hf_dir} has a vocabulary of {hf_model.config.vocab_size} tokens; "
                         f"convert-hf pairs it with GPT-2's tokenizer, which needs {GPT2_VOCAB_SIZE}")
    model = from_hf(hf_model, attn_impl=attn_impl, norm=norm)

    run_config = RunConfig(model=model.config, train=TrainConfig(dataset="shakespeare"))  # GPT-2 BPE data
    save_run(run_dir, model, get_tokenizer("gpt2"), run_config)
    return model


def read_hf_config(hf_dir: Path) -> dict:
    """The config.json of a saved transformers model, checked to be a GPT-2."""
    if not hf_dir.is_dir():
        raise UsageError(f"{hf_dir} is not a directory: give the folder GPT2LMHeadModel.save_pretrained wrote")
    path = hf_dir / "config.json"
    if not path.is_file():
        raise UsageError(f"{hf_dir} has no config.json: it is not a folder written by save_pretrained")
    config = read_json(path)
    if not isinstance(config, dict) or config.get("model_type") != "gpt2":
        found = config.get("model_type") if isinstance(config, dict) else None
        raise UsageError(f"{hf_dir} holds a {found!r} model; convert-hf reads GPT-2 (model_type 'gpt2') only")
    check_hf_sizes(hf_dir, config)
    return config


HF_SIZES = {"n_layer": "n_layer", "n_head": "n_head", "n_embd": "n_embd", "n_positions": "block_size",
            "vocab_size": "vocab_size"}


def check_hf_sizes(hf_dir: Path, config: dict) -> None:
    """The sizes in a transformers config.json, bounded like glassgpt's own and, where the
    weights are a safetensors file, checked against its header before anything is built."""
    for key, ours in HF_SIZES.items():
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= UPPER_BOUNDS[ours]:
            raise UsageError(f"{hf_dir / 'config.json'}: {key} must be a whole number from 1 to "
                             f"{UPPER_BOUNDS[ours]:,}, got {value!r}")
    weights = hf_dir / "model.safetensors"
    if weights.is_file():
        names = weights_shapes(weights)  # a truncated or corrupt file is refused here, in one line
        layers = {m.group(1) for name in names if (m := re.search(r"(?:^|\.)h\.(\d+)\.", name))}
        if "n_layer" in config and len(layers) != config["n_layer"]:
            raise RunError(f"{hf_dir}: config.json says n_layer={config['n_layer']} but model.safetensors "
                           f"holds {len(layers)} layer(s): the folder is inconsistent")
