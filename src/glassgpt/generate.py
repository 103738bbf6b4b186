"""Sampling, and a KV cache written by hand.

Sampling is a pure function of the last position's logits and a seeded
`torch.Generator`: temperature, then top-k, then top-p (nucleus), then a draw;
temperature 0 is greedy.

Without a cache every step runs the model on the whole context. With the
`KVCache`, the prompt runs once (the prefill) and each later step runs only the
new token, reading the keys and values of the past from the cache. The model
only ever sees the last `block_size` tokens: when the cache is full, it is
refilled from the last `block_size` tokens, which is exactly what the uncached
path computes, so both give the same tokens and logits. (Past `block_size` the
window slides, every key changes, and each step costs a full forward again:
exact parity has that price.)

`encode_prompt` and `StreamDecoder` turn text into a prompt and streamed token
ids back into text, holding back the pieces of a multi-byte character.
"""

from __future__ import annotations

from typing import Iterator

import torch

from glassgpt.config import GPTConfig
from glassgpt.errors import UsageError


class KVCache:
    """Keys and values of every layer, preallocated: (n_layer, B, nh, max_len, hs) each.
    `length` positions are filled; the model advances it after all layers have run."""

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.head_size)
        self.k = torch.empty(shape, device=device, dtype=dtype)  # only the first `length` positions are ever read
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys/values (B, nh, T, hs) of one layer after the past ones and
        return all of them, (B, nh, length + T, hs)."""
        end = self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked to hold {end}: reset it or crop the context")
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def reset(self) -> None:
        self.length = 0


# ---------------------------------------------------------------- sampling

MAX_NEW_TOKENS = 100_000  # a cap on one request, so a typo cannot ask for hours of sampling


def check_sampling_args(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                        max_new_tokens: int = 0) -> None:
    """UsageError, in one sentence, for settings sampling cannot use."""
    if not temperature >= 0:
        raise UsageError(f"temperature must be 0 (greedy) or positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise UsageError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise UsageError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 0:
        raise UsageError(f"max_new_tokens must not be negative, got {max_new_tokens}")
    if max_new_tokens > MAX_NEW_TOKENS:
        raise UsageError(f"max_new_tokens is capped at {MAX_NEW_TOKENS}, got {max_new_tokens}: ask for fewer")


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (B, V); the rest become -inf. Logits tied
    with the k-th largest are all kept."""
    k = min(k, logits.size(-1))
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p
    (always at least one); the rest become -inf."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # probability of the tokens ranked above
    drop_sorted = mass_before >= p  # the set had already reached p without this token
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sampling_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> torch.Tensor:
    """logits (B, V) -> the distribution (B, V) a token is drawn from: logits divided by
    the temperature, then top-k, then top-p, then softmax. Needs temperature > 0."""
    logits = logits.float() / temperature
    if top_k is not None:
        logits = apply_top_k(logits, top_k)
    if top_p is not None and top_p < 1:
        logits = apply_top_p(logits, top_p)
    return torch.softmax(logits, dim=-1)  # (B, V), dropped tokens get exactly 0


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) of the last position -> next token ids (B, 1); temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = sampling_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator)


# ---------------------------------------------------------------- generation

@torch.no_grad()
def stream_logits(model, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, use_cache: bool = True,
                  generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield `(next_ids (B, 1), logits (B, V))` for each new token."""
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    if idx.dim() != 2 or idx.size(0) == 0 or idx.size(1) == 0:
        raise UsageError("generation needs a prompt of shape (B, T) with at least one token per row")
    if idx.dtype != torch.long:
        raise UsageError(f"prompt token ids must be a LongTensor, got {idx.dtype}")
    block = model.config.block_size
    param = next(model.parameters())
    cache_len = min(block, idx.size(1) + max_new_tokens)  # all the positions this call can fill
    cache = KVCache(model.config, idx.size(0), cache_len, param.device, param.dtype) if use_cache else None
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            if cache is None:
                # the whole (cropped) context every step
                logits, _ = model(idx[:, -block:], last_position_only=True)
            elif cache.length == 0 or cache.length == block:
                cache.reset()  # first step, or the cache is full: fill it from the last block tokens
                logits, _ = model(idx[:, -block:], kv_cache=cache, last_position_only=True)
            else:
                # only the newest token
                logits, _ = model(idx[:, -1:], kv_cache=cache, last_position_only=True)
            last_logits = logits[:, -1, :]  # (B, V)
            next_ids = sample_next(last_logits, temperature, top_k, top_p, generator)  # (B, 1)
            idx = torch.cat([idx, next_ids], dim=1)
            yield next_ids, last_logits
    finally:
        model.train(was_training)


def stream(model, idx: torch.Tensor, max_new_tokens: int, **kw) -> Iterator[torch.Tensor]:
    """Yield next token ids (B, 1) as they are made."""
    for next_ids, _ in stream_logits(model, idx, max_new_tokens, **kw):
        yield next_ids


def generate(model, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """idx (B, T) -> (B, T + max_new_tokens): the prompt followed by the new tokens."""
    new = list(stream(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                      use_cache=use_cache, generator=generator))
    return torch.cat([idx, *new], dim=1)


# ---------------------------------------------------------------- text in and out

def encode_prompt(tokenizer, text: str | None) -> list[int]:
    """Prompt text -> token ids. No text (or empty text) starts from the tokenizer's
    start token (`<|endoftext|>` for GPT-2); a tokenizer without one starts from a
    newline when text is None, and an empty string is an error."""
    if text:
        return tokenizer.encode(text)
    if tokenizer.eot_token is not None:
        return [tokenizer.eot_token]
    if text == "":
        raise UsageError("the prompt is empty and this tokenizer has no start token: give some text")
    try:
        return tokenizer.encode("\n")
    except UsageError:
        raise UsageError("this tokenizer has no start token and no newline: give a prompt") from None


class StreamDecoder:
    """Token ids in, printable text out, as tokens arrive.

    A byte-level BPE token can end in the middle of a multi-byte UTF-8 character
    ("é" or "🙂" may take two or more tokens); decoding it alone gives U+FFFD.
    Such tokens are held back until the character is complete. Only the tokens
    since the last complete character are decoded again, so streaming n tokens
    costs O(n)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.pending: list[int] = []
        self.can_split_characters = tokenizer.name != "char"  # a char token is always whole

    def push(self, ids: list[int]) -> str:
        """Add new token ids; return the text that is now complete ("" while waiting)."""
        self.pending.extend(ids)
        text = self.tokenizer.decode(self.pending)
        if self.can_split_characters and text.endswith("\ufffd"):
            return ""  # an incomplete character at the end: wait for its next bytes
        self.pending = []
        return text

    def flush(self) -> str:
        """Whatever is left, undecodable bytes shown as U+FFFD."""
        text = self.tokenizer.decode(self.pending) if self.pending else ""
        self.pending = []
        return text
