"""Cached decoding: one head's attention with a KV cache, glassgpt.kv_cache.KVCache and
glassgpt.model.causal_mask."""

from __future__ import annotations

import math

import torch

from glassgpt.kv_cache import KVCache
from glassgpt.learn.core import Case, Exercise, catalogue
from glassgpt.learn.exercises import TITLES
from glassgpt.learn.probing import close, randn, small_model, small_tokens


def cached_attention(q, k, v, past_k, past_v):
    """One head's causal attention for new tokens, the keys and values of the past read from a cache.

    q, k, v: (B, T, hs) for the T new positions; past_k, past_v: (B, P, hs) for the P positions
    before them (P may be 0). The new queries sit at positions P .. P + T - 1: new query i sees the
    P cached keys and the new keys 0..i. Returns (out, k_all, v_all): out (B, T, hs), and the cache
    for the next step, k_all and v_all (B, P + T, hs): the past, then the new.
    """
    k_all = torch.cat([past_k, k], dim=1)  # (B, P + T, hs)
    v_all = torch.cat([past_v, v], dim=1)
    T, Tk, hs = q.size(1), k_all.size(1), q.size(-1)
    scores = q @ k_all.transpose(-2, -1) / math.sqrt(hs)  # (B, T, hs) x (B, hs, Tk) -> (B, T, Tk)
    mask = torch.ones(T, Tk, dtype=torch.bool, device=q.device).tril(diagonal=Tk - T)  # query i is at Tk - T + i
    scores = scores.masked_fill(~mask, float("-inf"))
    pattern = torch.softmax(scores.float(), dim=-1).to(v.dtype)  # (B, T, Tk)
    return pattern @ v_all, k_all, v_all  # (B, T, Tk) x (B, Tk, hs) -> (B, T, hs)


# ---------------------------------------------------------------- the catalogue's mutations

def _attend(q, k_all, v_all, diagonal):
    T, Tk = q.size(1), k_all.size(1)
    scores = q @ k_all.transpose(-2, -1) / math.sqrt(q.size(-1))
    if diagonal is not None:
        scores = scores.masked_fill(~torch.ones(T, Tk, dtype=torch.bool).tril(diagonal=diagonal), float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(v_all.dtype) @ v_all


def mask_not_offset(q, k, v, past_k, past_v):
    k_all, v_all = torch.cat([past_k, k], 1), torch.cat([past_v, v], 1)
    return _attend(q, k_all, v_all, 0), k_all, v_all


def ignores_cache(q, k, v, past_k, past_v):
    return _attend(q, k, v, 0), torch.cat([past_k, k], 1), torch.cat([past_v, v], 1)


def new_before_past(q, k, v, past_k, past_v):
    k_all, v_all = torch.cat([k, past_k], 1), torch.cat([v, past_v], 1)
    return _attend(q, k_all, v_all, k_all.size(1) - q.size(1)), k_all, v_all


def no_mask(q, k, v, past_k, past_v):
    k_all, v_all = torch.cat([past_k, k], 1), torch.cat([past_v, v], 1)
    return _attend(q, k_all, v_all, None), k_all, v_all


def returns_only_new(q, k, v, past_k, past_v):
    out, _, _ = cached_attention(q, k, v, past_k, past_v)
    return out, k, v


# ---------------------------------------------------------------- the detectors

P, T, HS = 3, 3, 8


def probe(learner):
    """The learner's weights over the keys, read from its output: each value is a one-hot vector
    naming its key (past 0..P-1, new P..P+T-1), so out[i] is query i's row of the pattern."""
    q, k = randn(1, T, HS, seed=71), randn(1, T, HS, seed=72)
    past_k = randn(1, P, HS, seed=73)
    one_hot = torch.eye(HS)[:P + T].unsqueeze(0)  # (1, P + T, hs)
    result = learner("cached_attention", q, k, one_hot[:, P:], past_k, one_hot[:, :P])
    if not isinstance(result, (tuple, list)) or len(result) != 3 or not isinstance(result[0], torch.Tensor):
        return None
    out, k_all, _ = result
    if out.shape != (1, T, HS):
        return None
    return out.float()[0, :, :P + T], k_all, k, past_k  # weights (T, P + T)


def detect_mask_not_offset(learner):
    seen = probe(learner)
    if seen is not None and bool((seen[0][0, 1:].abs() < 1e-6).all()) and float(seen[0][0, 0]) > 0.99:
        return (f"new query 0 (position {P}) sees only key 0: your mask puts the new queries at positions 0..T-1; "
                f"they come after the {P} cached ones, so query i sees keys 0..P+i (tril(diagonal=P))")


def detect_ignores_cache(learner):
    seen = probe(learner)
    if seen is not None and bool((seen[0][:, :P].abs() < 1e-6).all()) and float(seen[0][0, P]) > 0.99:
        return (f"the new queries give no weight to the {P} cached keys: attend over the past and the new together, "
                "torch.cat([past_k, k], dim=1) (and the same for v)")


def detect_new_before_past(learner):
    seen = probe(learner)
    if seen is not None and close(seen[1], torch.cat([seen[2], seen[3]], 1)):
        return ("the cache you return puts the new keys before the past ones: positions run in order, "
                "torch.cat([past_k, k], dim=1), so the next step's mask is right")


def detect_no_mask(learner):
    seen = probe(learner)
    if seen is not None and float(seen[0][0, P + 1]) > 1e-6 and not detect_new_before_past(learner):
        return (f"new query 0 (position {P}) can see new key 1 (position {P + 1}): mask the future among the new "
                "tokens too (with one new token there is nothing to mask, with several there is)")


def detect_returns_only_new(learner):
    seen = probe(learner)
    if seen is not None and close(seen[1], seen[2]):
        return ("the k_all you return holds the new keys only: return the whole cache, the past and the new, or the "
                "next step forgets everything before this one")


MISTAKES = catalogue(
    "cached_attention",
    ("mask-not-offset", "the new queries masked as if at positions 0..T-1", mask_not_offset,
            detect_mask_not_offset),
    ("ignores-cache", "the cached keys never attended to", ignores_cache, detect_ignores_cache),
    ("new-before-past", "the cache concatenated the wrong way round", new_before_past, detect_new_before_past),
    ("no-mask-among-new", "no mask among the new tokens", no_mask, detect_no_mask),
    ("returns-only-new", "the cache does not grow", returns_only_new, detect_returns_only_new),
)


# ---------------------------------------------------------------- the cases

def glassgpt_decoding_step(prefill: int = 8, new: int = 2):
    """One head of a small GPT decoding `new` tokens after `prefill` with glassgpt's KVCache:
    (q, k, v, past_k, past_v) of layer 0, head 0, and (z, k_all, v_all) as glassgpt computed them."""
    model = small_model()
    idx = small_tokens(T=prefill + new, B=1, seed=3)
    cache = KVCache(model.config, 1, prefill + new)
    names = [f"blocks.0.attn.{n}" for n in ("q", "k", "v", "z")]
    with torch.no_grad():
        model(idx[:, :prefill], kv_cache=cache)
        past_k, past_v = cache.k[0, :, 0, :prefill].clone(), cache.v[0, :, 0, :prefill].clone()  # (1, P, hs)
        _, acts = model.run_with_cache(idx[:, prefill:], names=names, kv_cache=cache)
    q, k, v, z = (acts[name][:, 0] for name in names)  # (1, T, hs) each: head 0
    return (q, k, v, past_k, past_v), (z, cache.k[0, :, 0, :prefill + new], cache.v[0, :, 0, :prefill + new])


def cases() -> list[Case]:
    def case(label, B, P, T, hs, seed):
        args = tuple(randn(B, n, hs, seed=seed + i) for i, n in enumerate((T, T, T, P, P)))
        return Case(label, "cached_attention", args, cached_attention(*args))

    args, expected = glassgpt_decoding_step()
    return [
        case("a prompt with an empty cache (P=0, T=5)", 2, 0, 5, 8, seed=1),
        case("one new token after 4 cached (P=4, T=1)", 2, 4, 1, 8, seed=10),
        case("three new tokens past a cache of 3", 2, 3, 3, 8, seed=20),
        case("a batch of one (B=1, P=6, T=2)", 1, 6, 2, 4, seed=30),
        Case("glassgpt's KVCache: a small GPT decoding 2 tokens after 8 (layer 0, head 0)", "cached_attention",
             args, expected),
    ]


EXERCISE = Exercise(
    name="kv_cache", title=TITLES["kv_cache"], reference={"cached_attention": cached_attention},
    outputs={"cached_attention": ("out", "k_all", "v_all")}, cases=cases, mistakes=MISTAKES,
    glassgpt_code="glassgpt.kv_cache.KVCache")
