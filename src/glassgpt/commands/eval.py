"""`glassgpt eval RUN_DIR`: the loss on a prepared split (sliding windows), on any text (`--text`), or HellaSwag."""

from __future__ import annotations

import json
from pathlib import Path

from glassgpt.commands.options import add_device, add_dtype, add_run_dir, add_threads, capped_int, positive_int

HELP = "evaluate a run: loss on a split (sliding windows), on any text, or HellaSwag"
DESCRIPTION = ("Loss on a prepared split, in nats, perplexity and bits per byte or character where one token is "
               "one; --stride below --context gives the sliding-window figure papers quote. --text FILE... scores "
               "any text files with the run's own tokenizer (loss, bits per byte, the worst-predicted spans). "
               "--task hellaswag scores HellaSwag's validation set.")
MAX_EVAL_BATCH = 4096  # --batch-size


def add_arguments(parser) -> None:
    add_run_dir(parser)
    parser.add_argument("--text", type=Path, nargs="+", default=None, metavar="FILE",
                        help="score these UTF-8 text files instead of a prepared split")
    parser.add_argument("--split", choices=("val", "test"), default="val", help="the split to score")
    parser.add_argument("--dataset", default=None,
                        help="a prepared dataset with the run's tokenizer (default: the run's own)")
    parser.add_argument("--context", type=positive_int, default=None, help="tokens per window (default: block_size)")
    parser.add_argument("--stride", type=positive_int, default=None,
                        help="tokens between windows (default: the context, non-overlapping windows)")
    parser.add_argument("--max-tokens", type=positive_int, default=None, help="score only the first N tokens of the split")
    parser.add_argument("--task", choices=("loss", "hellaswag"), default="loss", help="what to score")
    parser.add_argument("--limit", type=positive_int, default=None, help="HellaSwag: the first N items only")
    parser.add_argument("--batch-size", type=capped_int(MAX_EVAL_BATCH), default=8, help="windows per forward pass")
    add_dtype(parser)
    add_device(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON line instead")
    parser.add_argument("--append-metrics", action="store_true",
                        help="also append the result to RUN_DIR/metrics.jsonl as a row of kind eval_task")
    add_threads(parser)


def run(args) -> None:
    from glassgpt.checkpoint import check_run_dir, load_run
    from glassgpt.device import resolve_device
    from glassgpt.errors import UsageError
    from glassgpt.evaluation import loss as evaluate
    from glassgpt.limits import check_fits, inference_bytes
    from glassgpt.stop import StopFlag
    from glassgpt.threads import fitted_threads
    from glassgpt.training.log import finite_row

    check_run_dir(args.run_dir)
    if args.task == "loss" and args.limit is not None:
        raise UsageError("--limit applies to --task hellaswag; for a split use --max-tokens")
    split_only = {"--dataset": args.dataset, "--context": args.context, "--stride": args.stride,
                  "--max-tokens": args.max_tokens, "--split": None if args.split == "val" else args.split}
    given = [name for name, value in split_only.items() if value is not None]
    if args.task == "hellaswag" and given:
        raise UsageError(f"{', '.join(given)} apply to a split, not to --task hellaswag (use --limit N)")
    if args.text is not None:
        return score_text(args)
    device = resolve_device(args.device)
    model, tokenizer, run_config = load_run(args.run_dir, device, dtype=args.dtype, decoding=False)
    progress = not args.json
    if args.task == "hellaswag":
        with StopFlag(), fitted_threads(args.threads, say=False):  # a stop request ends it within an item
            result = evaluate.evaluate_hellaswag_file(model, tokenizer, args.limit, device, progress)
    else:
        context = args.context or model.config.block_size
        check_fits(inference_bytes(model.config, args.batch_size, context), device,
                   f"scoring {args.batch_size} windows of {context} tokens at once", "lower --batch-size or --context")
        with StopFlag(), fitted_threads(args.threads, say=False):  # a stop request ends it within a batch
            result = evaluate.evaluate_split(model, tokenizer, args.dataset or run_config.train.dataset, args.split,
                                             context=context, stride=args.stride or context,
                                             max_tokens=args.max_tokens, batch_size=args.batch_size, device=device,
                                             progress=progress)
    result = {**result, "dtype": args.dtype}
    if args.append_metrics:
        evaluate.append_to_metrics(args.run_dir, result, run_config.train.tensorboard)
    print(json.dumps(finite_row(result), allow_nan=False) if args.json else evaluate.describe(result))


def score_text(args) -> None:
    """`eval RUN_DIR --text FILE...`: any text, scored with the run's tokenizer."""
    from glassgpt.checkpoint import load_run
    from glassgpt.device import resolve_device
    from glassgpt.errors import UsageError
    from glassgpt.evaluation.text import describe_text, score_texts
    from glassgpt.limits import check_fits, inference_bytes
    from glassgpt.stop import StopFlag
    from glassgpt.threads import fitted_threads
    from glassgpt.training.log import finite_row

    wrong = [name for name, given in (("--dataset", args.dataset is not None), ("--split", args.split != "val"),
                                      ("--task", args.task != "loss"), ("--limit", args.limit is not None),
                                      ("--append-metrics", args.append_metrics)) if given]
    if wrong:
        raise UsageError(f"{', '.join(wrong)}: for a prepared split or HellaSwag, not for --text")
    device = resolve_device(args.device)
    model, tokenizer, _ = load_run(args.run_dir, device, dtype=args.dtype)
    context = args.context or model.config.block_size
    check_fits(inference_bytes(model.config, args.batch_size, context), device,
               f"scoring {args.batch_size} windows of {context} tokens at once", "lower --batch-size or --context")
    with StopFlag(), fitted_threads(args.threads, say=False):  # a stop request ends it within a batch
        result = score_texts(model, tokenizer, args.text, context=context, stride=args.stride or context,
                             batch_size=args.batch_size, device=device, max_tokens=args.max_tokens,
                             progress=not args.json)
    print(json.dumps(finite_row({**result, "dtype": args.dtype}), allow_nan=False) if args.json
          else describe_text(result))
