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
    together exactly the batch one process with `batch_size * world_size` sees.

    `bos`: a beginning-of-sequence id to start every window with (`with_bos`), then block_size - 1
    tokens of text.

    `repeat_fraction` p > 0: each window, with probability p, starts with a span of its text of random
    length followed by a copy of that span (`repeat_spans`): in-context repetition, which speeds up
    the growth of induction heads (Zucchet et al. 2025). The choices come from the same generator,
    so they resume too."""

    def __init__(self, data: np.ndarray, block_size: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, repeat_fraction: float = 0.0, bos: int | None = None):
        if len(data) <= block_size + 1:
            raise UsageError(
                f"the data has {len(data)} tokens, too few for one window of block_size {block_size}: "
                "lower block_size or use more data"
            )
        if not 0.0 <= repeat_fraction <= 1.0:
            raise UsageError(f"repeat_fraction must be in [0, 1], got {repeat_fraction}")
        self.data, self.block_size, self.batch_size = data, block_size, batch_size
        self.rank, self.world_size, self.repeat_fraction, self.bos = rank, world_size, repeat_fraction, bos
        self.text_length = block_size - (bos is not None)  # the text tokens a window holds after its BOS
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        global_batch = self.batch_size * self.world_size
        starts = torch.randint(len(self.data) - self.text_length, (global_batch,), generator=self.generator)
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)  # this rank's rows
        x, y = windows_at(self.data, starts[mine].tolist(), self.text_length)
        if self.repeat_fraction > 0:  # drawn for the global batch, so every rank's generator stays in step
            repeat = torch.rand(global_batch, generator=self.generator) < self.repeat_fraction
            lo, hi = span_lengths(self.text_length)
            lengths = torch.randint(lo, hi + 1, (global_batch,), generator=self.generator)
            x, y = repeat_spans(x, y, torch.where(repeat, lengths, 0)[mine])
        return (x, y) if self.bos is None else with_bos(x, y, self.bos)

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


def span_lengths(block_size: int) -> tuple[int, int]:
    """The shortest and longest span `repeat_spans` repeats in a window of block_size + 1 tokens: from an
    eighth of the window (at least 2 tokens) to half of it. The copy's distance varies with the length, so
    only a head that finds the earlier occurrence of its token (an induction head) can use it, not one
    that looks a fixed distance back."""
    hi = (block_size + 1) // 2
    return min(max(2, (block_size + 1) // 8), hi), hi


def repeat_spans(x: torch.Tensor, y: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (B, T) of windows, each row with `lengths[b]` = L > 0 (B,) made of its window's
    first L tokens, the same L tokens again, then the text that followed them (cut to T + 1 tokens): from
    the copy's second token on, the next token is the one that followed the current one in the span.
    Rows with L = 0 are left alone."""
    T = x.size(1)
    tokens = torch.cat([x, y[:, -1:]], dim=1)  # (B, T + 1): the window
    positions = torch.arange(T + 1)[None, :]  # (1, T + 1)
    L = lengths[:, None].clamp(min=0, max=(T + 1) // 2)  # (B, 1)
    source = torch.where(positions < 2 * L, positions % L.clamp(min=1), positions - L)  # (B, T + 1): which token goes where
    source = torch.where(L > 0, source, positions)
    tokens = tokens.gather(1, source)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def bos_token(tokenizer: Tokenizer) -> int:
    """The id a `bos=true` run starts its windows with: the tokenizer's end-of-text token, which is
    what GPT-2's documents start with (`gpt2`, `bpe:N`); for `char` and `byte`, which have none, the
    newline, so that every window starts as a line does."""
    if tokenizer.eot_token is not None:
        return tokenizer.eot_token
    try:
        ids = tokenizer.encode("\n")
    except UsageError:
        ids = []
    if len(ids) != 1:
        raise UsageError(f"bos=true starts every window with the tokenizer's end-of-text token, or a newline, and "
                         f"this {tokenizer.name} tokenizer has neither: prepare the text with --tokenizer bpe:N, "
                         "or train with bos=false")
    return ids[0]


def with_bos(x: torch.Tensor, y: torch.Tensor, bos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of text (B, L) and their next tokens, with a beginning-of-sequence id put first: inputs
    (B, L + 1) = [bos, x], targets (B, L + 1) = [x's first token, y]: the BOS predicts the first token."""
    first = torch.full_like(x[:, :1], bos)
    return torch.cat([first, x], dim=1), torch.cat([x[:, :1], y], dim=1)


def eval_windows(data: np.ndarray, block_size: int, batch_size: int,
                 max_batches: int | None = None, bos: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic eval batches. `max_batches=None` covers every token of the split
    once, in consecutive windows (the last one padded with target -1, which the loss
    skips); otherwise `max_batches` batches of windows spread evenly over the split.
    With `bos`, every window starts with that id and holds block_size - 1 tokens of text (`with_bos`):
    the first token of each window is a target too, predicted from the BOS."""
    lead = int(bos is not None)
    n_targets = len(data) - 1 + lead
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
            chunk = torch.from_numpy(np.asarray(data[s: s + block_size + 1 - lead], dtype=np.int64))
            if lead:
                chunk = torch.cat([torch.tensor([bos]), chunk])
            n = len(chunk) - 1
            x[row, :n], y[row, :n] = chunk[:-1], chunk[1:]
        yield x, y
