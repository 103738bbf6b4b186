"""`inference(model)`: eval mode and no gradients for a measurement, the model's mode restored after."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def inference(model: torch.nn.Module):
    """Eval mode (no dropout) and no gradients for a measurement; the model's mode is restored
    after. (Generation, a generator, uses torch.no_grad as a decorator instead: a `with` block
    would leak its grad mode to the caller between yields.)"""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)
