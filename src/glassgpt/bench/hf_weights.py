"""The same GPT-2 weights in Hugging Face `transformers`, for the side-by-side benchmark."""

from __future__ import annotations

from glassgpt.hf import to_hf
from glassgpt.model import GPT


def to_transformers(model: GPT):
    """A `GPT2LMHeadModel` holding the same weights as `model`, in eval mode, on the same device."""
    return to_hf(model).to(next(model.parameters()).device).eval()
