"""`glassgpt <command>`: prepare data, train, sample, analyze, serve the demo,
convert GPT-2 weights.

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

MAX_ANALYSIS_WINDOWS = 1024
MAX_SAMPLES = 1024  # sample --num-samples: rows of one batch
MAX_EVAL_BATCH = 4096  # eval --batch-size
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")  # glassgpt.precision.DTYPE_CHOICES, without importing torch
DTYPE_HELP = "weights cast for inference (the run is untouched); auto: float16 on CPU, bfloat16 on CUDA"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not the usage text plus the error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def capped_int(cap: int):
    """An argparse type: a whole number from 1 to `cap`."""
    def parse(text: str) -> int:
        value = positive_int(text)
        if value > cap:
            raise argparse.ArgumentTypeError(f"is capped at {cap:,}, got {value:,}")
        return value
    return parse


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


def port_number(text: str) -> int:
    value = _number(text, int)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port between 1 and 65535, got {value}")
    return value


def seed_int(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**63 - 1, got {value}")
    return value


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

    p = sub.add_parser("prepare", help="download and tokenize a dataset, or your own text",
                       description="glassgpt prepare NAME (a built-in dataset) | prepare text PATH... --name NAME "
                                   "(files and folders of your own text) | prepare hf DATASET --name NAME "
                                   "--max-tokens N (a Hugging Face dataset) | prepare --list")
    p.add_argument("dataset", nargs="?", default=None,
                   help="shakespeare-char, shakespeare, enwik8, fineweb-edu, repeated-random; or text, hf")
    p.add_argument("paths", nargs="*", metavar="PATH", help="text: files and folders; hf: the dataset's name or folder")
    p.add_argument("--list", action="store_true", help="list the built-in and your prepared datasets")
    p.add_argument("--name", default=None, help="text, hf: the name of your dataset (train ... dataset=NAME)")
    p.add_argument("--tokenizer", default=None, metavar="char|byte|gpt2|bpe:N",
                   help="text, hf: the tokenizer; bpe:N trains a byte-level BPE of N tokens (default bpe:4096)")
    p.add_argument("--val-fraction", type=float_arg, default=None, help="text, hf: documents kept for validation (0.1)")
    p.add_argument("--text-column", default=None, help="jsonl, parquet, hf: the column holding the text (text)")
    p.add_argument("--glob", default=None, help="text: only files matching this pattern inside folders (e.g. '*.md')")
    p.add_argument("--errors", choices=("strict", "replace"), default=None,
                   help="text: bytes that are not UTF-8 are refused (strict, the default) or read as U+FFFD")
    p.add_argument("--config", default=None, help="hf: the dataset's configuration")
    p.add_argument("--split", default=None, help="hf: the dataset's split (train)")
    p.add_argument("--max-tokens", type=positive_int, default=None,
                   help="cap on tokens (streamed datasets; needed by hf)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="tokenizer processes for streamed datasets (default: one per CPU)")
    p.add_argument("--force", action="store_true", help="prepare again even if already prepared")

    sub.add_parser("datasets", help="list the built-in and your prepared datasets (as prepare --list)")

    p = sub.add_parser("train", help="train a model into a run directory")
    p.add_argument("config", metavar="PRESET_OR_TOML", nargs="?", default=None,
                   help="a preset name (cpu-baby, gpt2, ...) or a .toml file; with --resume, the run's own by default")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override any model or train setting")
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<preset>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")

    p = sub.add_parser("plan", help="memory per GPU of a training config, and the GPUs it fits",
                       description="Bytes per GPU of the weights, gradients, optimizer state, working copies and "
                                   "activations of training a config at its batch_size, on N GPUs under ddp or "
                                   "fsdp, and which GPU memory sizes hold it. Computed from the config; nothing "
                                   "is allocated.")
    p.add_argument("config", metavar="PRESET_OR_TOML", help="a preset name (gpt2, ...) or a .toml file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override any model or train setting")
    p.add_argument("--gpus", type=capped_int(1 << 16), default=1, help="GPUs (ranks) the run is spread over")
    p.add_argument("--parallel", choices=("ddp", "fsdp"), default=None, help="default: the config's parallel")
    p.add_argument("--activation-checkpointing", action="store_true", default=None,
                   help="recompute each block in the backward pass (default: the config's)")

    p = sub.add_parser("sample", help="generate text from a trained run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--prompt", default=None, help="text to continue (default: a newline or <|endoftext|>)")
    p.add_argument("--max-new-tokens", type=non_negative_int, default=500)
    p.add_argument("--temperature", type=float_arg, default=0.8, help="0 is greedy")
    p.add_argument("--top-k", type=positive_int, default=None)
    p.add_argument("--top-p", type=float_arg, default=None, help="nucleus sampling, in (0, 1]")
    p.add_argument("--seed", type=seed_int, default=None)
    p.add_argument("--num-samples", type=capped_int(MAX_SAMPLES), default=1, help="samples drawn together as one batch, printed when done")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context at every step")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help=DTYPE_HELP)
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when the text contains TEXT (not printed); repeatable")
    p.add_argument("--ignore-eos", action="store_true", help="go on past the tokenizer's end-of-text token")

    p = sub.add_parser("analyze", help="write a report of what a trained run learned")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--prompt", default=None, help="text whose attention is drawn (default: from the validation split)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default RUN_DIR/analysis)")
    p.add_argument("--windows", type=positive_int, default=8, help="validation windows to measure on")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the random tokens for the induction scores")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32",
                   help="weights cast for the analysis (the run is untouched); auto: float16 on CPU, bfloat16 on CUDA")

    p = sub.add_parser("eval", help="evaluate a run: loss on a split (sliding windows) or HellaSwag",
                       description="Loss on a prepared split, in nats, perplexity and bits per byte or character "
                                   "where one token is one; --stride below --context gives the sliding-window "
                                   "figure papers quote. --task hellaswag scores HellaSwag's validation set.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--dataset", default=None, help="a prepared dataset with the run's tokenizer (default: the run's own)")
    p.add_argument("--context", type=positive_int, default=None, help="tokens per window (default: block_size)")
    p.add_argument("--stride", type=positive_int, default=None,
                   help="tokens between windows (default: the context, non-overlapping windows)")
    p.add_argument("--max-tokens", type=positive_int, default=None, help="score only the first N tokens of the split")
    p.add_argument("--task", choices=("loss", "hellaswag"), default="loss")
    p.add_argument("--limit", type=positive_int, default=None, help="HellaSwag: the first N items only")
    p.add_argument("--batch-size", type=capped_int(MAX_EVAL_BATCH), default=8, help="windows per forward pass")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32",
                   help="weights cast for the evaluation (the run is untouched); auto: float16 on CPU, bfloat16 on CUDA")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--json", action="store_true", help="print one JSON line instead")
    p.add_argument("--append-metrics", action="store_true",
                   help="also append the result to RUN_DIR/metrics.jsonl as a row of kind eval_task")

    p = sub.add_parser("compare", help="runs side by side: curves, config differences, final figures",
                       description="Write one page (curves of train and val loss against step, tokens and wall "
                                   "time; the config keys that differ; final figures) and print the table.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")
    p.add_argument("--out", type=Path, default=Path("compare.html"), help="the page to write (default compare.html)")

    p = sub.add_parser("demo", help="serve the web demo (needs glassgpt[demo])")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    p.add_argument("--port", type=port_number, default=7860)
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help=DTYPE_HELP)

    p = sub.add_parser("convert-hf", help="turn a saved transformers GPT-2 into a run directory",
                       description="Convert a folder written by transformers' GPT2LMHeadModel.save_pretrained "
                                   "into a glassgpt run directory. For OpenAI's GPT-2, once with internet: "
                                   "GPT2LMHeadModel.from_pretrained('gpt2').save_pretrained('gpt2-hf'), then "
                                   "glassgpt convert-hf gpt2-hf --out runs/gpt2.")
    p.add_argument("hf_dir", type=Path, metavar="HF_DIR", help="a folder written by GPT2LMHeadModel.save_pretrained")
    p.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="the run directory to create")

    p = sub.add_parser("sae", help="train a sparse autoencoder on a hook point of a run, evaluate it, page its features",
                       description="Streams the hook's activations on the run's training split (nothing stored but "
                                   "one shuffled chunk), trains a TopK SAE, evaluates it on the validation split "
                                   "(L0, FVU, CE loss recovered) and writes RUN_DIR/sae/HOOK/features.html.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--hook", required=True, help="a hook point of shape (B, T, C) or per head, e.g. blocks.1.resid_post")
    p.add_argument("--head", type=non_negative_int, default=None, help="one head of a per-head hook (attn.q, k, v, z)")
    p.add_argument("--width", type=capped_int(1 << 20), default=None, help="features (default 8 x the hook's width)")
    p.add_argument("--k", type=positive_int, default=32, help="active features per token (TopK)")
    p.add_argument("--batch-topk", action="store_true", help="BatchTopK: k per token on average over a batch")
    p.add_argument("--tokens", type=capped_int(10**10), default=2_000_000, help="training tokens")
    p.add_argument("--batch-size", type=capped_int(1 << 16), default=1024, help="tokens per step")
    p.add_argument("--lr", type=float_arg, default=1e-3)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None, help="folder (default RUN_DIR/sae/HOOK)")
    p.add_argument("--resume", action="store_true", help="continue the SAE in --out (or the default folder)")

    p = sub.add_parser("bench", help="benchmark the design's trade-offs side by side")
    p.add_argument("what", nargs="?", default="all", metavar="WHAT",
                   help="all, attention, layernorm, positions, hooks, precision, compile, kvcache, transformers, "
                        "inference, scaling, mfu or train (default all)")
    p.add_argument("--quick", action="store_true", help="tiny shapes and few repeats (seconds, not minutes)")
    p.add_argument("--out", type=Path, default=Path("benchmarks") / "results", help="folder for the JSON (and PNG)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (inductor, eager, aot_eager)")
    p.add_argument("--note", default="", help="free text stored in the JSON settings, e.g. 'machine was shared'")
    p.add_argument("--run", type=Path, default=None, metavar="RUN_DIR",
                   help="a trained run: the inference suite also measures half precision's agreement on it")
    return parser


# ---------------------------------------------------------------- commands

USER_OPTIONS = ("name", "tokenizer", "val_fraction", "text_column", "glob", "errors", "config", "split")


def cmd_prepare(args) -> None:
    from glassgpt.data import check_dataset_name, dataset_path, prepare
    from glassgpt.data.prepare import is_current

    if args.list:
        given = [n for n in ("dataset", *USER_OPTIONS) if getattr(args, n) is not None]
        if given or args.paths:
            raise UsageError("--list takes no dataset or other options: glassgpt prepare --list")
        return cmd_datasets(args)
    if args.dataset is None:
        raise UsageError("prepare needs a dataset: a built-in NAME, text PATH... --name NAME, "
                         "or hf DATASET --name NAME --max-tokens N (glassgpt prepare --list shows them)")
    if args.dataset in ("text", "hf"):
        return prepare_own(args)
    given = [f"--{n.replace('_', '-')}" for n in USER_OPTIONS if getattr(args, n) is not None]
    if given or args.paths:
        what = ", ".join(given) or " ".join(args.paths)
        raise UsageError(f"{what}: only for your own data (prepare text PATH... --name NAME); "
                         f"{args.dataset} is prepared as it is")
    spec = check_dataset_name(args.dataset)
    already = is_current(dataset_path(args.dataset), spec) and not args.force
    path = prepare(args.dataset, max_tokens=args.max_tokens, force=args.force, workers=args.workers)
    note = " (already prepared: nothing to do; --force prepares it again)" if already else ""
    print(f"{args.dataset} is ready in {path}{note}")


def prepare_own(args) -> None:
    """`prepare text PATH... --name NAME` and `prepare hf DATASET --name NAME --max-tokens N`."""
    import os

    from glassgpt.data import TextRequest, describe_dataset, prepare_user

    kind = args.dataset
    if args.name is None:
        raise UsageError(f"prepare {kind} needs --name NAME: what you will train on (train ... dataset=NAME)")
    if args.workers is not None:
        raise UsageError(f"--workers applies to fineweb-edu, not to prepare {kind}")
    defaults = TextRequest(paths=[])
    common = dict(tokenizer=args.tokenizer or defaults.tokenizer, text_column=args.text_column or defaults.text_column,
                  val_fraction=defaults.val_fraction if args.val_fraction is None else args.val_fraction)
    if kind == "text":
        wrong = [f"--{n.replace('_', '-')}" for n in ("config", "split", "max_tokens") if getattr(args, n) is not None]
        if wrong:
            raise UsageError(f"{', '.join(wrong)}: for prepare hf, not prepare text")
        if not args.paths:
            raise UsageError("prepare text needs at least one PATH: a file or a folder of text")
        req = TextRequest(paths=[os.path.abspath(os.path.expanduser(p)) for p in args.paths], glob=args.glob,
                          errors=args.errors or defaults.errors, **common)
    else:
        wrong = [f"--{n}" for n in ("glob", "errors") if getattr(args, n) is not None]
        if wrong:
            raise UsageError(f"{', '.join(wrong)}: for prepare text, not prepare hf")
        if len(args.paths) != 1:
            raise UsageError("prepare hf needs exactly one DATASET: a Hugging Face dataset name or a local folder")
        if args.max_tokens is None:
            raise UsageError("prepare hf needs --max-tokens N: how much of the dataset to stream")
        dataset = args.paths[0]
        if os.path.exists(dataset):
            dataset = os.path.abspath(dataset)
        req = TextRequest(paths=[], max_tokens=args.max_tokens, **common,
                          hf={"dataset": dataset, "config": args.config, "split": args.split or "train"})
    path = prepare_user(args.name, req, force=args.force)
    print(f"{args.name} is ready in {path}: {describe_dataset(path)}; train on it with: "
          f"glassgpt train cpu-baby dataset={args.name}")


def cmd_datasets(args) -> None:
    from glassgpt.data import list_datasets

    rows = list_datasets()
    widths = [max(len(str(r[k])) for r in rows + [dict(name="dataset", tokenizer="tokenizer", tokens="tokens")])
              for k in ("name", "tokenizer", "tokens")]
    print(f"{'dataset':<{widths[0]}}  {'tokenizer':<{widths[1]}}  {'tokens':>{widths[2]}}  about")
    for r in rows:
        print(f"{r['name']:<{widths[0]}}  {r['tokenizer']:<{widths[1]}}  {r['tokens']:>{widths[2]}}  {r['about']}")


def cmd_train(args) -> None:
    from glassgpt.config import load_run_config
    from glassgpt.training.loop import train

    if args.config is not None and "=" in args.config:  # no preset given: it is the first override
        args.config, args.overrides = None, [args.config, *args.overrides]
    if args.resume and args.out is None:
        raise UsageError("--resume needs --out RUN_DIR, the run to continue")
    if args.config is None and not args.resume:
        raise UsageError("train needs a preset or TOML file, e.g. glassgpt train cpu-baby")
    if args.config is None:  # resume with the run's own settings
        from glassgpt.checkpoint import check_run_dir, read_config
        from glassgpt.config import apply_overrides

        run_config = apply_overrides(read_config(check_run_dir(args.out))[0], args.overrides)
    else:
        run_config = load_run_config(args.config, args.overrides)
    run_config = _vocab_from_dataset(run_config, args.overrides)
    out = args.out or Path("runs") / f"{Path(args.config).stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    train(run_config, out, resume=args.resume)
    from glassgpt.training.runtime import Dist

    if Dist.from_env().is_main:  # under torchrun, one line, not one per rank
        print(f"run saved in {out}; sample it with: glassgpt sample {out}")


def _vocab_from_dataset(run_config, overrides: list[str]):
    """`train PRESET dataset=NAME` without `vocab_size=`: the preset's vocab_size was for its own
    dataset, so the model gets the vocabulary of NAME's tokenizer instead (as it does when a
    TOML file names a dataset and no vocab_size)."""
    keys = {item.partition("=")[0].strip() for item in overrides}
    file_sets_vocab = run_config.given_model_keys is None or "vocab_size" in run_config.given_model_keys
    if "vocab_size" in keys or run_config.train.init_from or (file_sets_vocab and "dataset" not in keys):
        return run_config
    from glassgpt.config import apply_overrides
    from glassgpt.data import dataset_vocab_size

    vocab_size = dataset_vocab_size(run_config.train.dataset)
    if vocab_size is None or vocab_size == run_config.model.vocab_size:
        return run_config
    return apply_overrides(run_config, [f"vocab_size={vocab_size}"])


def cmd_plan(args) -> None:
    from glassgpt.config import load_run_config
    from glassgpt.training.plan import describe, memory_plan

    run_config = load_run_config(args.config, args.overrides)
    print(describe(memory_plan(run_config, args.gpus, args.parallel, args.activation_checkpointing)))


def cmd_sample(args) -> None:
    import torch

    from glassgpt.checkpoint import load_run
    from glassgpt.device import resolve_device
    from glassgpt.inference.generate import check_sampling_args, stream
    from glassgpt.limits import check_fits, inference_bytes
    from glassgpt.inference.text import StoppingDecoder, encode_prompt

    check_sampling_args(args.temperature, args.top_k, args.top_p, args.max_new_tokens)
    device = resolve_device(args.device)
    model, tokenizer, _ = load_run(args.run_dir, device, dtype=args.dtype)  # in the fast layout
    prompt_ids = encode_prompt(tokenizer, args.prompt)
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


def cmd_analyze(args) -> None:
    from glassgpt.analysis.report import REPORT, progress_bars, write_report
    from glassgpt.device import resolve_device

    if args.windows > MAX_ANALYSIS_WINDOWS:
        raise UsageError(f"--windows is capped at {MAX_ANALYSIS_WINDOWS}, got {args.windows}")
    with progress_bars() as progress:  # on stderr, on a terminal only
        out = write_report(args.run_dir, prompt=args.prompt, out=args.out, num_windows=args.windows,
                           device=str(resolve_device(args.device)), seed=args.seed, dtype=args.dtype,
                           progress=progress, warn=_note)
    print_summary(out)
    print(f"analysis written to {out}; open {out / REPORT}")


def print_summary(out: Path) -> None:
    """The report's summary sentences, on stdout, after the progress bars."""
    import json
    import textwrap

    from glassgpt.analysis.report import NUMBERS

    summary = json.loads((Path(out) / NUMBERS).read_text(encoding="utf-8")).get("summary", "")
    for paragraph in summary.split("\n\n"):
        print(textwrap.fill(paragraph, width=100) + "\n")


def cmd_eval(args) -> None:
    import json

    from glassgpt.evaluation import loss as evaluate
    from glassgpt.checkpoint import check_run_dir, load_run
    from glassgpt.device import resolve_device
    from glassgpt.limits import check_fits, inference_bytes

    check_run_dir(args.run_dir)
    if args.task == "loss" and args.limit is not None:
        raise UsageError("--limit applies to --task hellaswag; for a split use --max-tokens")
    split_only = {"--dataset": args.dataset, "--context": args.context, "--stride": args.stride,
                  "--max-tokens": args.max_tokens, "--split": None if args.split == "val" else args.split}
    given = [name for name, value in split_only.items() if value is not None]
    if args.task == "hellaswag" and given:
        raise UsageError(f"{', '.join(given)} apply to a split, not to --task hellaswag (use --limit N)")
    device = resolve_device(args.device)
    model, tokenizer, run_config = load_run(args.run_dir, device, dtype=args.dtype)
    progress = not args.json
    if args.task == "hellaswag":
        result = evaluate.evaluate_hellaswag_file(model, tokenizer, args.limit, device, progress)
    else:
        context = args.context or model.config.block_size
        check_fits(inference_bytes(model.config, args.batch_size, context), device,
                   f"scoring {args.batch_size} windows of {context} tokens at once", "lower --batch-size or --context")
        result = evaluate.evaluate_split(model, tokenizer, args.dataset or run_config.train.dataset, args.split,
                                         context=context, stride=args.stride or context,
                                         max_tokens=args.max_tokens, batch_size=args.batch_size, device=device,
                                         progress=progress)
    result = {**result, "dtype": args.dtype}
    if args.append_metrics:
        evaluate.append_to_metrics(args.run_dir, result, run_config.train.tensorboard)
    print(json.dumps(result) if args.json else evaluate.describe(result))


def cmd_compare(args) -> None:
    from glassgpt.compare import compare

    out, table = compare(args.runs, args.out)
    print(table)
    print(f"comparison written to {out}")


def cmd_demo(args) -> None:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError("the demo needs Gradio: pip install 'glassgpt[demo]'") from None
    from glassgpt.demo import launch
    from glassgpt.checkpoint import check_run_dir

    check_run_dir(args.run_dir)
    launch(str(args.run_dir), host=args.host, port=args.port, dtype=args.dtype)


def cmd_convert_hf(args) -> None:
    from glassgpt.hf import convert_hf_dir

    convert_hf_dir(args.hf_dir, args.out)
    print(f"converted {args.hf_dir} into {args.out}; sample it with: glassgpt sample {args.out}")


def cmd_sae(args) -> None:
    from glassgpt.device import resolve_device
    from glassgpt.sae import run_sae

    with progress_bar("SAE steps") as progress:
        result = run_sae(args.run_dir, args.hook, head=args.head, width=args.width, k=args.k,
                         batch_topk=args.batch_topk, tokens=args.tokens, batch_tokens=args.batch_size, lr=args.lr,
                         seed=args.seed, device=str(resolve_device(args.device)), out=args.out, resume=args.resume,
                         progress=progress)
    print(f"SAE at {args.hook}: L0 {result['l0']:.1f}, FVU {result['fvu']:.3f}, CE loss recovered "
          f"{result['ce_loss_recovered']:.3f}, {result['dead_features']} dead and {result['dense_features']} dense "
          f"of {result['width']} features, {result['tokens_per_s']:,.0f} training tokens/s")


def progress_bar(label: str):
    """A tqdm bar on stderr (a terminal only), as `progress(done, total)`."""
    import contextlib

    from tqdm import tqdm

    @contextlib.contextmanager
    def bar():
        shown = tqdm(desc=label, disable=not sys.stderr.isatty(), file=sys.stderr, leave=False)
        try:
            def progress(done: int, total: int) -> None:
                shown.total = total
                shown.update(done - shown.n)
            yield progress
        finally:
            shown.close()
    return bar()


def cmd_bench(args) -> None:
    from glassgpt.bench import format_table, run

    path, result = run(args.what, quick=args.quick, out_dir=args.out, device=args.device, threads=args.threads,
                       compile_backend=args.compile_backend, notes=args.note, run_dir=args.run,
                       log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(result))
    print(f"results written to {path}")


COMMANDS = {"prepare": cmd_prepare, "datasets": cmd_datasets, "train": cmd_train, "plan": cmd_plan, "sample": cmd_sample,
            "analyze": cmd_analyze, "eval": cmd_eval, "compare": cmd_compare, "demo": cmd_demo,
            "convert-hf": cmd_convert_hf, "sae": cmd_sae, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in ("train", "plan"):  # key=value overrides may come after --out
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if args.command == "prepare" and args.dataset in ("text", "hf"):  # PATHs may come after the options
        args.paths += [e for e in extra if not e.startswith("-")]
        extra = [e for e in extra if e.startswith("-")]
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
    except MemoryError:
        _fail("out of memory: ask for a smaller model, batch or window", 1)
    except OSError as e:
        _fail(*os_error_message(e))


# A path that exists as the wrong kind of thing is the user's to change: a usage error.
WRONG_KIND = {FileExistsError: "already exists", NotADirectoryError: "is a file where a folder is needed",
              IsADirectoryError: "is a folder where a file is needed"}


def os_error_message(e: OSError) -> tuple[str, int]:
    """An OSError as one sentence naming the path, and its exit status."""
    path = f"{e.filename}" if e.filename is not None else "a file"
    for kind, what in WRONG_KIND.items():
        if isinstance(e, kind):
            return f"{path} {what}: choose another path", 2
    if isinstance(e, PermissionError):
        return f"permission denied on {path}: check who owns it, or choose another path", 1
    if isinstance(e, FileNotFoundError):
        return f"{path} does not exist", 2
    return f"{path}: {e.strerror or e}", 1


def _note(message: str) -> None:
    print(f"glassgpt: note: {message}", file=sys.stderr)


def _fail(message: str, code: int) -> None:
    print(f"glassgpt: error: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
