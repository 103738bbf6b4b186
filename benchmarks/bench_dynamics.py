"""The experiment behind the phenomena recipes: the `induction` and `sinks` recipes, the sinks recipe once per
`attn_sink` setting, and what each remedy costs.

For every run (trained in this process through `glassgpt.training.loop.train`, one after the other):
the largest sink share and the largest first-position share per layer, the best induction and
previous-token scores per layer (all from the last "analysis" row), the in-context-learning
score, the whole-split val loss, tokens/s (analysis time left out) and the training time, with
the load average before and after (the machine may be shared). Each run's dynamics.png is copied
next to the JSON. Then the attention cost of each remedy: forward + backward of one attention
layer, sdpa and manual, timed in turns in this process (ratios to attn_sink=none).

Run: GLASSGPT_DATA_DIR=... python benchmarks/bench_dynamics.py [--runs induction,sinks-none,...]
     [--threads 1] [--out benchmarks/results] [--note "machine was shared"]
or, for runs already trained with `glassgpt train PRESET --out DIR/<run name>`, `--from-runs DIR`.
Needs `glassgpt prepare repeated-random`. Writes benchmarks/results/dynamics-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from glassgpt.bench.machine import machine_info
from glassgpt.bench.timing import measure, stopwatch

REPO = Path(__file__).resolve().parents[1]

RUNS = {
    "induction": ("induction", []),
    "sinks-none": ("sinks", ["attn_sink=none"]),
    "sinks-learned": ("sinks", ["attn_sink=learned"]),
    "sinks-gate": ("sinks", ["attn_sink=gate"]),
}


def last_analysis(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    analysis = [r for r in rows if r.get("kind") == "analysis"]
    final = next(r for r in rows if r.get("kind") == "final")
    return {"analysis": analysis[-1], "final": final, "curve": [
        {k: r.get(k) for k in ("step", "induction", "previous_token", "sink_share", "first_position_share", "icl_score")}
        for r in analysis]}


def summarize_run(name: str, run_dir: Path, out_dir: Path, overrides: list[str], wall: float | None,
                  load_before, load_after) -> dict:
    got = last_analysis(run_dir)
    shutil.copy(run_dir / "dynamics.png", out_dir / f"dynamics-{name}.png")
    a, f = got["analysis"], got["final"]
    return {
        "preset": RUNS[name][0], "overrides": overrides, "wall_seconds": None if wall is None else round(wall, 1),
        "train_seconds": round(f["train_seconds"], 1), "analysis_seconds": round(f.get("analysis_seconds", 0.0), 1),
        "tokens_per_s": round(f["tokens_per_s"]), "val_loss": round(f["val_loss"], 4),
        "largest_sink_share": max(a["sink_share"]), "sink_share_per_layer": a["sink_share"],
        "sink_head_per_layer": a["sink_head"], "sink_key_per_layer": a["sink_key"],
        "first_position_share_per_layer": a["first_position_share"],
        "induction_per_layer": a.get("induction"), "induction_head_per_layer": a.get("induction_head"),
        "previous_token_per_layer": a.get("previous_token"), "icl_score": a["icl_score"],
        "load_average_before": load_before, "load_average_after": load_after,
        "curve": got["curve"], "picture": f"dynamics-{name}.png",
    }


def collect_one(name: str, run_dir: Path, out_dir: Path) -> dict:
    """The same figures from a run trained with `glassgpt train` (its config.json says how)."""
    config = json.loads((run_dir / "config.json").read_text())
    overrides = [f"{k}={v}" for k, v in {**config["model"], **config["train"]}.items()]
    return {**summarize_run(name, run_dir, out_dir, overrides, None, None, None), "collected_from": str(run_dir)}


def train_one(name: str, out_dir: Path, extra: list[str]) -> dict:
    from glassgpt.config import load_run_config
    from glassgpt.training import train

    preset, overrides = RUNS[name]
    run_config = load_run_config(preset, [*overrides, *extra])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / name
        elapsed = stopwatch()
        train(run_config, run_dir, log=lambda line: print(f"[{name}] {line}", file=sys.stderr, flush=True))
        wall = elapsed()
        return summarize_run(name, run_dir, out_dir, overrides + extra, wall, list(load_before), list(os.getloadavg()))


def attention_cost(repeats: int = 20) -> dict:
    """Forward + backward of one attention layer (B 32, T 64, C 64, 4 heads) per setting and path,
    timed in turns; medians in ms and the ratio to attn_sink=none on the same path."""
    from glassgpt.config import GPTConfig
    from glassgpt.model import CausalSelfAttention, RotaryEmbedding

    x = torch.randn(32, 64, 64)
    rope = RotaryEmbedding(64 // 4)(0, 64)  # (cos, sin) of the 64 positions, as GPT.forward passes them
    layers = {}
    for sink in ("none", "learned", "gate"):
        for impl in ("sdpa", "manual"):
            cfg = GPTConfig(vocab_size=256, block_size=64, n_layer=1, n_head=4, n_embd=64, attn_impl=impl,
                            attn_sink=sink, pos_encoding="rope")
            layers[(sink, impl)] = CausalSelfAttention(cfg, 0)
    def step(layer):
        layer(x.clone().requires_grad_(), rope).sum().backward()

    times = measure({key: (lambda layer=layer: step(layer)) for key, layer in layers.items()}, torch.device("cpu"),
                    repeats=repeats, warmup=0)
    median = {key: sorted(t)[len(t) // 2] for key, t in times.items()}
    return {f"{sink}/{impl}": {"ms": round(1e3 * median[(sink, impl)], 3),
                               "ratio_to_none": round(median[(sink, impl)] / median[("none", impl)], 3)}
            for sink, impl in layers}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared machine)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--note", default="")
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value", help="overrides for every run")
    parser.add_argument("--from-runs", type=Path, default=None, metavar="DIR",
                        help="do not train: collect the figures of runs already trained into DIR/<run name>")
    parser.add_argument("--repeats", type=int, default=20, help="rounds of the attention-cost timing")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    result = {"benchmark": "dynamics", "note": args.note, "machine": machine_info(torch.device("cpu")),
              "attention_cost": attention_cost(args.repeats), "runs": {}}
    for name in args.runs.split(","):
        if args.from_runs is not None:
            result["runs"][name] = collect_one(name, args.from_runs / name, args.out)
        else:
            result["runs"][name] = train_one(name, args.out, args.set)
        print(json.dumps({name: {k: v for k, v in result["runs"][name].items() if k != "curve"}}), flush=True)
    path = args.out / f"dynamics-{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"results written to {path}")
    return result


if __name__ == "__main__":
    main()
