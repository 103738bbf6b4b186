"""What a benchmark ran on: enough to tell two result files' machines apart, and to know which
CPUs a figure holds on (the instruction sets torch runs, the 16-bit precisions it multiplies
natively, the threads and the load)."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform

import torch

from glassgpt.cpu import cpu_flags, cpu_model, matmul_slowdown, native_matmul, this_cpu
from glassgpt.revision import git_revision


def cpu_capability() -> dict:
    """What decides matmul speed on this CPU: torch's kernel level (`get_cpu_capability()`:
    DEFAULT, AVX2, AVX512 on x86), the flags that matter and whether bfloat16 and float16
    matrix products run natively (`glassgpt.cpu.native_matmul`), with the time of one such
    product against float32's, measured now."""
    return {"cpu_capability": this_cpu().isa, "cpu_flags": cpu_flags(),
            "native_bfloat16_matmul": native_matmul(torch.bfloat16),
            "native_float16_matmul": native_matmul(torch.float16),
            "matmul_time_vs_float32": {"bfloat16": round(matmul_slowdown(torch.bfloat16), 3),
                                       "float16": round(matmul_slowdown(torch.float16), 3)}}


def machine_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        **cpu_capability(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
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
