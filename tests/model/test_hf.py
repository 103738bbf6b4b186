"""GPT-2 weights to and from Hugging Face transformers, checked against transformers itself
on small randomly initialised models (offline): same logits both ways, same greedy text,
and `glassgpt convert-hf` end to end."""

from __future__ import annotations

import json

import pytest
import torch

from glassgpt.checkpoint import load_run
from glassgpt.errors import UsageError
from glassgpt.inference import generate
from glassgpt.hf import convert_hf_dir, from_hf, to_hf
from glassgpt.model import GPT

from conftest import LazyModule, assert_clean_error, run_cli, tiny_config

transformers = LazyModule("transformers", on_import=lambda m: m.utils.logging.set_verbosity_error())


def hf_gpt2(vocab_size=64, tie=True, **overrides) -> transformers.GPT2LMHeadModel:
    """A small GPT-2 whose every weight, biases and LayerNorms included, is random."""
    in_vocab = 50256 if vocab_size > 50256 else None
    config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                     tie_word_embeddings=tie, bos_token_id=in_vocab, eos_token_id=in_vocab,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **overrides)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def hf_logits(hf_model, idx):
    with torch.no_grad():
        return hf_model(idx).logits


def our_logits(model, idx):
    with torch.no_grad():
        return model(idx)[0]


@pytest.mark.parametrize("attn_impl,norm", [("manual", "scratch"), ("sdpa", "torch")])
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_from_hf_gives_the_same_logits(attn_impl, norm, tie):
    hf = hf_gpt2(tie=tie)
    ours = from_hf(hf, attn_impl=attn_impl, norm=norm)
    assert ours.config.tie_weights == tie
    assert (ours.lm_head.weight is ours.wte.weight) == tie
    idx = torch.randint(0, 64, (3, 32))
    torch.testing.assert_close(our_logits(ours, idx), hf_logits(hf, idx), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_to_hf_gives_the_same_logits(tie, bias):
    ours = GPT(tiny_config(vocab_size=64, block_size=32, n_embd=32, n_head=4, tie_weights=tie, bias=bias)).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf = to_hf(ours)
    assert hf.config.tie_word_embeddings == tie
    assert (hf.lm_head.weight is hf.transformer.wte.weight) == tie
    idx = torch.randint(0, 64, (3, 32))
    torch.testing.assert_close(hf_logits(hf, idx), our_logits(ours, idx), atol=1e-5, rtol=1e-5)


def test_a_round_trip_keeps_every_weight():
    hf = hf_gpt2(tie=False)
    back = to_hf(from_hf(hf)).state_dict()
    for name, tensor in hf.state_dict().items():
        assert torch.equal(back[name], tensor), name


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_greedy_generation_matches_transformers_generate(tie):
    hf = hf_gpt2(tie=tie)
    ours = from_hf(hf)
    prompt = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                               do_sample=False, pad_token_id=0)
    assert torch.equal(generate(ours, prompt, 20, temperature=0), expected)
    assert torch.equal(generate(ours, prompt, 20, temperature=0, use_cache=False), expected)


def test_to_hf_refuses_rope():
    with pytest.raises(UsageError, match="learned positions"):
        to_hf(GPT(tiny_config(pos_encoding="rope")))


@pytest.mark.parametrize("setting,fragment", [
    (dict(activation_function="relu"), "activation_function"),
    (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon"),
    (dict(n_inner=48), "n_inner"),
])
def test_from_hf_refuses_what_glassgpt_cannot_compute(setting, fragment):
    with pytest.raises(UsageError, match=fragment):
        from_hf(hf_gpt2(**setting))


# ---------------------------------------------------------------- convert-hf

@pytest.fixture(scope="module")
def saved_hf(tmp_path_factory):
    """A small GPT-2 with GPT-2's vocabulary, saved as save_pretrained writes it."""
    torch.manual_seed(0)
    hf = hf_gpt2(vocab_size=50257)
    path = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    hf.save_pretrained(path)
    return hf, path


def test_convert_hf_command_makes_a_run_that_samples_like_transformers(saved_hf, tmp_path):
    hf, hf_dir = saved_hf
    run_dir = tmp_path / "run"
    r = run_cli("convert-hf", str(hf_dir), "--out", str(run_dir))
    assert r.returncode == 0, r.stderr
    assert "glassgpt sample" in r.stdout
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in run_dir.iterdir()}

    model, tokenizer, _ = load_run(run_dir)
    assert tokenizer.name == "gpt2"
    idx = torch.randint(0, 50257, (2, 32))
    torch.testing.assert_close(our_logits(model, idx), hf_logits(hf, idx), atol=1e-5, rtol=1e-5)

    r = run_cli("sample", str(run_dir), "--prompt", "Hello world", "--max-new-tokens", "12", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    prompt = torch.tensor([tokenizer.encode("Hello world")])
    with torch.no_grad():
        expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, min_new_tokens=12,
                               do_sample=False, pad_token_id=50256)
    assert r.stdout == "Hello world" + tokenizer.decode(expected[0, prompt.size(1):].tolist()) + "\n"


def test_convert_keeps_an_untied_head(tmp_path):
    hf = hf_gpt2(vocab_size=50257, tie=False)
    hf.save_pretrained(tmp_path / "hf")
    model = convert_hf_dir(tmp_path / "hf", tmp_path / "run")
    loaded, _, run_config = load_run(tmp_path / "run")
    assert not run_config.model.tie_weights and loaded.lm_head.weight is not loaded.wte.weight
    idx = torch.randint(0, 50257, (1, 16))
    torch.testing.assert_close(our_logits(loaded, idx), hf_logits(hf, idx), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(our_logits(model, idx), hf_logits(hf, idx), atol=1e-5, rtol=1e-5)


def test_convert_refuses_a_vocabulary_the_gpt2_tokenizer_cannot_drive(tmp_path):
    hf_gpt2(vocab_size=64).save_pretrained(tmp_path / "hf")
    with pytest.raises(UsageError, match="50257"):
        convert_hf_dir(tmp_path / "hf", tmp_path / "run")
    assert not (tmp_path / "run").exists(), "nothing written for a refused conversion"


def test_convert_hf_refuses_folders_it_cannot_read(saved_hf, tmp_path):
    _, hf_dir = saved_hf
    with pytest.raises(UsageError, match="not a directory"):
        convert_hf_dir(tmp_path / "nope", tmp_path / "r")
    with pytest.raises(UsageError, match="no config.json"):
        convert_hf_dir(tmp_path, tmp_path / "r")
    convert_hf_dir(hf_dir, tmp_path / "run")
    with pytest.raises(UsageError, match="already holds a run"):
        convert_hf_dir(hf_dir, tmp_path / "run")


class _RunsCode:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('code ran')",))


def test_convert_hf_refuses_a_malicious_pickle_and_runs_none_of_it(tmp_path):
    hf_dir = tmp_path / "hf"
    hf_gpt2(vocab_size=50257).config.save_pretrained(hf_dir)
    torch.save({"transformer.wte.weight": _RunsCode()}, hf_dir / "pytorch_model.bin")
    r = run_cli("convert-hf", str(hf_dir), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert_clean_error(r, 1, "refusing to load", "safetensors")
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "run").exists()


def test_convert_hf_command_answers_a_wrong_model_in_one_line(tmp_path):
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    r = run_cli("convert-hf", str(tmp_path / "llama"), "--out", str(tmp_path / "r"))
    assert_clean_error(r, 2, "'llama'", "GPT-2")
    assert not (tmp_path / "r").exists()
