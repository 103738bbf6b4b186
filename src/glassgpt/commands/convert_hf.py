"""`glassgpt convert-hf HF_DIR --out RUN_DIR`: a saved transformers GPT-2 as a run directory."""

from __future__ import annotations

from pathlib import Path

NAME = "convert-hf"
HELP = "turn a saved transformers GPT-2 into a run directory"
DESCRIPTION = ("Convert a folder written by transformers' GPT2LMHeadModel.save_pretrained into a glassgpt run "
               "directory. For OpenAI's GPT-2, once with internet: GPT2LMHeadModel.from_pretrained('gpt2')"
               ".save_pretrained('gpt2-hf'), then glassgpt convert-hf gpt2-hf --out runs/gpt2.")


def add_arguments(parser) -> None:
    parser.add_argument("hf_dir", type=Path, metavar="HF_DIR", help="a folder written by GPT2LMHeadModel.save_pretrained")
    parser.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="the run directory to create")


def run(args) -> None:
    from glassgpt.hf import convert_hf_dir

    convert_hf_dir(args.hf_dir, args.out)
    print(f"converted {args.hf_dir} into {args.out}; sample it with: glassgpt sample {args.out}")
