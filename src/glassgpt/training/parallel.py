"""Data parallelism past one GPU's memory: how a model is spread over the ranks of a `torchrun` job.

`parallel=ddp` keeps a whole copy of the weights, gradients and optimizer state on every rank
and all-reduces the gradients (`DistributedDataParallel`). `parallel=fsdp` shards them:
`torch.distributed.fsdp.fully_shard` (FSDP2) makes each block, then the root (embeddings, final
norm, head), one unit whose parameters are DTensors split along their first dimension across
the ranks; a unit's weights are all-gathered just before its forward and backward and freed
after, and its gradients are reduce-scattered, so each rank holds about 1/N of every parameter,
gradient and AdamW moment. With `dtype=bfloat16` the gathered weights are bf16 for compute
and the gradients are reduced in fp32 (`MixedPrecisionPolicy`); the master weights stay fp32.

`activation_checkpointing=true` (either mode) keeps only each block's input for the backward
pass and recomputes the rest (`torch.utils.checkpoint` per block): less memory, one more forward.

One process (no `torchrun`) with `parallel=fsdp` wraps nothing: one shard is the whole model; its
checkpoints are sharded ones all the same (glassgpt.training.sharded), so a run can move between one and
many processes.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist

from glassgpt.errors import UsageError
from glassgpt.training.runtime import Dist

PARALLEL_CHOICES = ("ddp", "fsdp")


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether `model` (or the module torch.compile wraps) was sharded by `fully_shard`."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(getattr(model, "_orig_mod", model), FSDPModule)


def check_parallel(tc, dist_info: Dist) -> None:
    """Refuse, in one line, what a parallel mode cannot run."""
    if tc.parallel != "fsdp" or dist_info.world_size == 1:
        return  # muon and float16 under fsdp are refused by TrainConfig.validate, on any number of ranks
    if tc.analysis_interval:
        raise UsageError("analysis_interval measures the whole model in one process, which parallel=fsdp "
                         "never holds: set analysis_interval=0 and run glassgpt analyze on the saved run")


def shard(model: torch.nn.Module, dtype: str, device: torch.device, world_size: int) -> None:
    """`fully_shard` each block, then the root, in place (the module's class becomes an FSDP
    one; its parameter names stay the same). bfloat16: bf16 compute, fp32 gradient reduction."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if dtype == "bfloat16" else MixedPrecisionPolicy())
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def wrap(raw_model: torch.nn.Module, tc, device: torch.device, dist_info: Dist, log=print) -> torch.nn.Module:
    """What the training steps run: `raw_model` checkpointed, sharded (fsdp, in place) or wrapped
    in DDP, and compiled (`glassgpt.training.compiling`). Under fsdp the raw model itself is the sharded one."""
    from glassgpt.training.compiling import compile_for_training

    raw_model.checkpoint_blocks = tc.activation_checkpointing
    many = dist_info.world_size > 1
    if tc.parallel == "fsdp" and many:
        shard(raw_model, tc.dtype, device, dist_info.world_size)
        return compile_for_training(raw_model, device, log) if tc.compile else raw_model
    model = compile_for_training(raw_model, device, log) if tc.compile else raw_model
    if many:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def gradient_sync(model: torch.nn.Module, sync: bool):
    """A context for one micro-step's backward: with `sync=False` the gradients are only added up
    locally (DDP's `no_sync`, FSDP's `set_requires_gradient_sync(False)`); the last micro-step
    of an optimizer step syncs them."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    if isinstance(model, DDP):
        return contextlib.nullcontext() if sync else model.no_sync()
    if is_sharded(model):
        getattr(model, "_orig_mod", model).set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (a plain tensor as it is): e.g. the global gradient norm."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def local_bytes(model: torch.nn.Module, optimizer) -> dict[str, int]:
    """The bytes this rank holds of the parameters, their gradients and the optimizer's state
    (a DTensor counted by its local shard): what glassgpt.limits.memory_plan predicts."""
    from torch.distributed.tensor import DTensor

    def nbytes(t) -> int:
        t = t.to_local() if isinstance(t, DTensor) else t
        return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0

    params = {id(p): p for p in model.parameters()}.values()  # a tied weight once
    optimizers = getattr(optimizer, "optimizers", {"": optimizer}).values()
    state = sum(nbytes(v) for opt in optimizers for s in opt.state.values() for k, v in s.items() if k != "step")
    return {"parameters": sum(nbytes(p) for p in params),
            "gradients": sum(nbytes(p.grad) for p in params if p.grad is not None),
            "optimizer": state}


def same_on_every_rank(value, dist_info: Dist):
    """Rank 0's `value` (any picklable object), on every rank."""
    if dist_info.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def resume_batch_size(saved_batch: int, saved_world: int, batch_size: int, world_size: int) -> int:
    """The per-rank batch_size of a run resumed on `world_size` ranks that was saved by `saved_world`:
    the one that keeps the global batch (`saved_batch * saved_world` windows, drawn from one
    generator whatever the ranks, so the data continues exactly), unless batch_size was changed."""
    if world_size == saved_world or batch_size != saved_batch:
        return batch_size
    total = saved_batch * saved_world
    if total % world_size:
        fits = [n for n in range(1, min(total, 64) + 1) if total % n == 0]
        raise UsageError(f"the run's global batch of {total} windows ({saved_world} process(es) x batch_size="
                         f"{saved_batch}) cannot be split evenly over {world_size} processes: resume on "
                         f"{', '.join(map(str, fits))} process(es), or set batch_size= to change the global batch")
    return total // world_size
