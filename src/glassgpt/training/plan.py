"""How much memory a training run takes on each GPU, and which GPUs hold it: `glassgpt plan`.

`memory_plan(run_config, gpus, parallel, activation_checkpointing)` counts, per GPU, from the
config alone (a model on the meta device gives the shapes; nothing is allocated):

- weights: the fp32 master weights (under fsdp, this rank's shard of each tensor: FSDP2 splits
  dim 0 into `ceil(rows / gpus)`-row chunks, so rank 0 holds the most; that is the figure given);
- gradients: fp32, one per weight (sharded like them under fsdp);
- optimizer: AdamW's two fp32 moments per weight (Muon: one momentum buffer for the blocks'
  matrices), sharded under fsdp;
- working copies: under fsdp, the weights all-gathered for compute (the root unit, which stays
  gathered between forward and backward, and two blocks: the one running and the one prefetched),
  plus one block's unsharded gradients before the reduce-scatter; under ddp on several GPUs, the
  gradient buckets (a second copy of the gradients); under bf16 autocast with ddp, the weights'
  bf16 copies;
- activations: what one micro-batch keeps for the backward pass (`glassgpt.limits.activation_bytes`),
  at the configured batch_size per GPU.

The first three are exact to within a tensor's padding and match what a run holds (the tests
measure them on two CPU ranks); working copies and activations are estimates that leave out
the allocator's fragmentation and the CUDA/NCCL context, which is why a GPU counts as holding a
run only when the total is under `HEADROOM` of its memory.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from glassgpt.limits import FP32, activation_bytes, human_bytes, units

GPU_SIZES_GB = (16, 24, 40, 80, 141)  # V100/T4, 4090/A10, A100-40, A100/H100-80, H200
HEADROOM = 0.9  # the share of a GPU's memory a plan may fill
GB = 10**9  # a GB as 10**9 bytes: on the safe side (an "80 GB" A100 or H100 has 80 GiB, 7% more)


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Bytes per GPU of one training configuration."""

    gpus: int
    parallel: str
    activation_checkpointing: bool
    dtype: str
    batch_size: int
    parameters: int
    weights: int
    gradients: int
    optimizer: int
    working: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.working + self.activations

    def fits(self, sizes_gb=GPU_SIZES_GB) -> list[int]:
        """The GPU memory sizes (GB) whose HEADROOM share holds the whole plan."""
        return [size for size in sizes_gb if self.total <= HEADROOM * size * GB]


def shard_numel(shape: torch.Size, gpus: int) -> int:
    """Elements rank 0 holds of a tensor FSDP2 splits along dim 0 over `gpus` ranks."""
    if not shape:
        return 1
    rows = math.ceil(shape[0] / gpus)
    return min(rows, shape[0]) * math.prod(shape[1:])


def memory_plan(rc, gpus: int = 1, parallel: str | None = None,
                activation_checkpointing: bool | None = None) -> MemoryPlan:
    """Bytes per GPU of training `rc` (a RunConfig) on `gpus` GPUs; `parallel` and
    `activation_checkpointing` default to the config's."""
    tc, cfg = rc.train, rc.model
    parallel = parallel or tc.parallel
    checkpointing = tc.activation_checkpointing if activation_checkpointing is None else activation_checkpointing
    sharded = parallel == "fsdp" and gpus > 1
    shapes = units(cfg)
    split = gpus if sharded else 1
    local = {unit: sum(shard_numel(s, split) for s in ss) for unit, ss in shapes.items()}
    full = {unit: sum(math.prod(s) for s in ss) for unit, ss in shapes.items()}
    params = sum(full.values())
    local_params = sum(local.values())
    compute = 2 if tc.dtype in ("bfloat16", "float16") else FP32
    if tc.optimizer == "muon":  # one momentum buffer for the blocks' 2-D weights, AdamW's two for the rest
        matrices = sum(shard_numel(s, split) for u, ss in shapes.items() if u != "root" for s in ss if len(s) == 2)
        optimizer = (matrices + 2 * (local_params - matrices)) * FP32
    else:
        optimizer = 2 * local_params * FP32
    block = max((n for u, n in full.items() if u != "root"), default=0)
    if sharded:
        working = (full["root"] + 2 * block) * compute + block * FP32
    else:
        working = (params * FP32 if gpus > 1 else 0) + (params * compute if compute != FP32 else 0)
    return MemoryPlan(gpus=gpus, parallel=parallel, activation_checkpointing=checkpointing, dtype=tc.dtype,
                      batch_size=tc.batch_size, parameters=params, weights=local_params * FP32,
                      gradients=local_params * FP32, optimizer=optimizer, working=working,
                      activations=activation_bytes(cfg, tc.batch_size, compute, checkpointing))


ROWS = (("weights", "weights (fp32 master)"), ("gradients", "gradients (fp32)"), ("optimizer", "optimizer state"),
        ("working", "working copies"), ("activations", "activations"), ("total", "total"))


def describe(plan: MemoryPlan) -> str:
    """The plan as `glassgpt plan` prints it."""
    how = f"{plan.gpus} GPU(s), parallel={plan.parallel}" + (
        ", activation checkpointing" if plan.activation_checkpointing else "")
    lines = [f"{plan.parameters:,} parameters on {how}, dtype={plan.dtype}, batch_size={plan.batch_size} per GPU",
             "per GPU:"]
    for key, label in ROWS:
        lines.append(f"  {label:<22} {human_bytes(getattr(plan, key)):>12}")
    fits = plan.fits()
    lines.append("fits on GPUs of: " + (", ".join(f"{s} GB" for s in fits) if fits else "none of "
                 + ", ".join(f"{s} GB" for s in GPU_SIZES_GB))
                 + f" (the total under {HEADROOM:.0%} of the memory)")
    if not fits:
        lines.append("to fit: parallel=fsdp on more GPUs, activation_checkpointing=true, or a lower batch_size "
                     "(raise grad_accum_steps to keep the batch)")
    return "\n".join(lines)
