"""What a circuit is asked to do: a number per prompt, measured on the logits.

Two metrics, each a function of the logits (B, T, V) giving one value per prompt (B,):

- `LogitDifference`: logit(answer) - logit(wrong) at one position of each prompt (the
  clean prompt's answer against the corrupted prompt's);
- `PositionLoss`: the cross-entropy of the clean prompt's next tokens at chosen positions,
  averaged over those positions (targets (B, T), -1 where a position does not count).

A `Batch` is clean and corrupted prompts of one length, (B, T) each, and the metric
measured on both. Scores and faithfulness average the metric over every pair of a task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LogitDifference:
    answer: torch.Tensor  # (B,) token ids
    wrong: torch.Tensor  # (B,) token ids
    position: torch.Tensor  # (B,) the position read, usually the last

    name = "logit difference"
    short = "logit-diff"

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:  # (B, T, V) -> (B,)
        rows = torch.arange(logits.size(0), device=logits.device)
        at = logits[rows, self.position.to(logits.device)].float()  # (B, V)
        return at[rows, self.answer.to(logits.device)] - at[rows, self.wrong.to(logits.device)]


@dataclass(frozen=True)
class PositionLoss:
    targets: torch.Tensor  # (B, T): the token each position should predict, -1 where it does not count

    name = "loss"
    short = "loss"

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:  # (B, T, V) -> (B,)
        targets = self.targets.to(logits.device)
        losses = F.cross_entropy(logits.float().transpose(1, 2), targets.clamp(min=0), reduction="none")  # (B, T)
        counted = (targets >= 0).float()
        return (losses * counted).sum(1) / counted.sum(1)


@dataclass(frozen=True)
class Batch:
    clean: torch.Tensor  # (B, T) token ids
    corrupted: torch.Tensor  # (B, T), the same length
    metric: LogitDifference | PositionLoss

    def __post_init__(self):
        if self.clean.shape != self.corrupted.shape:
            raise ValueError(f"clean and corrupted prompts must have the same shape, got {tuple(self.clean.shape)} "
                             f"and {tuple(self.corrupted.shape)}")
