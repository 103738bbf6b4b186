"""Timing: run variants of one workload in turns, and summarise the per-repeat ratios.

Every comparison is measured in one process, the variants taking turns
(A B A B ... after a warm-up of each), so that a slow spell of a shared machine
hits every variant about equally. A repeat's ratio is time(A) / time(B) from the
same round; the summary is the median of those ratios with their spread.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock reading covers it (CPU ops are synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, inner: int = 1) -> float:
    """Seconds per call of `fn`, averaged over `inner` back-to-back calls."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / inner


def stopwatch(device: torch.device | str = "cpu") -> Callable[[], float]:
    """Start a clock; the function returned gives the seconds since (after waiting for queued GPU
    work): the wall time of a whole run, where `measure` would time a call in turns."""
    device = torch.device(device)
    synchronize(device)
    start = time.perf_counter()

    def elapsed() -> float:
        synchronize(device)
        return time.perf_counter() - start
    return elapsed


def cpu_stopwatch() -> Callable[[], float]:
    """Start a clock of this process's CPU time (every thread's, user and system); the function
    returned gives the CPU seconds since. On a shared machine the wall time grows with the load
    and this does not: about what the work takes on one idle core (per thread used)."""
    start = time.process_time()
    return lambda: time.process_time() - start


def calls_per_sample(variants: dict[str, Callable[[], object]], device: torch.device, min_sample_s: float) -> int:
    """How many back-to-back calls make one timed sample last at least `min_sample_s`
    for the fastest variant (the same count for every variant). Tiny workloads timed
    one call at a time are mostly clock and scheduler noise."""
    fastest = min(time_call(fn, device) for fn in variants.values())
    return max(1, min(10_000, math.ceil(min_sample_s / max(fastest, 1e-9))))


def measure(variants: dict[str, Callable[[], object]], device: torch.device, *, repeats: int,
            warmup: int = 1, inner: int | None = 1, min_sample_s: float = 0.0) -> dict[str, list[float]]:
    """Time each variant `repeats` times, taking turns, after `warmup` untimed rounds.
    `inner=None` picks the calls per sample from `min_sample_s`.
    Returns seconds per call, one list per variant in round order."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    if inner is None:
        inner = calls_per_sample(variants, device, min_sample_s)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(time_call(fn, device, inner))
    return times


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile, q in [0, 1]."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ratio_summary(times_a: list[float], times_b: list[float]) -> dict:
    """Per-repeat ratios time(A) / time(B) and their median, min, max and quartiles.
    A ratio above 1 means B took less time than A."""
    ratios = [a / b for a, b in zip(times_a, times_b)]
    return {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "q1": quantile(ratios, 0.25),
        "q3": quantile(ratios, 0.75),
        "per_repeat": ratios,
    }
