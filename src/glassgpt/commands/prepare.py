"""`glassgpt prepare NAME | text PATH... | hf DATASET`: a built-in dataset, your own text, or a
Hugging Face dataset, tokenized into `<GLASSGPT_DATA_DIR>/<name>/`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from glassgpt.commands.options import float_arg, positive_int

HELP = "download and tokenize a dataset, or your own text"
DESCRIPTION = ("glassgpt prepare NAME (a built-in dataset) | prepare text PATH... --name NAME (files and folders "
               "of your own text) | prepare hf DATASET --name NAME --max-tokens N (a Hugging Face dataset) | "
               "prepare --list")
BUILT_IN = ("shakespeare-char", "shakespeare", "shakespeare-bpe512", "enwik8", "fineweb-edu", "repeated-random")  # data.prepare.DATASETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list", action="store_true", help="list the built-in and your prepared datasets")
    forms = parser.add_subparsers(dest="form", metavar="NAME|text|hf", parser_class=type(parser),
                                  help="a built-in dataset, text (your files) or hf (a Hugging Face dataset)")
    for name in BUILT_IN:
        p = forms.add_parser(name, help="a built-in dataset (glassgpt datasets describes each)",
                             description="Download (or find in GLASSGPT_MIRROR) and tokenize a built-in dataset.")
        p.add_argument("--max-tokens", type=positive_int, default=None, help="cap on tokens (streamed datasets)")
        if name == "fineweb-edu":
            p.add_argument("--workers", type=positive_int, default=None,
                           help="tokenizer processes (default: one per CPU)")
        p.add_argument("--force", action="store_true", help="prepare again even if already prepared")
        p.set_defaults(prepare=_built_in)

    p = forms.add_parser("text", help="files and folders of your own text",
                         description="Tokenize your own text: .txt, .md, .jsonl, .parquet files and folders of them.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files and folders")
    p.add_argument("--glob", default=None, help="only files matching this pattern inside folders (e.g. '*.md')")
    p.add_argument("--errors", choices=("strict", "replace"), default="strict",
                   help="bytes that are not UTF-8 are refused (strict) or read as U+FFFD (replace)")
    _own_options(p)
    p.set_defaults(prepare=_text, trailing="paths")

    p = forms.add_parser("hf", help="a Hugging Face dataset, streamed",
                         description="Stream a Hugging Face dataset (a name, or a local folder) and tokenize "
                                     "its first --max-tokens tokens.")
    p.add_argument("dataset", metavar="DATASET", help="the dataset's name or folder")
    p.add_argument("--max-tokens", type=positive_int, required=True, help="how much of the dataset to stream")
    p.add_argument("--config", default=None, help="the dataset's configuration")
    p.add_argument("--split", default="train", help="the dataset's split")
    _own_options(p)
    p.set_defaults(prepare=_hf)


def _own_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True, help="the name of your dataset (train ... dataset=NAME)")
    p.add_argument("--tokenizer", default=None, metavar="char|byte|gpt2|bpe:N",
                   help="the tokenizer; bpe:N trains a byte-level BPE of N tokens (default: bpe:4096)")
    p.add_argument("--tokenizer-from", type=Path, default=None, metavar="RUN_DIR",
                   help="the tokenizer of a trained run, as it is: the run can then evaluate and fine-tune on the data")
    p.add_argument("--val-fraction", type=float_arg, default=0.1, help="documents kept for validation")
    p.add_argument("--text-column", default="text", help="jsonl, parquet, hf: the column holding the text")
    p.add_argument("--force", action="store_true", help="prepare again even if already prepared")
    p.add_argument("--follow-links", action="store_true",
                   help="read links that lead out of a folder (text: else skipped with a notice; hf: else refused)")


def run(args) -> None:
    if args.list:
        if args.form is not None:
            raise_usage("--list takes no dataset: glassgpt prepare --list")
        from glassgpt.commands.datasets import run as list_datasets

        return list_datasets(args)
    if args.form is None:
        raise_usage("prepare needs a dataset: a built-in NAME, text PATH... --name NAME, or hf DATASET --name NAME "
                    "--max-tokens N (glassgpt prepare --list shows them)")
    args.prepare(args)


def raise_usage(message: str):
    from glassgpt.errors import UsageError

    raise UsageError(message)


def _built_in(args) -> None:
    from glassgpt.data import check_dataset_name, dataset_path, prepare
    from glassgpt.data.prepare import is_current

    spec = check_dataset_name(args.form)
    already = is_current(dataset_path(args.form), spec) and not args.force
    path = prepare(args.form, max_tokens=args.max_tokens, force=args.force, workers=getattr(args, "workers", None))
    note = " (already prepared: nothing to do; --force prepares it again)" if already else ""
    print(f"{args.form} is ready in {path}{note}")


def _text(args) -> None:
    from glassgpt.data import TextRequest

    paths = [os.path.abspath(os.path.expanduser(p)) for p in args.paths]
    _prepare_own(args, TextRequest(paths=paths, glob=args.glob, errors=args.errors, **_common(args)))


def _hf(args) -> None:
    from glassgpt.data import TextRequest

    dataset = os.path.abspath(args.dataset) if os.path.exists(args.dataset) else args.dataset
    _prepare_own(args, TextRequest(paths=[], max_tokens=args.max_tokens, **_common(args),
                                   hf={"dataset": dataset, "config": args.config, "split": args.split}))


def _common(args) -> dict:
    return {"tokenizer": args.tokenizer or "bpe:4096", "text_column": args.text_column,
            "val_fraction": args.val_fraction, **_tokenizer_of_run(args),
            "follow_links": True if getattr(args, "follow_links", False) else None}  # None: not in meta.json


def _tokenizer_of_run(args) -> dict:
    """`--tokenizer-from RUN_DIR`: the TextRequest fields that make prepare use the run's tokenizer as it is."""
    if getattr(args, "tokenizer_from", None) is None:
        return {}
    if args.tokenizer is not None:
        raise_usage("give --tokenizer or --tokenizer-from RUN_DIR, not both")
    from glassgpt.checkpoint import check_run_dir, read_config, read_tokenizer

    run_dir = check_run_dir(args.tokenizer_from)
    tokenizer = read_tokenizer(run_dir, read_config(run_dir)[1])
    spec = f"bpe:{tokenizer.vocab_size}" if tokenizer.name == "bpe" else tokenizer.name
    return {"tokenizer": spec, "tokenizer_from": os.path.abspath(run_dir), "given_tokenizer": tokenizer}


def _prepare_own(args, request) -> None:
    from glassgpt.cli import note
    from glassgpt.data import describe_dataset, prepare_user

    path = prepare_user(args.name, request, force=args.force, notice=note)
    if request.tokenizer_from:
        run = request.tokenizer_from
        print(f"{args.name} is ready in {path}: {describe_dataset(path)}; evaluate the run on it with: glassgpt "
              f"eval {run} --dataset {args.name}, or fine-tune it with: glassgpt train cpu-baby init_from={run} "
              f"dataset={args.name}")
        return
    print(f"{args.name} is ready in {path}: {describe_dataset(path)}; train on it with: "
          f"glassgpt train cpu-baby dataset={args.name}")
