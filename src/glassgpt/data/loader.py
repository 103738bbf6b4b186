"""Reading prepared data: token files as memmaps, random training windows that
resume exactly (and differ per DDP rank), and deterministic evaluation windows."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from glassgpt.data.prepare import DATASETS, check_dataset_name, dataset_path, is_current, read_meta
from glassgpt.errors import RunError, UsageError
from glassgpt.tokenizer import Tokenizer, tokenizer_from_dict


class TokenDataset:
    """A prepared dataset: its tokenizer and one read-only memmap per split."""

    def __init__(self, path: Path):
        self.path = path
        self.meta = read_meta(path)  # checked: a corrupt one is a RunError saying how to repair it
        if path.name in DATASETS and not is_current(path, DATASETS[path.name]):
            raise UsageError(f"dataset {path.name!r} was prepared by an older glassgpt: "
                             f"run `glassgpt prepare {path.name}` to make it again")
        self.tokenizer: Tokenizer = tokenizer_from_dict(self.meta["tokenizer"])
        self.dtype = np.dtype(self.meta["dtype"])

    @classmethod
    def load(cls, name: str) -> "TokenDataset":
        check_dataset_name(name)
        return cls(dataset_path(name))

    def split(self, name: str) -> np.memmap:
        path = self.path / f"{name}.bin"
        if not path.is_file() or path.stat().st_size == 0:
            raise RunError(f"{path} is missing or empty: prepare the dataset again with --force")
        expected = self.meta.get("tokens", {}).get(name)
        if expected is not None and path.stat().st_size != expected * self.dtype.itemsize:
            raise RunError(f"{path} holds {path.stat().st_size // self.dtype.itemsize:,} tokens, not the "
                           f"{expected:,} it was prepared with: prepare the dataset again with --force")
        data = np.memmap(path, dtype=self.dtype, mode="r")
        check_token_ids(data, self.tokenizer.vocab_size, path)
        return data

    @property
    def bits_per_token_unit(self) -> str | None:
        """'character' or 'byte' when one token is one of them, so loss/ln 2 is bpc or bpb."""
        return {"char": "character", "byte": "byte"}.get(self.tokenizer.name)

    def tokens_per_byte(self, split: str = "val") -> float | None:
        """Tokens over UTF-8 bytes of text in a split, for datasets that record their text's
        bytes (your own: `glassgpt prepare text`); None for the others."""
        tokens, text_bytes = self.meta.get("tokens", {}).get(split), (self.meta.get("text_bytes") or {}).get(split)
        if type(tokens) is not int or type(text_bytes) is not int or text_bytes <= 0:
            return None
        return tokens / text_bytes

    def bits_per_unit(self, loss: float, split: str = "val") -> dict[str, float]:
        """`{"bits_per_byte": loss / ln 2}` (or `bits_per_character`) when one token is one
        byte (character). On your own datasets, whatever the tokenizer, also `bits_per_byte`:
        the loss in bits times the split's tokens per byte of text, so that models with
        different tokenizers compare on the same text."""
        unit = self.bits_per_token_unit
        out = {f"bits_per_{unit}": loss / math.log(2)} if unit else {}
        ratio = self.tokens_per_byte(split)
        if ratio is not None and unit != "byte":
            out["bits_per_byte"] = loss / math.log(2) * ratio
        return out


FULL_CHECK_TOKENS = 1 << 26  # splits up to this size have every id checked (a few tens of ms)
SAMPLE_BLOCKS, SAMPLE_BLOCK_TOKENS = 256, 1 << 16


def check_token_ids(data: np.ndarray, vocab_size: int, path: Path) -> None:
    """Refuse a token file holding an id at or above the vocabulary. Cheap: nothing to do when
    the dtype cannot hold such an id (uint8 with 256 tokens); every id of a split up to
    FULL_CHECK_TOKENS; for a larger one, SAMPLE_BLOCKS blocks spread over it, first and last
    included."""
    if np.iinfo(data.dtype).max < vocab_size or len(data) == 0:
        return
    if len(data) <= FULL_CHECK_TOKENS:
        blocks = [data]
    else:
        starts = np.linspace(0, len(data) - SAMPLE_BLOCK_TOKENS, SAMPLE_BLOCKS).astype(np.int64)
        blocks = [data[s: s + SAMPLE_BLOCK_TOKENS] for s in starts]
    for block in blocks:
        top = int(block.max())
        if top >= vocab_size:
            raise RunError(f"{path} holds token id {top}, outside its tokenizer's {vocab_size} tokens: "
                           "the file is corrupt or from another dataset; prepare the dataset again with --force")


class BatchLoader:
    """Random windows of `block_size + 1` tokens from one split, drawn by a seeded
    generator. The generator's state is the data position: save it and a resumed
    run sees the same batches.

    Under DDP every rank holds the same generator and draws the same global batch
    of `batch_size * world_size` windows, then keeps its own slice (rank r takes
    rows r*batch_size to (r+1)*batch_size). So the ranks see different data, and
    together exactly the batch one process with `batch_size * world_size` sees."""

    def __init__(self, data: np.ndarray, block_size: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        if len(data) <= block_size + 1:
            raise UsageError(
                f"the data has {len(data)} tokens, too few for one window of block_size {block_size}: "
                "lower block_size or use more data"
            )
        self.data, self.block_size, self.batch_size = data, block_size, batch_size
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        global_batch = self.batch_size * self.world_size
        starts = torch.randint(len(self.data) - self.block_size, (global_batch,), generator=self.generator)
        mine = starts[self.rank * self.batch_size: (self.rank + 1) * self.batch_size]  # this rank's slice
        return windows_at(self.data, mine.tolist(), self.block_size)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class Prefetcher:
    """The next step's batches, drawn (and on a GPU copied over) while this step runs.

    `take()` hands over the batches in hand; `fetch()`, called once the step's forward and
    backward are launched, draws the next ones, so on a GPU the drawing and the copy overlap
    the step instead of following it. Drawing ahead moves the loader's generator one step
    early: `state_dict()` is the state from before the batches in hand, so a checkpoint
    resumes with exactly them."""

    def __init__(self, loader: BatchLoader, count: int, device: torch.device):
        self.loader, self.count, self.device = loader, count, device
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.state_before: dict | None = None

    def fetch(self) -> None:
        self.state_before = self.loader.state_dict()
        pin = self.device.type == "cuda"  # pinned memory lets the copy run while the GPU computes
        self.pending = [tuple(t.pin_memory().to(self.device, non_blocking=True) if pin else t for t in batch)
                        for batch in (self.loader.next_batch() for _ in range(self.count))]

    def take(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.pending is None:
            self.fetch()
        batches, self.pending = self.pending, None
        return batches

    def state_dict(self) -> dict:
        return self.state_before if self.pending is not None else self.loader.state_dict()


def windows_at(data: np.ndarray, starts: list[int], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (B, length) and next-token targets (B, length) for windows starting at `starts`."""
    chunks = np.stack([np.asarray(data[s: s + length + 1], dtype=np.int64) for s in starts])  # (B, length + 1)
    xy = torch.from_numpy(chunks)
    return xy[:, :-1].contiguous(), xy[:, 1:].contiguous()


def eval_windows(data: np.ndarray, block_size: int, batch_size: int,
                 max_batches: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic eval batches. `max_batches=None` covers every token of the split
    once, in consecutive windows (the last one padded with target -1, which the loss
    skips); otherwise `max_batches` batches of windows spread evenly over the split."""
    n_targets = len(data) - 1
    if max_batches is None:
        starts = list(range(0, n_targets, block_size))
    else:
        last = max(0, n_targets - block_size)
        starts = np.linspace(0, last, num=max_batches * batch_size).astype(np.int64).tolist()
    for i in range(0, len(starts), batch_size):
        batch = starts[i: i + batch_size]
        x = torch.zeros(len(batch), block_size, dtype=torch.long)
        y = torch.full((len(batch), block_size), -1, dtype=torch.long)
        for row, s in enumerate(batch):
            chunk = torch.from_numpy(np.asarray(data[s: s + block_size + 1], dtype=np.int64))
            n = len(chunk) - 1
            x[row, :n], y[row, :n] = chunk[:-1], chunk[1:]
        yield x, y
