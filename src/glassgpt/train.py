"""The training loop: AdamW, warmup + cosine schedule, gradient accumulation, mixed
precision, periodic evaluation, atomic checkpoints, exact resume and DDP.

`train(run_config, out_dir)` is the whole job; the functions above it are its
parts, each usable on its own (tests use them directly).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from glassgpt import checkpoint as ckpt
from glassgpt.config import RunConfig, TrainConfig
from glassgpt.data import BatchLoader, TokenDataset, eval_windows
from glassgpt.errors import GlassGPTError, RunError, UsageError
from glassgpt.model import GPT

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Dense bf16/fp16 tensor-core peaks, for the MFU estimate on GPUs we know.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "T4": 65e12, "A10": 125e12}


# ---------------------------------------------------------------- parts

@dataclass
class Dist:
    """Where this process sits in a `torchrun` job (rank 0 of 1 without one)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Dist":
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("device=cuda was asked for but no CUDA GPU is available: use device=cpu")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device=mps was asked for but MPS is not available: use device=cpu")
    return torch.device(name)


def autocast_context(device: torch.device, dtype: str):
    """bf16/fp16 autocast for the forward pass; master weights stay fp32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype == "float16" and device.type != "cuda":
        raise UsageError("dtype=float16 needs a CUDA GPU; on this device use dtype=bfloat16 or float32")
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def configure_optimizer(model: torch.nn.Module, tc: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on 2-D weights (matmuls, embeddings) only; fused on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tc.learning_rate, betas=(tc.beta1, tc.beta2),
                             fused=device.type == "cuda")


def lr_at(step: int, tc: TrainConfig) -> float:
    """Linear warmup to learning_rate, then cosine decay to min_lr at decay_iters."""
    if step < tc.warmup_iters:
        return tc.learning_rate * (step + 1) / (tc.warmup_iters + 1)
    if step >= tc.decay_iters:
        return tc.min_lr
    progress = (step - tc.warmup_iters) / max(1, tc.decay_iters - tc.warmup_iters)
    return tc.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (tc.learning_rate - tc.min_lr)


@torch.no_grad()
def evaluate(model: GPT, data, block_size: int, batch_size: int, device: torch.device,
             dtype: str = "float32", max_batches: int | None = None, dist_info: Dist = Dist()) -> float:
    """Mean cross-entropy (nats per token) over eval windows; `max_batches=None`
    reads the whole split. Under DDP the batches are shared out over ranks."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, number of targets)
    for i, (x, y) in enumerate(eval_windows(data, block_size, batch_size, max_batches)):
        if i % dist_info.world_size != dist_info.rank:
            continue
        x, y = x.to(device), y.to(device)
        with autocast_context(device, dtype):
            _, loss = model(x, y)
        n = (y != -1).sum()
        total += torch.stack([loss.double() * n, n.double()])
    if dist_info.world_size > 1:
        dist.all_reduce(total)
    model.train(was_training)
    return (total[0] / total[1]).item()


def peak_flops(device: torch.device) -> float | None:
    if "GLASSGPT_PEAK_FLOPS" in os.environ:
        return float(os.environ["GLASSGPT_PEAK_FLOPS"])
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    return None


class MetricsLog:
    """`metrics.jsonl`, one JSON object a line, and `loss.png` drawn from it."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.path, self.enabled = run_dir / ckpt.METRICS, enabled
        self.rows: list[dict] = []

    def load(self, up_to_step: int) -> None:
        """On resume: keep the rows up to the checkpoint, drop the ones after it."""
        if self.path.is_file():
            rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            self.rows = [r for r in rows if r["step"] <= up_to_step and r.get("kind") != "final"]
        if self.enabled:
            ckpt.atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def has_eval(self, step: int) -> bool:
        return any(r["step"] == step and r.get("kind") == "eval" for r in self.rows)

    def append(self, row: dict) -> None:
        self.rows.append(row)
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def plot(self) -> None:
        if self.enabled:
            ckpt.atomic_write(self.path.with_name(ckpt.PLOT), lambda p: plot_losses(self.rows, p))


def plot_losses(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["train_loss"]) for r in rows if r.get("kind") == "train"]
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1, alpha=0.8)
    if val:
        ax.plot(*zip(*val), "o-", label="val", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps, so it can save first."""

    def __init__(self):
        self.signal: int | None = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._set) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _set(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class Interrupted(GlassGPTError):
    """Training stopped by a signal after saving a checkpoint."""

    exit_code = 130


# ---------------------------------------------------------------- the job

def train(run_config: RunConfig, out_dir: str | Path, *, resume: bool = False,
          log: Callable[[str], None] = print) -> dict:
    """Train a model and write its run directory. Returns a summary of the run."""
    dist_info = Dist.from_env()
    if dist_info.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and run_config.train.device != "cpu" else "gloo"
        dist.init_process_group(backend=backend)
    try:
        return _train(run_config, Path(out_dir), resume, log if dist_info.is_main else (lambda s: None), dist_info)
    finally:
        if dist_info.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(rc: RunConfig, run_dir: Path, resume: bool, log, dist_info: Dist) -> dict:
    tc, mc = rc.train, rc.model
    device = resolve_device(tc.device, dist_info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    autocast_context(device, tc.dtype)  # fail early on a dtype this device cannot run

    state = None
    if resume:
        ckpt.check_run_dir(run_dir)
        saved, _ = ckpt.read_config(run_dir)
        differences = [f"{k}: {v} -> {getattr(mc, k)}" for k, v in asdict(saved.model).items() if getattr(mc, k) != v]
        if differences:
            raise UsageError(f"cannot resume {run_dir} with a different model shape ({'; '.join(differences)})")
        state = ckpt.load_trainer_state(run_dir)
    elif (run_dir / ckpt.CONFIG).exists():
        raise UsageError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --out")

    dataset = TokenDataset.load(tc.dataset)
    tokenizer = dataset.tokenizer
    if mc.vocab_size < tokenizer.vocab_size:
        raise UsageError(f"vocab_size {mc.vocab_size} is smaller than the {tc.dataset} tokenizer's "
                         f"{tokenizer.vocab_size}: set vocab_size={tokenizer.vocab_size}")
    train_data, val_data = dataset.split("train"), dataset.split("val")

    torch.manual_seed(tc.seed + dist_info.rank)
    model = GPT(mc).to(device)
    if resume:
        model = ckpt.load_run(run_dir, device)[0].train()
    optimizer = configure_optimizer(model, tc, device)
    loader = BatchLoader(train_data, mc.block_size, tc.batch_size, tc.seed, rank=dist_info.rank)
    scaler = torch.amp.GradScaler(device.type, enabled=tc.dtype == "float16")
    step, bad_steps, skipped = 0, 0, 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        loader.load_state_dict(state["loader"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        step, skipped = int(state["step"]), int(state.get("skipped_steps", 0))

    raw_model = model
    if tc.compile:
        model = torch.compile(model)
    if dist_info.world_size > 1:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    metrics = MetricsLog(run_dir, enabled=dist_info.is_main)
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        metrics.load(up_to_step=step)  # every rank reads it, so all agree on which evals are done

    def save_checkpoint() -> None:
        if not dist_info.is_main:
            return
        trainer_state = {
            "step": step, "skipped_steps": skipped, "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "loader": loader.state_dict(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }
        ckpt.save_run(run_dir, raw_model, tokenizer, rc, trainer_state)

    def run_eval(max_batches: int | None) -> float:
        return evaluate(raw_model, val_data, mc.block_size, tc.batch_size, device, tc.dtype, max_batches, dist_info)

    tokens_per_step = tc.batch_size * mc.block_size * tc.grad_accum_steps * dist_info.world_size
    flops_per_token = raw_model.estimate_flops_per_token()
    peak = peak_flops(device)
    log(f"training {raw_model.num_params():,} parameters on {device} ({tc.dtype}), "
        f"{tokens_per_step:,} tokens per step, {dist_info.world_size} process(es), into {run_dir}")
    if step == 0 and dist_info.is_main:
        save_checkpoint()  # the run directory is a loadable run from the start

    model.train()
    start_step = step
    started, window_start, window_tokens = time.time(), time.time(), 0
    with StopFlag() as stop:
        while step < tc.max_iters:
            if step % tc.eval_interval == 0 and not metrics.has_eval(step):
                val_loss = run_eval(tc.eval_iters)
                metrics.append({"kind": "eval", "step": step, "val_loss": val_loss, **dataset.bits_per_unit(val_loss)})
                metrics.plot()
                log(f"step {step:>6} | val loss {val_loss:.4f}")

            lr = lr_at(step, tc)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for micro in range(tc.grad_accum_steps):
                x, y = (t.to(device, non_blocking=True) for t in loader.next_batch())
                last = micro == tc.grad_accum_steps - 1
                sync = contextlib.nullcontext() if last or dist_info.world_size == 1 else model.no_sync()
                with sync:
                    with autocast_context(device, tc.dtype):
                        _, loss = model(x, y)
                    scaler.scale(loss / tc.grad_accum_steps).backward()
                loss_sum += loss.detach()
            loss_step = loss_sum / tc.grad_accum_steps  # the loss of the whole optimizer step
            if dist_info.world_size > 1:
                dist.all_reduce(loss_step, op=dist.ReduceOp.AVG)
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), tc.grad_clip or float("inf"))
            finite = bool(torch.isfinite(loss_step)) and bool(torch.isfinite(grad_norm))
            if finite or scaler.is_enabled():  # with fp16 the scaler skips inf steps itself
                scaler.step(optimizer)
                scaler.update()
            if finite:
                bad_steps = 0
            else:
                bad_steps, skipped = bad_steps + 1, skipped + 1
                log(f"step {step:>6} | non-finite loss or gradient: step skipped ({bad_steps} in a row)")
                if bad_steps >= tc.max_bad_steps:
                    raise RunError(f"{bad_steps} non-finite steps in a row at step {step}: lower learning_rate, "
                                   "use dtype=bfloat16 instead of float16, or raise max_bad_steps")
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window_tokens += tokens_per_step

            if step % tc.log_interval == 0 or step == tc.max_iters:
                elapsed = time.time() - window_start
                tok_s = window_tokens / max(elapsed, 1e-9)
                row = {"kind": "train", "step": step, "train_loss": loss_step.item(), "lr": lr,
                       "grad_norm": grad_norm.item(), "tokens_per_s": tok_s,
                       "mfu": flops_per_token * tok_s / peak if peak else None,
                       "peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
                       "skipped_steps": skipped, "elapsed_s": time.time() - started}
                metrics.append(row)
                mfu = f" | mfu {row['mfu']:.1%}" if peak else ""
                log(f"step {step:>6} | loss {row['train_loss']:.4f} | lr {lr:.2e} | {tok_s:,.0f} tok/s{mfu}")
                window_start, window_tokens = time.time(), 0

            if step % tc.eval_interval == 0 or step == tc.max_iters:
                save_checkpoint()
            if stop.signal is not None:
                save_checkpoint()
                raise Interrupted(f"stopped by signal {stop.signal} at step {step}; checkpoint saved in {run_dir}, "
                                  "continue with --resume")

    train_seconds = time.time() - started
    val_loss = run_eval(None)  # the whole validation split: a stable final figure
    final = {"kind": "final", "step": step, "val_loss": val_loss, "train_seconds": train_seconds,
             "tokens_per_s": (step - start_step) * tokens_per_step / max(train_seconds, 1e-9),
             "skipped_steps": skipped}
    final.update(dataset.bits_per_unit(val_loss))
    metrics.append({"kind": "eval", "step": step, "val_loss": val_loss, **dataset.bits_per_unit(val_loss)})
    metrics.append(final)
    metrics.plot()
    bits = next((f" | {v:.3f} {k.replace('_', ' ')}" for k, v in final.items() if k.startswith("bits_per")), "")
    log(f"done: val loss {val_loss:.4f} (whole val split){bits} | {train_seconds:.1f}s")
    return final
