"""Stop requests: SIGINT/SIGTERM turned into a flag, so a job stops at a point of its choosing
and keeps what it has: training between steps (after saving a checkpoint), and the long loops
(an evaluation, SAE training, an analysis), which call `check_stop()` once per batch. Under
`torchrun` every rank agrees on the flag (`stop_requested`), so all stop at the same point.
"""

from __future__ import annotations

import contextvars
import signal

import torch
import torch.distributed as dist

from glassgpt.errors import GlassGPTError

_ACTIVE_STOP: contextvars.ContextVar[StopFlag | None] = contextvars.ContextVar("glassgpt_stop", default=None)


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag, so a job stops where it chooses (and saves first). While
    the block runs, `check_stop()` in this thread sees it; outside one (a notebook, a demo
    worker thread) `check_stop()` does nothing."""

    def __init__(self):
        self.signal: int | None = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._set) for s in (signal.SIGINT, signal.SIGTERM)}
        self.token = _ACTIVE_STOP.set(self)
        return self

    def _set(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        _ACTIVE_STOP.reset(self.token)
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def stop_requested(stop: StopFlag, dist_info, device: torch.device) -> bool:
    """Whether to stop now; under DDP every rank stops if any rank got the signal (`dist_info`:
    where this process sits, a `glassgpt.training.runtime.Dist`)."""
    if dist_info.world_size == 1:
        return stop.signal is not None
    flag = torch.tensor([0 if stop.signal is None else 1], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class StopRequested(GlassGPTError):
    """A stop request (SIGINT/SIGTERM) seen by `check_stop` inside a long loop."""

    exit_code = 130

    def __init__(self, signum: int | None):
        name = signal.Signals(signum).name if signum else "a signal on another rank"
        super().__init__(f"stopped by {name}")
        self.signal = signum


def check_stop(dist_info=None, device: torch.device | str = "cpu") -> None:
    """Raise StopRequested if this process (or, given `dist_info` of several ranks -- a
    `glassgpt.training.runtime.Dist` -- any rank: every rank must call it at the same point
    then) was asked to stop. A loop that may run
    for minutes calls it once per batch, so a stop request ends it within one."""
    stop = _ACTIVE_STOP.get()
    if stop is None:
        return
    if dist_info is None or dist_info.world_size == 1:
        if stop.signal is not None:
            raise StopRequested(stop.signal)
    elif stop_requested(stop, dist_info, torch.device(device)):
        raise StopRequested(stop.signal)


class Interrupted(GlassGPTError):
    """Training stopped by a signal after saving a checkpoint."""

    exit_code = 130
    leave_now = True  # the command line ends the process at once (glassgpt.cli.main): all is saved
