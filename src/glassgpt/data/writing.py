"""Token files: flat arrays of token ids, written a piece at a time.

A split file is the raw bytes of one array (uint8 for bytes, uint16 for GPT-2
BPE), so `np.memmap` reads it back without loading it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32)


def write_split(path: Path, ids, vocab_size: int) -> int:
    """Write a whole split at once (small corpora); returns the number of tokens."""
    arr = np.asarray(ids, dtype=token_dtype(vocab_size))
    arr.tofile(path)
    return int(arr.size)


class SplitWriter:
    """Appends token arrays (or raw bytes for uint8) to one split file and counts them."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path, self.dtype = path, np.dtype(dtype)
        self.count = 0
        self.file = open(path, "wb")

    def write(self, tokens) -> None:
        if isinstance(tokens, (bytes, bytearray, memoryview)):
            if self.dtype != np.uint8:
                raise TypeError(f"raw bytes can only go to a uint8 split, not {self.dtype}")
            self.file.write(tokens)
            self.count += len(tokens)
            return
        arr = np.asarray(tokens)
        if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(self.dtype).max):
            raise ValueError(f"token ids outside the range of {self.dtype}")
        self.file.write(arr.astype(self.dtype, copy=False).tobytes())
        self.count += int(arr.size)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "SplitWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
