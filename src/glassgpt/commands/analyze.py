"""`glassgpt analyze RUN_DIR`: the report of what a trained run learned (report.html, analysis.json)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from glassgpt.commands.options import add_device, add_dtype, add_run_dir, add_threads, capped_int, seed_int

HELP = "write a report of what a trained run learned"
MAX_ANALYSIS_WINDOWS = 1024


def add_arguments(parser) -> None:
    add_run_dir(parser)
    parser.add_argument("--prompt", default=None, help="text whose attention is drawn (default: from the validation split)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: RUN_DIR/analysis)")
    parser.add_argument("--windows", type=capped_int(MAX_ANALYSIS_WINDOWS), default=None,
                        help="validation windows to measure on (default: 16,384 tokens of them, 8 to 256)")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the random tokens for the induction scores")
    add_device(parser)
    add_dtype(parser)
    add_threads(parser)


def run(args) -> None:
    from glassgpt.analysis.report import REPORT, progress_bars, write_report
    from glassgpt.cli import note
    from glassgpt.device import resolve_device
    from glassgpt.stop import StopFlag
    from glassgpt.threads import fitted_threads

    with StopFlag(), fitted_threads(args.threads, say=False) as threads, progress_bars() as bars:  # on stdout
        def progress(stage: str, done: int, total: int) -> None:
            bars(stage, done, total)
            threads.recheck()  # between windows: the machine may have got busier, or quieter

        out = write_report(args.run_dir, prompt=args.prompt, out=args.out, num_windows=args.windows,
                           device=str(resolve_device(args.device)), seed=args.seed, dtype=args.dtype,
                           progress=progress, warn=note)
    print_summary(out)
    print(f"analysis written to {out}; open {out / REPORT}")


def print_summary(out: Path) -> None:
    """The report's summary sentences, on stdout, after the progress bars."""
    from glassgpt.analysis.report import MAX_NUMBERS_BYTES, NUMBERS
    from glassgpt.safe_read import read_json

    numbers = read_json(Path(out) / NUMBERS, MAX_NUMBERS_BYTES)
    summary = numbers.get("summary") if isinstance(numbers, dict) else None
    summary = summary if isinstance(summary, str) else ""
    for paragraph in summary.split("\n\n"):
        print(textwrap.fill(paragraph, width=100) + "\n")
