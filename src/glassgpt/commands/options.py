"""What several commands share: argument types that refuse bad values in one line, and the
`--device` and `--dtype` options, declared once so they mean the same, with the same default and
help, in every command."""

from __future__ import annotations

import argparse
from pathlib import Path

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")  # glassgpt.precision.DTYPE_CHOICES, without torch


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None


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


def threads_arg(text: str) -> int:
    """--threads: auto (0) or a number of threads."""
    from glassgpt.errors import UsageError
    from glassgpt.threads import parse_threads

    try:
        return parse_threads(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("threads ")) from None


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=threads_arg, default="auto", metavar="auto|N",
                        help="torch's CPU threads: auto counts the cores free of other work, and again as it runs "
                             "(OMP_NUM_THREADS, when set, decides), or a number")


def add_run_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (glassgpt train --out)")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps")


def add_dtype(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32",
                        help="the weights are cast to it for this command (the run is untouched); auto: the "
                             "fastest on this device for what the command does (decoding on a CPU: float16; "
                             "whole windows on a CPU: bfloat16 where it has bf16 instructions, else float32; "
                             "CUDA: bfloat16)")
