"""What each speedrun option costs per train step on cpu-baby's shape, in one process,
in turns (so a busy machine slows every variant alike).

    python benchmarks/bench_options.py [--threads 1] [--rounds 15]

Each variant is cpu-baby (batch 12, block 64) with one setting changed; the ratio is
its step time over cpu-baby's in the same round, and the median over rounds is kept.
The last two are cpu-speedrun with Muon's orthogonalisation held to one precision:
bfloat16 (what torch.optim.Muon does on every device) and float32; the plain
`cpu-speedrun` row is the precision glassgpt picks on this CPU (`muon_precision` in the JSON).
What the options buy in loss is measured by training (see the README); this is the
price side. Writes benchmarks/results/options-<time>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
from pathlib import Path

import torch

from glassgpt.bench.machine import machine_with_load
from glassgpt.bench.report import publish
from glassgpt.bench.timing import measure
from glassgpt.config import load_run_config
from glassgpt.model import GPT
from glassgpt.training.loop import accumulate_gradients, apply_gradients
from glassgpt.training.muon import orthogonalisation_dtype
from glassgpt.training.optim import configure_optimizer

VARIANTS = {
    "cpu-baby": [],
    "norm=scratch": ["norm=scratch"],
    "pos_encoding=learned": ["pos_encoding=learned"],
    "qk_norm=true": ["qk_norm=true"],
    "mlp_act=relu2": ["mlp_act=relu2"],
    "logit_softcap=15": ["logit_softcap=15.0"],
    "optimizer=muon": ["optimizer=muon"],
    "cpu-speedrun": None,  # the preset itself
    "cpu-speedrun muon=bfloat16": torch.bfloat16,
    "cpu-speedrun muon=float32": torch.float32,
}


def make_step(variant: list[str] | torch.dtype | None):
    """One train step of cpu-baby with `variant`'s overrides, or of cpu-speedrun (None, or the
    dtype its Muon orthogonalises in)."""
    speedrun = not isinstance(variant, list)
    rc = load_run_config("cpu-speedrun") if speedrun else load_run_config("cpu-baby", variant)
    torch.manual_seed(0)
    model = GPT(rc.model)
    device = torch.device("cpu")
    optimizer = configure_optimizer(model, rc.train, device)
    if isinstance(variant, torch.dtype):
        optimizer.optimizers["muon"].ns_dtype = variant
    g = torch.Generator().manual_seed(0)
    B, T, V = rc.train.batch_size, rc.model.block_size, rc.model.vocab_size
    x, y = torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)

    def step():
        loss = accumulate_gradients(model, [(x, y)], device)
        apply_gradients(model, optimizer, loss, rc.train.grad_clip)

    return step, {"model": dataclasses.asdict(rc.model), "optimizer": rc.train.optimizer, "B": B, "T": T}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    p.add_argument("--note", default="")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = ["cpu-baby", *(n for n in args.variants.split(",") if n != "cpu-baby")]  # the baseline first
    steps = {name: make_step(VARIANTS[name]) for name in chosen}
    load_before = os.getloadavg()
    times = measure({name: step for name, (step, _) in steps.items()}, torch.device("cpu"), repeats=args.rounds,
                    warmup=1, inner=args.steps)  # in turns, seconds per step
    base = times["cpu-baby"]
    results = {name: {"median_step_s": statistics.median(t),
                      "ratio_to_cpu_baby": statistics.median(a / b for a, b in zip(t, base)),
                      "config": steps[name][1]} for name, t in times.items()}
    for name, r in results.items():
        print(f"{name:<22} {r['median_step_s'] * 1e3:8.1f} ms  x{r['ratio_to_cpu_baby']:.3f}")
    record = {"what": "train step time of cpu-baby variants, in turns", "threads": args.threads,
              "muon_precision": str(orthogonalisation_dtype(torch.device("cpu"))).removeprefix("torch."),
              "rounds": args.rounds, "steps_per_round": args.steps, "note": args.note,
              "machine": machine_with_load(torch.device("cpu"), load_before), "results": results}
    publish(record, args.out, "options")
    return record


if __name__ == "__main__":
    main()
