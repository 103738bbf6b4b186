"""What a benchmark ran on: enough to tell two result files' machines apart."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from pathlib import Path

import torch

from glassgpt.revision import git_revision
from glassgpt.threads import cpu_model


def cpu_flags() -> list[str]:
    """The CPU features that decide matmul speed in fp32 and bf16 (x86 Linux only)."""
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in present]
    except OSError:
        pass
    return []


def machine_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda_version": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_revision": git_revision(),
        "transformers": installed_version("transformers"),
    }
    return info


def installed_version(package: str) -> str | None:
    """The installed version of `package` (None when it is not installed), without importing it."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_with_load(device: torch.device, load_before: list[float]) -> dict:
    """machine_info with the load average before a benchmark (`load_before`, also its
    `load_average`: the load the machine met the benchmark with) and now, after it."""
    return {**machine_info(device), "load_average": list(load_before), "loadavg_before": list(load_before),
            "loadavg_after": list(os.getloadavg())}
