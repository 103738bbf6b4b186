"""The exercise track: rebuild a GPT piece by piece, each piece checked against glassgpt's own code,
with a diagnosis of what is wrong rather than a diff.

    from glassgpt.learn import check
    print(check("layernorm", "mine.py"))

`glassgpt learn` lists the exercises, `glassgpt learn stub NAME` writes one's stub, `glassgpt learn
check NAME FILE` checks it. Each exercise (`glassgpt.learn.exercises`) holds its reference solution,
its cases (random inputs, edge cases, a small glassgpt model's weights) and its catalogue of common
mistakes, each a mutation of the reference with a detector that names it. `build_model` and
`train_model` make a GPT of the learner's pieces and train it with glassgpt's trainer.
"""

from glassgpt.learn.checking import check
from glassgpt.learn.core import CheckResult, Diagnosis, Exercise, Mistake
from glassgpt.learn.exercises import NAMES, all_exercises, exercise
from glassgpt.learn.progress import load_progress, progress_file, record_progress
from glassgpt.learn.stubs import stub_text
from glassgpt.learn.yours import build_model, train_model, use_pieces

__all__ = ["CheckResult", "Diagnosis", "Exercise", "Mistake", "NAMES", "all_exercises", "build_model", "check",
           "exercise", "load_progress", "progress_file", "record_progress", "stub_text", "train_model", "use_pieces"]
