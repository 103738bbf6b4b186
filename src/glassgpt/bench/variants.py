"""Suites that time two versions of the model against each other: attention
(manual vs SDPA), layernorm (scratch vs nn.LayerNorm), positions (learned vs
RoPE), hooks (idle vs absent), precision (fp32 vs bf16 autocast) and compile
(eager vs torch.compile).

Each suite is a function `suite(rec, settings)`; ratios are time(A) / time(B).
"""

from __future__ import annotations

import dataclasses
import functools
import statistics

import torch

from glassgpt.bench.report import Recorder, Settings
from glassgpt.bench.workloads import (BypassedHookPoint, build_model, first_call_seconds, hook_calls_per_forward, make_forward,
                                      make_train_step, model_config, peak_cuda_bytes, random_batch, twin,
                                      without_hook_points)
from glassgpt.hooks import HookPoint
from glassgpt.model import CausalSelfAttention

TINY = dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32)
TRAIN = "train step (fwd + bwd + AdamW)"
INFER = "inference forward (no grad)"


def small_model(s: Settings, **overrides):
    """cpu-baby (or a tiny model in quick mode), with batch and sequence length for timing."""
    name, base, batch, seq = s.choose(quick=("tiny", TINY, 2, 32), cpu=("cpu-baby", {}, 12, 64),
                                      cuda=("shakespeare-char", {}, 64, 256))
    cfg = model_config(name if name != "tiny" else "cpu-baby", **{**base, **overrides})
    return name, cfg, batch, seq


def compare_models(rec: Recorder, label: str, models: dict, batch: int, seq: int, shape: dict,
                   dtype: str = "float32", inference_batch: int | None = None) -> None:
    """The same workloads on each model, in turns: a train step, then an inference forward."""
    device = rec.settings.device
    first = next(iter(models.values()))
    x, y = random_batch(first.config.vocab_size, batch, seq, device)
    configs = {k: dataclasses.asdict(m.config) for k, m in models.items()}  # what exactly was timed
    steps = {k: make_train_step(m, device, dtype) for k, m in models.items()}
    rec.compare(f"{label}: train step", {k: (lambda st=st: st(x, y)) for k, st in steps.items()},
                workload=TRAIN, shape=shape, tokens_per_call=batch * seq, configs=configs)
    b = inference_batch or batch
    xi = x[:b]
    forwards = {k: make_forward(m, device, dtype) for k, m in models.items()}
    rec.compare(f"{label}: inference", {k: (lambda f=f: f(xi)) for k, f in forwards.items()},
                workload=INFER, shape={**shape, "B": b}, tokens_per_call=b * seq, configs=configs)


# ---------------------------------------------------------------- suites

def attention(rec: Recorder, s: Settings) -> None:
    """One attention layer alone, so the T^2 work of the explicit mask and softmax is not
    diluted by the rest of the model; sequence lengths grow until that term dominates."""
    width, heads, batch, lengths = s.choose(quick=(32, 2, 2, [16, 32]), cpu=(384, 6, 4, [64, 128, 256, 512, 1024]),
                                            cuda=(768, 12, 8, [256, 512, 1024, 2048, 4096]))
    device = s.device
    for T in lengths:
        cfg = model_config("cpu-baby", n_embd=width, n_head=heads, block_size=T, attn_impl="manual",
                           pos_encoding="learned")
        torch.manual_seed(0)
        manual = CausalSelfAttention(cfg, 0).to(device)
        sdpa = CausalSelfAttention(dataclasses.replace(cfg, attn_impl="sdpa"), 0).to(device)
        sdpa.load_state_dict(manual.state_dict())
        x = torch.randn(batch, T, width, device=device)
        shape = {"B": batch, "T": T, "C": width, "nh": heads}

        def fwd_bwd(layer):
            def run():
                layer(x).sum().backward()
                layer.zero_grad(set_to_none=True)
            return run

        def infer(layer):
            @torch.no_grad()
            def run():
                return layer(x)
            return run

        rec.compare(f"attention layer T={T}: fwd+bwd", {"manual": fwd_bwd(manual), "sdpa": fwd_bwd(sdpa)},
                    workload="one CausalSelfAttention, forward + backward", shape=shape)
        rec.compare(f"attention layer T={T}: inference", {"manual": infer(manual), "sdpa": infer(sdpa)},
                    workload="one CausalSelfAttention, forward, no grad", shape=shape)


def layernorm(rec: Recorder, s: Settings) -> None:
    name, cfg, batch, seq = small_model(s, norm="scratch")
    scratch = build_model(cfg, s.device)
    compare_models(rec, f"{name} norm", {"scratch": scratch, "torch": twin(scratch, norm="torch")}, batch, seq,
                   {"model": name, "B": batch, "T": seq})


def positions(rec: Recorder, s: Settings) -> None:
    name, cfg, batch, seq = small_model(s, pos_encoding="learned")
    learned = build_model(cfg, s.device)
    rope = build_model(dataclasses.replace(cfg, pos_encoding="rope"), s.device)  # no wpe: weights differ there
    compare_models(rec, f"{name} positions", {"learned": learned, "rope": rope}, batch, seq,
                   {"model": name, "B": batch, "T": seq})


def hooks(rec: Recorder, s: Settings) -> None:
    """Idle hook points (the model as shipped, no function attached) against the same
    model with every HookPoint's call replaced by a bare `return x`
    (`workloads.BypassedHookPoint`): what the hook points cost when unused."""
    name, cfg, batch, seq = small_model(s)
    idle = build_model(cfg, s.device)
    absent = without_hook_points(idle)
    shape = {"model": name, "B": batch, "T": seq}
    compare_models(rec, f"{name} hooks", {"idle": idle, "absent": absent}, batch, seq, shape, inference_batch=1)
    x1, _ = random_batch(cfg.vocab_size, 1, seq, s.device)
    calls = hook_calls_per_forward(idle, x1)
    rec.figure("hook point calls per forward", calls, "calls", model=name, attn_impl=cfg.attn_impl)
    inference = rec.comparisons[-1]
    extra = inference["median_s"]["idle"] - inference["median_s"]["absent"]
    rec.figure("idle hook cost per call (inference B=1)", extra / calls * 1e6, "us",
               note="(median idle - median absent) / calls; can be negative within noise")
    single_hook_call(rec, s)


def single_hook_call(rec: Recorder, s: Settings) -> None:
    """The same cost in isolation, a micro-benchmark on the standard tool: one idle HookPoint
    call and one bypassed call, each timed by `torch.utils.benchmark.Timer.blocked_autorange`
    (blocks of calls, enough of them to fill `min_run_time`; the median per call)."""
    from torch.utils import benchmark

    x = torch.zeros(1)
    min_run_time = 0.02 if s.quick else 0.5
    measured = {}
    for label, point in (("idle", HookPoint()), ("absent", BypassedHookPoint())):
        timer = benchmark.Timer(stmt="point(x)", globals={"point": point, "x": x}, label="one HookPoint call",
                                sub_label=label, num_threads=torch.get_num_threads())
        measured[label] = timer.blocked_autorange(min_run_time=min_run_time)
        rec.figure(f"one HookPoint call, {label}", measured[label].median * 1e6, "us",
                   method="torch.utils.benchmark.Timer.blocked_autorange", runs=len(measured[label].times),
                   calls_per_run=measured[label].number_per_run)
    per_call = measured["idle"].median - measured["absent"].median
    rec.figure("idle hook cost per call (alone)", per_call * 1e6, "us",
               note="median idle call - median bypassed call, each from Timer.blocked_autorange")


def precision(rec: Recorder, s: Settings) -> None:
    """fp32 against bf16 autocast (weights stay fp32). On CPUs without bf16 matrix
    instructions (see machine.cpu_flags) bf16 is emulated and slow."""
    name, cfg, batch, seq = s.choose(quick=("tiny", TINY, 2, 32), cpu=("cpu-baby", {}, 4, 64),
                                     cuda=("shakespeare-char", {}, 64, 256))
    cfg = model_config("cpu-baby" if name == "tiny" else name, **cfg)
    shape = {"model": name, "B": batch, "T": seq}
    dtypes = ["float32", "bfloat16"] + (["float16"] if s.device.type == "cuda" else [])
    device = s.device
    x, y = random_batch(cfg.vocab_size, batch, seq, device)
    base = build_model(cfg, device)
    models = {dt: (base if i == 0 else twin(base)) for i, dt in enumerate(dtypes)}
    steps = {dt: make_train_step(models[dt], device, dt) for dt in dtypes}
    rec.compare(f"{name} precision: train step", {dt: (lambda st=st: st(x, y)) for dt, st in steps.items()},
                workload=TRAIN, shape=shape, tokens_per_call=batch * seq)
    forwards = {dt: make_forward(base, device, dt) for dt in dtypes}
    rec.compare(f"{name} precision: inference", {dt: (lambda f=f: f(x)) for dt, f in forwards.items()},
                workload=INFER, shape=shape, tokens_per_call=batch * seq)
    if device.type == "cuda" and not s.quick:
        gpt2_peak_memory(rec, s, dtypes)
    else:
        rec.skip("gpt2 train-step peak memory by dtype", "needs a CUDA device (allocator statistics)")


def gpt2_peak_memory(rec: Recorder, s: Settings, dtypes: list[str]) -> None:
    """Peak GPU memory of one gpt2-shape train step at the same batch in each dtype."""
    batch, seq = 8, 1024
    cfg = model_config("gpt2")
    x, y = random_batch(cfg.vocab_size, batch, seq, s.device)
    for dt in dtypes:
        model = build_model(cfg, s.device)
        step = make_train_step(model, s.device, dt)
        step(x, y)  # optimizer state exists from here on
        peak = peak_cuda_bytes(functools.partial(step, x, y), s.device)
        rec.figure(f"gpt2 train step peak memory {dt}", peak / 2**30, "GiB", B=batch, T=seq)
        del model, step
        torch.cuda.empty_cache()


def torch_compile(rec: Recorder, s: Settings) -> None:
    """Eager against torch.compile on the same train step. The compiled model's first
    step (tracing + code generation) is reported apart from the steady-state steps."""
    name, cfg, batch, seq = small_model(s)
    device = s.device
    x, y = random_batch(cfg.vocab_size, batch, seq, device)
    eager = build_model(cfg, device)
    compiled = twin(eager)
    torch._dynamo.reset()
    step_eager = make_train_step(eager, device)
    step_compiled = make_train_step(compiled, device, compile=True, compile_backend=s.compile_backend)
    first = first_call_seconds(lambda: step_compiled(x, y), device)
    shape = {"model": name, "B": batch, "T": seq}
    times = rec.compare(f"{name} compile: train step", {"eager": lambda: step_eager(x, y),
                                                        "compiled": lambda: step_compiled(x, y)},
                        workload=TRAIN, shape=shape, tokens_per_call=batch * seq, backend=s.compile_backend)
    steady = statistics.median(times["compiled"])
    rec.figure(f"{name} compile: first compiled step", first, "s", backend=s.compile_backend, **shape)
    rec.figure(f"{name} compile: compile time", first - steady, "s", backend=s.compile_backend,
               note="first compiled step minus the median steady-state compiled step", **shape)
