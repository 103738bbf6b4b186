"""Model FLOPs utilisation (MFU): the share of a device's peak that the model's own FLOPs use.

The model counts its FLOPs per token (`GPT.estimate_flops_per_token`, the PaLM formula);
this module knows the peaks of GPUs from their data sheets, and divides.
"""

from __future__ import annotations

import math
import os

import torch

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
