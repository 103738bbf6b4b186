"""`compile=true`: the model the training loop steps, wrapped in `torch.compile`, and one line
saying what to expect of it on a CPU.

What is compiled: the model's forward and, through AOTAutograd, its backward: one graph, no
break at the hook points while no function is attached to them (`HookPoint.forward` reads two
attributes, which dynamo guards on; attaching a hook later compiles again). Inductor fuses what
eager runs op by op: RoPE's rotation of q and k, the norms with the residual adds, GELU, the
loss. Not compiled: the optimizer step (AdamW is fused on CUDA and CPU alike, `glassgpt.training.optim`)
and the evaluations, which run the bare model eagerly (`train.evaluate` is given `raw_model`), so
switching to eval mode, a shorter last batch or no_grad never compiles a second graph.

On a CPU, matrix products are most of a small model's step, and inductor hands them to the same
kernels eager runs; only the rest gets faster. And compiling costs a C++ compiler run per fused
kernel (tens of seconds cold), paid again only when inductor's on-disk cache misses.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

CPU_NOTE = ("compile=true on a CPU: the first step compiles (a minute or more the first time, seconds from "
            "inductor's cache after), then steps of a cpu-baby-size model run 0.91x to 1.25x as fast as eager, "
            "depending on the CPU (1.06x on an AMD Zen 4, 0.91x to 1.25x on AVX2 EPYCs): it pays, if at all, "
            "on long runs, not short ones (benchmarks/bench_compile.py; docs: explanation/cpu-speed)")


def compile_for_training(model: nn.Module, device: torch.device, log: Callable[[str], None] = print) -> nn.Module:
    """`torch.compile(model)` for the training steps; on a CPU, first one line on what to expect."""
    if device.type == "cpu":
        log(CPU_NOTE)
    return torch.compile(model)
