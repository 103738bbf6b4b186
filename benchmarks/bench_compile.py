"""Compiled against eager training on a CPU: steady-state tokens/s, RoPE's cost, the
optimizer step, and the whole run, each side by side in this one process.

    python benchmarks/bench_compile.py [--preset cpu-baby] [--steps 600] [--rounds 2] [--repeats 10]
                                       [--threads N] [--out benchmarks/results] [--note "..."]

1. Steady state: train.py's step (`glassgpt.bench.workloads.make_train_step`: forward, backward,
   clipping, AdamW) on the preset's model with learned positions and with RoPE, each eager and
   compiled (four models, the same weights where they share them), timed in turns after every
   compiled model has compiled (cold: inductor's caches off). Tokens/s medians, and per-round
   ratios eager / compiled and rope / learned.
2. The optimizer step alone: AdamW as a Python loop over the parameters (torch's default on a
   CPU) against `fused=True` (what `glassgpt.training.optim` now asks for), in turns.
3. The whole run: `glassgpt.training.loop.train` of the preset for `--steps` steps (evals every
   eval_interval, checkpoints, the final whole-split eval), eager and `compile=true`, in turns,
   `--rounds` times. A compiled run is timed cold (inductor's caches off and dynamo reset, as on a
   machine that never compiled this model) and warm (caches on, filled by an untimed run first).

`--backend eager` (dynamo without inductor) is for the smoke test only. The load average before
and after each part is stored with the machine; on a shared machine read the ratios, not the
absolute figures. Writes benchmarks/results/compile-<date>.json. Needs `glassgpt prepare` of
the preset's dataset.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from unittest import mock

import torch

from glassgpt.bench.machine import machine_info
from glassgpt.bench.timing import measure, stopwatch
from glassgpt.bench.workloads import build_model, make_train_step, random_batch, twin
from glassgpt.config import apply_overrides, preset_run_config
from glassgpt.training import train

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def inductor_caches(on: bool, backend: str):
    """Inductor's on-disk caches on or off for a block (off: every compile is a cold one); dynamo's
    in-memory cache is cleared on entry. A backend other than inductor is given to every
    `torch.compile` the block makes (train.py's too)."""
    import torch._dynamo
    import torch._inductor.config as inductor_config

    saved = inductor_config.force_disable_caches
    inductor_config.force_disable_caches = not on
    torch._dynamo.reset()
    patch = (mock.patch("torch.compile", functools.partial(torch.compile, backend=backend))
             if backend != "inductor" else contextlib.nullcontext())
    try:
        with patch:
            yield
    finally:
        inductor_config.force_disable_caches = saved
        torch._dynamo.reset()


def steady_state(rc, args, device) -> dict:
    """Part 1: four models' train steps in turns, after each compiled one has compiled."""
    cfg = dataclasses.replace(rc.model, dropout=0.0)
    batch, seq = rc.train.batch_size, cfg.block_size
    x, y = random_batch(cfg.vocab_size, batch, seq, device)
    rope = build_model(dataclasses.replace(cfg, pos_encoding="rope"), device)
    learned = build_model(dataclasses.replace(cfg, pos_encoding="learned"), device)
    models = {"eager rope": rope, "compiled rope": twin(rope), "eager learned": learned,
              "compiled learned": twin(learned)}
    load_before = os.getloadavg()
    compile_s = {}
    with inductor_caches(False, args.backend):
        steps = {}
        for name, model in models.items():
            compiled = name.startswith("compiled")
            steps[name] = make_train_step(model, device, compile=compiled, compile_backend=args.backend)
            if compiled:
                elapsed = stopwatch(device)
                steps[name](x, y)  # the compile, cold
                compile_s[name] = elapsed()
                print(f"  {name}: first step (the compile, cold) {compile_s[name]:.1f} s", flush=True)
        times = measure({k: (lambda st=st: st(x, y)) for k, st in steps.items()}, device,
                        repeats=args.repeats, warmup=2, inner=args.inner)
    tokens = batch * seq
    per_round = lambda a, b: [ta / tb for ta, tb in zip(times[a], times[b])]  # noqa: E731
    ratios = {"eager / compiled, rope": per_round("eager rope", "compiled rope"),
              "eager / compiled, learned": per_round("eager learned", "compiled learned"),
              "rope / learned, eager": per_round("eager rope", "eager learned"),
              "rope / learned, compiled": per_round("compiled rope", "compiled learned")}
    return {"shape": {"B": batch, "T": seq, "config": dataclasses.asdict(cfg)},
            "tokens_per_s_median": {k: tokens / statistics.median(v) for k, v in times.items()},
            "step_ms_median": {k: statistics.median(v) * 1e3 for k, v in times.items()},
            "ratio_median": {k: statistics.median(v) for k, v in ratios.items()},
            "ratio_per_round": ratios, "times_s": times, "first_compiled_step_s": compile_s,
            "loadavg_before": load_before, "loadavg_after": os.getloadavg()}


def optimizer_step(rc, args, device) -> dict:
    """Part 2: AdamW's step, looped (torch's CPU default) against fused, on the preset's parameters."""
    model = build_model(dataclasses.replace(rc.model, dropout=0.0), device)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    groups = lambda: [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},  # noqa: E731
                      {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    lr = 1e-9  # the weights barely move: every call does the same work
    optimizers = {"loop": torch.optim.AdamW(groups(), lr=lr, foreach=False),
                  "fused": torch.optim.AdamW(groups(), lr=lr, fused=True)}
    load_before = os.getloadavg()
    times = measure({k: o.step for k, o in optimizers.items()}, device, repeats=args.repeats, warmup=2,
                    inner=max(args.inner, 5))
    return {"step_ms_median": {k: statistics.median(v) * 1e3 for k, v in times.items()},
            "ratio_median": statistics.median(a / b for a, b in zip(times["loop"], times["fused"])),
            "times_s": times, "loadavg_before": load_before, "loadavg_after": os.getloadavg()}


def whole_runs(rc, args, work: Path) -> dict:
    """Part 3: train() eager and compiled (cold, warm), in turns, `--rounds` times."""
    variants = {"eager": (False, True), "compiled cold": (True, False), "compiled warm": (True, True)}
    load_before = os.getloadavg()
    with inductor_caches(True, args.backend):  # fill the cache the warm runs read (untimed)
        train(apply_overrides(rc, ["compile=true"]), work / "fill", log=lambda s: None)
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name, (compiled, caches) in variants.items():
            with inductor_caches(caches, args.backend):
                elapsed = stopwatch()
                final = train(apply_overrides(rc, [f"compile={str(compiled).lower()}"]),
                              work / f"{name.replace(' ', '-')}-{r}", log=lambda s: None)
                wall = elapsed()
            runs[name].append({"wall_s": wall, **{k: final[k] for k in (
                "val_loss", "train_seconds", "eval_seconds", "checkpoint_seconds", "tokens_per_s")}})
            print(f"  round {r}: {name:14s} {wall:6.1f} s whole run, {final['tokens_per_s']:8,.0f} tok/s "
                  f"(compile included), val {final['val_loss']:.4f}", flush=True)
    median = lambda name, key: statistics.median(run[key] for run in runs[name])  # noqa: E731
    return {"steps": rc.train.max_iters, "eval_interval": rc.train.eval_interval,
            "wall_s_median": {k: median(k, "wall_s") for k in variants},
            "wall_eager_over_compiled": {k: [e["wall_s"] / c["wall_s"] for e, c in zip(runs["eager"], runs[k])]
                                         for k in ("compiled cold", "compiled warm")},
            "runs": runs, "loadavg_before": load_before, "loadavg_after": os.getloadavg()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu-baby")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for the preset")
    p.add_argument("--steps", type=int, default=600, help="max_iters of each whole run")
    p.add_argument("--rounds", type=int, default=2, help="whole runs of each variant, in turns; 0 skips them")
    p.add_argument("--repeats", type=int, default=10, help="timed rounds of the steady-state steps")
    p.add_argument("--inner", type=int, default=10, help="steps per timed sample")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (eager: a smoke test)")
    p.add_argument("--note", default="")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    rc = apply_overrides(preset_run_config(args.preset), ["device=cpu", f"max_iters={args.steps}", *args.set])
    machine = machine_info(device)
    elapsed = stopwatch()
    print("steady state ...", flush=True)
    steady = steady_state(rc, args, device)
    print(json.dumps({k: steady[k] for k in ("tokens_per_s_median", "ratio_median")}, indent=1))
    print("optimizer step ...", flush=True)
    optimizer = optimizer_step(rc, args, device)
    print(json.dumps(optimizer["step_ms_median"]))
    whole = None
    if args.rounds:
        print(f"whole runs of {args.steps} steps ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-compile-") as work:
            whole = whole_runs(rc, args, Path(work))
        print(json.dumps(whole["wall_s_median"]))
    record = {"what": f"compiled vs eager training, {args.preset}", "command": ["benchmarks/bench_compile.py", *argv],
              "preset": args.preset, "overrides": args.set, "backend": args.backend, "note": args.note,
              "machine": {**machine, "loadavg_after": list(os.getloadavg())}, "wall_seconds": elapsed(),
              "steady_state": steady, "optimizer_step": optimizer, "whole_run": whole}
    from glassgpt.bench.report import publish

    publish(record, args.out, "compile")
    return record


if __name__ == "__main__":
    main()
