"""The exercises, one module each, in the order a person builds a GPT. A module is imported when
its exercise is asked for (`exercise(name)`), so listing them costs nothing."""

from __future__ import annotations

import importlib

from glassgpt.errors import UsageError, did_you_mean

TITLES = {
    "layernorm": "LayerNorm",
    "attention": "Single-head causal attention",
    "multihead": "Multi-head split and merge",
    "rope": "RoPE (rotary position embedding)",
    "mlp": "The MLP with GPT-2's GELU",
    "block": "The pre-LN block",
    "forward": "The whole forward pass",
    "cross_entropy": "Cross-entropy from logits",
    "adamw": "An AdamW step with decoupled weight decay",
    "kv_cache": "Cached decoding with a KV cache",
    "sampling": "Temperature and top-k",
    "top_p": "Top-p (nucleus) filtering",
    "measures": "Two measures: previous-token and induction scores",
}
NAMES = tuple(TITLES)


def exercise(name: str):
    """The Exercise called `name`; UsageError naming the exercises for any other name."""
    if name not in TITLES:
        raise UsageError(f"no exercise {name!r}{did_you_mean(str(name), NAMES)}; the exercises: {', '.join(NAMES)}")
    return importlib.import_module(f"glassgpt.learn.exercises.{name}").EXERCISE


def all_exercises() -> list:
    return [exercise(name) for name in NAMES]
