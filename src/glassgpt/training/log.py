"""What training writes down: `metrics.jsonl`, `loss.png` and optional TensorBoard
events. (The MFU estimate it logs lives in `glassgpt.training.flops`.)

Only the main process writes; the others keep the rows in memory so every rank
agrees on which evals are already done after a resume.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable

from glassgpt import checkpoint as ckpt
from glassgpt.atomic import atomic_write, atomic_write_text
from glassgpt.errors import GlassGPTError, RunError, UsageError
from glassgpt.ownership import refuse_link
from glassgpt.safe_read import loads_json, read_lines


TENSORBOARD = "tensorboard"  # the run's folder of TensorBoard events (tensorboard=true)
MAX_METRICS_BYTES = 1 << 30  # a run's metrics.jsonl is KiB to MiB; a larger one is not one glassgpt wrote
# One row: an analysis row of a 1,024-layer model is ~200 KB. A longer line, a row of more
# fields, or a list longer than a model has layers is not one glassgpt wrote: it is skipped
# unparsed, so no row can keep a reader (or the pictures drawn from it) busy for long.
MAX_ROW_BYTES = 1 << 20
MAX_ROW_FIELDS = 256
MAX_ROW_LIST = 1024  # = the bound on n_layer (glassgpt.config.UPPER_BOUNDS)


def _number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _numbers(v) -> bool:
    return isinstance(v, list) and all(_number(x) for x in v)


# What the pictures read from a row of a kind, beyond `kind` and `step`: the rows of
# kind "analysis" (analysis_interval) feed dynamics.png per layer.
ROW_FIELDS = {"analysis": {"icl_score": _number, "entropy": _numbers, "sink_share": _numbers,
                           "first_position_share": _numbers}}
OPTIONAL_ROW_FIELDS = {"analysis": {"induction": _numbers, "previous_token": _numbers}}


def is_metrics_row(row) -> bool:
    """A row glassgpt could have written: an object with a `kind` and a whole `step`, plain
    values (numbers, strings, lists of them), numbers for its losses, and the fields its
    kind's pictures read."""
    if not (isinstance(row, dict) and isinstance(row.get("kind"), str)) or len(row) > MAX_ROW_FIELDS:
        return False
    step = row.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return False
    plain = (str, bool, int, float, type(None))

    def flat(v) -> bool:  # a plain value, or a list of them
        return isinstance(v, plain) or (isinstance(v, list) and len(v) <= MAX_ROW_LIST
                                        and all(isinstance(x, plain) for x in v))

    def value(v) -> bool:  # ... or one level of named values (an analysis row's induction circuit)
        return flat(v) or (isinstance(v, dict) and len(v) <= MAX_ROW_FIELDS and all(flat(x) for x in v.values()))

    if not all(value(v) for v in row.values()):
        return False
    if not all(_number(v) for k, v in row.items() if k.endswith("loss")):
        return False
    kind = row["kind"]
    return (all(k in row and ok(row[k]) for k, ok in ROW_FIELDS.get(kind, {}).items())
            and all(ok(row[k]) for k, ok in OPTIONAL_ROW_FIELDS.get(kind, {}).items() if k in row))


def finite_row(row: dict) -> dict:
    """The row with every number that is not finite as None: strict JSON (NaN is not JSON)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def read_metrics_counted(run_dir: str | Path) -> tuple[list[dict], int]:
    """The rows of a run's metrics.jsonl ([] when there is none) and how many lines were
    skipped as unreadable: cut short by a kill, not UTF-8, not JSON, not a row."""
    path = Path(run_dir) / ckpt.METRICS
    if not (path.exists() or path.is_symlink()):
        return [], 0
    rows, skipped = [], 0
    lines = read_lines(path, MAX_METRICS_BYTES, MAX_ROW_BYTES, fix="move it aside and the run loads without its curves")
    for line in lines:
        if line is not None and not line.strip():
            continue
        try:
            row = None if line is None else loads_json(line, path)
        except GlassGPTError:
            row = None  # e.g. a line half-written when the process died
        if is_metrics_row(row):
            rows.append(row)
        else:
            skipped += 1
    return rows, skipped


def read_metrics(run_dir: str | Path, warn: Callable[[str], None] | None = None) -> list[dict]:
    """The readable rows of a run's metrics.jsonl; `warn` hears how many lines were skipped."""
    rows, skipped = read_metrics_counted(run_dir)
    if skipped and warn is not None:
        warn(f"skipped {skipped} unreadable line(s) of {Path(run_dir) / ckpt.METRICS}")
    return rows


def append_line(path: Path, line: str) -> None:
    """Append one line to a text file, starting on a line of its own whatever the file ends
    with (a line torn by a kill stays torn, and the new row is not glued onto it). A link
    is not written through."""
    if path.is_symlink():
        raise RunError(f"{path} is a symbolic link, and glassgpt appends only to its own files: "
                       "replace it with a copy of the file")
    try:
        with open(path, "ab+") as f:
            torn = False
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            f.write((b"\n" if torn else b"") + line.encode("utf-8") + b"\n")
    except OSError as e:  # a full disk: the OS error, naming the file (a torn last line is read around)
        raise type(e)(e.errno, e.strerror or str(e), str(path)) from None


def check_tensorboard_available() -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UsageError("tensorboard=true needs the tensorboard package: pip install 'glassgpt[tensorboard]', "
                         "or set tensorboard=false") from None


class MetricsLog:
    """`metrics.jsonl` (one JSON object a line), `loss.png` drawn from it, and
    TensorBoard scalars in `tensorboard/` when asked for."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool = False):
        self.path, self.enabled = run_dir / ckpt.METRICS, enabled
        self.rows: list[dict] = []
        self.tensorboard = tensorboard
        self.writer = None

    def read_rows(self) -> list[dict]:
        """The rows on disk, skipping a last line cut short by a kill."""
        return read_metrics(self.path.parent)

    def final_row(self, step: int) -> dict | None:
        """The "final" row written when a run finished at `step`, or None if it did not finish there."""
        return next((r for r in reversed(self.read_rows()) if r.get("kind") == "final" and r.get("step") == step), None)

    def load(self, up_to_step: int, warn: Callable[[str], None] | None = None) -> None:
        """On resume: keep the rows up to the checkpoint, drop the ones after it (and
        lines that cannot be read, such as a last line cut short by a kill: `warn` hears how many)."""
        if self.path.is_file():
            self.rows = [r for r in read_metrics(self.path.parent, warn) if r.get("step", math.inf) <= up_to_step
                         and r.get("kind") != "final"]
        if self.enabled:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def open_tensorboard(self, resume_step: int | None) -> None:
        """Start the TensorBoard writer; on resume, events after the checkpoint are purged."""
        if not (self.enabled and self.tensorboard):
            return
        from torch.utils.tensorboard import SummaryWriter

        folder = self.path.parent / TENSORBOARD
        refuse_link(folder, "a run's tensorboard/ folder")
        if folder.exists() and not folder.is_dir():
            raise RunError(f"{folder} is a file, where glassgpt writes TensorBoard's events: move it away, "
                           "or set tensorboard=false")
        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(str(folder), purge_step=purge)

    def has_eval(self, step: int) -> bool:
        return any(r["step"] == step and r.get("kind") == "eval" for r in self.rows)

    def append(self, row: dict) -> None:
        row = finite_row(row)
        self.rows.append(row)
        if not self.enabled:
            return
        append_line(self.path, json.dumps(row))
        if self.writer is not None and row.get("kind") in ("train", "eval", "eval_task"):
            for key, value in row.items():
                if key not in ("kind", "step") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{row['kind']}/{key}", value, row["step"])

    def plot(self) -> None:
        if self.enabled:
            atomic_write(self.path.with_name(ckpt.PLOT), lambda p: plot_losses(self.rows, p))
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


PLOTTED_MAGNITUDE = 1e300  # past it the span of two values overflows a float, and matplotlib's axes with it


def plottable(value) -> float:
    """A row's number as a point to draw: NaN (a gap in the line) where there is none, or
    where it is too large to draw (a row edited by hand, or not written by glassgpt)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= PLOTTED_MAGNITUDE:
        return float(value)
    return math.nan


def loss_curves(rows: list[dict]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(step, train loss) and (step, val loss) of the rows, as points to draw."""
    def curve(kind: str, key: str) -> list[tuple[float, float]]:
        return [(float(r["step"]), plottable(r.get(key))) for r in rows if r.get("kind") == kind
                and r.get(key) is not None]
    return curve("train", "train_loss"), curve("eval", "val_loss")


def plot_losses(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # the Figure API: no pyplot, no global backend switch

    train, val = loss_curves(rows)
    fig = Figure(figsize=(7, 4), dpi=110)
    ax = fig.subplots()
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1, alpha=0.8)
    if val:
        ax.plot(*zip(*val), "o-", label="val", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
