"""The training loop: AdamW, warmup + cosine schedule, gradient accumulation, mixed
precision, periodic evaluation, atomic checkpoints, exact resume, DDP and FSDP (glassgpt.training.parallel).

`train(run_config, out_dir)` is the whole job; the functions above it are its
parts, each usable on its own (tests use them directly): `accumulate_gradients`
runs the micro-steps of one optimizer step, `apply_gradients` clips and steps.

Host syncs: a step waits for the device once, to read whether the loss and the
gradient norm are finite (one combined scalar), so that a bad step is skipped
before the optimizer touches the weights or its moments. That is the same one
sync `GradScaler` pays for fp16; logging reads the loss only at log steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.distributed as dist

from glassgpt import checkpoint as ckpt
from glassgpt import shard_folders
from glassgpt.atomic import atomic_write, kill_point, recover
from glassgpt.config import GPTConfig, RunConfig, TrainConfig, changed, fixed_on, show
from glassgpt.data import BatchLoader, Prefetcher, TokenDataset, bos_token, eval_windows
from glassgpt.device import resolve_device
from glassgpt.errors import RunError, UsageError
from glassgpt.inference.mode import inference
from glassgpt.limits import check_fits
from glassgpt.model import GPT
from glassgpt.progress import duration
from glassgpt.threads import ThreadChooser, machine_summary
from glassgpt.training import finetune, parallel
from glassgpt.training.budget import RunClock
from glassgpt.training.flops import mfu, peak_flops
from glassgpt.training.log import MetricsLog, check_tensorboard_available
from glassgpt.training.optim import Optimizers, configure_optimizer, lr_at
from glassgpt.training.plan import memory_plan
from glassgpt.stop import Interrupted, StopFlag, StopRequested, check_stop, stop_requested
from glassgpt.training.runtime import Dist, gather_rng_states, init_process_group, set_rng_state

WHOLE_SPLIT_LOGITS_BYTES = 64 * 2**20  # a whole-split eval batch's logits, at most (fp32)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SHAPE_FIELDS = finetune.SHAPE_FIELDS  # fix the weights' shapes; dropout, attn_impl, norm may change on resume
# The resume rules, as each config field declares them (glassgpt.config.option): these may not change.
RESUME_FIXED_MODEL, RESUME_FIXED_TRAIN = fixed_on(GPTConfig, "resume"), fixed_on(TrainConfig, "resume")


# ---------------------------------------------------------------- parts

def autocast_context(device: torch.device, dtype: str):
    """bf16/fp16 autocast for the forward pass; master weights stay fp32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype == "float16" and device.type != "cuda":
        raise UsageError("dtype=float16 needs a CUDA GPU; on this device use dtype=bfloat16 or float32")
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def evaluate(model: GPT, data, block_size: int, batch_size: int, device: torch.device,
             dtype: str = "float32", max_batches: int | None = None, dist_info: Dist = Dist(),
             bos: int | None = None) -> float:
    """Mean cross-entropy (nats per token) over eval windows; `max_batches=None`
    reads the whole split (in batches of up to 8x batch_size rows, as far as their logits
    stay within 64 MB: the same windows, fewer calls). Under DDP the ranks read the windows
    one process with the global batch (`batch_size * world_size`) would, each its slice of rows.
    `bos`: every window starts with this id (`eval_windows`)."""
    if max_batches is None:
        logits_bytes_per_row = block_size * model.config.vocab_size * 4
        batch_size = max(batch_size, min(8 * batch_size, WHOLE_SPLIT_LOGITS_BYTES // logits_bytes_per_row))
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, number of targets)
    rows = slice(dist_info.rank * batch_size, (dist_info.rank + 1) * batch_size)
    with inference(model):
        for x, y in eval_windows(data, block_size, batch_size * dist_info.world_size, max_batches, bos):
            check_stop(dist_info, device)  # a stop request ends the evaluation here (on every rank alike)
            x, y = x[rows], y[rows]  # (B, T) each: this rank's share
            if len(x) == 0:  # the last, short batch may have no rows for this rank; it still runs the
                # model (under FSDP every rank's forward gathers the weights), on one row with no targets
                x, y = torch.zeros(1, block_size, dtype=torch.long), torch.full((1, block_size), -1)
            x, y = x.to(device), y.to(device)
            with autocast_context(device, dtype):
                _, loss = model(x, y)
            n = (y != -1).sum()
            total += torch.stack([torch.where(n > 0, loss.double() * n, 0.0), n.double()])  # no targets: adds 0
    if dist_info.world_size > 1:
        dist.all_reduce(total)
    return (total[0] / total[1]).item()


def accumulate_gradients(model: torch.nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                         device: torch.device, dtype: str = "float32",
                         scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """Forward and backward over equal-size micro-batches, adding up the gradients
    of `loss / len(batches)`: the same gradients as one batch holding them all.
    Under DDP and FSDP the gradients are synced once, on the last micro-batch.
    Returns the mean loss over the micro-batches (detached, on the device)."""
    n = len(batches)
    loss_sum = torch.zeros((), device=device)
    for i, (x, y) in enumerate(batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # (B, T) each
        with parallel.gradient_sync(model, sync=i == n - 1):
            with autocast_context(device, dtype):
                _, loss = model(x, y)
            share = loss / n
            (scaler.scale(share) if scaler is not None else share).backward()
        loss_sum += loss.detach()
    return loss_sum / n


def apply_gradients(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                    grad_clip: float, scaler: torch.amp.GradScaler | None = None) -> tuple[torch.Tensor, bool]:
    """Clip the gradients and take the optimizer step, unless the loss or the
    gradient norm is not finite: then the step is skipped (weights and optimizer
    moments untouched). Clears the gradients. Returns `(grad_norm, stepped)`."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or float("inf"))
    grad_norm = parallel.full_tensor(grad_norm)  # FSDP: the norm over every rank's shards, on each
    finite = bool(torch.isfinite(grad_norm) & torch.isfinite(loss))  # the step's one host sync
    if scaler is not None and scaler.is_enabled():
        scaler.step(optimizer)  # fp16: the scaler skips steps with inf/nan gradients itself
        scaler.update()
    elif finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, finite


def check_same_shape(saved: GPTConfig, new: GPTConfig, run_dir: Path) -> None:
    """Refuse to resume a run with a model whose weights would not fit its checkpoint: every
    GPTConfig field declared `resume=False` (glassgpt.config.option) must be the saved one."""
    differences = [f"{k} {getattr(saved, k)} -> {getattr(new, k)}" for k in changed(saved, new, RESUME_FIXED_MODEL)]
    if differences:
        raise UsageError(f"cannot resume {run_dir} with a different model ({', '.join(differences)}): "
                         "resume with the run's own model settings, or train into a new --out")


def check_same_recipe(saved: TrainConfig, new: TrainConfig, run_dir: Path) -> None:
    """Refuse to resume a run with a recipe its saved state cannot serve: every TrainConfig field
    declared `resume=False` (the optimizer: its saved moments fit no other) must be the saved one."""
    keys = changed(saved, new, RESUME_FIXED_TRAIN)
    if keys:
        was = ", ".join(f"{k}={show(getattr(saved, k))}" for k in keys)
        now = ", ".join(f"{k}={show(getattr(new, k))}" for k in keys)
        raise UsageError(f"cannot resume {run_dir}, trained with {was}, with {now}: "
                         f"resume with {was}, or train into a new --out")


# ---------------------------------------------------------------- the job

def train(run_config: RunConfig, out_dir: str | Path, *, resume: bool = False,
          log: Callable[[str], None] = print, on_model: Callable[[GPT], None] | None = None,
          progress: Callable[[int, int, float | None], None] | None = None) -> dict:
    """Train a model and write its run directory. Returns a summary of the run.

    `on_model(model)` is called once with the bare model (weights loaded, before
    `torch.compile` and DDP wrap it): a place to attach hooks (`model.add_hook`)
    that watch or alter activations during training. `progress(done, max_iters, eta_seconds)`
    hears after every step how far the schedule is (glassgpt.progress draws it).
    On a CPU, torch's thread count is chosen for the run (`threads`, glassgpt.threads) and put
    back when it ends."""
    started = time.monotonic()  # max_minutes counts from here
    dist_info = Dist.from_env()
    started_group = dist_info.world_size > 1 and not dist.is_initialized()  # a caller's group is left to it
    if started_group:
        backend = "nccl" if torch.cuda.is_available() and run_config.train.device != "cpu" else "gloo"
        init_process_group(backend)
    run_dir = Path(out_dir)
    try:
        with ckpt.writer_lock(run_dir) if dist_info.is_main else contextlib.nullcontext():
            result = _train(run_config, run_dir, resume, log if dist_info.is_main else (lambda s: None),
                            dist_info, on_model, progress if dist_info.is_main else None, started)
        if dist_info.world_size > 1:  # tear down together: a gloo rank whose peer has already gone may abort
            dist.barrier()
        return result
    finally:
        if started_group and dist.is_initialized():
            dist.destroy_process_group()


def _read_resume_state(run_dir: Path, rc: RunConfig, dist_info: Dist, log) -> tuple[dict, RunConfig]:
    """The trainer state of the run's last checkpoint, after checking it fits `rc`, and `rc` with the
    batch_size that keeps the run's global batch. The resume rules, all here: the model and recipe
    fields declared fixed are the saved ones (check_same_shape, check_same_recipe), the state belongs
    to the saved weights, and another number of processes splits the same global batch."""
    if dist_info.is_main:
        recover(run_dir, ckpt.RUN_FILES)  # finish or undo a checkpoint write cut short by a kill
        ckpt.drop_stale_shards(run_dir)  # ... and the shard folder of one (parallel=fsdp)
    if dist_info.world_size > 1:
        dist.barrier()
    ckpt.check_run_dir(run_dir, repair=False)
    saved, raw = ckpt.read_config(run_dir)
    check_same_shape(saved.model, rc.model, run_dir)
    check_same_recipe(saved.train, rc.train, run_dir)
    ckpt.check_weights_fit(saved.model, run_dir / ckpt.WEIGHTS)  # before a model of that size is built
    state = ckpt.load_trainer_state(run_dir)
    if state.get("weights_sha256") != raw.get("weights_sha256"):
        raise RunError(f"{run_dir / ckpt.STATE} and {run_dir / ckpt.CONFIG} come from different checkpoints: "
                       "the run directory was edited by hand; restore it or train into a new --out")
    saved_world = len(state["rng"])
    batch_size = parallel.resume_batch_size(saved.train.batch_size, saved_world, rc.train.batch_size,
                                            dist_info.world_size)
    if saved_world != dist_info.world_size:  # the data continues exactly; per-rank dropout masks cannot
        log(f"resuming a run of {saved_world} process(es) on {dist_info.world_size}: batch_size={batch_size} "
            f"per process keeps the global batch of {batch_size * dist_info.world_size} windows"
            + ("; dropout masks are drawn per process, so they will not repeat exactly" if rc.model.dropout else ""))
        rc = RunConfig(rc.model, dataclasses.replace(rc.train, batch_size=batch_size), rc.given_model_keys)
    return state, rc


def _restore(state: dict, run_dir: Path, model: GPT, optimizer, scaler, loader: BatchLoader,
             device: torch.device, dist_info: Dist, seed: int) -> tuple[int, int, float]:
    """Put the optimizer (under fsdp, the weights too), scaler, data position and RNG back as they
    were; returns (step, skipped steps, schedule position). A rank the saved run did not have seeds
    its RNG afresh."""
    if "sharded" in state:
        from glassgpt.training import sharded

        sharded.load_shards(run_dir / state["sharded"], model, optimizer, bool(state.get("sharded_optimizer")))
    else:
        optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    loader.load_state_dict(state["loader"])
    rng = state["rng"]  # one RNG state per rank of the run that saved it
    if dist_info.rank < len(rng):
        set_rng_state(rng[dist_info.rank], device)
    else:
        torch.manual_seed(seed + dist_info.rank + 1_000_003 * int(state["step"]))
    step = int(state["step"])
    return step, int(state.get("skipped_steps", 0)), float(state.get("schedule_position", step))


# ---------------------------------------------------------------- the loop, over an explicit state

@dataclass
class Job:
    """What a training run is made of, fixed once it starts (the weights change in place)."""

    rc: RunConfig
    run_dir: Path
    device: torch.device
    dist_info: Dist
    log: Callable[[str], None]
    dataset: TokenDataset
    val_data: object  # the validation split (a memmap), opened once
    raw_model: GPT  # the bare model: checkpoints, evaluation and analysis use it
    model: torch.nn.Module  # what the steps run: raw_model, compiled and / or wrapped in DDP
    optimizer: torch.optim.Optimizer | Optimizers
    scaler: torch.amp.GradScaler
    batches: Prefetcher
    metrics: MetricsLog
    probe: object | None  # dynamics.AnalysisProbe of analysis_interval (main process only)
    origin: dict | None  # where a fine-tuning run came from
    peak: float | None  # the device's peak FLOP/s for MFU
    tokens_per_step: int
    flops_per_token: float
    clock: RunClock  # the run's pace and its deadline (max_minutes)
    threads: ThreadChooser | None  # on a CPU: torch's thread count, chosen and checked again

    @property
    def tc(self) -> TrainConfig:
        return self.rc.train


@dataclass
class TrainState:
    """What changes from step to step; the step, the skipped steps and the data position (in the
    prefetcher) go into each checkpoint, the rest is this process's bookkeeping."""

    step: int = 0
    skipped: int = 0  # steps skipped over a non-finite loss or gradient, over the whole run
    bad_in_a_row: int = 0
    start_step: int = 0  # where this process began (0, or the resumed step)
    position: float = 0.0  # where the schedule is read: the step, or ahead of it under max_minutes
    start_position: float = 0.0  # the position this process began at
    stopping: bool = False  # the last step is done (max_iters, or the time of max_minutes)
    started: float = field(default_factory=time.time)
    paused: dict = field(default_factory=lambda: {"eval": 0.0, "checkpoint": 0.0, "analysis": 0.0})
    window_start: float = field(default_factory=time.time)  # the current log window: its start,
    window_tokens: int = 0  # its tokens,
    window_paused: float = 0.0  # and its seconds outside training steps


def _train(rc: RunConfig, run_dir: Path, resume: bool, log, dist_info: Dist, on_model, progress,
           started: float) -> dict:
    job, state, finished = _start(rc, run_dir, resume, log, dist_info, on_model, started)
    if finished is not None:
        return finished
    try:
        if job.threads is not None:
            job.threads.start()
        with StopFlag() as stop:
            try:
                _loop(job, state, stop, progress)
                return _finish(job, state)
            except StopRequested:  # inside an evaluation or analysis: the step's state is whole
                _stop(job, state, stop)
    finally:
        job.metrics.close()
        if job.threads is not None:
            job.threads.close()


def _loop(job: Job, state: TrainState, stop: StopFlag, progress=None) -> None:
    """The steps, from `state.step` until the schedule's position reaches max_iters (the step
    itself, or the time under max_minutes): evaluate, analyse, step, log, checkpoint."""
    tc = job.tc
    job.model.train()
    while state.position < tc.max_iters and not state.stopping:
        if (state.step % tc.eval_interval == 0 and not job.metrics.has_eval(state.step)
                and job.clock.has_time_for(job.clock.eval_s(_periodic_eval_tokens(job)))):
            _periodic_eval(job, state)
        if job.probe is not None and state.step % tc.analysis_interval == 0 and not _has_analysis(job, state):
            _pause(state, "analysis", lambda: _analyse(job, state))

        step_started = time.time()
        lr = lr_at(state.position, tc)
        for group in job.optimizer.param_groups:
            group["lr"] = lr
        loss = accumulate_gradients(job.model, job.batches.take(), job.device, tc.dtype, job.scaler)
        job.batches.fetch()  # the next step's, drawn while this one runs on a GPU
        if job.dist_info.world_size > 1:  # every rank sees the global loss, so all skip alike
            dist.all_reduce(loss)
            loss /= job.dist_info.world_size
        grad_norm, stepped = apply_gradients(job.raw_model, job.optimizer, loss, tc.grad_clip, job.scaler)
        state.bad_in_a_row = 0 if stepped else state.bad_in_a_row + 1
        state.skipped += 0 if stepped else 1
        state.step += 1
        state.window_tokens += job.tokens_per_step
        if not stepped:
            _refuse_too_many_bad_steps(job, state)
        job.clock.add_steps(1, time.time() - step_started)
        state.position = job.clock.position(state.step, state.start_position, tc.max_iters, state.position)
        state.stopping = state.position >= tc.max_iters
        if job.threads is not None and job.threads.recheck() is not None:
            state.window_start, state.window_tokens, state.window_paused = time.time(), 0, 0.0  # a new pace
        if progress is not None:
            progress(state.step, _expected_steps(state, tc.max_iters), _eta(job, state))

        if state.step % tc.log_interval == 0 or state.stopping:
            _log_train(job, state, loss, grad_norm, lr)
        if state.step % tc.eval_interval == 0 or state.stopping:
            _pause(state, "checkpoint", lambda: _checkpoint(job, state))
        if stop_requested(stop, job.dist_info, job.device):
            _stop(job, state, stop)


def _stop(job: Job, state: TrainState, stop: StopFlag) -> None:
    """Save a checkpoint of the step reached, and end with Interrupted (exit 130)."""
    _save_checkpoint(job, state)
    job.metrics.plot()
    name = signal.Signals(stop.signal).name if stop.signal else "a signal on another rank"
    raise Interrupted(f"stopped by {name} at step {state.step} with a checkpoint saved; continue with: "
                      f"glassgpt train --out {job.run_dir} --resume")


def _start(rc: RunConfig, run_dir: Path, resume: bool, log, dist_info: Dist,
           on_model, started: float) -> tuple[Job | None, TrainState | None, dict | None]:
    """Check everything, build the job and its state (restored on resume): `(job, state, None)`,
    or `(None, None, final row)` when a resumed run is already complete."""
    tc = rc.train
    device = resolve_device(tc.device, dist_info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # on a CPU, the first reading of how busy the machine is runs while the job sets itself up
    threads = ThreadChooser(tc.threads, log) if device.type == "cpu" else None
    autocast_context(device, tc.dtype)  # fail early on a dtype this device cannot run
    parallel.check_parallel(tc, dist_info)  # ... and on what the parallel mode cannot run
    peak = peak_flops(device, tc.dtype)  # ... and on a bad GLASSGPT_PEAK_FLOPS
    if tc.tensorboard:
        check_tensorboard_available()
    source, origin = None, None
    if tc.init_from:  # fine-tuning: the shape (and, below, weights and tokenizer) of another run
        mc, source, origin = finetune.fine_tuning_model(rc, run_dir, resume)
        rc = RunConfig(mc, tc)
    if resume:
        saved, rc = _read_resume_state(run_dir, rc, dist_info, log)
        tc = rc.train
    elif (run_dir / ckpt.CONFIG).exists():
        raise UsageError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --out")
    else:
        saved = None
    dataset = _load_dataset(rc, source)
    val_data = dataset.split("val")

    sharded = tc.parallel == "fsdp" and dist_info.world_size > 1  # each rank holds 1/N (glassgpt.training.plan)
    check_fits(memory_plan(rc, dist_info.world_size).total, device, f"training this model at batch_size={tc.batch_size}",
               "lower batch_size (raise grad_accum_steps to keep the batch), block_size, n_embd or n_layer"
               + ("" if sharded else ", or use parallel=fsdp on several GPUs"))
    raw_model, model, optimizer = _build_model(rc, run_dir, device, dist_info, saved, source, on_model, log)
    bos = bos_token(dataset.tokenizer) if tc.bos else None
    loader = BatchLoader(dataset.split("train"), rc.model.block_size, tc.batch_size, tc.seed, dist_info.rank,
                         dist_info.world_size, tc.repeat_fraction, bos)
    scaler = torch.amp.GradScaler(device.type, enabled=tc.dtype == "float16")
    state = TrainState()
    if saved is not None:
        state.step, state.skipped, state.position = _restore(saved, run_dir, raw_model, optimizer, scaler, loader,
                                                             device, dist_info, tc.seed)
    state.start_step, state.start_position = state.step, state.position

    batches = Prefetcher(loader, tc.grad_accum_steps, device)
    metrics = MetricsLog(run_dir, enabled=dist_info.is_main, tensorboard=tc.tensorboard)
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        finished = metrics.final_row(state.step) if state.position >= tc.max_iters else None
        if finished is not None:
            val = finished.get("val_loss")
            steps = (f"{state.step} of max_iters={tc.max_iters} steps" if state.step >= tc.max_iters else
                     f"its time ended its schedule at step {state.step}")
            log(f"{run_dir} is complete: {steps}, val loss {'n/a' if val is None else format(val, '.4f')}; "
                "nothing to do (raise max_iters to train further)")
            return None, None, finished
        metrics.load(up_to_step=state.step, warn=log)  # every rank reads it, so all agree on which evals are done
    metrics.open_tensorboard(state.step if resume else None)
    probe = None  # the fixed inputs of the analysis rows (analysis_interval), measured by the main process
    if tc.analysis_interval and dist_info.is_main:
        from glassgpt.analysis import dynamics  # only then: training alone imports no analysis, no matplotlib

        probe = dynamics.AnalysisProbe.build(val_data, rc.model.block_size, dataset.tokenizer.vocab_size,
                                             tc.seed, bos=bos).to(device)
    tokens_per_step = tc.batch_size * rc.model.block_size * tc.grad_accum_steps * dist_info.world_size
    clock = RunClock.start(tc.max_minutes, len(val_data) - 1, tokens_per_step, started)
    job = Job(rc, run_dir, device, dist_info, log, dataset, val_data, raw_model, model, optimizer, scaler, batches, metrics,
              probe, origin, peak, tokens_per_step, raw_model.estimate_flops_per_token(), clock, threads)
    _announce(job, source)
    if tc.max_minutes and dist_info.is_main:
        import matplotlib.figure  # noqa: F401  (loss.png at the end: its import is paid now, not after the time)
    if state.step == 0:
        _checkpoint(job, state)  # the run directory is a loadable run from the start
    state.started = state.window_start = time.time()
    return job, state, None


def _build_model(rc: RunConfig, run_dir: Path, device: torch.device, dist_info: Dist, saved: dict | None,
                 source, on_model, log=print) -> tuple[GPT, torch.nn.Module, object]:
    """The model with its weights (saved, a fine-tuning source's, or fresh from the seed), what the
    steps run (glassgpt.training.parallel.wrap), and the optimizer over the (under fsdp, sharded) weights."""
    tc = rc.train
    torch.manual_seed(tc.seed)  # the same initial weights on every rank (FSDP shards them where they are)
    raw_model = GPT(rc.model).to(device)
    if dist_info.rank:
        torch.manual_seed(tc.seed + dist_info.rank)  # dropout masks differ by rank
    if saved is not None and "sharded" not in saved:  # a sharded checkpoint's weights come with its shards
        ckpt.load_weights(raw_model, run_dir, device)
    elif source is not None:
        ckpt.load_weights(raw_model, source.run_dir, device, expected_sha256=source.weights_sha256)
    if on_model is not None:
        on_model(raw_model)
    model = parallel.wrap(raw_model, tc, device, dist_info, log)  # evals use raw_model
    return raw_model, model, configure_optimizer(raw_model, tc, device)


def _load_dataset(rc: RunConfig, source) -> TokenDataset:
    """The run's dataset, checked against the model and (fine-tuning) the source's tokenizer."""
    tc, mc = rc.train, rc.model
    dataset = TokenDataset.load(tc.dataset)
    tokenizer = dataset.tokenizer
    if source is not None:
        finetune.check_same_tokenizer(source, tc.dataset, tokenizer)
    if mc.vocab_size < tokenizer.vocab_size:
        raise UsageError(f"vocab_size {mc.vocab_size} is smaller than the {tc.dataset} tokenizer's "
                         f"{tokenizer.vocab_size}: set vocab_size={tokenizer.vocab_size}")
    train_tokens = len(dataset.split("train"))
    if train_tokens < tc.min_train_tokens:
        raise UsageError(f"the {tc.dataset} train split has {train_tokens:,} tokens; this recipe needs at least "
                         f"{tc.min_train_tokens:,} (min_train_tokens), or its model learns the text by heart: "
                         "prepare a larger corpus (a few MB of text), or set min_train_tokens=0 to train anyway")
    val_tokens = len(dataset.split("val"))
    if val_tokens < 2:
        raise UsageError(f"the {tc.dataset} val split has {val_tokens} token(s), too few to evaluate on "
                         "(one input and its next token at least): prepare more data")
    return dataset


def _announce(job: Job, source) -> None:
    tc, log = job.tc, job.log
    log(f"training {job.raw_model.num_params():,} parameters on {job.device} ({tc.dtype}), "
        f"{job.tokens_per_step:,} tokens per step, {job.dist_info.world_size} process(es), into {job.run_dir}"
        + (f", peak {job.peak / 1e12:.0f} TFLOP/s for MFU" if job.peak else ""))
    tokens = job.dataset.meta.get("tokens", {})
    log(f"data: {tc.dataset} in {job.dataset.path} ({tokens.get('train', 0):,} training and "
        f"{tokens.get('val', 0):,} validation tokens, {job.dataset.tokenizer.name} tokenizer)")
    if source is not None:
        log(f"fine-tuning from {source.run_dir}: its weights, shape and tokenizer, a fresh optimizer")
    if job.probe is not None:
        from glassgpt.analysis.dynamics import DYNAMICS

        log(f"analysis every {tc.analysis_interval} steps into {job.run_dir / DYNAMICS} "
            "(its time is left out of tokens/s)")


# ---------------------------------------------------------------- the loop's parts

def _pause(state: TrainState, kind: str, fn: Callable):
    """Run fn, and count its time apart from the training steps'."""
    t0 = time.time()
    result = fn()
    seconds = time.time() - t0
    state.paused[kind] += seconds
    state.window_paused += seconds
    return result


def _periodic_eval_tokens(job: Job) -> int:
    """The tokens one periodic evaluation reads in this process."""
    return job.tc.eval_iters * job.tc.batch_size * job.rc.model.block_size


def _periodic_eval(job: Job, state: TrainState) -> None:
    """An "eval" row on `eval_iters` batches (the whole split when fine-tuning starts: the exact figure)."""
    tc = job.tc
    whole = state.step == 0 and bool(tc.init_from)
    started = time.time()
    val_loss = _pause(state, "eval", lambda: _evaluate(job, None if whole else tc.eval_iters))
    job.clock.add_eval(job.clock.final_eval_tokens if whole else _periodic_eval_tokens(job), time.time() - started)
    job.metrics.append({**_eval_row(job, state, val_loss), "elapsed_s": time.time() - state.started})
    job.log(f"step {state.step:>6} | val loss {val_loss:.4f}")


def _expected_steps(state: TrainState, max_iters: int) -> int:
    """The steps the run will have taken when it ends: max_iters, or under max_minutes, as many as
    the pace so far fits in the time (the steps over the share of the schedule they covered)."""
    if state.position <= state.step:
        return max_iters
    covered = (state.position - state.start_position) / max(max_iters - state.start_position, 1e-9)
    return max(state.step, round(state.start_step + (state.step - state.start_step) / max(covered, 1e-9)))


def _eta(job: Job, state: TrainState) -> float | None:
    """Seconds until the run is done (glassgpt.training.budget.RunClock.eta_s)."""
    tc = job.tc
    steps_left = max(0, tc.max_iters - state.step)
    evals_left = steps_left // tc.eval_interval
    return job.clock.eta_s(steps_left, evals_left, evals_left + 1, _periodic_eval_tokens(job))


def _evaluate(job: Job, max_batches: int | None) -> float:
    return evaluate(job.raw_model, job.val_data, job.rc.model.block_size, job.tc.batch_size, job.device,
                    job.tc.dtype, max_batches, job.dist_info, job.batches.loader.bos)


def _eval_row(job: Job, state: TrainState, val_loss: float) -> dict:
    """Loss in nats, and bits per byte or character where they apply."""
    return {"kind": "eval", "step": state.step, "val_loss": val_loss, **job.dataset.bits_per_unit(val_loss)}


def _checkpoint(job: Job, state: TrainState) -> None:
    """A checkpoint, its time measured for the ETA and max_minutes."""
    started = time.time()
    _save_checkpoint(job, state)
    job.clock.add_checkpoint(time.time() - started)


def _save_checkpoint(job: Job, state: TrainState) -> None:
    """Called on every rank: each gives its RNG state; the main process writes. Under fsdp every
    rank first writes its shard into a new folder, which the commit's trainer state then names."""
    rng = gather_rng_states(job.device, job.dist_info)
    trainer_state = {"step": state.step, "skipped_steps": state.skipped, "optimizer_name": job.tc.optimizer,
                     "schedule_position": float(state.position),
                     "scaler": job.scaler.state_dict() if job.scaler.is_enabled() else None,
                     "loader": job.batches.state_dict(), "rng": rng}
    weights = None
    if job.tc.parallel == "fsdp":
        from glassgpt.training import sharded

        folder = parallel.same_on_every_rank(
            shard_folders.new_folder_name(job.run_dir, state.step) if job.dist_info.is_main else None, job.dist_info)
        with_optimizer = sharded.save_shards(job.run_dir / folder, job.raw_model, job.optimizer)
        trainer_state.update(optimizer={}, sharded=folder, sharded_optimizer=with_optimizer)
        weights = sharded.full_weights(job.raw_model) if parallel.is_sharded(job.raw_model) else None
        if job.dist_info.is_main:
            kill_point("shards", state.step)  # tests: every shard written, nothing committed
    else:
        trainer_state["optimizer"] = job.optimizer.state_dict()
    if job.dist_info.is_main:
        ckpt.save_run(job.run_dir, job.raw_model, job.dataset.tokenizer, job.rc, trainer_state,
                      origin=job.origin, weights=weights)
        if job.tc.parallel == "fsdp":
            shard_folders.drop_stale(job.run_dir, keep=trainer_state["sharded"])
    if job.dist_info.world_size > 1 and job.tc.parallel == "fsdp":
        dist.barrier()  # no rank writes the next checkpoint's shards before this one is committed


def _has_analysis(job: Job, state: TrainState) -> bool:
    from glassgpt.analysis import dynamics

    return dynamics.has_analysis(job.metrics.rows, state.step)


def _analyse(job: Job, state: TrainState) -> None:
    """An "analysis" row in metrics.jsonl, and a line in the log."""
    from glassgpt.analysis import dynamics

    started_at = time.perf_counter()
    row = dynamics.analysis_row(job.raw_model, job.probe, state.step)
    job.metrics.append(row)
    seconds = time.perf_counter() - started_at
    best = max(range(len(row["induction"])), key=lambda i: row["induction"][i]) if "induction" in row else None
    induction = (f"induction {row['induction'][best]:.2f} (layer {best} head {row['induction_head'][best]}) | "
                 if best is not None else "")
    job.log(f"step {state.step:>6} | analysis: {induction}sink share {max(row['sink_share']):.2f} | "
            f"icl score {row['icl_score']:+.2f} | {seconds:.1f}s, not counted in tok/s")


def _refuse_too_many_bad_steps(job: Job, state: TrainState) -> None:
    job.log(f"step {state.step:>6} | non-finite loss or gradient: step skipped ({state.bad_in_a_row} in a row)")
    if state.bad_in_a_row >= job.tc.max_bad_steps:
        raise RunError(f"{state.bad_in_a_row} non-finite steps in a row up to step {state.step}: lower "
                       "learning_rate, use dtype=bfloat16 instead of float16, or raise max_bad_steps")


def _log_train(job: Job, state: TrainState, loss: torch.Tensor, grad_norm: torch.Tensor, lr: float) -> None:
    """A "train" row and a log line; the window of tokens/s starts again."""
    train_loss = loss.item()
    device = job.device
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    elapsed = time.time() - state.window_start - state.window_paused  # training steps only
    tok_s = state.window_tokens / max(elapsed, 1e-9)
    eta = _eta(job, state)
    row = {"kind": "train", "step": state.step, "train_loss": train_loss, "lr": lr,
           "grad_norm": grad_norm.item(), "tokens_per_s": tok_s,
           "mfu": mfu(job.flops_per_token, tok_s, job.peak),
           "peak_mem_mb": peak_mem,
           "skipped_steps": state.skipped, "elapsed_s": time.time() - state.started, "eta_s": eta,
           **_pace(job)}
    job.metrics.append(row)
    mfu_text = f" | mfu {row['mfu']:.1%}" if job.peak else ""
    job.log(f"step {state.step:>6} | loss {train_loss:.4f} | lr {lr:.2e} | {tok_s:,.0f} tok/s{mfu_text} | "
            f"ETA {duration(eta)}")
    state.window_start, state.window_tokens, state.window_paused = time.time(), 0, 0.0


def _pace(job: Job) -> dict:
    """What the speed of a row ran under: torch's threads, and the machine's 1-minute load average."""
    return {"threads": torch.get_num_threads() if job.device.type == "cpu" else None,
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def _finish(job: Job, state: TrainState) -> dict:
    """The last analysis, the final evaluation on the whole validation split, the final row, the plots."""
    if job.probe is not None and not _has_analysis(job, state):
        _pause(state, "analysis", lambda: _analyse(job, state))  # the curves end where training ends
    val_loss = _pause(state, "eval", lambda: _evaluate(job, None))  # the whole validation split: a stable figure
    stopped_by = "max_iters" if state.step >= job.tc.max_iters else "max_minutes"
    wall_seconds = time.time() - state.started
    paused = state.paused
    train_seconds = wall_seconds - sum(paused.values())  # the training steps alone
    final = {**_eval_row(job, state, val_loss), "kind": "final", "train_seconds": train_seconds,
             "tokens_per_s": (state.step - state.start_step) * job.tokens_per_step / max(train_seconds, 1e-9),
             "eval_seconds": paused["eval"], "checkpoint_seconds": paused["checkpoint"],
             "wall_seconds": wall_seconds, "skipped_steps": state.skipped, "stopped_by": stopped_by,
             "schedule_position": float(state.position), **_pace(job), **machine_summary(),
             **({"analysis_seconds": paused["analysis"]} if job.probe is not None else {})}
    if not job.metrics.has_eval(state.step):  # a run killed after this row and before the next resumes without a twin
        job.metrics.append({**_eval_row(job, state, val_loss), "elapsed_s": wall_seconds})
    job.metrics.append(final)
    job.metrics.plot()  # once, at the end (and when stopped), not at every eval: matplotlib is slow
    if job.probe is not None:  # dynamics.png, drawn with loss.png
        from glassgpt.analysis import dynamics

        n_layer = job.rc.model.n_layer
        if dynamics.analysis_rows(job.metrics.rows, n_layer):
            atomic_write(job.run_dir / dynamics.DYNAMICS,
                         lambda p: dynamics.write_dynamics(job.metrics.rows, p, n_layer))
    bits = next((f" | {v:.3f} {k.replace('_', ' ')}" for k, v in final.items() if k.startswith("bits_per")), "")
    job.log(f"done: val loss {val_loss:.4f} (whole val split){bits} | {train_seconds:.1f}s training, "
            f"{paused['eval']:.1f}s evaluating, {paused['checkpoint']:.1f}s checkpointing"
            + (f" | stopped by max_minutes={job.tc.max_minutes:g} at step {state.step:,} of max_iters="
               f"{job.tc.max_iters:,}, the schedule compressed to the time" if stopped_by == "max_minutes" else ""))
    return final
