"""Suites about absolute speed: mfu (the machine's measured matmul peak, and the
fraction of it a train step reaches) and train (tokens/s and MFU of the presets
in fp32 and bf16, eager and compiled).

MFU = model FLOPs per token (GPT.estimate_flops_per_token: 6 per weight plus the
attention term) x tokens per second / peak FLOP/s. The peak is measured here,
with large matmuls in the same dtype, not taken from a data sheet (on CUDA the
data-sheet figure is reported beside it when glassgpt.training.flops.peak_flops knows the card).
"""

from __future__ import annotations

import statistics

import torch

from glassgpt.bench.report import Recorder, Settings
from glassgpt.bench.variants import TINY, TRAIN
from glassgpt.bench.workloads import (build_model, first_call_seconds, make_train_step, model_config, peak_matmul,
                                      random_batch, twin)
from glassgpt.training.flops import peak_flops
from glassgpt.training.loop import DTYPES

def measured_peak(rec: Recorder, s: Settings, dtype: str) -> float:
    """The peak for `dtype` in FLOP/s, measured once per recording (the figure it
    records is reused by every later suite of the same run)."""
    name = f"peak matmul {dtype}"
    for f in rec.figures:
        if f["name"] == name:
            return f["value"] * 1e12
    max_n, target_s, repeats = s.choose(quick=(256, 0.005, 2), cpu=(4096, 0.25, 4), cuda=(8192, 0.002, 10))
    flops, n = peak_matmul(DTYPES[dtype], s.device, max_n=max_n, target_s=target_s, repeats=repeats)
    rec.figure(name, flops / 1e12, "TFLOP/s", n=n, repeats=repeats, note=f"best of {repeats} ({n} x {n}) @ ({n} x {n})")
    return flops


def _mfu_figures(rec: Recorder, label: str, gpt, seq: int, tokens_per_s: float, peak: float, **details) -> None:
    flops_per_token = gpt.estimate_flops_per_token(seq)
    achieved = flops_per_token * tokens_per_s
    rec.figure(f"{label}: tokens/s", tokens_per_s, "tokens/s", **details)
    rec.figure(f"{label}: MFU", achieved / peak, "fraction of measured peak",
               flops_per_token=flops_per_token, achieved_tflops=achieved / 1e12, peak_tflops=peak / 1e12, **details)


def mfu(rec: Recorder, s: Settings) -> None:
    dtypes = ["float32", "bfloat16"] + (["float16"] if s.device.type == "cuda" else [])
    peaks = {dt: measured_peak(rec, s, dt) for dt in dtypes}
    sheet = peak_flops(s.device, "bfloat16")
    if sheet:
        rec.figure("data-sheet peak (bf16 dense)", sheet / 1e12, "TFLOP/s", source="glassgpt.training.flops.GPU_PEAK_FLOPS")
    dtype = "bfloat16" if s.device.type == "cuda" else "float32"  # the dtype each device trains in
    cases = s.choose(quick=[("tiny", TINY, 2, 32)],
                     cpu=[("cpu-baby", {}, 12, 64), ("shakespeare-char", {}, 4, 256), ("gpt2", {}, 1, 128)],
                     cuda=[("cpu-baby", {}, 64, 64), ("shakespeare-char", {}, 64, 256), ("gpt2", {}, 8, 1024)])
    compiled_too = s.device.type == "cuda"  # on a GPU the fast path is compiled; on a CPU eager is
    for name, overrides, batch, seq in cases:
        cfg = model_config("cpu-baby" if name == "tiny" else name, **overrides)
        x, y = random_batch(cfg.vocab_size, batch, seq, s.device)
        models = {"step": build_model(cfg, s.device)}
        if compiled_too:
            models["step+compile"] = twin(models["step"])
        steps = {key: make_train_step(m, s.device, dtype, compile=key.endswith("compile"),
                                      compile_backend=s.compile_backend) for key, m in models.items()}
        times = rec.compare(f"{name} {dtype} train step", {k: lambda st=st: st(x, y) for k, st in steps.items()},
                            workload=TRAIN, shape={"model": name, "B": batch, "T": seq}, repeats=3)
        for key, model in models.items():
            label = f"{name} {dtype}" + (" compiled" if key.endswith("compile") else "")
            tokens_per_s = batch * seq / statistics.median(times[key])
            _mfu_figures(rec, label, model, seq, tokens_per_s, peaks[dtype], B=batch, T=seq)
            if sheet and dtype != "float32":
                rec.figure(f"{label}: MFU vs data sheet", model.estimate_flops_per_token(seq) * tokens_per_s / sheet,
                           "fraction of data-sheet peak")


def train(rec: Recorder, s: Settings) -> None:
    """A fixed number of optimizer steps of the presets, in four variants taken in turns:
    fp32 and bf16, eager and compiled. Random tokens, train.py's step."""
    cases = s.choose(quick=[("tiny", TINY, 2, 32, 2)],
                     cpu=[("cpu-baby", {}, 12, 64, 1), ("shakespeare-char", {}, 2, 64, 1)],
                     cuda=[("cpu-baby", {}, 64, 64, 10), ("shakespeare-char", {}, 64, 256, 5)])
    device = s.device
    for name, overrides, batch, seq, steps in cases:
        cfg = model_config("cpu-baby" if name == "tiny" else name, **overrides)
        x, y = random_batch(cfg.vocab_size, batch, seq, device)
        base = build_model(cfg, device)
        torch._dynamo.reset()
        variants, models = {}, {}
        for dtype in ("float32", "bfloat16"):
            for compiled in (False, True):
                key = f"{'bf16' if dtype == 'bfloat16' else 'fp32'}{'+compile' if compiled else ''}"
                models[key] = base if not variants else twin(base)
                step = make_train_step(models[key], device, dtype, compile=compiled, compile_backend=s.compile_backend)
                variants[key] = (lambda st=step: st(x, y), dtype, compiled)
        shape = {"model": name, "B": batch, "T": seq, "steps_per_sample": steps}
        first = {key: first_call_seconds(fn, device) for key, (fn, _, compiled) in variants.items() if compiled}
        times = rec.compare(f"{name} training", {k: v[0] for k, v in variants.items()}, workload=TRAIN, shape=shape,
                            repeats=3, inner=steps, tokens_per_call=batch * seq)
        for key, (fn, dtype, compiled) in variants.items():
            if compiled:
                rec.figure(f"{name} {key}: first step", first[key], "s", backend=s.compile_backend, **shape)
                rec.figure(f"{name} {key}: compile time", first[key] - statistics.median(times[key]), "s",
                           note="first step minus the median steady-state step", **shape)
            tokens_per_s = batch * seq / statistics.median(times[key])
            _mfu_figures(rec, f"{name} {key}", models[key], seq, tokens_per_s, measured_peak(rec, s, dtype),
                         dtype=dtype, compiled=compiled, **shape)
