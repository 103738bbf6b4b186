"""The two kinds of error a user can meet, and the exit status each one gets.

`UsageError` means the user asked for something that cannot work (a bad key, a
missing run directory, a character outside the vocabulary): exit status 2.
`RunError` means something went wrong while doing what was asked (a corrupt
file, no network to fetch data): exit status 1. Both carry one sentence that
says what is wrong and how to fix it; `glassgpt.cli` prints it and exits.
`did_you_mean` is the hint such a sentence carries for a misspelt name; `first_line`
the part of a library's exception such a sentence can quote.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class GlassGPTError(Exception):
    exit_code = 1


class UsageError(GlassGPTError, ValueError):
    exit_code = 2


class RunError(GlassGPTError, RuntimeError):
    exit_code = 1


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate to a misspelt `word`, or '' if none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message, at most 200 characters (or its type,
    when it has none)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(e).__name__
