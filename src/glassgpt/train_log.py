"""What training writes down: `metrics.jsonl`, `loss.png`, optional TensorBoard
events, and the model-FLOPs-utilisation (MFU) estimate.

Only the main process writes; the others keep the rows in memory so every rank
agrees on which evals are already done after a resume.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from glassgpt import checkpoint as ckpt
from glassgpt.errors import UsageError

# Dense (no sparsity) peak FLOP/s by GPU name fragment, most specific first:
# (bf16/fp16 tensor cores, tf32 tensor cores, plain fp32). From the vendors' data sheets.
GPU_PEAK_FLOPS: list[tuple[str, tuple[float, float, float]]] = [
    ("H100 PCIe", (756e12, 378e12, 51.2e12)),
    ("H100", (989.4e12, 494.7e12, 66.9e12)),  # SXM
    ("H200", (989.4e12, 494.7e12, 66.9e12)),
    ("A100", (312e12, 156e12, 19.5e12)),
    ("A10G", (70e12, 35e12, 31.2e12)),
    ("A10", (125e12, 62.5e12, 31.2e12)),
    ("L40S", (362e12, 183e12, 91.6e12)),
    ("L4", (121e12, 60e12, 30.3e12)),
    ("V100", (125e12, 15.7e12, 15.7e12)),  # fp16 only; no bf16 or tf32 units
    ("T4", (65e12, 8.1e12, 8.1e12)),  # fp16 only
]
PEAK_FLOPS_ENV = "GLASSGPT_PEAK_FLOPS"


def peak_flops(device: torch.device, dtype: str) -> float | None:
    """The device's peak FLOP/s for matmuls in `dtype`, or None when unknown (CPUs,
    unlisted GPUs). `GLASSGPT_PEAK_FLOPS=989e12` overrides it for any device."""
    if PEAK_FLOPS_ENV in os.environ:
        raw = os.environ[PEAK_FLOPS_ENV]
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and value > 0):
            raise UsageError(f"{PEAK_FLOPS_ENV} must be a positive number of FLOP/s such as 989e12, got {raw!r}")
        return value
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peaks = next((p for fragment, p in GPU_PEAK_FLOPS if fragment in name), None)
    if peaks is None:
        return None
    if dtype in ("bfloat16", "float16"):
        return peaks[0]
    tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    return peaks[1] if tf32 else peaks[2]


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: the share of the peak that the model's own FLOPs use."""
    return flops_per_token * tokens_per_s / peak if peak else None


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

    def load(self, up_to_step: int) -> None:
        """On resume: keep the rows up to the checkpoint, drop the ones after it (and
        a last line cut short by a kill)."""
        if self.path.is_file():
            rows = []
            for line in self.path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line half-written when the process died
            self.rows = [r for r in rows if isinstance(r, dict) and r.get("step", math.inf) <= up_to_step
                         and r.get("kind") != "final"]
        if self.enabled:
            ckpt.atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def open_tensorboard(self, resume_step: int | None) -> None:
        """Start the TensorBoard writer; on resume, events after the checkpoint are purged."""
        if not (self.enabled and self.tensorboard):
            return
        from torch.utils.tensorboard import SummaryWriter

        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(str(self.path.parent / "tensorboard"), purge_step=purge)

    def has_eval(self, step: int) -> bool:
        return any(r["step"] == step and r.get("kind") == "eval" for r in self.rows)

    def append(self, row: dict) -> None:
        row = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}  # strict JSON
        self.rows.append(row)
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None and row.get("kind") in ("train", "eval", "eval_task"):
            for key, value in row.items():
                if key not in ("kind", "step") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{row['kind']}/{key}", value, row["step"])

    def plot(self) -> None:
        if self.enabled:
            ckpt.atomic_write(self.path.with_name(ckpt.PLOT), lambda p: plot_losses(self.rows, p))
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def plot_losses(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["train_loss"]) for r in rows if r.get("kind") == "train" and r["train_loss"] is not None]
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("kind") == "eval" and r["val_loss"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
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
    plt.close(fig)
