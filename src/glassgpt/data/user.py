"""Your own datasets: `glassgpt prepare text PATH... --name NAME` and `prepare hf DATASET`.

The documents (`glassgpt.data.documents`) are read three times, always streamed:
1. a scan checks every source (so bad input is refused before anything is written),
   records its size and SHA-256, counts the documents and, for `char`, collects the
   characters;
2. for `bpe:N`, Hugging Face `tokenizers` learns the merges from the training split;
3. the documents are encoded in batches and appended to `train.bin` / `val.bin`.

Documents are joined with the tokenizer's end-of-text token where it has one (`gpt2`,
`bpe:N`): `[EOT, doc 1 ..., EOT, doc 2 ...]`, as FineWeb-Edu; `char` and `byte` have
none, so their documents are simply concatenated.

The validation split is taken by document, deterministically and spread through the
corpus: with fraction F, document i (from 0) is a validation document when
floor((i + 1) F) > floor(i F), so with F = 0.1 documents 9, 19, 29, ... are. When that
gives none (fewer than 1/F documents: one book in one file, say), the last document is
cut instead: its final F of characters, from the first line start there, are the
validation split.

`prepare hf` (`glassgpt.data.hub`) feeds a Hugging Face dataset through the same path.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from glassgpt.data.documents import Source, documents, find_sources, safe_cut
from glassgpt.data.sources import sha256_of
from glassgpt.data.writing import SplitWriter, token_dtype
from glassgpt.errors import RunError, UsageError
from glassgpt.progress import Progress
from glassgpt.tokenizer import BPETokenizer, Tokenizer, get_tokenizer, parse_tokenizer_spec

USER_VERSION = 1
RESERVED_NAMES = ("text", "hf", "downloads")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_TRAIN_TOKENS = 66  # one window of cpu-baby's block_size 64 and its next token, with one start to draw
MIN_VAL_TOKENS = 2
ENCODE_PIECE_CHARS = 1 << 16  # pieces encoded in parallel by tiktoken / tokenizers ...
ENCODE_GROUP = 16  # ... this many at a time (1 MiB of text)


@dataclass
class TextRequest:
    """What `prepare text` was asked for (recorded in meta.json as "request")."""

    paths: list[str]
    tokenizer: str = "bpe:4096"
    val_fraction: float = 0.1
    text_column: str = "text"
    glob: str | None = None
    errors: str = "strict"
    max_tokens: int | None = None
    hf: dict | None = field(default=None)  # prepare hf: dataset, config, split
    follow_links: bool | None = None  # True: read links that lead out of a folder (None: skip them, with a notice)
    tokenizer_from: str | None = None  # `--tokenizer-from RUN`: the run whose tokenizer is used as it is ...
    given_tokenizer: Tokenizer | None = field(default=None, repr=False, compare=False)  # ... that tokenizer

    def recorded(self) -> dict:
        """What meta.json records as the request (the given tokenizer is recorded as meta's tokenizer)."""
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "given_tokenizer"}


def check_user_name(name: str, builtins) -> None:
    if name in builtins:
        raise UsageError(f"--name {name!r} is a built-in dataset: choose another name for your own data")
    if name in RESERVED_NAMES or not NAME_PATTERN.fullmatch(name):
        raise UsageError(f"--name {name!r} is not a usable dataset name: letters, digits, '.', '_' and '-' "
                         f"(up to 64, not starting with '.' or '-'), and not {', '.join(RESERVED_NAMES)}")


def check_request(req: TextRequest) -> Fraction:
    parse_tokenizer_spec(req.tokenizer)
    if not isinstance(req.val_fraction, (int, float)) or not 0 < req.val_fraction <= 0.5:
        raise UsageError(f"--val-fraction must be above 0 and at most 0.5, got {req.val_fraction}")
    if req.errors not in ("strict", "replace"):
        raise UsageError(f"--errors must be strict or replace, got {req.errors!r}")
    if not req.text_column:
        raise UsageError("--text-column must not be empty")
    return Fraction(str(req.val_fraction)).limit_denominator(10_000)


# ---------------------------------------------------------------- the split, by document

def is_val_document(i: int, fraction: Fraction) -> bool:
    """Document i (from 0) goes to validation when floor((i + 1) F) > floor(i F)."""
    p, q = fraction.numerator, fraction.denominator
    return (i + 1) * p // q > i * p // q


@dataclass
class Scan:
    sources: list[dict]
    documents: int
    last_chars: int
    chars: set
    total_chars: int = 0


class Corpus:
    """The documents of a list of sources, re-readable, with the split applied."""

    def __init__(self, sources: list[Source], req: TextRequest, chunk_chars: int):
        self.sources, self.req, self.chunk_chars = sources, req, chunk_chars
        self.fraction = check_request(req)
        self.scan: Scan | None = None

    def documents(self) -> Iterator[Iterator[str]]:
        for source in self.sources:
            yield from self._documents_of(source)

    def _documents_of(self, source: Source) -> Iterator[Iterator[str]]:
        """The non-empty documents of one source (an empty JSON string is no document)."""
        for pieces in documents(source, chunk_chars=self.chunk_chars, text_column=self.req.text_column,
                                errors=self.req.errors):
            head = next(pieces, None)
            if head:
                yield itertools.chain([head], pieces)

    def run_scan(self, collect_chars: bool) -> Scan:
        """Read everything once: refuse bad input, record each source, count documents."""
        records, n_docs, last_chars, chars, total = [], 0, 0, set(), 0
        for source in self.sources:
            n_source = 0
            for pieces in self._documents_of(source):
                length = 0
                for piece in pieces:
                    length += len(piece)
                    if collect_chars:
                        chars.update(piece)
                n_source += 1
                last_chars = length
                total += length
            if n_source == 0:
                raise UsageError(f"{source.path} holds no text: remove it or give a file with text")
            n_docs += n_source
            records.append({"path": str(source.path.resolve()), "kind": source.kind + (".gz" if source.gzipped else ""),
                            "bytes": source.size, "sha256": sha256_of(source.path), "documents": n_source})
        self.scan = Scan(records, n_docs, last_chars, chars, total)
        return self.scan

    @property
    def tail_mode(self) -> bool:
        """True when no whole document would go to validation: the last one is cut instead."""
        return self.scan.documents * self.fraction.numerator // self.fraction.denominator == 0

    def pieces(self) -> Iterator[tuple[str, bool, str]]:
        """(split, starts a document, text) for every piece of every non-empty document, in order."""
        n_docs, tail = self.scan.documents, self.tail_mode
        for i, doc in enumerate(self.documents()):
            if tail and i == n_docs - 1:
                yield from self._cut_last(doc)
                continue
            split = "val" if not tail and is_val_document(i, self.fraction) else "train"
            for k, piece in enumerate(doc):
                yield split, k == 0, piece

    def _cut_last(self, doc: Iterator[str]) -> Iterator[tuple[str, bool, str]]:
        n = self.scan.last_chars
        target = n - max(1, math.ceil(n * self.fraction))  # characters that stay in training, at least
        offset, switched, first = 0, False, True
        for piece in doc:
            if not switched and offset + len(piece) > target:
                cut = line_start_from(piece, target - offset)
                head, piece, switched = piece[:cut], piece[cut:], True
                if head:
                    yield "train", first, head
                    first = False
            if not switched:
                offset += len(piece)
                yield "train", first, piece
                first = False
            elif piece:
                yield "val", False, piece


def line_start_from(text: str, at: int) -> int:
    """The first line start at or after `at` whose line begins with a non-space character, else `at`."""
    j = text.find("\n", max(at - 1, 0))
    while j >= 0:
        if j + 1 < len(text) and not text[j + 1].isspace():
            return j + 1
        j = text.find("\n", j + 1)
    return at


# ---------------------------------------------------------------- encoding

class BatchEncoder:
    """Text pieces to token arrays, fast: numpy for char and byte, the tokenizers'
    own parallel batch encoders for gpt2 and bpe."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        if tok.name == "char":
            self.points = np.array([ord(c) for c in tok.chars], dtype=np.uint32)  # sorted, as tok.chars is

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        name = self.tok.name
        if name == "byte":
            return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]
        if name == "char":
            return [self._chars(t) for t in texts]
        parts, owner = [], []
        for k, text in enumerate(texts):
            for part in _split(text, ENCODE_PIECE_CHARS):
                parts.append(part)
                owner.append(k)
        out: list[list[np.ndarray]] = [[] for _ in texts]
        for g in range(0, len(parts), ENCODE_GROUP):  # a group at a time: the encoders' objects stay small
            for k, part_ids in zip(owner[g: g + ENCODE_GROUP], self.tok.encode_batch(parts[g: g + ENCODE_GROUP])):
                out[k].append(np.asarray(part_ids, dtype=np.int64))
        return [np.concatenate(o) if o else np.zeros(0, dtype=np.int64) for o in out]

    def _chars(self, text: str) -> np.ndarray:
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self.points, points)
        bad = (ids >= len(self.points)) | (self.points[np.minimum(ids, len(self.points) - 1)] != points)
        if bad.any():
            raise RunError(f"character {chr(points[bad][0])!r} was not seen when the vocabulary was made")
        return ids


def _split(text: str, limit: int) -> Iterator[str]:
    while len(text) > limit:
        cut = safe_cut(text, limit)
        yield text[:cut]
        text = text[cut:]
    yield text


def fit_tokenizer(corpus: Corpus, spec: str, given: Tokenizer | None = None, given_from: str | None = None) -> Tokenizer:
    """The tokenizer of `spec`, fitted on the corpus; or `given` as it is (a run's), checked to read it."""
    if given is not None:
        unknown = sorted(corpus.scan.chars - set(given.chars)) if given.name == "char" else []
        if unknown:
            shown = " ".join(repr(c) for c in unknown[:8]) + (" ..." if len(unknown) > 8 else "")
            raise UsageError(f"the text holds {len(unknown)} character(s) the char tokenizer of {given_from} has never "
                             f"seen ({shown}): remove them, or prepare it with a tokenizer of its own (--tokenizer)")
        return given
    name, n = parse_tokenizer_spec(spec)
    if name == "char":
        if not corpus.scan.chars:
            raise UsageError("the text holds no characters to make a vocabulary of")
        return get_tokenizer("char", chars="".join(corpus.scan.chars))
    if name == "bpe":
        return BPETokenizer.train((piece for split, _, piece in corpus.pieces() if split == "train"), n)
    return get_tokenizer(name)


def write_tokens(corpus: Corpus, tok: Tokenizer, out: Path, max_tokens: int | None = None) -> dict:
    """Encode every piece into out/{train,val}.bin; returns tokens, UTF-8 bytes and documents per split."""
    encoder = BatchEncoder(tok)
    dtype = token_dtype(tok.vocab_size)
    stats = {key: {"train": 0, "val": 0} for key in ("tokens", "text_bytes", "documents")}
    with SplitWriter(out / "train.bin", dtype) as train, SplitWriter(out / "val.bin", dtype) as val:
        writers = {"train": train, "val": val}
        batch, size = [], 0

        def flush(items: list[tuple[str, bool, str]]) -> bool:
            """Encode and write these pieces; False once max_tokens is reached."""
            arrays = encoder.encode([text for _, _, text in items])
            for (split, start, text), ids in zip(items, arrays):
                eot = start and tok.eot_token is not None
                if eot:
                    ids = np.concatenate([np.array([tok.eot_token], dtype=np.int64), ids])
                full = len(ids)
                if max_tokens is not None:
                    ids = ids[: max_tokens - train.count - val.count]
                    if not len(ids):
                        return False
                writers[split].write(ids)
                cut = len(ids) < full  # the last piece under max_tokens: count the bytes its tokens stand for
                stats["text_bytes"][split] += len(tok.decode_bytes(ids[int(eot):].tolist()) if cut else text.encode())
                stats["documents"][split] += start
            return max_tokens is None or train.count + val.count < max_tokens

        bar = Progress(f"tokenizing ({tok.name})", corpus.scan.total_chars or None, "char")
        going = True
        for item in corpus.pieces():
            batch.append(item)
            size += len(item[2])
            bar.advance(len(item[2]))
            if size >= corpus.chunk_chars:
                going = flush(batch)
                batch, size = [], 0
                if not going:
                    break
        if going and batch:
            flush(batch)
        bar.close()
    stats["tokens"] = {"train": train.count, "val": val.count}
    return stats


# ---------------------------------------------------------------- prepare text

def prepare_text(out: Path, req: TextRequest, chunk_bytes: int, sources: list[Source] | None = None,
                 notice: Callable[[str], None] | None = None) -> dict:
    """Fill `out` with train.bin, val.bin and tokenizer.json (bpe); returns the meta fields.
    `notice` hears of links left out of a folder (see `find_sources`)."""
    check_request(req)
    if sources is None:
        sources = find_sources(req.paths, req.glob, bool(req.follow_links), notice)
    corpus = Corpus(sources, req, chunk_bytes)
    name, _ = parse_tokenizer_spec(req.tokenizer)
    scan = corpus.run_scan(collect_chars=name == "char")
    tok = fit_tokenizer(corpus, req.tokenizer, req.given_tokenizer, req.tokenizer_from)
    stats = write_tokens(corpus, tok, out, req.max_tokens)
    tokens = stats["tokens"]
    if tokens["train"] < MIN_TRAIN_TOKENS or tokens["val"] < MIN_VAL_TOKENS:
        where = scan.sources[0]["path"] if len(scan.sources) == 1 else f"the {len(scan.sources)} sources"
        raise UsageError(f"{where} gave {tokens['train']} training and {tokens['val']} validation tokens, too few "
                         f"for one training window (at least {MIN_TRAIN_TOKENS} and {MIN_VAL_TOKENS}): add text")
    if isinstance(tok, BPETokenizer):
        tok.save(out / "tokenizer.json")
    rule = (f"by document: document i is validation when floor((i+1)*{corpus.fraction}) > floor(i*{corpus.fraction})"
            if not corpus.tail_mode else
            f"fewer than 1/{corpus.fraction} documents: the last {corpus.fraction} of the last document, "
            "from a line start, is validation")
    request = req.recorded()
    return {"kind": "hf" if req.hf else "text", "tokenizer": tok.to_dict(), "tokenizer_spec": req.tokenizer,
            **stats, "sources": scan.sources, "val_rule": rule, "request": request}
