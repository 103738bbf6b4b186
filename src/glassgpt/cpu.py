"""What this CPU is and which precisions it multiplies matrices fast in.

A 16-bit matrix product is fast only where the CPU has instructions for it: bfloat16 with
AVX-512 BF16 or AMX (Intel Xeon since Cooper Lake / Sapphire Rapids, AMD Zen 4 and later) or
ARM's BF16 extension; float16 with AVX-512 FP16 or AMX-FP16. Elsewhere (an AVX2 laptop or cloud
CPU, AMD Zen 3, Intel before them) torch converts every element to float32 and back, and a
16-bit matrix product costs several times a float32 one. Matrix-vector products (decoding one
token) are another matter: they read each weight once, and the bytes read count more than the
arithmetic.

`native_matmul(dtype)` says whether `dtype` matrix products run natively here (within 1.5x of
float32's time or faster; emulated ones take 5x and more). Where the CPU's flags settle it
(x86 Linux without any instruction for the dtype) they answer; otherwise one product is timed
in each dtype, once per process (tens of milliseconds), which also catches a torch that does
not use instructions the CPU has.
"""

from __future__ import annotations

import functools
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

# The flags /proc/cpuinfo lists that decide matmul speed; x86 ones, then ARM ones ("Features" line).
SPEED_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16", "avx_ne_convert",
               "amx_tile", "amx_bf16", "amx_fp16", "asimd", "asimdhp", "sve", "bf16")
# x86 flags that give each 16-bit dtype native matrix products (oneDNN's kernels use them).
NATIVE_X86 = {torch.bfloat16: {"avx512_bf16", "amx_bf16", "avx_ne_convert"},
              torch.float16: {"avx512_fp16", "amx_fp16", "avx_ne_convert"}}
NATIVE_SLOWDOWN = 1.5  # time(dtype) / time(float32) up to which a dtype counts as native: emulated ones take 5x and more


@dataclass(frozen=True)
class CpuCapability:
    """What decides the speed of a matrix product on this CPU."""
    model: str                      # "AMD EPYC 7B13", "Apple M2", ...
    isa: str                        # torch.backends.cpu.get_cpu_capability(): the vector kernels ATen runs
    flags: frozenset[str] | None    # of SPEED_FLAGS, those the CPU has; None where not readable (macOS)
    x86: bool

    def half_instructions(self, dtype: torch.dtype) -> bool | None:
        """Whether the flags show an instruction for `dtype` matrix products (None: they cannot tell)."""
        if self.flags is None or not self.x86:
            return None
        return bool(self.flags & NATIVE_X86[dtype])


def cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_model() -> str:
    for line in cpuinfo_lines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str] | None:
    """Of SPEED_FLAGS, those this CPU lists (x86 `flags`, ARM `Features`); None without /proc/cpuinfo."""
    for line in cpuinfo_lines():
        if line.startswith(("flags", "Features")):
            present = set(line.split(":", 1)[1].split())
            return [f for f in SPEED_FLAGS if f in present]
    return None


@functools.cache
def this_cpu() -> CpuCapability:
    flags = cpu_flags()
    return CpuCapability(model=cpu_model(), isa=torch.backends.cpu.get_cpu_capability(),
                         flags=None if flags is None else frozenset(flags),
                         x86=platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"))


def matmul_slowdown(dtype: torch.dtype, repeats: int = 7) -> float:
    """time(dtype) / time(float32) of one (128, 512) x (512, 128) product here (the shape of
    cpu-speedrun's Muon step): the best of `repeats` each after one warm-up, the two in turns
    (a busy spell slows both alike), on one thread (on a busy machine a second thread's wait
    would swamp a 0.1 ms product). About 1 or below: native (AMX: 0.4); emulated: 5 to 160."""
    gen = torch.Generator().manual_seed(0)  # not the global RNG: a training run's draws stay as they were
    a, b = torch.randn(128, 512, generator=gen), torch.randn(512, 128, generator=gen)  # (M, K), (K, N)
    operands = {torch.float32: (a, b), dtype: (a.to(dtype), b.to(dtype))}
    best = dict.fromkeys(operands, math.inf)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for x, y in operands.values():
            x @ y  # warm-up
        for _ in range(repeats):
            for dt, (x, y) in operands.items():
                start = time.perf_counter()
                x @ y  # (M, N)
                best[dt] = min(best[dt], time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return best[dtype] / best[torch.float32]


def computes_natively(dtype: torch.dtype, cpu: CpuCapability,
                      slowdown: Callable[[torch.dtype], float] | None = None) -> bool:
    """Whether `dtype` matrix products on `cpu` run natively (within NATIVE_SLOWDOWN of float32's
    time, or faster), not emulated: no when
    the flags show no instruction for it, else what timing one product (`slowdown`, by default
    `matmul_slowdown`) says."""
    if dtype == torch.float32:
        return True
    if cpu.half_instructions(dtype) is False:
        return False
    return (slowdown or matmul_slowdown)(dtype) <= NATIVE_SLOWDOWN


@functools.cache
def native_matmul(dtype: torch.dtype) -> bool:
    """`computes_natively` for this process's CPU, decided once."""
    return computes_natively(dtype, this_cpu())
