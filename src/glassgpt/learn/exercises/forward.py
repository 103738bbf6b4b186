"""The whole forward pass: glassgpt.model.GPT.forward."""

from __future__ import annotations

import torch

from glassgpt.learn.core import Case, Exercise, catalogue
from glassgpt.learn.exercises import TITLES
from glassgpt.learn.exercises.block import Recorder
from glassgpt.learn.probing import close, randn, small_model, small_run


def gpt_forward(idx, wte, wpe, blocks, ln_f):
    """The whole model, GPT-2's, from token ids to logits.

    idx: (B, T) token ids. wte: (V, C) the token embeddings. wpe: (block_size, C) the learned
    position embeddings, or None (a RoPE model: positions enter inside attention). blocks: a list
    of functions (B, T, C) -> (B, T, C), run one after the other. ln_f: the final norm, a function
    (B, T, C) -> (B, T, C). The head is tied to the token embeddings: logits = ln_f(x) @ wte.T.
    Returns the logits of every position, (B, T, V).
    """
    T = idx.size(1)
    x = wte[idx]  # (B, T, C): each token's embedding
    if wpe is not None:
        x = x + wpe[:T]  # (T, C) broadcast over B: positions 0 .. T-1
    for block in blocks:
        x = block(x)  # (B, T, C)
    return ln_f(x) @ wte.T  # (B, T, C) x (C, V) -> (B, T, V)


# ---------------------------------------------------------------- the catalogue's mutations

def _embed(idx, wte, wpe, positions):
    return wte[idx] + (wpe[positions] if wpe is not None else 0)


def no_final_norm(idx, wte, wpe, blocks, ln_f):
    x = _embed(idx, wte, wpe, torch.arange(idx.size(1)))
    for block in blocks:
        x = block(x)
    return x @ wte.T


def no_positions(idx, wte, wpe, blocks, ln_f):
    x = wte[idx]
    for block in blocks:
        x = block(x)
    return ln_f(x) @ wte.T


def positions_from_one(idx, wte, wpe, blocks, ln_f):
    x = _embed(idx, wte, wpe, torch.arange(1, idx.size(1) + 1))
    for block in blocks:
        x = block(x)
    return ln_f(x) @ wte.T


def positions_by_token(idx, wte, wpe, blocks, ln_f):
    x = wte[idx] + (wpe[idx] if wpe is not None else 0)
    for block in blocks:
        x = block(x)
    return ln_f(x) @ wte.T


def blocks_not_chained(idx, wte, wpe, blocks, ln_f):
    x = _embed(idx, wte, wpe, torch.arange(idx.size(1)))
    out = x
    for block in blocks:
        out = block(x)
    return ln_f(out) @ wte.T


# ---------------------------------------------------------------- the detectors

V, C, BLOCK = 7, 4, 8


def probe(learner):
    """What the blocks and ln_f received when the learner's forward ran on ids (1, 4)."""
    idx = torch.tensor([[3, 0, 5, 2]])
    wte, wpe = randn(V, C, seed=51), randn(BLOCK, C, seed=52)
    blocks = [Recorder(lambda x: torch.tanh(x) + 1.0), Recorder(lambda x: 2 * x)]
    ln_f = Recorder(lambda x: x - 1.0)
    learner("gpt_forward", idx, wte, wpe, blocks, ln_f)
    return idx, wte, wpe, [b.first for b in blocks], ln_f.first


def detect_no_final_norm(learner):
    *_, final = probe(learner)
    if final is None:
        return "you never call ln_f: the last block's output goes through the final norm before the head"


def detect_embedding(learner, positions, text: str):
    idx, wte, wpe, seen, _ = probe(learner)
    added = wpe[positions] if positions is not None else 0
    if close(seen[0], wte[idx] + added):
        return text


def detect_no_positions(learner):
    return detect_embedding(learner, None, "the first block received the token embeddings alone: add the position "
                                           "embeddings, wpe[:T] (unless wpe is None)")


def detect_positions_from_one(learner):
    return detect_embedding(learner, torch.arange(1, 5), "position 0 got the embedding of position 1: the T "
                                                         "positions are 0 .. T-1, wpe[:T]")


def detect_positions_by_token(learner):
    return detect_embedding(learner, torch.tensor([[3, 0, 5, 2]]),
                            "you index the position embeddings with the token ids (wpe[idx]): "
                            "they are indexed by position, wpe[:T]")


def detect_not_chained(learner):
    _, _, _, seen, _ = probe(learner)
    if close(seen[1], seen[0]):
        return ("block 1 received the embeddings, not block 0's output: each block reads the stream the block "
                "before it wrote (x = block(x))")


MISTAKES = catalogue(
    "gpt_forward",
    ("no-final-norm", "ln_f skipped", no_final_norm, detect_no_final_norm),
    ("no-positions", "position embeddings not added", no_positions, detect_no_positions),
    ("positions-from-one", "positions 1..T", positions_from_one, detect_positions_from_one),
    ("positions-by-token", "wpe indexed by token id", positions_by_token, detect_positions_by_token),
    ("blocks-not-chained", "every block reads the embeddings", blocks_not_chained, detect_not_chained),
)


# ---------------------------------------------------------------- the cases

def random_parts(C: int, n_blocks: int, seed: int):
    w = [randn(C, C, seed=seed + i) / C ** 0.5 for i in range(n_blocks)]
    blocks = [lambda x, w=w_i: x + torch.tanh(x @ w) for w_i in w]
    return blocks, lambda x: (x - x.mean(-1, keepdim=True)) * 0.5


def cases() -> list[Case]:
    def case(label, idx, V, C, with_wpe=True, seed=0):
        wte, wpe = randn(V, C, seed=seed), randn(16, C, seed=seed + 1) if with_wpe else None
        blocks, ln_f = random_parts(C, 2, seed + 2)
        return Case(label, "gpt_forward", (idx, wte, wpe, blocks, ln_f), gpt_forward(idx, wte, wpe, blocks, ln_f))

    g = torch.Generator().manual_seed(0)
    idx, logits, _ = small_run()
    model = small_model()
    rope_model = small_model("rope")
    rope_idx, rope_logits, _ = small_run("rope")
    tables = rope_model.rotary(0, rope_idx.size(1))
    rope_blocks = [lambda x, b=b: b(x, tables) for b in rope_model.blocks]
    return [
        case("random ids (2, 5), V=11, C=8", torch.randint(0, 11, (2, 5), generator=g), 11, 8, seed=10),
        case("length 1 (1, 1)", torch.randint(0, 11, (1, 1), generator=g), 11, 8, seed=20),
        case("no position embeddings (wpe=None)", torch.randint(0, 11, (2, 4), generator=g), 11, 8, False, seed=30),
        Case("a glassgpt model (a small GPT's weights, blocks and ln_f)", "gpt_forward",
             (idx, model.wte.weight, model.wpe.weight, list(model.blocks), model.ln_f), logits),
        Case("a glassgpt RoPE model (wpe=None; its blocks rotate q and k)", "gpt_forward",
             (rope_idx, rope_model.wte.weight, None, rope_blocks, rope_model.ln_f), rope_logits),
    ]


EXERCISE = Exercise(
    name="forward", title=TITLES["forward"], reference={"gpt_forward": gpt_forward},
    outputs={"gpt_forward": ("logits",)}, cases=cases, mistakes=MISTAKES, glassgpt_code="glassgpt.model.GPT.forward")
