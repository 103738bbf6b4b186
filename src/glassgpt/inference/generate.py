"""Sampling and generation, with the hand-written KV cache.

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

Stopping: with `stop_ids`, a row stops after it draws one of them (the stop
token is kept). Rows of a batch stop independently; a stopped row shows
`STOPPED` (-1, not a token) in every later position, and generation ends when
every row has stopped. `StopText` does the same for stop strings, on decoded text.

A padded vocabulary (a model with more ids than its tokenizer, e.g. 50304 for
GPT-2's 50257) never yields an id the tokenizer cannot decode: with
`vocab_size` the logits of the ids past it are -inf before sampling.

`prepare_for_inference` (in `glassgpt.precision`) casts the weights to a
dtype and lays out the unembedding for fast matrix-vector products.

Text in and out (prompts, streamed decoding, stop strings) is `glassgpt.inference.text`;
the cache's own bookkeeping is `glassgpt.kv_cache`.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch

from glassgpt.errors import RunError, UsageError
from glassgpt.kv_cache import KVCache


# ---------------------------------------------------------------- sampling

MAX_NEW_TOKENS = 100_000  # a cap on one request, so a typo cannot ask for hours of sampling


def check_sampling_args(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                        max_new_tokens: int = 0) -> None:
    """UsageError, in one sentence, for settings sampling cannot use."""
    if not 0 <= temperature < float("inf"):
        raise UsageError(f"temperature must be 0 (greedy) or a positive number, got {temperature}")
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
    drop_sorted[..., 0] = False  # the most likely token always stays (p may round to 0 in fp32)
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sampling_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> torch.Tensor:
    """logits (B, V) -> the distribution (B, V) a token is drawn from: logits divided by
    the temperature, then top-k, then top-p, then softmax. Needs temperature > 0.
    The largest logit is subtracted first, so however small the temperature the largest
    becomes 0 and the others -inf at worst: the distribution tends to greedy, never to NaN."""
    # fp32, or fp64 for a temperature that fp32 would round to 0 (0 / 0 is NaN)
    logits = logits.float() if temperature >= torch.finfo(torch.float32).tiny else logits.double()
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if top_k is not None:
        logits = apply_top_k(logits, top_k)
    if top_p is not None and top_p < 1:
        logits = apply_top_p(logits, top_p)
    return torch.softmax(logits, dim=-1)  # (B, V), dropped tokens get exactly 0


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) of the last position -> next token ids (B, 1); temperature 0 is greedy."""
    if not bool(torch.isfinite(logits.amax(dim=-1)).all()):
        raise RunError("the model gave a NaN or infinite logit: its weights are broken (a diverged run?); "
                       "sample an earlier checkpoint or retrain")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = sampling_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def mask_undecodable(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """logits (B, V) -> the same with ids >= vocab_size (padding the tokenizer cannot
    decode) set to -inf, so they are never drawn."""
    if vocab_size >= logits.size(-1):
        return logits
    logits = logits.clone()
    logits[:, vocab_size:] = float("-inf")
    return logits


# ---------------------------------------------------------------- generation

STOPPED = -1  # what a row that has stopped shows in the positions after its stop token (not a token id)


def check_generation_args(model, idx: torch.Tensor, stop_ids: Iterable[int] | None,
                          vocab_size: int | None) -> tuple[list[int], int]:
    """UsageError, in one sentence, for a prompt, stop ids or vocabulary size generation
    cannot use; returns (stop ids as a list, the vocabulary size to sample from)."""
    if idx.dim() != 2 or idx.size(0) == 0 or idx.size(1) == 0:
        raise UsageError("generation needs a prompt of shape (B, T) with at least one token per row")
    if idx.dtype != torch.long:
        raise UsageError(f"prompt token ids must be a LongTensor, got {idx.dtype}")
    model_vocab = model.config.vocab_size
    vocab_size = model_vocab if vocab_size is None else int(vocab_size)
    if not 1 <= vocab_size <= model_vocab:
        raise UsageError(f"vocab_size must be between 1 and the model's {model_vocab}, got {vocab_size}: "
                         "the tokenizer does not fit this model")
    stop_ids = [int(i) for i in stop_ids or []]
    bad = [i for i in stop_ids if not 0 <= i < model_vocab]
    if bad:
        raise UsageError(f"stop token id {bad[0]} is outside the model's vocabulary of {model_vocab}")
    return stop_ids, vocab_size


@torch.no_grad()
def stream_logits(model, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, use_cache: bool = True,
                  generator: torch.Generator | None = None, stop_ids: Iterable[int] | None = None,
                  vocab_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield `(next_ids (B, 1), logits (B, V))` for each new token. A row that has drawn
    one of `stop_ids` shows `STOPPED` afterwards; the loop ends when all rows have.
    Ids >= `vocab_size` (default: the model's) are never drawn; their logits are -inf."""
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    stop_ids, vocab_size = check_generation_args(model, idx, stop_ids, vocab_size)
    stop = torch.tensor(stop_ids, dtype=torch.long, device=idx.device)
    stopped = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)  # (B,)
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
            last_logits = mask_undecodable(logits[:, -1, :], vocab_size)  # (B, V)
            next_ids = sample_next(last_logits, temperature, top_k, top_p, generator)  # (B, 1)
            idx = torch.cat([idx, next_ids], dim=1)  # a stopped row goes on in the context, never shown
            yield next_ids.masked_fill(stopped[:, None], STOPPED), last_logits
            if len(stop_ids):
                stopped |= torch.isin(next_ids[:, 0], stop)
                if bool(stopped.all()):
                    return
    finally:
        model.train(was_training)


def stream(model, idx: torch.Tensor, max_new_tokens: int, **kw) -> Iterator[torch.Tensor]:
    """Yield next token ids (B, 1) as they are made."""
    for next_ids, _ in stream_logits(model, idx, max_new_tokens, **kw):
        yield next_ids


def generate(model, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None, stop_ids: Iterable[int] | None = None,
             vocab_size: int | None = None) -> torch.Tensor:
    """idx (B, T) -> (B, T + n): the prompt followed by the new tokens, n = max_new_tokens,
    or fewer when every row stopped early; a row that stopped first is padded with `STOPPED`."""
    new = list(stream(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                      use_cache=use_cache, generator=generator, stop_ids=stop_ids, vocab_size=vocab_size))
    return torch.cat([idx, *new], dim=1)


def without_stopped(row: torch.Tensor | list[int]) -> list[int]:
    """One row of `generate`'s output as a list of token ids, the `STOPPED` padding removed."""
    ids = row.tolist() if isinstance(row, torch.Tensor) else list(row)
    return ids[:ids.index(STOPPED)] if STOPPED in ids else ids
