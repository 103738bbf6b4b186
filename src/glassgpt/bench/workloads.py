"""The things being timed: a training step, an inference forward, a matmul, and
the helpers that build models and measure memory.

The training step is train.py's, part for part: the same optimizer
(`configure_optimizer`), the same autocast (`autocast_context`), a GradScaler for
fp16, and the same update (`apply_gradients`: clipping, the step, skipping it on a
non-finite loss, clearing the gradients). It runs on random tokens, so no dataset
is needed.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Callable

import torch
from torch import nn

from glassgpt.config import GPTConfig, TrainConfig
from glassgpt.hooks import HookPoint
from glassgpt.model import GPT
from glassgpt.training.loop import apply_gradients, autocast_context
from glassgpt.training.optim import configure_optimizer


def model_config(base: GPTConfig | str, **overrides) -> GPTConfig:
    """A preset name or config, with fields replaced (dropout off: timing wants no randomness)."""
    cfg = GPTConfig.preset(base) if isinstance(base, str) else base
    return dataclasses.replace(cfg, **{"dropout": 0.0, **overrides})


def build_model(cfg: GPTConfig, device: torch.device, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg).to(device)


def twin(model: nn.Module, **config_changes) -> GPT:
    """A second model with the same weights and a changed config (e.g. attn_impl)."""
    other = GPT(dataclasses.replace(model.config, **config_changes)).to(next(model.parameters()).device)
    other.load_state_dict(model.state_dict())
    return other


def random_batch(vocab_size: int, batch: int, seq_len: int, device: torch.device,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens (B, T) and their targets (the same stream shifted by one)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (batch, seq_len + 1), generator=g)
    return tokens[:, :-1].to(device), tokens[:, 1:].to(device)


def default_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return model(x, y)[1]


def make_train_step(model: nn.Module, device: torch.device, dtype: str = "float32", compile: bool = False,
                    compile_backend: str = "inductor",
                    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = default_loss):
    """One optimizer step as train.py takes it (grad_accum_steps=1). Returns `step(x, y) -> loss`."""
    tc = TrainConfig(dtype=dtype, device=device.type, compile=compile)
    optimizer = configure_optimizer(model, tc, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "float16")
    runner = torch.compile(model, backend=compile_backend) if compile else model

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast_context(device, dtype):
            loss = loss_fn(runner, x, y)
        scaler.scale(loss).backward()
        apply_gradients(model, optimizer, loss.detach(), tc.grad_clip, scaler)
        return loss.detach()

    return step


def make_forward(model: nn.Module, device: torch.device, dtype: str = "float32") -> Callable:
    """Inference: one forward pass without gradients. Returns `forward(x) -> logits`."""

    @torch.no_grad()
    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast_context(device, dtype):
            return model(x)[0]

    return forward


def first_call_seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of the first call, which for a compiled model includes tracing and code generation."""
    from glassgpt.bench.timing import synchronize

    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


# ---------------------------------------------------------------- hook points bypassed

class BypassedHookPoint(HookPoint):
    """A HookPoint whose call skips nn.Module's machinery entirely: no `_call_impl`,
    no hook dispatch, no `forward`; the tensor comes straight back. What remains is
    the attribute lookup and one plain Python call, the least any `x = self.hook(x)`
    line can cost short of deleting the line from the source."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x


def without_hook_points(model: GPT) -> GPT:
    """A copy of the model, same weights, with every HookPoint bypassed."""
    bare = copy.deepcopy(model)
    for module in bare.modules():
        if type(module) is HookPoint:
            module.__class__ = BypassedHookPoint
    return bare


def hook_calls_per_forward(model: GPT, x: torch.Tensor) -> int:
    """How many HookPoint calls one forward makes (those on the path actually taken)."""
    calls = 0

    def count(tensor, hook):
        nonlocal calls
        calls += 1

    # attach a counter to every point except attn.scores/pattern, whose use would force the manual path
    names = [n for n in model.hook_names() if not n.endswith(("attn.scores", "attn.pattern"))]
    with torch.no_grad(), model.hooks((n, count) for n in names):
        model(x)
    if model.config.attn_impl == "manual":
        calls += 2 * model.config.n_layer  # scores and pattern run on the manual path too
    return calls


# ---------------------------------------------------------------- memory

def saved_activation_bytes(fn: Callable[[], torch.Tensor], params: list[torch.Tensor]) -> int:
    """Bytes of the tensors autograd keeps for the backward pass while `fn()` runs its
    forward: each storage counted once, parameters left out. Exact for CPU tensors,
    where allocator statistics are not available; the backward is then run to free them."""
    param_storages = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_storages and ptr != 0:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    loss.backward()
    return sum(seen.values())


def peak_cuda_bytes(fn: Callable[[], object], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


# ---------------------------------------------------------------- peak matmul throughput

def matmul_flops_per_s(n: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """Best of `repeats` (n x n) @ (n x n) products, in FLOP/s (2 n^3 per product)."""
    from glassgpt.bench.timing import time_call

    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    time_call(lambda: a @ b, device)  # warm-up
    best = min(time_call(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n**3 / best


def peak_matmul(dtype: torch.dtype, device: torch.device, *, max_n: int, target_s: float,
                repeats: int) -> tuple[float, int]:
    """The machine's matmul throughput for `dtype`: square products of doubling size n
    (from 128) until one takes `target_s` or n reaches `max_n`; the best of `repeats`
    at each size, and the best size wins. Returns (FLOP/s, n). Usually the largest n
    wins; where a dtype is emulated (bf16 on CPUs without bf16 instructions) small
    products can be the fastest, so every size is kept in the running."""
    best, best_n, n = 0.0, 128, 128
    while True:
        rate = matmul_flops_per_s(n, dtype, device, repeats)
        if rate > best:
            best, best_n = rate, n
        if n >= max_n or 2 * n**3 / rate >= target_s:
            return best, best_n
        n *= 2
