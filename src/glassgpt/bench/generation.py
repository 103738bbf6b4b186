"""Suites about producing tokens and about the reference implementation:
kvcache (glassgpt.generate with use_cache False vs True) and transformers
(Hugging Face GPT-2 vs glassgpt, same shapes, same weights: a train step and
greedy generation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glassgpt.bench.report import Recorder, Settings
from glassgpt.bench.variants import TINY, TRAIN
from glassgpt.bench.workloads import build_model, make_train_step, model_config, random_batch
from glassgpt.generate import generate

GREEDY = "greedy generation (temperature 0)"


def _prompt(vocab_size: int, length: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab_size, (1, length), generator=g).to(device)


def kvcache(rec: Recorder, s: Settings) -> None:
    """The whole context recomputed at every step (off) against the hand-written KV
    cache (on), which runs only the new token after the prompt. On CPU the gpt2-shape
    run makes fewer new tokens: without the cache each step costs a full forward."""
    cases = s.choose(
        quick=[("tiny", TINY, 8, 24, 3)],
        cpu=[("shakespeare-char", {}, 64, 256, 2), ("gpt2", {}, 64, 48, 2)],
        cuda=[("shakespeare-char", {}, 64, 256, 5), ("gpt2", {}, 64, 256, 5)],
    )
    for name, overrides, prompt_len, new, repeats in cases:
        cfg = model_config("cpu-baby" if name == "tiny" else name, **overrides)
        model = build_model(cfg, s.device).eval()
        idx = _prompt(cfg.vocab_size, prompt_len, s.device)
        outputs = {}

        def run(use_cache: bool, n: int = new):
            outputs[use_cache] = generate(model, idx, n, temperature=0, use_cache=use_cache)

        run(False, 2), run(True, 2)  # short warm-up instead of a full one
        shape = {"model": name, "prompt": prompt_len, "new": new, "block": cfg.block_size}
        rec.compare(f"{name} kv cache: generate", {"no_cache": lambda: run(False), "cache": lambda: run(True)},
                    workload=GREEDY, shape=shape, repeats=repeats, warmup=0, inner=1, tokens_per_call=new)
        same = bool(torch.equal(outputs[False], outputs[True]))  # the last timed calls' tokens
        rec.figure(f"{name} kv cache: same tokens with and without", same, "bool", **shape)


def _glassgpt_loss(model, x, y):
    return model(x, y)[1]


def _transformers_loss(model, x, y):
    """The same loss as glassgpt's: cross-entropy of every position against y, no internal shift."""
    logits = model(input_ids=x).logits  # (B, T, V)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-1)


def transformers(rec: Recorder, s: Settings) -> None:
    """Hugging Face `GPT2LMHeadModel` (sdpa attention) against glassgpt's fast path
    (sdpa, nn.LayerNorm) holding the same weights: a train step through the same
    optimizer code, and greedy generation with each library's own KV cache."""
    try:
        import transformers as hf_lib  # noqa: F401

        from glassgpt.hf import to_hf
    except ImportError:
        rec.skip("glassgpt vs transformers", "transformers is not installed: pip install 'glassgpt[bench]'")
        return
    cases = s.choose(
        quick=[("tiny", TINY, 2, 32, 8, 16, 3)],
        cpu=[("shakespeare-char", {}, 4, 256, 64, 192, 3), ("gpt2", {}, 1, 128, 64, 128, 3)],
        cuda=[("shakespeare-char", {}, 64, 256, 64, 192, 5), ("gpt2", {}, 8, 1024, 64, 256, 5)],
    )
    for name, overrides, batch, seq, prompt_len, new, repeats in cases:
        fast = dict(overrides, attn_impl="sdpa", norm="torch", pos_encoding="learned", bias=True)
        cfg = model_config("cpu-baby" if name == "tiny" else name, **fast)
        model = build_model(cfg, s.device)
        hf = to_hf(model).to(s.device)
        shape = {"model": name, "B": batch, "T": seq}

        idx = _prompt(cfg.vocab_size, prompt_len, s.device)
        with torch.no_grad():
            diff = (model.eval()(idx)[0] - hf(input_ids=idx).logits).abs().max().item()
        rec.figure(f"{name} vs transformers: max |logit difference|", diff, "logit", prompt=prompt_len)

        model.train(), hf.train()
        x, y = random_batch(cfg.vocab_size, batch, seq, s.device)
        step_hf = make_train_step(hf, s.device, loss_fn=_transformers_loss)
        step_gg = make_train_step(model, s.device, loss_fn=_glassgpt_loss)
        rec.compare(f"{name} vs transformers: train step",
                    {"transformers": lambda: step_hf(x, y), "glassgpt": lambda: step_gg(x, y)},
                    workload=TRAIN, shape=shape, repeats=repeats, tokens_per_call=batch * seq)

        model.eval(), hf.eval()
        hf.load_state_dict(to_hf(model).state_dict())  # same weights again after the train steps
        mask = torch.ones_like(idx)

        def run_hf(n=new):
            return hf.generate(idx, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                               use_cache=True, pad_token_id=0, eos_token_id=None)

        def run_gg(n=new):
            return generate(model, idx, n, temperature=0, use_cache=True)

        run_hf(2), run_gg(2)  # short warm-up
        gen_shape = {"model": name, "prompt": prompt_len, "new": new}
        rec.compare(f"{name} vs transformers: generate", {"transformers": run_hf, "glassgpt": run_gg},
                    workload=GREEDY + ", KV cache on", shape=gen_shape, repeats=repeats, warmup=0, inner=1,
                    tokens_per_call=new)
        agree = (run_hf()[0, prompt_len:] == run_gg()[0, prompt_len:]).float().mean().item()
        rec.figure(f"{name} vs transformers: greedy tokens that agree", agree, "fraction", **gen_shape)
