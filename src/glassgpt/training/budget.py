"""The time of a training run: how long the rest will take (the ETA in every log line), and
`max_minutes`, a run that ends on time.

What the run has measured so far gives the estimates: seconds per training step, evaluation
seconds per token (the periodic evaluations), seconds per checkpoint. The rest of a run is its
steps, its periodic evaluations and checkpoints, the final evaluation over the whole validation
split (its tokens at the periodic evaluations' pace) and the last plots.

`max_minutes=M`: the run ends within M minutes of `train()` being called, the final evaluation,
the last checkpoint and the plots included. The learning-rate schedule is a function of the
elapsed share of the time, not of a step count fixed in advance: of the time, a reserve is kept
for the end (the final evaluation's estimate, stretched by `RESERVE_STRETCH`, a checkpoint and
`FINISH_S`), and with f the elapsed share of the rest, the schedule is read at position

    position = max(step, p0 + f * (max_iters - p0))

(p0: where this process started, 0 or a resumed run's position), so warmup and decay are
compressed together into the time there is, whatever pace the machine keeps (a busy spell
slows the steps, not the schedule). Training stops when the position reaches max_iters: at f = 1,
or at step max_iters if the machine is fast enough. Without max_minutes the position is the step.
A periodic evaluation that would run past the training time is left out (the final one follows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

RESERVE_STRETCH = 1.5  # the final evaluation's estimate, times this, is kept back for it
FINISH_S = 0.5  # drawing loss.png and closing files after the final evaluation


@dataclass
class RunClock:
    """What a run has measured of its own pace, and its deadline (`budget_s`, None: no limit)."""

    budget_s: float | None
    final_eval_tokens: int  # the targets of the whole validation split
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)
    eval_tokens: int = 0
    eval_seconds: float = 0.0
    checkpoints: int = 0
    checkpoint_seconds: float = 0.0
    steps: int = 0
    step_seconds: float = 0.0
    step_tokens: int = 0  # tokens a training step reads (the fallback pace of evaluation)

    def __post_init__(self):
        self.started = self.clock()

    @classmethod
    def start(cls, max_minutes: float, final_eval_tokens: int, step_tokens: int, started: float | None = None,
              clock: Callable[[], float] = time.monotonic) -> "RunClock":
        run_clock = cls(max_minutes * 60 if max_minutes else None, final_eval_tokens, clock, step_tokens=step_tokens)
        if started is not None:
            run_clock.started = started
        return run_clock

    # ---------------------------------------------------------------- what was measured

    def add_eval(self, tokens: int, seconds: float) -> None:
        self.eval_tokens += tokens
        self.eval_seconds += seconds

    def add_checkpoint(self, seconds: float) -> None:
        self.checkpoints += 1
        self.checkpoint_seconds += seconds

    def add_steps(self, steps: int, seconds: float) -> None:
        self.steps += steps
        self.step_seconds += seconds

    @property
    def seconds_per_step(self) -> float | None:
        return self.step_seconds / self.steps if self.steps else None

    def eval_s(self, tokens: int) -> float:
        """Seconds to evaluate `tokens` tokens: at the periodic evaluations' pace, or before one has
        run, a third of a training step's time per token (a forward pass without the backward)."""
        if self.eval_tokens:
            return tokens * self.eval_seconds / self.eval_tokens
        if self.steps and self.step_tokens:
            return tokens * self.step_seconds / self.steps / self.step_tokens / 3
        return 0.0

    @property
    def checkpoint_s(self) -> float:
        return self.checkpoint_seconds / self.checkpoints if self.checkpoints else 0.0

    # ---------------------------------------------------------------- the deadline

    def elapsed(self) -> float:
        return self.clock() - self.started

    def reserve_s(self) -> float:
        """Kept back for the end: the final evaluation (stretched), a checkpoint and the plots."""
        return RESERVE_STRETCH * self.eval_s(self.final_eval_tokens) + self.checkpoint_s + FINISH_S

    def training_s(self) -> float | None:
        """The seconds of the budget for everything before the end (None: no limit)."""
        if self.budget_s is None:
            return None
        return max(self.budget_s - self.reserve_s(), 1e-9)

    def fraction(self) -> float:
        """The elapsed share of the training time (0 without a limit)."""
        training = self.training_s()
        return 0.0 if training is None else min(1.0, self.elapsed() / training)

    def position(self, step: int, start_position: float, max_iters: int, previous: float) -> float:
        """Where the schedule is read (see the module's docstring); never moves back."""
        if self.budget_s is None:
            return step
        return max(previous, float(step), start_position + self.fraction() * (max_iters - start_position))

    def has_time_for(self, seconds: float) -> bool:
        """Whether `seconds` more (a periodic evaluation) still end within the training time."""
        training = self.training_s()
        return training is None or self.elapsed() + seconds <= training

    # ---------------------------------------------------------------- the ETA

    def eta_s(self, steps_left: float, evals_left: int, checkpoints_left: int, eval_tokens: int) -> float | None:
        """Seconds until the run is done: the steps, evaluations and checkpoints left, the final
        evaluation and the plots; with a time limit, at most what is left of it. None before a step."""
        if self.seconds_per_step is None:
            return None if self.budget_s is None else max(0.0, self.budget_s - self.elapsed())
        rest = (steps_left * self.seconds_per_step + evals_left * self.eval_s(eval_tokens)
                + checkpoints_left * self.checkpoint_s + self.eval_s(self.final_eval_tokens) + FINISH_S)
        if self.budget_s is not None:
            rest = min(rest, max(0.0, self.budget_s - self.elapsed()))
        return rest
