"""`glassgpt datasets`: the built-in datasets and the ones you prepared."""

from __future__ import annotations

HELP = "list the built-in and your prepared datasets (as prepare --list)"


def add_arguments(parser) -> None:
    pass


def run(args) -> None:
    from glassgpt.data import list_datasets

    rows = list_datasets()
    head = dict(name="dataset", tokenizer="tokenizer", tokens="tokens")
    widths = [max(len(str(r[k])) for r in [*rows, head]) for k in ("name", "tokenizer", "tokens")]
    print(f"{'dataset':<{widths[0]}}  {'tokenizer':<{widths[1]}}  {'tokens':>{widths[2]}}  about")
    for r in rows:
        print(f"{r['name']:<{widths[0]}}  {r['tokenizer']:<{widths[1]}}  {r['tokens']:>{widths[2]}}  {r['about']}")
