"""A parallel search for the data and shape that grow a real induction head fast on a CPU.

    python benchmarks/induction_sweep.py --grid main --workers 16 --steps 4000 --out sweep.jsonl

Each configuration trains a small glassgpt model (1 CPU thread per worker process) on
fresh batches of a synthetic stream, and every `--check` steps measures the standard
induction score (`induction_scores`) at three sequence lengths. A head that copies from a
fixed offset scores high at one length only; an induction head scores high at all three,
so the figure that counts is the *smallest* of the three (best head of any layer > 0).
A configuration stops early once that figure has stayed >= 0.6 for two checks.
Results: one JSON line per configuration, with the curve and the seconds per step.

Data streams (all of random tokens from `vocab` symbols; windows start anywhere):
  once   segments of LO..HI tokens, each followed by one copy (glassgpt's repeated-random)
  twice  segments of LO..HI tokens, each followed by two copies
  tiled  every window is one segment of LO..HI tokens tiled end to end (random phase)
  distinct  like `once`, with no token twice inside a segment
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import torch

from glassgpt.bench.timing import stopwatch


def stream_window(rng: np.random.Generator, kind: str, vocab: int, lo: int, hi: int, T: int) -> np.ndarray:
    """(T + 1,) tokens of one training window."""
    if kind == "tiled":
        segment = rng.integers(0, vocab, size=int(rng.integers(lo, hi + 1)))
        reps = (T + 1) // segment.size + 2
        start = int(rng.integers(0, segment.size))
        return np.tile(segment, reps)[start:start + T + 1]
    copies = {"once": 1, "distinct": 1, "twice": 2}[kind]
    pieces, n = [], 0
    while n < T + 1 + 2 * hi:
        L = int(rng.integers(lo, hi + 1))
        segment = rng.permutation(vocab)[:L] if kind == "distinct" else rng.integers(0, vocab, size=L)
        pieces += [segment] * (copies + 1)
        n += L * (copies + 1)
    seq = np.concatenate(pieces)
    start = int(rng.integers(0, 2 * hi))
    return seq[start:start + T + 1]


class NoMLP(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def run(cfg: dict) -> dict:
    torch.set_num_threads(1)
    from glassgpt.analysis import batch_patterns, induction_scores, previous_token_stripe
    from glassgpt.config import GPTConfig
    from glassgpt.model import GPT

    T, B, V = cfg["T"], cfg["batch"], cfg["vocab"]
    torch.manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    model = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=cfg["layers"], n_head=cfg["heads"], n_embd=cfg["width"],
                          attn_impl="sdpa", norm="torch", pos_encoding=cfg["pos"], dropout=0.0))
    if not cfg["mlp"]:
        for block in model.blocks:
            block.mlp = NoMLP()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["wd"]}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg["lr"], betas=(0.9, 0.99))
    # the three longest probes that fit; the grids main, v64 and v64b ran with (8, 16, 24) at T = 64
    lengths = [n for n in (6, 8, 12, 16, 24) if n <= min(V, T // 2)][-3:]
    curve, above, elapsed, losses = [], 0, stopwatch(), []
    for step in range(cfg["steps"] + 1):
        if step % cfg["check"] == 0:
            with torch.no_grad():
                model.eval()
                per_len = [induction_scores(model, seq_len=n, generator=torch.Generator().manual_seed(0))[1:].max().item()
                           for n in lengths]
                x = torch.tensor(np.stack([stream_window(rng, cfg["data"], V, cfg["lo"], cfg["hi"], T)[:-1]
                                           for _ in range(8)]))
                prev = previous_token_stripe(batch_patterns(model, x)).mean(1).amax(-1)[0].item()
                model.train()
            point = {"step": step, "loss": float(np.mean(losses[-cfg["check"]:])) if losses else None,
                     "induction_min": min(per_len), "induction": per_len, "prev_token_l0": prev,
                     "seconds": elapsed()}
            curve.append(point)
            if cfg.get("progress"):  # one line per check, so a run cut short still tells its curve
                with open(cfg["progress"], "a") as f:
                    f.write(json.dumps({"id": cfg["id"], **point}) + "\n")
            above = above + 1 if point["induction_min"] >= 0.6 else 0
            if above >= 2:
                break
        if step == cfg["steps"]:
            break
        for g in opt.param_groups:
            g["lr"] = cfg["lr"] * min(1.0, (step + 1) / cfg["warmup"])
        xy = torch.tensor(np.stack([stream_window(rng, cfg["data"], V, cfg["lo"], cfg["hi"], T) for _ in range(B)]))
        _, loss = model(xy[:, :-1], xy[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    formed = next((p["step"] for p in curve if p["induction_min"] >= 0.5), None)
    seconds = elapsed()
    return {**cfg, "formed_at": formed, "best": max(p["induction_min"] for p in curve),
            "steps_run": curve[-1]["step"], "seconds": seconds, "curve": curve}


BASE = dict(T=64, batch=32, vocab=256, layers=2, heads=4, width=64, pos="rope", lr=1e-3, wd=0.1, mlp=True,
            data="once", lo=8, hi=32, seed=0, warmup=50, steps=3000, check=100)


def grid(name: str) -> list[dict]:
    if name == "smoke":
        return [dict(BASE, steps=20, check=10, data=d) for d in ("once", "tiled", "distinct", "twice")]
    if name == "main":
        out = []
        for data, vocab, (width, heads), lr, pos, mlp in itertools.product(
                ("once", "tiled"), (64, 256), ((64, 4), (128, 4), (128, 2)), (1e-3, 3e-3),
                ("rope", "learned"), (True,)):
            out.append(dict(BASE, data=data, vocab=vocab, width=width, heads=heads, lr=lr, pos=pos, mlp=mlp))
        for data, vocab, width, lr in itertools.product(("once", "tiled"), (64, 256), (64, 128), (1e-3, 3e-3)):
            out.append(dict(BASE, data=data, vocab=vocab, width=width, lr=lr, mlp=False))
        return out
    if name == "short":  # shorter windows: fewer keys to share attention with at the start
        out = []
        for T, (lo, hi), vocab, mlp, seed in itertools.product((32,), ((4, 12),), (32, 64), (True, False), (1, 2)):
            out.append(dict(BASE, T=T, lo=lo, hi=hi, vocab=vocab, mlp=mlp, seed=seed, steps=4000))
        for seed in (1, 2):
            out.append(dict(BASE, T=16, lo=3, hi=6, vocab=32, seed=seed, steps=4000))
            out.append(dict(BASE, T=32, lo=4, hi=12, vocab=64, lr=3e-3, seed=seed, steps=4000))
            out.append(dict(BASE, T=32, lo=4, hi=12, vocab=64, batch=128, seed=seed, steps=4000))
        return out
    if name == "attn-only":  # the "short" finding (attention-only grows it by step 1000) at the recipe's shapes
        return [dict(BASE, T=32, lo=4, hi=16, vocab=64, mlp=False, seed=seed, steps=3000) for seed in (1, 2)] + \
               [dict(BASE, T=64, lo=8, hi=32, vocab=64, mlp=False, seed=1, steps=3000)]
    if name == "ao12":  # "short"'s attention-only hit, 4 seeds, on this machine
        return [dict(BASE, T=32, lo=4, hi=12, vocab=64, mlp=False, seed=seed, steps=3000) for seed in (1, 2, 3, 4)]
    if name == "ao-cover":  # lookback distances up to half the window, so the report's probe (T/2) is in reach
        return [dict(BASE, T=32, lo=4, hi=12, vocab=64, mlp=False, data="twice", seed=seed, steps=3000) for seed in (1, 2, 3, 4)] + \
               [dict(BASE, T=32, lo=4, hi=16, vocab=64, mlp=False, seed=seed, steps=3000) for seed in (3, 4)]
    if name == "ao24":  # a 24-token context: the report's probe (half the context, 12) is the longest segment
        return [dict(BASE, T=24, lo=4, hi=12, vocab=64, mlp=False, seed=seed, steps=2500) for seed in (1, 2, 3, 4)]
    if name == "v64b":  # seeds, batch and width around the v64 recipe
        out = [dict(BASE, vocab=64, seed=seed, steps=6000) for seed in range(4, 12)]
        out += [dict(BASE, vocab=64, seed=seed, batch=64, steps=6000) for seed in (1, 2, 3, 4)]
        out += [dict(BASE, vocab=64, seed=seed, width=128, steps=6000) for seed in (1, 2, 3, 4)]
        return out
    if name == "v64":  # around the first hit of "main": once, vocab 64, 64 wide, 4 heads, rope, lr 1e-3
        out = [dict(BASE, vocab=64, seed=seed, lr=lr, steps=5000) for lr in (1e-3, 2e-3) for seed in (1, 2, 3)]
        out += [dict(BASE, vocab=32, seed=seed, steps=5000, lo=8, hi=16) for seed in (1, 2)]
        return out
    raise SystemExit(f"unknown grid {name}")


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", default="main")
    p.add_argument("--workers", type=int, default=2, help="worker processes (0: run here, one after the other)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--progress", type=Path, default=None, help="also append every check of every run here")
    args = p.parse_args(argv)
    configs = [dict(c, id=i, steps=args.steps or c["steps"], progress=str(args.progress) if args.progress else None)
               for i, c in enumerate(grid(args.grid))]
    print(f"{len(configs)} configurations on {args.workers} workers", flush=True)
    results = []
    with contextlib.ExitStack() as stack, open(args.out, "a") as out:
        pool = stack.enter_context(mp.get_context("spawn").Pool(args.workers)) if args.workers else None
        for result in (pool.imap_unordered(run, configs) if pool else map(run, configs)):
            results.append(result)
            out.write(json.dumps(result) + "\n")
            out.flush()
            keys = ("data", "vocab", "width", "heads", "lr", "pos", "mlp")
            print(" ".join(f"{k}={result[k]}" for k in keys), f"formed_at={result['formed_at']} best={result['best']:.2f}",
                  f"steps={result['steps_run']} {result['seconds']:.0f}s", flush=True)
    return results


if __name__ == "__main__":
    main()
