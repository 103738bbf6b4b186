"""Collecting results, writing them as JSON and printing them as a table.

A `Recorder` gathers three kinds of entry while the suites run:
- comparisons: two variants of one workload, timed in turns, with every raw time
  and the per-repeat ratios time(A) / time(B) (above 1: B is faster);
- figures: single measured numbers (tokens/s, MFU, bytes, compile seconds);
- skipped: what was not measured here, and why.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from glassgpt.atomic import atomic_write_text
from glassgpt.bench.timing import measure, ratio_summary

RATIO_MEANING = "time(a) / time(b) from the same round; above 1 means b is faster"


@dataclass
class Settings:
    quick: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    repeats: int = 5
    warmup: int = 1
    min_sample_s: float = 0.05  # each timed sample repeats a short workload until it lasts this long
    compile_backend: str = "inductor"
    notes: str = ""
    run_dir: str | None = None  # a trained run, for the inference suite's accuracy figures

    def choose(self, *, quick, cpu, cuda=None):
        """The shape for this run: tiny in quick mode, else sized for the device."""
        if self.quick:
            return quick
        return cuda if self.device.type == "cuda" and cuda is not None else cpu

    def to_dict(self) -> dict:
        return {"quick": self.quick, "device": str(self.device), "repeats": self.repeats, "warmup": self.warmup,
                "min_sample_s": self.min_sample_s,
                "compile_backend": self.compile_backend, "notes": self.notes, "run_dir": self.run_dir}


class Recorder:
    def __init__(self, settings: Settings, log: Callable[[str], None] = lambda s: None,
                 out_dir: Path | None = None, stamp: str = "bench"):
        self.settings = settings
        self.log = log
        self.out_dir, self.stamp = out_dir, stamp  # where plots go, and the run's file-name prefix
        self.suite = ""
        self.comparisons: list[dict] = []
        self.figures: list[dict] = []
        self.skipped: list[dict] = []
        self.plots: list[str] = []

    def compare(self, name: str, variants: dict[str, Callable[[], object]], *, workload: str, shape: dict,
                repeats: int | None = None, warmup: int | None = None, inner: int | None = None,
                tokens_per_call: int | None = None, **details) -> dict[str, list[float]]:
        """Time the variants in turns; record the first against each of the others."""
        repeats = repeats or self.settings.repeats
        warmup = self.settings.warmup if warmup is None else warmup
        times = measure(variants, self.settings.device, repeats=repeats, warmup=warmup, inner=inner,
                        min_sample_s=self.settings.min_sample_s)
        names = list(variants)
        for b in names[1:]:
            self.add_comparison(name, names[0], b, times, workload=workload, shape=shape,
                                tokens_per_call=tokens_per_call, **details)
        return times

    def add_comparison(self, name: str, a: str, b: str, times: dict[str, list[float]], *, workload: str,
                       shape: dict, tokens_per_call: int | None = None, **details) -> dict:
        entry = {
            "suite": self.suite, "name": name, "workload": workload, "shape": shape, "a": a, "b": b,
            "times_s": {a: times[a], b: times[b]},
            "median_s": {a: statistics.median(times[a]), b: statistics.median(times[b])},
            "ratio": {"definition": RATIO_MEANING, **ratio_summary(times[a], times[b])},
        }
        if tokens_per_call:
            entry["tokens_per_s"] = {v: tokens_per_call / entry["median_s"][v] for v in (a, b)}
        if details:
            entry["details"] = details
        self.comparisons.append(entry)
        r = entry["ratio"]
        self.log(f"  {self.suite:<12} {name:<40} {a} / {b} = {r['median']:.3f} [{r['min']:.3f}, {r['max']:.3f}]")
        return entry

    def figure(self, name: str, value: float | int | bool | None, unit: str, **details) -> dict:
        entry = {"suite": self.suite, "name": name, "value": value, "unit": unit, **details}
        self.figures.append(entry)
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        self.log(f"  {self.suite:<12} {name:<40} {shown} {unit}")
        return entry

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append({"suite": self.suite, "name": name, "reason": reason})
        self.log(f"  {self.suite:<12} {name:<40} skipped: {reason}")

    def to_dict(self, what: str, machine: dict, seconds: float) -> dict:
        return {
            "what": what, "machine": machine, "settings": self.settings.to_dict(), "wall_seconds": seconds,
            "ratio_definition": RATIO_MEANING, "comparisons": self.comparisons, "figures": self.figures,
            "skipped": self.skipped, "plots": self.plots,
        }


def finite_or_none(value):
    """JSON has no NaN or infinity: such a number (a broken measurement) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def write_json(result: dict, path: Path) -> Path:
    """Write atomically (`glassgpt.atomic`): a temp file in the same folder, then a rename."""
    text = json.dumps(finite_or_none(result), indent=1, allow_nan=False, default=str) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def publish(record: dict, out: Path, name: str) -> Path:
    """A benchmark script's record, stamped with the date (UTC) unless it has one: written to
    `out/NAME-<local time>.json` and printed."""
    import datetime

    record.setdefault("date", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    path = write_json(record, Path(out) / f"{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
    print(json.dumps(record, indent=1))
    print(f"written to {path}")
    return path


def _seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _shape(shape: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in shape.items())


def format_table(result: dict) -> str:
    """Comparisons first (A, B, their median times, A/B ratio with min-max and IQR), then figures."""
    rows = [("suite", "comparison", "shape", "A", "B", "A time", "B time", "A/B", "min-max", "IQR")]
    for c in result["comparisons"]:
        r = c["ratio"]
        rows.append((c["suite"], c["name"], _shape(c["shape"]), c["a"], c["b"], _seconds(c["median_s"][c["a"]]),
                     _seconds(c["median_s"][c["b"]]), f"{r['median']:.2f}", f"{r['min']:.2f}-{r['max']:.2f}",
                     f"{r['q1']:.2f}-{r['q3']:.2f}"))
    lines = _columns(rows) if len(rows) > 1 else []
    if result["figures"]:
        fig_rows = [("suite", "figure", "value", "unit")]
        for f in result["figures"]:
            v = f["value"]
            shown = (f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}") if isinstance(v, float) and math.isfinite(v) else str(v)
            fig_rows.append((f["suite"], f["name"], shown, f["unit"]))
        lines += [""] + _columns(fig_rows)
    for s in result["skipped"]:
        lines.append(f"skipped {s['suite']}/{s['name']}: {s['reason']}")
    return "\n".join(lines)


def _columns(rows: list[tuple]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    out = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


def format_markdown(result: dict) -> str:
    """The same comparisons as a Markdown table, for the README."""
    lines = ["| suite | comparison | shape | A | B | A time | B time | A/B median | min-max |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in result["comparisons"]:
        r = c["ratio"]
        lines.append(f"| {c['suite']} | {c['name']} | {_shape(c['shape'])} | {c['a']} | {c['b']} | "
                     f"{_seconds(c['median_s'][c['a']])} | {_seconds(c['median_s'][c['b']])} | "
                     f"{r['median']:.2f} | {r['min']:.2f}-{r['max']:.2f} |")
    if result["figures"]:
        lines += ["", "| suite | figure | value | unit |", "|---|---|---|---|"]
        for f in result["figures"]:
            v = f["value"]
            shown = f"{v:.4g}" if isinstance(v, float) else str(v)
            lines.append(f"| {f['suite']} | {f['name']} | {shown} | {f['unit']} |")
    return "\n".join(lines)
