"""Sampling and the KV cache: filtered distributions computed by hand, cached == uncached,
seeds, batches, streaming text, and bad input through the API and the command line."""

import io
import math
import sys

import pytest
import torch

from glassgpt import cli
from glassgpt.checkpoint import load_run, save_run
from glassgpt.config import RunConfig, TrainConfig
from glassgpt.errors import UsageError
from glassgpt.inference.generate import (MAX_NEW_TOKENS, KVCache, generate, sample_next, sampling_probs, stream_logits,
                               without_stopped)
from glassgpt.inference.text import StreamDecoder, encode_prompt
from glassgpt.model import GPT
from glassgpt.tokenizer import get_tokenizer

from conftest import assert_clean_error, run_cli, tiny_config

# A distribution small enough to filter by hand: logits are the log-probabilities.
PROBS = [0.1, 0.4, 0.3, 0.2]
LOGITS = torch.tensor([PROBS]).log()  # (1, 4)


def assert_probs(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor([expected], dtype=torch.float32), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- filtering, by hand

def test_plain_sampling_keeps_the_distribution():
    assert_probs(sampling_probs(LOGITS), PROBS)


def test_top_k_keeps_the_k_most_likely_and_renormalises():
    assert_probs(sampling_probs(LOGITS, top_k=2), [0, 4 / 7, 3 / 7, 0])  # 0.4 and 0.3 out of 0.7
    assert_probs(sampling_probs(LOGITS, top_k=1), [0, 1, 0, 0])
    assert_probs(sampling_probs(LOGITS, top_k=10), PROBS)  # k beyond the vocabulary keeps everything


@pytest.mark.parametrize("p,expected", [
    (0.6, [0, 4 / 7, 3 / 7, 0]),  # 0.4 < 0.6, 0.4 + 0.3 = 0.7 reaches it
    (0.75, [0, 4 / 9, 3 / 9, 2 / 9]),  # 0.7 < 0.75, 0.9 reaches it
    (0.3, [0, 1, 0, 0]),  # the most likely token alone already passes p
    (0.01, [0, 1, 0, 0]),  # always at least one token
    (0.95, PROBS),  # 0.9 < 0.95: all four are needed
    (1.0, PROBS),
])
def test_top_p_keeps_the_smallest_set_that_reaches_p(p, expected):
    assert_probs(sampling_probs(LOGITS, top_p=p), expected)


def test_temperature_sharpens_and_flattens():
    squared = [q * q for q in PROBS]  # temperature 0.5: p^2, renormalised
    assert_probs(sampling_probs(LOGITS, temperature=0.5), [q / sum(squared) for q in squared])
    rooted = [math.sqrt(q) for q in PROBS]  # temperature 2: sqrt(p), renormalised
    assert_probs(sampling_probs(LOGITS, temperature=2.0), [q / sum(rooted) for q in rooted])


def test_temperature_then_top_k_then_top_p():
    # temperature 0.5 gives (1, 16, 9, 4) / 30; top-k 3 keeps (16, 9, 4) / 29;
    # top-p 0.85 on that: 16/29 = 0.55, 25/29 = 0.86 reaches it -> (16, 9) / 25.
    # (top-p before top-k, or on the un-renormalised 30ths, would keep three tokens: 25/30 = 0.83 < 0.85.)
    assert_probs(sampling_probs(LOGITS, temperature=0.5, top_k=3, top_p=0.85), [0, 16 / 25, 9 / 25, 0])


def test_each_row_is_filtered_on_its_own():
    logits = torch.tensor([PROBS, PROBS[::-1]]).log()  # (2, 4)
    probs = sampling_probs(logits, top_k=2)
    torch.testing.assert_close(probs, torch.tensor([[0, 4 / 7, 3 / 7, 0], [0, 3 / 7, 4 / 7, 0]]), atol=1e-6, rtol=0)


def test_draws_follow_the_filtered_distribution():
    gen = torch.Generator().manual_seed(0)
    draws = sample_next(LOGITS.expand(20_000, 4), top_k=2, generator=gen)[:, 0]  # (20000,)
    counts = torch.bincount(draws, minlength=4) / 20_000
    assert counts[0] == 0 and counts[3] == 0
    assert abs(counts[1].item() - 4 / 7) < 0.02


def test_temperature_zero_is_greedy_whatever_the_filters():
    logits = torch.tensor([[0.1, 2.0, 1.9], [3.0, -1.0, 0.0]])
    assert sample_next(logits, temperature=0, top_k=3, top_p=0.5).tolist() == [[1], [0]]


# ---------------------------------------------------------------- the KV cache

ENCODINGS_AND_IMPLS = [(pos, impl) for pos in ("learned", "rope") for impl in ("manual", "sdpa")]


def tiny_model(**cfg) -> GPT:
    return GPT(tiny_config(**cfg)).eval()


def greedy_steps(model, prompt, n, use_cache):
    steps = list(stream_logits(model, prompt, n, temperature=0, use_cache=use_cache))
    tokens = torch.cat([ids for ids, _ in steps], dim=1)  # (B, n)
    logits = torch.stack([lg for _, lg in steps], dim=1)  # (B, n, V)
    return tokens, logits


@pytest.mark.parametrize("pos_encoding,attn_impl", ENCODINGS_AND_IMPLS)
@pytest.mark.parametrize("prompt_len,new", [(5, 8), (10, 20), (20, 5)], ids=["within-block", "past-block", "long-prompt"])
def test_cached_generation_gives_the_same_tokens_and_logits(pos_encoding, attn_impl, prompt_len, new):
    model = tiny_model(pos_encoding=pos_encoding, attn_impl=attn_impl)  # block_size 16
    prompt = torch.randint(0, 50, (2, prompt_len))
    tokens_c, logits_c = greedy_steps(model, prompt, new, use_cache=True)
    tokens_u, logits_u = greedy_steps(model, prompt, new, use_cache=False)
    assert torch.equal(tokens_c, tokens_u)
    torch.testing.assert_close(logits_c, logits_u, atol=1e-4, rtol=1e-4)


def test_with_the_cache_each_step_runs_only_the_new_token():
    model = tiny_model()
    seen_lengths = []
    model.add_hook("embed", lambda x, hook: seen_lengths.append(x.size(1)))
    generate(model, torch.randint(0, 50, (1, 6)), 5, temperature=0)
    assert seen_lengths == [6, 1, 1, 1, 1]
    seen_lengths.clear()
    generate(model, torch.randint(0, 50, (1, 6)), 5, temperature=0, use_cache=False)
    assert seen_lengths == [6, 7, 8, 9, 10]


def test_kv_cache_refuses_to_overflow():
    cache = KVCache(tiny_config(), batch_size=1, max_len=4)
    k = torch.zeros(1, 2, 3, 8)  # (B, nh, T, hs)
    cache.update(0, k, k)
    cache.advance(3)
    with pytest.raises(ValueError, match="holds 4 positions"):
        cache.update(0, k, k)


def test_sampling_is_reproducible_with_a_seed_and_varies_across_seeds():
    model = tiny_model()
    prompt = torch.randint(0, 50, (1, 4))

    def sample(seed):
        return generate(model, prompt, 30, temperature=1.0, top_p=0.9, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))


def test_a_batch_of_samples_is_generated_together():
    model = tiny_model()
    prompts = torch.randint(0, 50, (3, 5))
    batch = generate(model, prompts, 12, temperature=0)
    assert batch.shape == (3, 17) and torch.equal(batch[:, :5], prompts)
    for row in range(3):  # each row is what generating it alone gives
        assert torch.equal(batch[row:row + 1], generate(model, prompts[row:row + 1], 12, temperature=0))
    same_prompt = prompts[:1].expand(4, 5)
    sampled = generate(model, same_prompt, 12, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert len({tuple(r) for r in sampled.tolist()}) > 1, "rows of one batch draw independently"


def test_generation_runs_in_eval_mode_and_leaves_the_model_in_the_mode_it_found():
    """A model handed over in training mode generates without dropout (as the same weights in
    eval mode do), and is in training mode again afterwards."""
    model = GPT(tiny_config(dropout=0.5)).train()
    twin = GPT(tiny_config(dropout=0.5)).eval()
    twin.load_state_dict(model.state_dict())
    prompt = torch.randint(0, 50, (4, 3))
    for use_cache in (True, False):
        expected = generate(twin, prompt, 12, temperature=0, use_cache=use_cache)
        assert torch.equal(generate(model, prompt, 12, temperature=0, use_cache=use_cache), expected)
        assert model.training


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(temperature=-0.5), "temperature"),
    (dict(top_k=0), "top_k"), (dict(max_new_tokens=MAX_NEW_TOKENS + 1), "capped"),
    (dict(max_new_tokens=-1), "negative"),
])
def test_bad_sampling_settings_raise_usage_errors(kwargs, fragment):
    kwargs = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(UsageError, match=fragment):
        generate(tiny_model(), torch.zeros(1, 2, dtype=torch.long), **kwargs)


def test_an_empty_prompt_is_refused():
    with pytest.raises(UsageError, match="at least one token"):
        generate(tiny_model(), torch.zeros(1, 0, dtype=torch.long), 3)


def test_encode_prompt_starts_from_the_start_token_or_refuses():
    char = get_tokenizer("char", text="abc\n")
    assert encode_prompt(char, "cab") == char.encode("cab")
    assert encode_prompt(char, None) == char.encode("\n")
    with pytest.raises(UsageError, match="no start token"):
        encode_prompt(char, "")
    gpt2 = get_tokenizer("gpt2")
    assert encode_prompt(gpt2, "") == encode_prompt(gpt2, None) == [50256]


# ---------------------------------------------------------------- streaming text

def test_stream_decoder_holds_back_partial_multibyte_characters():
    tokenizer = get_tokenizer("gpt2")
    text = "Grüße 🙂🦜 日本語 ok"
    ids = tokenizer.encode(text)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids), "the text must split characters across tokens"
    decoder = StreamDecoder(tokenizer)
    chunks = [decoder.push([i]) for i in ids] + [decoder.flush()]
    assert "".join(chunks) == text
    assert not any("\ufffd" in c for c in chunks)
    assert sum(1 for c in chunks if c) > len(text.split()), "text comes out as it is made, not all at the end"


def test_stream_decoder_is_exact_for_a_real_replacement_character_and_emits_each_character_once():
    """A text that itself holds U+FFFD streams at once (a "wait while it ends in U+FFFD" rule would
    hold it back for ever), and every character comes out exactly when its last byte arrives."""
    tokenizer = get_tokenizer("gpt2")
    text = "caf\u00e9 \ufffd ok \U0001f642!"
    decoder = StreamDecoder(tokenizer)
    pieces = [decoder.push([i]) for i in tokenizer.encode(text)]
    assert "".join(pieces) + decoder.flush() == text
    ids = tokenizer.encode("a\ufffd")
    decoder = StreamDecoder(tokenizer)
    assert "".join(decoder.push([i]) for i in ids) == "a\ufffd", "a real U+FFFD is shown as soon as it is complete"
    byte_decoder = StreamDecoder(get_tokenizer("byte"))
    emoji = list("\U0001f642".encode("utf-8"))
    assert [byte_decoder.push([b]) for b in emoji] == ["", "", "", "\U0001f642"]


def test_stream_decoder_flushes_bytes_that_never_complete():
    decoder = StreamDecoder(get_tokenizer("byte"))
    assert decoder.push([104, 0xE2, 0x82]) == "h"  # "h" at once; two of the three bytes of "€" wait
    assert decoder.push([0xAC]) == "€"
    assert decoder.push([0xE2]) == ""
    assert decoder.flush() == "\ufffd"


# ---------------------------------------------------------------- the command line

@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    """A run directory holding a random tiny model with a char tokenizer (no training needed)."""
    run_dir = tmp_path_factory.mktemp("gen") / "char-run"
    tokenizer = get_tokenizer("char", text="abcdefghijklmnopqrstuvwxyz ,.:\nABCDEFGHIJKLMNOPQRSTUVWXYZ")
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=tokenizer.vocab_size, pos_encoding="rope", attn_impl="sdpa"))
    save_run(run_dir, model, tokenizer, RunConfig(model=model.config, train=TrainConfig()))
    return run_dir


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("gen") / "gpt2-run"
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=50257, n_embd=8, n_head=2, n_layer=1))
    save_run(run_dir, model, get_tokenizer("gpt2"), RunConfig(model=model.config, train=TrainConfig()))
    return run_dir


def sample_in_process(capsys, *args: str) -> tuple[str, str]:
    """`glassgpt sample ARGS` run by cli.main in this process: (stdout, stderr)."""
    capsys.readouterr()
    cli.main(["sample", *args])
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_cli_sample_prints_what_the_api_generates(gpt2_run):
    r = run_cli("sample", str(gpt2_run), "--prompt", "Hello", "--max-new-tokens", "40", "--seed", "3", "--top-p", "0.9")
    assert r.returncode == 0, r.stderr
    model, tokenizer, _ = load_run(gpt2_run, dtype="float32")  # the CLI's default
    idx = torch.tensor([tokenizer.encode("Hello")])
    out = generate(model, idx, 40, temperature=0.8, top_p=0.9, generator=torch.Generator().manual_seed(3),
                   stop_ids=[tokenizer.eot_token])
    new = [i for i in without_stopped(out[0, 1:]) if i != tokenizer.eot_token]
    assert r.stdout == "Hello" + tokenizer.decode(new) + "\n"
    assert f"{out.size(1) - 1} tokens in" in r.stderr and "tokens/s" in r.stderr and "float32" in r.stderr


def test_cli_sample_streams_token_by_token(char_run, monkeypatch):
    writes = []

    class Recorder(io.StringIO):
        def write(self, text):
            writes.append(text)
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", Recorder())
    cli.main(["sample", str(char_run), "--prompt", "ab", "--max-new-tokens", "25", "--seed", "1"])
    token_writes = [w for w in writes if w]
    assert len(token_writes) >= 25, "each character is written as soon as it is sampled"
    assert len("".join(writes)) == 2 + 25 + 1  # prompt, new characters, final newline


def test_cli_no_cache_gives_the_same_text(char_run, capsys):
    args = [str(char_run), "--prompt", "abc", "--max-new-tokens", "30", "--seed", "5"]  # 30 > block_size 16
    cached, _ = sample_in_process(capsys, *args)
    uncached, err = sample_in_process(capsys, *args, "--no-cache")
    assert cached == uncached and len(cached) == len("abc") + 30 + 1
    assert "no KV cache" in err


def test_cli_num_samples_prints_each_sample_of_one_batch(char_run, capsys):
    out, err = sample_in_process(capsys, str(char_run), "--prompt", "To", "--max-new-tokens", "20",
                                 "--num-samples", "3", "--seed", "2")
    blocks = out.split("--- sample ")[1:]
    assert [b.split(" ")[0] for b in blocks] == ["1", "2", "3"]
    assert all(b.split(" ---")[0].endswith("(stopped: length)") for b in blocks)
    texts = [b.split("---\n", 1)[1][:-1] for b in blocks]  # each ends in the newline printed after it
    assert all(t.startswith("To") and len(t) == 22 for t in texts)
    assert len(set(texts)) > 1, "each sample draws its own tokens"
    assert "60 tokens in" in err and "3 sample(s) as one batch" in err


@pytest.mark.parametrize("args,fragment", [
    (["--top-p", "0"], "top_p"),
    (["--max-new-tokens", str(MAX_NEW_TOKENS + 1)], "capped"),
    (["--prompt", ""], "no start token"),
    (["--seed", str(2**70)], "seed"),
])  # --temperature -1, --top-k 0 and --top-p 1.5 are in commands/test_cli.py
def test_cli_bad_sampling_input_is_one_line_exit_2(char_run, args, fragment):
    assert_clean_error(run_cli("sample", str(char_run), *args), 2, fragment)
