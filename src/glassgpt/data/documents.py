"""Your own text as documents: files and folders found, checked, and read in pieces.

A source is a file: `.txt`, `.md` or any other UTF-8 text (the whole file is one
document), `.jsonl` (one document per line: the string in its `--text-column`),
or `.parquet` (one document per row, that column), and `.gz` of any of them. A
folder stands for the files under it, recursively, in sorted order, matching
`--glob` (default: every file); names starting with "." are skipped, and a file
reached twice (a symlink to another one in the set) is read once. A link inside a folder
that leads out of it is skipped, with a notice (`follow_links` reads it); a link to a folder
is never entered.

Reading is streamed: a text document arrives as pieces of about
`prepare_chunk_bytes()` characters, cut after a line break that has a non-space
character on either side (`is_word_boundary`). GPT-2's pre-tokenizer regex (which `gpt2`
and `bpe:N` use) splits there the same way whether or not the text is cut, so encoding
the pieces gives the same tokens as encoding the whole document. Where a piece holds no
such line break (one very long line), it is cut where it must be.

Bad input is refused with one line naming the file: a path that does not exist,
an empty file or folder, a binary file (a NUL byte), text that is not UTF-8 (unless
`errors="replace"`; parquet strings too), a corrupt `.gz`, a missing or non-text column,
a `--glob` pathlib cannot use. Files are read through the bounded reader
(`glassgpt.safe_read`: regular files only), and what a small file can inflate to is
bounded: a JSON line at `MAX_LINE_BYTES`, a gzipped parquet file or one row group of a
parquet column at `MAX_INFLATED_BYTES`.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from glassgpt.errors import UsageError
from glassgpt.safe_read import check_regular, lines_of, loads_json, open_regular, read_capped

KINDS = ("text", "jsonl", "parquet")
MAX_LINE_BYTES = 64 << 20  # one JSON line (one document) of a .jsonl
MAX_INFLATED_BYTES = 256 << 20  # a gzipped parquet file, inflated in memory; one row group of a parquet's column


@dataclass(frozen=True)
class Source:
    """One input file, its kind ("text" | "jsonl" | "parquet"), and whether it is gzipped."""

    path: Path
    kind: str
    gzipped: bool

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def kind_of(path: Path) -> tuple[str, bool]:
    name = path.name.lower()
    gzipped = name.endswith(".gz")
    if gzipped:
        name = name[:-3]
    if name.endswith(".jsonl"):
        return "jsonl", gzipped
    if name.endswith(".parquet"):
        return "parquet", gzipped
    return "text", gzipped


def find_sources(paths: list[str | Path], glob: str | None = None, follow_links: bool = False,
                 notice: Callable[[str], None] | None = None) -> list[Source]:
    """The files named by `paths` (folders expanded, recursively), in order, each once. A link
    in a folder that leads out of it is left out (`notice` hears of it) unless `follow_links`."""
    if not paths:
        raise UsageError("prepare text needs at least one PATH: a file or a folder of text")
    found: list[Source] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise UsageError(f"{path} does not exist")
        if path.is_dir():
            try:
                files = files_in(path, glob or "*", follow_links, notice)
            except (ValueError, NotImplementedError) as e:  # pathlib refuses '**x', '/abs', ...
                raise UsageError(f"--glob {glob!r} is not a pattern glassgpt can use ({e}): give a relative "
                                 "pattern such as '*.md' or 'notes/*.txt'") from None
            if not files:
                raise UsageError(f"{path} holds no files" + (f" matching --glob {glob!r}" if glob else "")
                                 + ": point at a folder of text files")
        elif path.is_file():
            files = [path]
        else:
            raise UsageError(f"{path} is not a file or a folder")
        for file in files:
            real = file.resolve()
            if real in seen:
                continue
            seen.add(real)
            found.append(Source(file, *kind_of(file)))
    return found


def files_in(folder: Path, pattern: str, follow_links: bool, notice: Callable[[str], None] | None) -> list[Path]:
    """The files under `folder` matching `pattern`, in sorted order: no hidden names, and no link
    that leads out of the folder unless `follow_links` (each one left out is told to `notice`)."""
    root, files = folder.resolve(), []
    for p in sorted(folder.rglob(pattern)):  # rglob enters no linked folder
        if any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        if p.is_symlink() and not follow_links and not p.resolve().is_relative_to(root):
            if notice is not None:
                notice(f"skipped {p}: a link to {os.readlink(p)}, outside {folder} (--follow-links reads it)")
            continue
        if p.is_file():
            files.append(p)
    return files


# ---------------------------------------------------------------- reading

@contextlib.contextmanager
def _open_binary(source: Source) -> Iterator[BinaryIO]:
    """The source's bytes, inflated when it is gzipped: a regular file only (the bounded reader)."""
    with open_regular(source.path, error=UsageError) as (file, _):
        if not source.gzipped:
            yield file
            return
        with gzip.GzipFile(fileobj=file, mode="rb") as inflated:
            yield inflated


def _gz_errors():
    return (gzip.BadGzipFile, EOFError, zlib.error)


def documents(source: Source, *, chunk_chars: int, text_column: str = "text",
              errors: str = "strict") -> Iterator[Iterator[str]]:
    """The documents of one source, each an iterator of text pieces (read one before the next)."""
    if source.kind == "text":
        yield _guard(_text_pieces(source, chunk_chars, errors), source)
    elif source.kind == "jsonl":
        for text in _guard(_jsonl_texts(source, text_column, errors), source):
            yield _cut(text, chunk_chars)
    else:
        for text in _guard(_parquet_texts(source, text_column, errors), source):
            yield _cut(text, chunk_chars)


def _guard(items: Iterator, source: Source) -> Iterator:
    """`items`, with a corrupt or truncated .gz turned into one clear line naming the file."""
    try:
        yield from items
    except _gz_errors() as e:
        raise UsageError(f"{source.path} is not a valid .gz file ({e})") from None


def _text_pieces(source: Source, chunk_chars: int, errors: str) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
    held, offset, empty = "", 0, True
    with _open_binary(source) as f:
        while True:
            raw = f.read(max(1, chunk_chars))
            if raw and empty:
                empty = False
            nul = raw.find(b"\0")
            if nul >= 0:
                raise UsageError(f"{source.path} is a binary file (a NUL byte at byte {offset + nul:,}): "
                                 "give text files, or narrow the folder with --glob")
            try:
                held += decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise UsageError(f"{source.path} is not UTF-8 text (byte {offset + e.start:,}): convert it, "
                                 "or pass --errors replace to read bad bytes as U+FFFD") from None
            offset += len(raw)
            if not raw:
                break
            while len(held) >= chunk_chars:
                cut = safe_cut(held, chunk_chars)
                yield held[:cut]
                held = held[cut:]
    if empty:
        raise UsageError(f"{source.path} is empty: remove it or give a file with text")
    if held:
        yield held


def safe_cut(text: str, limit: int) -> int:
    """Where to end a piece of at most `limit` characters: at the last boundary where
    GPT-2's regex always starts a new word (`is_word_boundary`), else at `limit`."""
    i = min(limit, len(text) - 1)
    while True:
        i = text.rfind("\n", 0, i)
        if i < 0:
            return min(limit, len(text))
        if is_word_boundary(text, i + 1):
            return i + 1


def is_word_boundary(text: str, at: int) -> bool:
    r"""True when `text[at - 1]` is a line break between two non-space characters: no
    pre-token of GPT-2's regex (`gpt2`, `bpe:N`) spans it, and the line break is a pre-token
    of its own whether the text is cut there or not (after a longer run of spaces it is
    not: at the end of a piece `\s+(?!\S)` would take the whole run)."""
    return (0 < at < len(text) and text[at - 1] == "\n" and not text[at].isspace()
            and (at == 1 or not text[at - 2].isspace()))


def _cut(text: str, chunk_chars: int) -> Iterator[str]:
    while len(text) > chunk_chars:
        cut = safe_cut(text, chunk_chars)
        yield text[:cut]
        text = text[cut:]
    if text:
        yield text


def _jsonl_texts(source: Source, column: str, errors: str) -> Iterator[str]:
    rows = 0
    with _open_binary(source) as f:
        for number, raw in enumerate(lines_of(f, MAX_LINE_BYTES), 1):
            if raw is None:
                raise UsageError(f"{source.path} line {number} is longer than {MAX_LINE_BYTES:,} bytes: "
                                 "split the document into several lines")
            if b"\0" in raw:
                raise UsageError(f"{source.path} is a binary file (a NUL byte on line {number}), not JSON lines")
            try:
                line = raw.decode("utf-8", errors=errors)
            except UnicodeDecodeError:
                raise UsageError(f"{source.path} line {number} is not UTF-8: convert it, "
                                 "or pass --errors replace") from None
            if not line.strip():
                continue
            row = loads_json(line, f"{source.path} line {number}", error=UsageError)
            rows += 1
            yield _column_text(row, column, f"{source.path} line {number}")
    if rows == 0:
        raise UsageError(f"{source.path} is empty: it holds no JSON lines")


def _column_text(row, column: str, where: str) -> str:
    if not isinstance(row, dict):
        raise UsageError(f"{where} is not a JSON object: each line must be an object with a {column!r} string")
    if column not in row:
        hint = f"; it has {', '.join(map(repr, list(row)[:8]))}: pick one with --text-column" if row else ""
        raise UsageError(f"{where} has no {column!r} column{hint}")
    if not isinstance(row[column], str):
        raise UsageError(f"{where}: column {column!r} holds {type(row[column]).__name__}, not text")
    return row[column]


def _parquet_handle(source: Source, pa):
    """What pyarrow reads: the path of a regular file (read a row group at a time), or a gzipped
    file's bytes inflated in memory (parquet needs seeking), refused past MAX_INFLATED_BYTES."""
    if not source.gzipped:
        check_regular(source.path, error=UsageError)
        return str(source.path)
    with _open_binary(source) as f:
        data = read_capped(f, MAX_INFLATED_BYTES)
    if data is None:
        raise UsageError(f"{source.path} inflates to more than {MAX_INFLATED_BYTES:,} bytes: gunzip it, and "
                         "glassgpt reads the .parquet a row group at a time")
    return pa.BufferReader(data)


def _parquet_texts(source: Source, column: str, errors: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
        import pyarrow as pa
    except ImportError:
        raise UsageError(f"reading {source.path} needs pyarrow: pip install pyarrow") from None
    try:
        parquet = pq.ParquetFile(_parquet_handle(source, pa))
    except (*_gz_errors(), UsageError):
        raise
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...
        raise UsageError(f"{source.path} is not a readable parquet file ({str(e)[:120]})") from None
    names = parquet.schema_arrow.names
    if column not in names:
        raise UsageError(f"{source.path} has no {column!r} column; it has {', '.join(map(repr, names[:8]))}: "
                         "pick one with --text-column")
    kind = parquet.schema_arrow.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise UsageError(f"{source.path}: column {column!r} holds {kind}, not text")
    if parquet.metadata.num_rows == 0:
        raise UsageError(f"{source.path} is empty: it holds no rows")
    index = names.index(column)
    for group in range(parquet.metadata.num_row_groups):  # what a row group claims it inflates to, first
        size = parquet.metadata.row_group(group).column(index).total_uncompressed_size
        if size > MAX_INFLATED_BYTES:
            raise UsageError(f"{source.path}: row group {group} of column {column!r} inflates to {size:,} bytes, "
                             f"more than {MAX_INFLATED_BYTES:,}: write it with smaller row groups")
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=1024, columns=[column]):
            for raw in batch.column(0).cast(pa.binary()).to_pylist():  # bytes: decoded as --errors says
                row += 1
                if raw is None:
                    raise UsageError(f"{source.path}: row {row} has no value in column {column!r}")
                try:
                    yield raw.decode("utf-8", errors=errors)
                except UnicodeDecodeError:
                    raise UsageError(f"{source.path} row {row}: column {column!r} is not UTF-8 text: convert it, "
                                     "or pass --errors replace") from None
    except pa.ArrowException as e:
        raise UsageError(f"{source.path} is not a readable parquet file ({str(e)[:120]})") from None
