"""FineWeb-Edu: educational web pages, GPT-2 BPE, streamed and tokenized in parallel.

Source: Hugging Face `datasets` streaming of `HuggingFaceFW/fineweb-edu`, config
`sample-10BT` (about 10B GPT-2 tokens). A local copy is read instead when one
exists: parquet or jsonl files in `$GLASSGPT_MIRROR/fineweb-edu/` or
`<data dir>/downloads/fineweb-edu/`, through the same `datasets` streaming
code (the "parquet" / "json" builders). Each row's `text` is one document.

Tokens: `<|endoftext|>` (50256) before each document, then its BPE ids
(`encode_ordinary`: the text "<|endoftext|>" inside a page is ordinary text, so
50256 only ever marks a document start). uint16 files, written as they come.

Splits: the first documents of the stream form `val.bin`, until it holds 1% of
`--max-tokens` (without a cap: 10M tokens; never more than 10M), always ending
at a document boundary; everything after goes to `train.bin`. `--max-tokens`
caps the total of both files (the last training document is cut there).

Memory: documents are read in waves of about `prepare_chunk_bytes()`
characters; a wave is split into consecutive batches that a `multiprocessing`
pool tokenizes with `imap` (order kept), and the tokens go straight to disk
before the next wave is read. Nothing ever holds the whole corpus.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from glassgpt.data.sources import downloads_dir, mirror_dir, prepare_chunk_bytes
from glassgpt.data.writing import SplitWriter
from glassgpt.errors import RunError, UsageError, first_line
from glassgpt.progress import progress
from glassgpt.tokenizer import GPT2_EOT, get_tokenizer, gpt2_encoding

HF_REPO = "HuggingFaceFW/fineweb-edu"
HF_CONFIG = "sample-10BT"
LOCAL_FOLDER = "fineweb-edu"
BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".jsonl.gz": "json", ".json.gz": "json"}
VAL_FRACTION = 0.01
VAL_MAX_TOKENS = 10_000_000
BATCHES_PER_WORKER = 4  # batches per worker in each wave: keeps every worker busy to the wave's end


# ---------------------------------------------------------------- reading documents

def local_copy() -> tuple[str, list[Path]] | None:
    """The `datasets` builder and files of a local FineWeb-Edu copy, if there is one."""
    mirror = mirror_dir()
    folders = ([mirror / LOCAL_FOLDER] if mirror is not None else []) + [downloads_dir() / LOCAL_FOLDER]
    for folder in folders:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and builder_for(p)) if folder.is_dir() else []
        if not files:
            continue
        builders = {builder_for(p) for p in files}
        if len(builders) > 1:
            raise UsageError(f"{folder} mixes parquet and json files: keep one kind of file there")
        return builders.pop(), files
    return None


def builder_for(path: Path) -> str | None:
    """The `datasets` builder that reads a file, by its extension ("parquet", "json"), or None."""
    return next((builder for ext, builder in BUILDERS.items() if path.name.endswith(ext)), None)


def open_documents() -> tuple[Iterator[str], str]:
    """An iterator over document texts, and a description of where they come from."""
    try:
        import datasets
    except ImportError:
        raise UsageError("fineweb-edu needs the `datasets` package: pip install 'glassgpt[fineweb]'") from None
    local = local_copy()
    if local is not None:
        builder, files = local
        where = f"{len(files)} local {builder} file(s) in {files[0].parent}"
        try:
            stream = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", streaming=True)
        except Exception as e:  # unreadable files: `datasets` raises many kinds
            raise RunError(f"could not read {where} ({first_line(e)}): check or replace those files") from None
        return _texts(stream, where), where
    where = f"{HF_REPO} ({HF_CONFIG}) on the Hugging Face Hub"
    try:
        stream = datasets.load_dataset(HF_REPO, name=HF_CONFIG, split="train", streaming=True)
    except Exception as e:  # the Hub client raises many kinds; each means the same thing to the user
        raise RunError(f"could not stream {where} ({first_line(e)}); without network, place fineweb-edu "
                       f"parquet or jsonl files in $GLASSGPT_MIRROR/{LOCAL_FOLDER}/ or "
                       f"{downloads_dir() / LOCAL_FOLDER}/") from None
    return _texts(stream, where), where


def stream_rows(stream: Iterable[dict], where: str) -> Iterator[dict]:
    """The rows of a `datasets` stream; a broken file or connection inside it is one RunError."""
    rows = iter(stream)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as e:  # a broken file or connection, raised from inside `datasets`
            raise RunError(f"could not read {where} ({first_line(e)}): check the files or the network") from None
        yield row


def _texts(stream: Iterable[dict], where: str) -> Iterator[str]:
    for row in stream_rows(stream, where):
        if not isinstance(row.get("text"), str):
            raise UsageError(f"a row of {where} has no 'text' string: FineWeb-Edu rows need a 'text' column")
        yield row["text"]


# ---------------------------------------------------------------- tokenizing in parallel

def encode_documents(texts: list[str]) -> np.ndarray:
    """`[EOT, doc 1 ..., EOT, doc 2 ...]` as one uint16 array (run in worker processes)."""
    enc = gpt2_encoding()
    ids: list[int] = []
    for text in texts:
        ids.append(GPT2_EOT)
        ids.extend(enc.encode_ordinary(text))
    return np.array(ids, dtype=np.uint16)


def document_waves(texts: Iterable[str], chunk_chars: int) -> Iterator[list[str]]:
    """Consecutive lists of documents, each closed once it holds `chunk_chars` characters."""
    wave: list[str] = []
    size = 0
    for text in texts:
        wave.append(text)
        size += len(text)
        if size >= chunk_chars:
            yield wave
            wave, size = [], 0
    if wave:
        yield wave


def consecutive_batches(items: list, n: int) -> list[list]:
    """`items` cut into at most `n` consecutive slices of near-equal length (order kept)."""
    step = max(1, math.ceil(len(items) / n))
    return [items[i: i + step] for i in range(0, len(items), step)]


def tokenize_documents(texts: Iterable[str], workers: int = 1, chunk_chars: int | None = None) -> Iterator[np.ndarray]:
    """Token arrays for the documents, in order: one per batch of whole documents.
    With `workers > 1` a process pool tokenizes each wave's batches with `imap`."""
    chunk_chars = chunk_chars or prepare_chunk_bytes()
    waves = document_waves(texts, chunk_chars)
    if workers <= 1:
        for wave in waves:
            yield encode_documents(wave)
        return
    with multiprocessing.Pool(workers) as pool:  # leaving the block (also early) terminates the workers
        for wave in waves:
            yield from pool.imap(encode_documents, consecutive_batches(wave, workers * BATCHES_PER_WORKER))


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 32))


# ---------------------------------------------------------------- writing the splits

def val_budget(max_tokens: int | None) -> int:
    if max_tokens is None:
        return VAL_MAX_TOKENS
    return max(1, min(VAL_MAX_TOKENS, int(max_tokens * VAL_FRACTION)))


def document_end(tokens: np.ndarray, at_least: int) -> int:
    """The first document start (EOT) at or after index `at_least`, or the end of `tokens`."""
    starts = np.flatnonzero(tokens[at_least:] == GPT2_EOT)
    return at_least + int(starts[0]) if len(starts) else len(tokens)


def write_splits(token_batches: Iterable[np.ndarray], out: Path, max_tokens: int | None) -> dict[str, int]:
    """Write val (first documents) then train from batches of whole documents; cap the total."""
    budget = val_budget(max_tokens)
    with SplitWriter(out / "val.bin", np.uint16) as val, SplitWriter(out / "train.bin", np.uint16) as train, \
            progress("fineweb-edu", max_tokens, "tok") as bar:
        for tokens in token_batches:
            if max_tokens is not None:
                tokens = tokens[: max_tokens - val.count - train.count]
            cut = document_end(tokens, budget - val.count) if val.count < budget else 0
            val.write(tokens[:cut])
            train.write(tokens[cut:])
            bar.advance(len(tokens))
            if max_tokens is not None and val.count + train.count >= max_tokens:
                break
    return {"train": train.count, "val": val.count}


def prepare_fineweb(out: Path, max_tokens: int | None = None, workers: int | None = None,
                    chunk_bytes: int | None = None, **_) -> dict:
    texts, where = open_documents()
    with contextlib.closing(tokenize_documents(texts, workers or default_workers(), chunk_bytes)) as batches:
        counts = write_splits(batches, out, max_tokens)
    if counts["train"] + counts["val"] == 0:
        raise RunError(f"{where} holds no documents: check those files")
    if counts["train"] == 0:
        raise UsageError(f"{where} gave {counts['val']} tokens, all taken by the validation split: "
                         "raise --max-tokens or add documents")
    return {"tokenizer": get_tokenizer("gpt2").to_dict(), "tokens": counts, "source": where,
            "max_tokens": max_tokens, "val_rule": f"first documents, {VAL_FRACTION:.0%} of max_tokens "
                                                  f"(at most {VAL_MAX_TOKENS:,} tokens)"}
