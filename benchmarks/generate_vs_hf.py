"""Greedy generation speed: glassgpt (KV cache, and without it) vs transformers' generate,
on the same randomly initialised weights of GPT-2's shape (124M by default).

    python benchmarks/generate_vs_hf.py [--prompt-len 64] [--new-tokens 256] [--uncached-new-tokens 64]

Writes benchmarks/results/generate_vs_hf-<time>.json with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from glassgpt.bench.machine import machine_with_load
from glassgpt.bench.report import publish
from glassgpt.bench.timing import stopwatch


def timed(fn):
    """(result, wall seconds) of one call."""
    elapsed = stopwatch()
    result = fn()
    return result, elapsed()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layer", type=int, default=12)
    parser.add_argument("--n-head", type=int, default=12)
    parser.add_argument("--n-embd", type=int, default=768)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--uncached-new-tokens", type=int, default=64, help="0 skips the uncached path")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    from glassgpt.inference import generate
    from glassgpt.hf import from_hf

    transformers.utils.logging.set_verbosity_error()
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    hf_model = transformers.GPT2LMHeadModel(hf_config).eval()
    prompt = torch.randint(0, hf_config.vocab_size, (args.batch, args.prompt_len))
    new = args.new_tokens

    @torch.no_grad()
    def run_hf(n):
        out = hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                                min_new_tokens=n, do_sample=False, pad_token_id=hf_config.eos_token_id)
        assert out.shape[1] == args.prompt_len + n
        return out

    results = {}
    models = {f"glassgpt_cached_{a}_{n}": from_hf(hf_model, attn_impl=a, norm=n)
              for a, n in (("sdpa", "torch"), ("manual", "scratch"))}
    for model in models.values():  # warm up every path once
        generate(model, prompt, 2, temperature=0)
    run_hf(2)
    for _ in range(args.repeats):  # interleaved, so a busy machine slows every path alike; best of the repeats
        reference, seconds = timed(lambda: run_hf(new))
        results["transformers_generate"] = max(results.get("transformers_generate", 0.0), new * args.batch / seconds)
        print(f"transformers_generate: {new * args.batch / seconds:.1f} tokens/s", flush=True)
        for key, model in models.items():
            ours, seconds = timed(lambda: generate(model, prompt, new, temperature=0))
            results[key] = max(results.get(key, 0.0), new * args.batch / seconds)
            results[key + "_same_tokens_as_transformers"] = bool((ours == reference).all())
            print(f"{key}: {new * args.batch / seconds:.1f} tokens/s (same tokens: {results[key + '_same_tokens_as_transformers']})", flush=True)
    if args.uncached_new_tokens:
        n = args.uncached_new_tokens
        model = models["glassgpt_cached_sdpa_torch"]
        _, seconds = timed(lambda: generate(model, prompt, n, temperature=0, use_cache=False))
        results[f"glassgpt_uncached_sdpa_torch_{n}_new"] = n * args.batch / seconds
        _, seconds = timed(lambda: generate(model, prompt, n, temperature=0))
        results[f"glassgpt_cached_sdpa_torch_{n}_new"] = n * args.batch / seconds
        print(f"{n} new tokens, uncached: {results[f'glassgpt_uncached_sdpa_torch_{n}_new']:.1f} tokens/s, "
              f"cached: {results[f'glassgpt_cached_sdpa_torch_{n}_new']:.1f} tokens/s", flush=True)

    record = {
        "benchmark": "generate_vs_hf",
        "settings": vars(args) | {"out": str(args.out)},
        "tokens_per_second": {k: v for k, v in results.items() if isinstance(v, float)},
        "checks": {k: v for k, v in results.items() if isinstance(v, bool)},
        "machine": machine_with_load(torch.device("cpu"), load_before),
    }
    publish(record, args.out, "generate_vs_hf")
    return record


if __name__ == "__main__":
    main()
