"""Which device to run on, and which precisions it multiplies matrices fast in: one place for
training, sampling, analysis and the benchmarks."""

from __future__ import annotations

import torch

from glassgpt.config import check_device_name
from glassgpt.cpu import native_matmul
from glassgpt.errors import UsageError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto", "cpu", "cuda", "cuda:N" or "mps" -> a torch.device that exists here; "auto" picks
    CUDA, then MPS, then the CPU, and a bare "cuda" is this process's local rank's GPU."""
    check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("device=cuda was asked for but no CUDA GPU is available: use device=cpu")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device=mps was asked for but MPS is not available: use device=cpu")
    return torch.device(name)


def fast_matmul(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether `device` multiplies `dtype` matrices natively, not by converting them to float32.
    CUDA: float16 on every GPU, bfloat16 from compute capability 8.0 (Ampere; older GPUs emulate
    it); a CPU: what `glassgpt.cpu.native_matmul` finds; MPS: float32 only (not measured)."""
    if dtype == torch.float32:
        return True
    if device.type == "cuda":
        return dtype == torch.float16 or torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and native_matmul(dtype)
