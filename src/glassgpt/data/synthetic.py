"""A synthetic dataset made to grow induction heads: random segments, each repeated once.

`repeated-random` is a stream over an alphabet of 64 characters (`A-Z a-z 0-9 + /`, a
`char` tokenizer, so samples print as text): a segment of 4 to 12 characters drawn
uniformly at random, then the same segment again, then a new segment, and so on. The
first copy of a segment cannot be predicted (loss ln 64 = 4.16 nats a character); every
character of the second copy but its first can, by a model that finds the earlier
occurrence of the current character and copies the one after it: exactly the induction
circuit of Olsson et al. (2022). Nothing else in the data helps, so the circuit is the
only way down.

Why these numbers (measured with benchmarks/induction_sweep.py; README, "Watching it
form"): with 256 symbols and segments of 8-32 in windows of 64, a 2-layer model stayed on
its plateau for 3,000-5,000 steps in 19 of 20 runs. 64 symbols, segments of 4-12 and
windows of 32 give the heads fewer keys to spread their attention over at the start, and
an attention-only model (the `induction` preset) then grows the circuit in 500-1,500
steps for every seed tried.

Generated from a fixed seed (train and val from different ones), so every machine
prepares the same tokens; no download.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

from glassgpt.data.writing import write_split
from glassgpt.tokenizer import get_tokenizer

ALPHABET = string.ascii_letters + string.digits + "+/"  # 64 symbols
SEGMENT_LENGTHS = (4, 12)  # inclusive range of a segment's length, before its repeat
SPLIT_TOKENS = {"train": 2_000_000, "val": 100_000}
SEEDS = {"train": 1, "val": 2}
VERSION = 2  # 1: byte tokens, segments of 8-32


def repeated_segments(n_tokens: int, seed: int, vocab_size: int = len(ALPHABET),
                      lengths: tuple[int, int] = SEGMENT_LENGTHS) -> np.ndarray:
    """(n_tokens,) int64: random segments of `lengths` tokens, each followed by its copy."""
    rng = np.random.default_rng(seed)
    pieces, total = [], 0
    while total < n_tokens:
        segment = rng.integers(0, vocab_size, size=int(rng.integers(lengths[0], lengths[1] + 1)))
        pieces += [segment, segment]
        total += 2 * segment.size
    return np.concatenate(pieces)[:n_tokens]


def prepare_repeated_random(out: Path, **_) -> dict:
    tok = get_tokenizer("char", text=ALPHABET)
    counts = {name: write_split(out / f"{name}.bin", repeated_segments(n, SEEDS[name], tok.vocab_size), tok.vocab_size)
              for name, n in SPLIT_TOKENS.items()}
    return {"tokenizer": tok.to_dict(), "tokens": counts,
            "generator": {"alphabet": ALPHABET, "segment_lengths": list(SEGMENT_LENGTHS), "seeds": SEEDS}}
