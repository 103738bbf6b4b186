"""How a long command shows how far it has got: one convention for `train`, `sae`, `analyze`,
`eval` and `prepare`.

On a terminal, a tqdm bar (with the time remaining). Otherwise (a log file, a pipe, a notebook's
captured output) plain lines, one every `every_s` seconds and one at the end of each stage, each
with its ETA. Both go to stdout, with the command's log: stderr holds only an error's one line.

    SAE steps: 1,200/1,953 (61%) | 4 min 10 s elapsed | ETA 2 min 37 s

`Progress` is one stage; `stages()` is a `progress(stage, done, total)` that opens a new one
whenever the stage changes. `Progress.write(line)` prints a log line (stdout) without tearing
the bar. The ETA is the stage's time so far spread over what is left (`eta_seconds`), unless
the caller knows better (training: evaluations and the final one included) and passes `eta=`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator, TextIO

EVERY_S = 20.0  # seconds between two plain progress lines
FIRST_S = 5.0  # ... and before the first one


def duration(seconds: float | None) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min'; '?' when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def eta_seconds(done: float, total: float | None, elapsed: float) -> float | None:
    """Seconds left at the pace so far; None before the first unit, or without a total."""
    if not total or done <= 0:
        return None
    return max(0.0, elapsed / done * (total - done))


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """One stage of a long command (see the module's docstring)."""

    def __init__(self, label: str, total: int | None = None, unit: str = "", *, stream: TextIO | None = None,
                 terminal: bool | None = None, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream if stream is not None else sys.stdout
        self.terminal = is_terminal(self.stream) if terminal is None else terminal
        self.every_s, self.clock = every_s, clock
        self.started = clock()
        self.last_line = self.started - max(0.0, every_s - FIRST_S)  # the first line comes after FIRST_S
        self.done, self.eta = 0, None
        self.bar = None
        if self.terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit=unit or "it", file=self.stream, leave=False,
                            dynamic_ncols=True, unit_scale=bool(unit))

    def update(self, done: int, total: int | None = None, eta: float | None = None) -> None:
        """`done` of `total` so far; `eta`, when the caller knows the time left better."""
        if total is not None:
            self.total = total
        self.done = done
        elapsed = self.clock() - self.started
        self.eta = eta if eta is not None else eta_seconds(done, self.total, elapsed)
        if self.bar is not None:
            self.bar.total = self.total
            if eta is not None:
                self.bar.set_postfix_str(f"ETA {duration(eta)}", refresh=False)
            self.bar.update(done - self.bar.n)
        elif self.clock() - self.last_line >= self.every_s:
            self._line()

    def advance(self, amount: int) -> None:
        """`amount` more done."""
        self.update(self.done + amount)

    def line(self) -> str:
        """The plain progress line for the state now."""
        elapsed = self.clock() - self.started
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            where = f"{self.done:,}/{self.total:,}{unit} ({self.done / self.total:.0%})"
        else:
            where = f"{self.done:,}{unit}"
        return f"{self.label}: {where} | {duration(elapsed)} elapsed | ETA {duration(self.eta)}"

    def _line(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.last_line = self.clock()

    def write(self, line: str, file: TextIO | None = None) -> None:
        """A log line (stdout by default), above the bar on a terminal; it counts as a progress
        line for the plain lines' interval when it goes to the same stream."""
        out = file if file is not None else sys.stdout
        if self.bar is not None:
            self.bar.write(line, file=out)
        else:
            print(line, file=out, flush=True)
            self.last_line = self.clock()

    def close(self) -> None:
        """Ends the stage: the bar goes; off a terminal, one last line says where it ended."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.done and self.clock() - self.started >= 1.0:
            self.eta = 0.0 if self.total and self.done >= self.total else self.eta
            self._line()


@contextlib.contextmanager
def progress(label: str, total: int | None = None, unit: str = "", **kw) -> Iterator[Progress]:
    shown = Progress(label, total, unit, **kw)
    try:
        yield shown
    finally:
        shown.close()


@contextlib.contextmanager
def stages(terminal: bool | None = None, **kw) -> Iterator[Callable[[str, int, int], None]]:
    """A `progress(stage, done, total)` that shows each stage in turn (a new one closes the last)."""
    current: dict[str, Progress] = {}

    def report(stage: str, done: int, total: int) -> None:
        shown = current.get(stage)
        if shown is None:
            for other in current.values():
                other.close()
            current.clear()
            shown = current[stage] = Progress(stage, total, terminal=terminal, **kw)
        shown.update(done, total)

    try:
        yield report
    finally:
        for shown in current.values():
            shown.close()
