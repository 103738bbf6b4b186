"""`glassgpt <command>`: prepare data, train, sample.

Every user error ends in one line on stderr and exit status 2 (usage) or 1
(runtime); a traceback means a bug in glassgpt.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

from glassgpt.errors import GlassGPTError, UsageError

MAX_NEW_TOKENS = 100_000


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not the usage text plus the error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None


def float_arg(text: str) -> float:
    value = _number(text, float)
    if value != value:
        raise argparse.ArgumentTypeError("nan is not a number")
    return value


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="glassgpt", description="A GPT you can train fast and see through.")
    from glassgpt import __version__

    parser.add_argument("--version", action="version", version=f"glassgpt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser, metavar="COMMAND")

    p = sub.add_parser("prepare", help="download and tokenize a dataset")
    p.add_argument("dataset", help="shakespeare-char, shakespeare, ...")
    p.add_argument("--max-tokens", type=positive_int, default=None, help="cap on tokens (streamed datasets)")
    p.add_argument("--force", action="store_true", help="prepare again even if already prepared")

    p = sub.add_parser("train", help="train a model into a run directory")
    p.add_argument("config", metavar="PRESET_OR_TOML", help="a preset name (cpu-baby, gpt2, ...) or a .toml file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override any model or train setting")
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<preset>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")

    p = sub.add_parser("sample", help="generate text from a trained run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--prompt", default=None, help="text to continue (default: a newline or <|endoftext|>)")
    p.add_argument("--max-new-tokens", type=non_negative_int, default=500)
    p.add_argument("--temperature", type=float_arg, default=0.8, help="0 is greedy")
    p.add_argument("--top-k", type=positive_int, default=None)
    p.add_argument("--top-p", type=float_arg, default=None, help="nucleus sampling, in (0, 1]")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num-samples", type=positive_int, default=1, help="samples drawn together as one batch")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context at every step")
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("bench", help="benchmark the design's trade-offs side by side")
    p.add_argument("what", nargs="?", default="all", metavar="WHAT",
                   help="all, attention, layernorm, positions, hooks, precision, compile, kvcache, transformers, "
                        "scaling, mfu or train (default all)")
    p.add_argument("--quick", action="store_true", help="tiny shapes and few repeats (seconds, not minutes)")
    p.add_argument("--out", type=Path, default=Path("benchmarks") / "results", help="folder for the JSON (and PNG)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (inductor, eager, aot_eager)")
    p.add_argument("--note", default="", help="free text stored in the JSON settings, e.g. 'machine was shared'")
    return parser


# ---------------------------------------------------------------- commands

def cmd_prepare(args) -> None:
    from glassgpt.data import prepare

    path = prepare(args.dataset, max_tokens=args.max_tokens, force=args.force)
    print(f"{args.dataset} is ready in {path}")


def cmd_train(args) -> None:
    from glassgpt.config import load_run_config
    from glassgpt.train import train

    run_config = load_run_config(args.config, args.overrides)
    if args.resume and args.out is None:
        raise UsageError("--resume needs --out RUN_DIR, the run to continue")
    out = args.out or Path("runs") / f"{Path(args.config).stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    train(run_config, out, resume=args.resume)
    print(f"run saved in {out}; sample it with: glassgpt sample {out}")


def default_prompt(tokenizer) -> list[int]:
    if tokenizer.eot_token is not None:
        return [tokenizer.eot_token]
    try:
        return tokenizer.encode("\n")
    except UsageError:
        raise UsageError("this tokenizer has no start token and no newline: give a --prompt") from None


def cmd_sample(args) -> None:
    import torch

    from glassgpt.checkpoint import load_run
    from glassgpt.generate import check_sampling_args, stream
    from glassgpt.train import resolve_device

    check_sampling_args(args.temperature, args.top_k, args.top_p, args.max_new_tokens)
    if args.max_new_tokens > MAX_NEW_TOKENS:
        raise UsageError(f"--max-new-tokens is capped at {MAX_NEW_TOKENS}, got {args.max_new_tokens}")
    device = resolve_device(args.device)
    model, tokenizer, _ = load_run(args.run_dir, device)
    if args.prompt is None:
        prompt_ids = default_prompt(tokenizer)
    elif args.prompt == "":
        raise UsageError("--prompt is empty: give some text, or leave --prompt out for the default start")
    else:
        prompt_ids = tokenizer.encode(args.prompt)
    generator = torch.Generator(device=device)
    generator.manual_seed(args.seed if args.seed is not None else int(time.time_ns() % 2**31))
    idx = torch.tensor([prompt_ids] * args.num_samples, dtype=torch.long, device=device)

    out = sys.stdout
    new_tokens: list[list[int]] = [[] for _ in range(args.num_samples)]
    printed = 0  # characters of the first sample's new text already on the terminal
    if args.num_samples == 1:
        out.write(args.prompt or "")
    start = time.perf_counter()
    for next_ids in stream(model, idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                           top_p=args.top_p, use_cache=not args.no_cache, generator=generator):
        for row, token in enumerate(next_ids[:, 0].tolist()):
            new_tokens[row].append(token)
        if args.num_samples == 1:
            text = tokenizer.decode(new_tokens[0])
            if not text.endswith("\ufffd"):  # else wait for the rest of a multi-byte character
                out.write(text[printed:])
                out.flush()
                printed = len(text)
    elapsed = time.perf_counter() - start
    if args.num_samples == 1:
        out.write(tokenizer.decode(new_tokens[0])[printed:] + "\n")
    else:
        for row, ids in enumerate(new_tokens):
            out.write(f"--- sample {row + 1} ---\n{args.prompt or ''}{tokenizer.decode(ids)}\n")
    count = args.max_new_tokens * args.num_samples
    print(f"[{count} tokens in {elapsed:.2f}s: {count / max(elapsed, 1e-9):,.0f} tokens/s]", file=sys.stderr)


def cmd_bench(args) -> None:
    from glassgpt.bench import format_table, run

    path, result = run(args.what, quick=args.quick, out_dir=args.out, device=args.device, threads=args.threads,
                       compile_backend=args.compile_backend, notes=args.note,
                       log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(result))
    print(f"results written to {path}")


COMMANDS = {"prepare": cmd_prepare, "train": cmd_train, "sample": cmd_sample, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":  # key=value overrides may come after --out
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        COMMANDS[args.command](args)
    except GlassGPTError as e:
        _fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except OSError as e:
        _fail(str(e), 1)


def _fail(message: str, code: int) -> None:
    print(f"glassgpt: error: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
