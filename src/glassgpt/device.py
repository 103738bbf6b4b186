"""Which device to run on: one place for training, sampling, analysis and the benchmarks."""

from __future__ import annotations

import torch

from glassgpt.config import check_device_name
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
