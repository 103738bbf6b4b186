"""`glassgpt compare RUN RUN...`: runs side by side on one page."""

from __future__ import annotations

from pathlib import Path

HELP = "runs side by side: curves, config differences, final figures"
DESCRIPTION = ("Write one page (curves of train and val loss against step, tokens and wall time; the config keys "
               "that differ; final figures) and print the table.")


def add_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")
    parser.add_argument("--out", type=Path, default=Path("compare.html"), help="the page to write")


def run(args) -> None:
    from glassgpt.compare import compare

    out, table = compare(args.runs, args.out)
    print(table)
    print(f"comparison written to {out}")
