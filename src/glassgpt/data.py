"""Datasets: find the raw files, prepare them into token files, and serve batches.

Raw files are looked for in this order:
1. `GLASSGPT_MIRROR`, a read-only folder of upstream files by their own names;
2. the data dir's download cache, `<data dir>/downloads/`;
3. a download from the canonical URL.
Every file with a known SHA-256 is checked wherever it came from; a file that
does not match is never used.

Prepared data lives in `<data dir>/<dataset>/{train,val[,test]}.bin` (flat
token ids, uint16 or uint8) with a `meta.json`. The data dir is
`GLASSGPT_DATA_DIR`, default `~/.cache/glassgpt`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from glassgpt.errors import RunError, UsageError
from glassgpt.tokenizer import Tokenizer, get_tokenizer, tokenizer_from_dict


# ---------------------------------------------------------------- where files live

def data_dir() -> Path:
    return Path(os.environ.get("GLASSGPT_DATA_DIR", Path.home() / ".cache" / "glassgpt")).expanduser()


def mirror_dir() -> Path | None:
    m = os.environ.get("GLASSGPT_MIRROR")
    return Path(m).expanduser() if m else None


@dataclass(frozen=True)
class RawFile:
    """An upstream file: its own name, where it is published, and its SHA-256."""

    name: str
    url: str
    sha256: str | None = None


TINY_SHAKESPEARE = RawFile(
    name="tinyshakespeare.txt",
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified(path: Path, raw: RawFile) -> bool:
    return raw.sha256 is None or sha256_of(path) == raw.sha256


def find_raw_file(raw: RawFile, download: bool = True) -> Path:
    """The path of a verified copy of `raw`: from the mirror, the cache, or downloaded."""
    mirror = mirror_dir()
    if mirror is not None and (mirror / raw.name).is_file():
        path = mirror / raw.name
        if not _verified(path, raw):
            raise RunError(f"{path} does not match its SHA-256 {raw.sha256}: the mirror copy is corrupt, replace it")
        return path
    cached = data_dir() / "downloads" / raw.name
    if cached.is_file():
        if _verified(cached, raw):
            return cached
        cached.unlink()  # a corrupt or truncated copy is never used
    if not download:
        raise RunError(f"{raw.name} not found: place it in $GLASSGPT_MIRROR or at {cached}")
    return _download(raw, cached)


def _download(raw: RawFile, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(raw.url, timeout=30) as response, open(part, "wb") as f:
            shutil.copyfileobj(response, f)
    except (urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        raise RunError(
            f"could not download {raw.name} from {raw.url} ({getattr(e, 'reason', e)}); "
            f"without network, place the file at {dest} or in a folder named by GLASSGPT_MIRROR"
        ) from None
    if not _verified(part, raw):
        part.unlink()
        raise RunError(f"downloaded {raw.name} does not match its SHA-256 {raw.sha256}: try again later")
    os.replace(part, dest)
    return dest


# ---------------------------------------------------------------- preparing datasets

def token_dtype(vocab_size: int):
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32


def write_split(path: Path, ids, vocab_size: int) -> int:
    arr = np.asarray(ids, dtype=token_dtype(vocab_size))
    arr.tofile(path)
    return int(arr.size)


def _prepare_shakespeare(out: Path, tokenizer_name: str, **_) -> dict:
    text = find_raw_file(TINY_SHAKESPEARE).read_text(encoding="utf-8")
    tok = get_tokenizer("char", text=text) if tokenizer_name == "char" else get_tokenizer(tokenizer_name)
    n = len(text)
    splits = {"train": text[: int(n * 0.9)], "val": text[int(n * 0.9):]}
    counts = {name: write_split(out / f"{name}.bin", tok.encode(part), tok.vocab_size) for name, part in splits.items()}
    return {"tokenizer": tok.to_dict(), "tokens": counts, "source_sha256": TINY_SHAKESPEARE.sha256}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    prepare: Callable[..., dict]  # fills a folder with split files, returns the meta fields


DATASETS: dict[str, DatasetSpec] = {
    "shakespeare-char": DatasetSpec(
        "shakespeare-char", "Tiny Shakespeare, one token per character (65)",
        lambda out, **kw: _prepare_shakespeare(out, "char", **kw),
    ),
    "shakespeare": DatasetSpec(
        "shakespeare", "Tiny Shakespeare, GPT-2 BPE",
        lambda out, **kw: _prepare_shakespeare(out, "gpt2", **kw),
    ),
}


def dataset_path(name: str) -> Path:
    return data_dir() / name


def check_dataset_name(name: str) -> DatasetSpec:
    if name not in DATASETS:
        import difflib

        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"unknown dataset {name!r}{hint}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def prepare(name: str, *, max_tokens: int | None = None, force: bool = False) -> Path:
    """Prepare a dataset into the data dir (once: a prepared dataset is left as it is)."""
    spec = check_dataset_name(name)
    final = dataset_path(name)
    if (final / "meta.json").is_file() and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))  # filled, then renamed into place
    try:
        meta = spec.prepare(work, max_tokens=max_tokens)
        meta["dataset"] = name
        meta["dtype"] = np.dtype(token_dtype(tokenizer_from_dict(meta["tokenizer"]).vocab_size)).name
        (work / "meta.json").write_text(json.dumps(meta, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


# ---------------------------------------------------------------- reading prepared data

class TokenDataset:
    """A prepared dataset: its tokenizer and one read-only memmap per split."""

    def __init__(self, path: Path):
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise UsageError(f"dataset {path.name!r} is not prepared: run `glassgpt prepare {path.name}`")
        self.path = path
        self.meta = json.loads(meta_path.read_text())
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
        return np.memmap(path, dtype=self.dtype, mode="r")

    @property
    def bits_per_token_unit(self) -> str | None:
        """'character' or 'byte' when one token is one of them, so loss/ln 2 is bpc or bpb."""
        return {"char": "character", "byte": "byte"}.get(self.tokenizer.name)


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
