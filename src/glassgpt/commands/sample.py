"""`glassgpt sample RUN_DIR`: generate text from a trained run, streamed as it is made."""

from __future__ import annotations

import sys
import time

from glassgpt.commands.options import (add_device, add_dtype, add_run_dir, capped_int, float_arg, non_negative_int,
                                       positive_int, seed_int)

HELP = "generate text from a trained run"
MAX_SAMPLES = 1024  # --num-samples: rows of one batch


def add_arguments(parser) -> None:
    add_run_dir(parser)
    parser.add_argument("--prompt", default=None, help="text to continue (default: a newline or <|endoftext|>)")
    parser.add_argument("--max-new-tokens", type=non_negative_int, default=500, help="tokens to generate")
    parser.add_argument("--temperature", type=float_arg, default=0.8, help="0 is greedy")
    parser.add_argument("--top-k", type=positive_int, default=None, help="sample from the k most likely tokens only")
    parser.add_argument("--top-p", type=float_arg, default=None, help="nucleus sampling, in (0, 1]")
    parser.add_argument("--seed", type=seed_int, default=None, help="default: from the clock")
    parser.add_argument("--num-samples", type=capped_int(MAX_SAMPLES), default=1,
                        help="samples drawn together as one batch, printed when done")
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole context at every step")
    add_device(parser)
    add_dtype(parser)
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT",
                        help="stop when the text contains TEXT (not printed); repeatable")
    parser.add_argument("--ignore-eos", action="store_true", help="go on past the tokenizer's end-of-text token")


def run(args) -> None:
    import torch

    from glassgpt.checkpoint import load_run
    from glassgpt.device import resolve_device
    from glassgpt.inference.generate import check_sampling_args, stream
    from glassgpt.inference.text import StoppingDecoder, encode_prompt, prompt_as_trained
    from glassgpt.limits import check_fits, inference_bytes

    check_sampling_args(args.temperature, args.top_k, args.top_p, args.max_new_tokens)
    device = resolve_device(args.device)
    model, tokenizer, run_config = load_run(args.run_dir, device, dtype=args.dtype,  # in the fast layout
                                            decoding=not args.no_cache)  # without the cache every step is a whole window
    prompt_ids = prompt_as_trained(encode_prompt(tokenizer, args.prompt), tokenizer, run_config.train.bos)
    check_fits(inference_bytes(model.config, args.num_samples, len(prompt_ids) + args.max_new_tokens), device,
               f"sampling {args.num_samples} rows at once", "ask for fewer --num-samples or --max-new-tokens")
    generator = torch.Generator(device=device)
    generator.manual_seed(args.seed if args.seed is not None else int(time.time_ns() % 2**31))
    idx = torch.tensor([prompt_ids] * args.num_samples, dtype=torch.long, device=device)  # (N, T)
    eot = None if args.ignore_eos else tokenizer.eot_token  # char and byte tokenizers have none
    rows = [StoppingDecoder(tokenizer, args.stop, eot) for _ in range(args.num_samples)]

    out = sys.stdout
    live = args.num_samples == 1  # a single sample is printed as it is made, a batch when done
    if live:
        out.write(args.prompt or "")
        out.flush()
    count = 0
    start = time.perf_counter()
    for next_ids in stream(model, idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                           top_p=args.top_p, use_cache=not args.no_cache, generator=generator,
                           stop_ids=[] if eot is None else [eot], vocab_size=tokenizer.vocab_size):
        for row, token in zip(rows, next_ids[:, 0].tolist()):
            count += row.reason is None and token >= 0
            shown = row.push(token)
            if live:
                out.write(shown)
                out.flush()
        if all(row.reason for row in rows):
            break  # every row has stopped (stop strings are found here, not in the generator)
    elapsed = time.perf_counter() - start
    rests = [row.finish() for row in rows]
    if live:
        out.write(rests[0] + "\n")
    else:
        for i, row in enumerate(rows):
            out.write(f"--- sample {i + 1} (stopped: {row.reason}) ---\n{args.prompt or ''}{row.text}\n")
    out.flush()
    reasons = [row.reason for row in rows]
    why = ", ".join(f"{reasons.count(r)} at {r}" if not live else r for r in dict.fromkeys(reasons))
    print(f"[stopped: {why} · {count} tokens in {elapsed:.2f}s: {count / max(elapsed, 1e-9):,.0f} tokens/s, "
          f"{args.num_samples} sample(s) as one batch, {'no ' if args.no_cache else ''}KV cache, "
          f"{str(next(model.parameters()).dtype).removeprefix('torch.')}]", file=sys.stderr)
