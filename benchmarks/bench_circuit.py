"""How long `glassgpt circuit` takes, and what it finds: the induction preset's model on the induction task,
cpu-baby's on the repeated-span task of its own validation text.

    python benchmarks/bench_circuit.py [--runs induction:induction,cpu-baby:repeat] [--threads 1]
    python benchmarks/bench_circuit.py --from-runs DIR     # runs already trained into DIR/<preset>

Each PRESET:TASK is trained first (through `glassgpt.training.train`, into a temporary folder) unless
`--from-runs` holds it; then `find_circuit` (what `glassgpt circuit RUN --task TASK` runs) is timed
alone, with the load average before and after (the machine may be shared) and the process's CPU
seconds (which the load does not inflate). Recorded per run: the seconds of each stage, the graph's
size, EAP-IG's rank agreement with exact patching of every edge (|score| and signed), the smallest
circuit reaching 0.8 and the one reaching 0.9 (size, faithfulness and its standard error; the edges
into a key input from a head or an MLP: K-composition), and the heads it names with their
descriptions and own effects.
Writes benchmarks/results/circuit-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

from glassgpt.bench.machine import machine_with_load
from glassgpt.bench.report import publish
from glassgpt.bench.timing import cpu_stopwatch, stopwatch
from glassgpt.circuits import find_circuit


def train_run(preset: str, run_dir: Path, overrides: list[str]) -> float:
    """Train PRESET into run_dir (preparing its dataset first); returns the training's wall seconds."""
    from glassgpt.config import load_run_config
    from glassgpt.data import prepare
    from glassgpt.training import train

    run_config = load_run_config(preset, overrides)
    prepare(run_config.train.dataset)
    elapsed = stopwatch()
    train(run_config, run_dir, log=lambda line: print(f"[{preset}] {line}", file=sys.stderr, flush=True))
    return elapsed()


def strict_circuit(run_dir: Path, task: str, pairs: int, target: float) -> dict:
    """The smallest circuit reaching `target`, from the same pairs and scores as the command's."""
    from glassgpt.checkpoint import load_run
    from glassgpt.circuits import PairRuns, eap_scores, faithfulness_curve, smallest_circuit
    from glassgpt.circuits.job import build_task

    model, tokenizer, run_config = load_run(run_dir)
    runs = PairRuns(model, build_task(model, tokenizer, run_config, task, None, pairs, 8, 0, None).batches)
    scores = eap_scores(runs, steps=5)
    best = smallest_circuit(runs, scores, target, faithfulness_curve(runs, scores))
    if best is None:
        return {"edges": None}
    edges = [f"{e.src} -> {e.dst}" for e in runs.graph.edges_in(best.keep)]
    return {"edges": best.n_edges, "faithfulness": best.faithfulness.value, "faithfulness_se": best.faithfulness.se,
            "share": best.n_edges / runs.graph.n_edges, "circuit": edges,
            "k_composition": [e for e in edges if e.startswith("L") and e.endswith(":k")],
            "to_logits": [e.split(" -> ")[0] for e in edges if e.endswith("-> logits")]}


def measure(run_dir: Path, task: str, out: Path, pairs: int) -> dict:
    load_before = os.getloadavg()
    elapsed, cpu = stopwatch(), cpu_stopwatch()
    record = find_circuit(run_dir, task=task, out=out, n_pairs=pairs, target=0.8)
    seconds, cpu_seconds = elapsed(), cpu()
    load_after = list(os.getloadavg())
    return {
        "task": record["task"]["description"], "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
        "stages": record["seconds"],
        "load_average_before": list(load_before), "load_average_after": load_after,
        "total_edges": record["total_edges"], "metric": record["metric"], "agreement": record["agreement"],
        "at_0.8": {"edges": record["circuit_edges"], "share": record["circuit_edges"] / record["total_edges"],
                   "faithfulness": record["faithfulness"], "faithfulness_se": record["faithfulness_se"]},
        "at_0.9": strict_circuit(run_dir, task, pairs, 0.9),
        "heads": [h for h in record["heads"] if h["in_circuit"]], "curve": record["curve"],
        "summary": record["summary"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="induction:induction,cpu-baby:repeat", help="comma-separated PRESET:TASK")
    parser.add_argument("--from-runs", type=Path, default=None, metavar="DIR",
                        help="do not train: use the runs already trained into DIR/<preset>")
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value", help="overrides for every trained run")
    parser.add_argument("--pairs", type=int, default=32, help="pairs of each task")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared machine)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.runs.split(","):
            preset, task = item.split(":")
            run_dir = (args.from_runs / preset) if args.from_runs else Path(tmp) / preset
            train_seconds = None if args.from_runs else train_run(preset, run_dir, args.set)
            results[item] = {"preset": preset, "train_seconds": train_seconds,
                             **measure(run_dir, task, Path(tmp) / f"circuit-{preset}", args.pairs)}
            print(f"{item}: {results[item]['seconds']:.1f} s, {results[item]['at_0.8']['edges']} of "
                  f"{results[item]['total_edges']} edges at 0.8", flush=True)
    record = {"what": "glassgpt circuit: time and what it finds", "threads": torch.get_num_threads(),
              "overrides": args.set, "note": args.note, "machine": machine_with_load(torch.device("cpu"), load_before),
              "command": "python benchmarks/bench_circuit.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "results": results}
    publish(record, args.out, "circuit")
    return record


if __name__ == "__main__":
    main()
