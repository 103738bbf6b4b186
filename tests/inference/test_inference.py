"""Inference: half precision against fp32, the prepared layout, stop ids and stop
strings, a padded vocabulary, and `--dtype` on the command line."""

import copy

import pytest
import torch

import glassgpt.device as device_module
from glassgpt import cli
from glassgpt.checkpoint import load_run, save_run
from glassgpt.config import RunConfig, TrainConfig
from glassgpt.data import sha256_of
from glassgpt.errors import UsageError
from glassgpt.inference.generate import STOPPED, generate, stream_logits, without_stopped
from glassgpt.precision import inference_dtype, prepare_for_inference
from glassgpt.inference.text import StoppingDecoder, StopText
from glassgpt.model import GPT, LayerNorm
from glassgpt.tokenizer import get_tokenizer

from conftest import assert_clean_error, make_tiny_run, push_all, run_cli, tiny_config

ENCODINGS_AND_IMPLS = [(pos, impl) for pos in ("learned", "rope") for impl in ("manual", "sdpa")]
# Largest |logit difference| against fp32, as a fraction of the largest |logit|: measured
# 0.07% (float16) and 0.7% (bfloat16) on these models; bf16 keeps 8 bits of mantissa, fp16 11.
TOLERANCE = {torch.float16: 0.01, torch.bfloat16: 0.03}


# ---------------------------------------------------------------- half precision

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("pos_encoding,attn_impl", ENCODINGS_AND_IMPLS)
def test_half_precision_generation_agrees_with_fp32(pos_encoding, attn_impl, dtype):
    """Cached generation in half precision (past block_size: the cache is refilled), its
    logits against the fp32 model's on the same tokens, teacher-forced."""
    fp32 = GPT(tiny_config(pos_encoding=pos_encoding, attn_impl=attn_impl)).eval()  # block_size 16
    half = prepare_for_inference(copy.deepcopy(fp32), dtype)
    assert {p.dtype for p in half.parameters()} == {dtype}
    if pos_encoding == "rope":
        assert half.rotary.inv_freq.dtype == torch.float32, "rotary frequencies stay fp32"
    prompt = torch.randint(0, 50, (2, 5))
    steps = list(stream_logits(half, prompt, 20, temperature=0))
    tokens = torch.cat([prompt, *[ids for ids, _ in steps]], dim=1)  # (2, 25)
    half_logits = torch.stack([lg for _, lg in steps], dim=1)  # (2, 20, V), fp32 from the half model
    assert half_logits.dtype == torch.float32
    with torch.no_grad():
        ref = fp32(tokens[:, :16])[0][:, 4:15]  # (2, 11, V): the predictions of new tokens 1..11
        ref_late = fp32(tokens[:, -17:-1])[0][:, -1]  # the last step: the 16 tokens before the last one
    scale = ref.abs().max()
    assert (half_logits[:, :11] - ref).abs().max() <= TOLERANCE[dtype] * scale
    assert (half_logits[:, -1] - ref_late).abs().max() <= TOLERANCE[dtype] * scale


def test_layernorm_statistics_are_fp32_for_half_inputs():
    """Activations far from zero: fp16's step at 300 is 0.25, so a mean rounded to fp16
    would shift x - mean by up to 0.125 standard deviations, and the output with it."""
    norm = LayerNorm(64)
    x = (300 + torch.randn(4, 64)).half()  # exactly representable: only the statistics can lose
    expected = norm(x.float())
    got = copy.deepcopy(norm).half()(x)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), expected, atol=0.02, rtol=0.0)


def test_logits_are_fp32_whatever_the_weights():
    model = GPT(tiny_config()).to(torch.bfloat16)
    logits, loss = model(torch.randint(0, 50, (1, 8)), torch.randint(0, 50, (1, 8)))
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32


def test_prepare_for_inference_stores_the_fp32_unembedding_column_major():
    """Same values, names and tying; only the memory layout changes (the fast
    matrix-vector product at batch 1)."""
    model = GPT(tiny_config()).eval()
    prepared = prepare_for_inference(copy.deepcopy(model))
    weight = prepared.lm_head.weight
    assert weight.shape == (50, 16) and weight.t().is_contiguous() and not weight.is_contiguous()
    assert prepared.wte.weight is weight, "the embedding stays tied to the unembedding"
    assert prepared.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(prepared.state_dict()[name], tensor), name
    idx = torch.randint(0, 50, (2, 10))
    torch.testing.assert_close(prepared(idx)[0], model(idx)[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(generate(prepared, idx, 8, temperature=0), generate(model, idx, 8, temperature=0))
    half = prepare_for_inference(copy.deepcopy(model), torch.float16)
    assert half.lm_head.weight.is_contiguous(), "float16 matrix-vector products are fast row-major only"


def test_inference_dtype_names():
    assert inference_dtype("float32") == torch.float32 and inference_dtype("bfloat16") == torch.bfloat16
    assert inference_dtype("auto", "cpu") == torch.float16
    with pytest.raises(UsageError, match="dtype must be one of auto, float32, bfloat16, float16"):
        inference_dtype("float64")


def natively(*dtypes):
    """glassgpt.device.native_matmul for a CPU that multiplies `dtypes` natively."""
    return lambda dtype: dtype in dtypes


@pytest.mark.parametrize("native, windows", [((), torch.float32),  # AVX2: every 16-bit product emulated
                                             ((torch.bfloat16,), torch.bfloat16),  # AVX-512 BF16 (Zen 4)
                                             ((torch.float16,), torch.float16),  # AVX-512 FP16 only
                                             ((torch.bfloat16, torch.float16), torch.bfloat16)])  # AMX
def test_auto_is_float16_to_decode_and_a_native_dtype_for_whole_windows_on_cpu(monkeypatch, native, windows):
    monkeypatch.setattr(device_module, "native_matmul", natively(*native))
    assert inference_dtype("auto", "cpu") == torch.float16
    assert inference_dtype("auto", "cpu", decoding=False) == windows
    for capability, want in (((8, 0), torch.bfloat16), ((7, 0), torch.float16)):  # Ampere on; Volta emulates bf16
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert inference_dtype("auto", "cuda:0") == inference_dtype("auto", "cuda:0", decoding=False) == want
    assert inference_dtype("auto", "mps") == torch.float32


def test_sample_and_load_run_resolve_auto_for_their_work(monkeypatch, char_run, capsys):
    """sample decodes (float16 on a CPU); without the KV cache, and for analyze and eval, every
    step is a whole window: float32 on a CPU without 16-bit instructions."""
    monkeypatch.setattr(device_module, "native_matmul", natively())
    cli.main(["sample", str(char_run), "--max-new-tokens", "3", "--dtype", "auto", "--seed", "0"])
    assert "KV cache, float16]" in capsys.readouterr().err
    cli.main(["sample", str(char_run), "--max-new-tokens", "3", "--dtype", "auto", "--seed", "0", "--no-cache"])
    assert "no KV cache, float32]" in capsys.readouterr().err
    assert load_run(char_run, dtype="auto", decoding=False)[0].wte.weight.dtype == torch.float32
    monkeypatch.setattr(device_module, "native_matmul", natively(torch.bfloat16))
    assert load_run(char_run, dtype="auto", decoding=False)[0].wte.weight.dtype == torch.bfloat16


def test_load_run_casts_in_memory_and_leaves_the_run_untouched(tmp_path):
    run_dir = make_tiny_run(tmp_path / "run")
    before = sha256_of(run_dir / "model.safetensors")
    model, _, _ = load_run(run_dir, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and not model.training
    assert sha256_of(run_dir / "model.safetensors") == before
    save_run(tmp_path / "copy", model, *load_run(run_dir)[1:])  # a loaded model can still be saved
    assert load_run(tmp_path / "copy")[0].wte.weight.dtype == torch.float32
    with pytest.raises(UsageError, match="dtype"):
        load_run(run_dir, dtype="half")


def test_a_model_loaded_for_inference_has_the_fast_layout_and_the_same_logits(tmp_path):
    """`load_run` gives what `prepare_for_inference` does, without a second call; saving the
    loaded model writes the same bytes back, and training keeps its row-major layout."""
    torch.manual_seed(0)
    built = GPT(tiny_config()).eval()
    save_run(tmp_path / "run", built, get_tokenizer("char", text="abc"), RunConfig(built.config, TrainConfig()))
    loaded, _, _ = load_run(tmp_path / "run")
    weight = loaded.lm_head.weight
    assert weight.t().is_contiguous() and not weight.is_contiguous(), "the unembedding is stored column-major"
    assert loaded.wte.weight is weight and not loaded.training
    idx = torch.randint(0, 50, (2, 10))
    torch.testing.assert_close(loaded(idx)[0], built(idx)[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(generate(loaded, idx, 8, temperature=0), generate(built, idx, 8, temperature=0))
    assert prepare_for_inference(loaded).lm_head.weight is weight, "a second call changes nothing"
    save_run(tmp_path / "again", loaded, get_tokenizer("char", text="abc"), RunConfig(built.config, TrainConfig()))
    assert sha256_of(tmp_path / "again" / "model.safetensors") == sha256_of(tmp_path / "run" / "model.safetensors")
    assert load_run(tmp_path / "run", dtype="float16")[0].lm_head.weight.is_contiguous(), "fp16 stays row-major"


# ---------------------------------------------------------------- stop token ids

def test_rows_stop_independently_and_show_nothing_after_their_stop():
    model = GPT(tiny_config()).eval()
    prompts = torch.randint(0, 50, (3, 4))
    free = generate(model, prompts, 12, temperature=0)  # (3, 16) without stops
    stop_id = int(free[0, 4 + 3])  # the 4th new token of row 0
    stopped = generate(model, prompts, 12, temperature=0, stop_ids=[stop_id])
    for row in range(3):
        new = free[row, 4:].tolist()
        cut = new.index(stop_id) + 1 if stop_id in new else len(new)  # up to and including the stop
        got = stopped[row, 4:].tolist()
        assert got[:cut] == new[:cut], "the tokens before the stop are what they were"
        assert all(t == STOPPED for t in got[cut:]), "no garbage after the stop"
        assert without_stopped(stopped[row]) == free[row, :4 + cut].tolist()
    assert stopped.size(1) == 4 + max(len(without_stopped(r)) - 4 for r in stopped), "ends when every row has stopped"


def test_generation_ends_early_when_every_row_stops():
    model = GPT(tiny_config()).eval()
    prompt = torch.randint(0, 50, (1, 4))
    first = int(generate(model, prompt, 1, temperature=0)[0, -1])
    out = generate(model, prompt, 50, temperature=0, stop_ids=[first])
    assert out.tolist() == [prompt[0].tolist() + [first]]


def test_bad_stop_ids_and_vocab_sizes_are_usage_errors():
    model = GPT(tiny_config()).eval()
    prompt = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(UsageError, match="stop token id 50"):
        generate(model, prompt, 3, stop_ids=[50])
    with pytest.raises(UsageError, match="vocab_size"):
        generate(model, prompt, 3, vocab_size=51)


# ---------------------------------------------------------------- stop strings

def test_a_stop_string_split_across_pieces_is_found_and_not_shown():
    assert push_all(StopText(["</s>"]), ["ab", "c<", "/", "s>rest"]) == ("abc", True)
    assert push_all(StopText(["</s>"]), ["a<", "/x", "y"]) == ("a</xy", False), "a false start is shown after all"
    assert push_all(StopText(["END", "\n\n"]), ["one\n", "\ntwo END"]) == ("one", True), "the first stop to occur"


def test_stop_string_after_a_multibyte_character_split_across_tokens():
    for name in ("byte", "gpt2"):
        tokenizer = get_tokenizer(name)
        ids = tokenizer.encode("Grüße 🙂 STOP never shown")
        row = StoppingDecoder(tokenizer, [" STOP"])
        shown = [row.push(i) for i in ids]
        assert "".join(shown) == row.text == "Grüße 🙂" and row.reason == "stop string"
        assert not any("\ufffd" in s for s in shown)
        assert row.finish() == "" and row.reason == "stop string"


def test_stopping_decoder_end_of_text_and_length():
    tokenizer = get_tokenizer("gpt2")
    row = StoppingDecoder(tokenizer, ["zzz"], eot=tokenizer.eot_token)
    ids = tokenizer.encode("Hello world") + [tokenizer.eot_token] + tokenizer.encode(" next document")
    assert "".join(row.push(i) for i in ids) == "Hello world" and row.reason == "end of text"
    row = StoppingDecoder(tokenizer, ["zzz"], eot=tokenizer.eot_token)
    assert "".join(row.push(i) for i in tokenizer.encode("Hello zz")) + row.finish() == "Hello zz"
    assert row.reason == "length"


# ---------------------------------------------------------------- a padded vocabulary, end of text

def rigged_gpt2_run(run_dir, favourite: list[int], vocab_size: int = 50304):
    """A GPT-2-tokenizer run whose logits are largest, by far, for the ids in `favourite`:
    ln_f's output is the same vector b for every input (weight 0, bias b), and those rows
    of the (untied) unembedding are 10 b."""
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=vocab_size, n_embd=8, n_head=2, n_layer=1, block_size=64, tie_weights=False))
    with torch.no_grad():
        model.ln_f.weight.zero_()
        model.ln_f.bias.copy_(torch.linspace(-1, 1, 8))
        model.lm_head.weight[favourite] = 10 * model.ln_f.bias
    save_run(run_dir, model, get_tokenizer("gpt2"), RunConfig(model=model.config, train=TrainConfig()))
    return run_dir


@pytest.fixture(scope="module")
def padded_run(tmp_path_factory):
    """50304 ids (the fineweb-edu-124m preset's), 47 of them padding, and the padding is what the model likes best."""
    return rigged_gpt2_run(tmp_path_factory.mktemp("padded") / "run", favourite=list(range(50257, 50304)))


def test_a_padded_vocabulary_is_never_sampled(padded_run):
    model, tokenizer, _ = load_run(padded_run)
    prompt = torch.tensor([tokenizer.encode("Hello")])
    unmasked = generate(model, prompt, 5, temperature=1.0, vocab_size=model.config.vocab_size)
    assert (unmasked[0, 1:] >= 50257).all(), "the rig: without the mask only padding is drawn"
    out = generate(model, prompt.expand(4, 1), 300, temperature=1.0, vocab_size=tokenizer.vocab_size,
                   generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 301) and int(out.max()) < 50257
    tokenizer.decode(out[0].tolist())


def test_cli_samples_far_past_the_context_from_a_padded_vocabulary(padded_run, capsys):
    """500 tokens, nearly 8 contexts of 64: the rig makes padding the favourite at every step."""
    cli.main(["sample", str(padded_run), "--prompt", "Hi", "--max-new-tokens", "500", "--seed", "1",
              "--temperature", "1.0", "--ignore-eos"])
    captured = capsys.readouterr()
    assert captured.out.startswith("Hi") and "stopped: length · 500 tokens" in captured.err


def test_cli_stops_at_end_of_text_unless_told_to_go_on(tmp_path, capsys):
    run_dir = rigged_gpt2_run(tmp_path / "eot", favourite=[50256], vocab_size=50257)
    cli.main(["sample", str(run_dir), "--prompt", "Hi", "--max-new-tokens", "20", "--temperature", "0"])
    captured = capsys.readouterr()
    assert captured.out == "Hi\n" and "stopped: end of text · 1 tokens" in captured.err
    cli.main(["sample", str(run_dir), "--prompt", "Hi", "--max-new-tokens", "3", "--temperature", "0", "--ignore-eos"])
    captured = capsys.readouterr()
    assert captured.out == "Hi" + "<|endoftext|>" * 3 + "\n" and "stopped: length" in captured.err


def test_analysis_labels_never_name_a_token_that_does_not_exist():
    from glassgpt.analysis import token_labels

    assert token_labels(get_tokenizer("gpt2"), [15496, 50300]) == ["Hello", "<50300?>"]


# ---------------------------------------------------------------- stop strings and --dtype on the command line

@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("stop") / "run", text="abcdefghijklmnopqrstuvwxyz .\n")


def test_cli_stop_string_ends_the_text_before_it(char_run, capsys):
    args = ["sample", str(char_run), "--prompt", "ab", "--max-new-tokens", "40", "--temperature", "0",
            "--dtype", "float32"]
    cli.main(args)
    free = capsys.readouterr().out[len("ab"):-1]  # the 40 new characters
    stop = free[10:13]
    cli.main(args + ["--stop", "never-there", "--stop", stop])
    captured = capsys.readouterr()
    assert captured.out == "ab" + free[:free.index(stop)] + "\n"
    assert "stopped: stop string" in captured.err


@pytest.mark.parametrize("command", ["sample", "analyze", "demo"])
def test_cli_bad_dtype_is_one_line_exit_2(char_run, command):
    assert_clean_error(run_cli(command, str(char_run), "--dtype", "float64"), 2, "--dtype", "float64")


def test_cli_sample_in_each_dtype_says_which(char_run, capsys):
    for dtype in ("float32", "bfloat16", "float16"):
        cli.main(["sample", str(char_run), "--max-new-tokens", "5", "--dtype", dtype, "--seed", "0"])
        assert f"KV cache, {dtype}]" in capsys.readouterr().err


def test_cli_empty_stop_string_and_missing_bench_run_are_usage_errors(char_run, tmp_path):
    assert_clean_error(run_cli("sample", str(char_run), "--stop", ""), 2, "stop string must not be empty")
    assert_clean_error(run_cli("bench", "inference", "--quick", "--run", str(tmp_path / "none")), 2, "does not exist")
