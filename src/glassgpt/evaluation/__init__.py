"""Evaluation of a finished run: the loss over a whole split with sliding windows (`evaluate_split`,
`sliding_window_loss`), bits per byte, and HellaSwag (`evaluate_hellaswag`)."""

from glassgpt.evaluation.hellaswag import HellaSwagResult, evaluate_hellaswag
from glassgpt.evaluation.loss import LossResult, evaluate_split, sliding_window_loss

__all__ = ["HellaSwagResult", "LossResult", "evaluate_hellaswag", "evaluate_split", "sliding_window_loss"]
