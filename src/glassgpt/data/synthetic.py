"""A synthetic dataset made to grow induction heads: random segments, each repeated once.

`repeated-random` is a stream of byte tokens (the 256 symbols of the `byte` tokenizer):
a segment of 8 to 32 tokens drawn uniformly at random, then the same segment again,
then a new segment, and so on. The first copy of a segment cannot be predicted (loss
ln 256 = 5.55 nats a token); every token of the second copy can, by a model that finds
the earlier occurrence of the current token and copies the token after it: exactly the
induction circuit of Olsson et al. (2022). Nothing else in the data helps, so the
circuit is the only way down and it forms in a few hundred steps on a CPU.

Generated from a fixed seed (train and val from different ones), so every machine
prepares the same tokens; no download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glassgpt.data.writing import write_split
from glassgpt.tokenizer import get_tokenizer

SEGMENT_LENGTHS = (8, 32)  # inclusive range of a segment's length, before its repeat
SPLIT_TOKENS = {"train": 2_000_000, "val": 100_000}
SEEDS = {"train": 1, "val": 2}


def repeated_segments(n_tokens: int, seed: int, vocab_size: int = 256,
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
    tok = get_tokenizer("byte")
    counts = {name: write_split(out / f"{name}.bin", repeated_segments(n, SEEDS[name], tok.vocab_size), tok.vocab_size)
              for name, n in SPLIT_TOKENS.items()}
    return {"tokenizer": tok.to_dict(), "tokens": counts,
            "generator": {"segment_lengths": list(SEGMENT_LENGTHS), "seeds": SEEDS}}
