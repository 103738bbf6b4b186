"""Threads that fit the machine: cpu-baby's training speed alone and beside a competing job, with
torch's default thread count and with `threads=auto`, back to back in one sitting.

    python benchmarks/bench_threads.py [--steps 150] [--rounds 1] [--note 'machine shared']

Four cases, each a cpu-baby training of `--steps` steps in this process (on a copy of Tiny
Shakespeare with a short validation split, so the evaluations take little of the sitting):
- `idle, default threads`: alone, with torch's own count (one per core: what training did before);
- `idle, auto`: alone, `threads=auto` (the cores free of other work, checked again as it runs);
- `contended, default threads` and `contended, auto`: the same, while a second cpu-baby training with
  torch's default threads (the competing job, a `glassgpt train` process of its own) runs from before
  the measured one starts until it ends.

The speed is the run's own tokens/s (its final row: training steps only, evaluations and
checkpoints left out); with it, the threads the run used and the 1-minute load average it met.
The targets: contended auto >= 0.45x idle auto, and idle auto within 3% of idle default.
`--rounds N` repeats the four, the order reversed every other round; the summary takes medians.
OMP_NUM_THREADS is removed from the runs' environment (it would fix their threads).

Writes benchmarks/results/threads-<time>.json with the machine and its load before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

from glassgpt.bench.machine import machine_with_load
from glassgpt.bench.report import publish
from glassgpt.bench.timing import stopwatch

REPO = Path(__file__).resolve().parents[1]
VAL_TOKENS = 4096  # the validation split the runs evaluate on: enough for an eval, short for the sitting
CASES = ("idle, default threads", "idle, auto", "contended, default threads", "contended, auto")


def short_dataset(data_dir: Path) -> None:
    """shakespeare-char prepared into `data_dir` (GLASSGPT_DATA_DIR), its validation split cut to VAL_TOKENS."""
    from glassgpt.data import prepare

    folder = prepare("shakespeare-char")
    meta = json.loads((folder / "meta.json").read_text())
    np.fromfile(folder / "val.bin", dtype=meta["dtype"])[:VAL_TOKENS].tofile(folder / "val.bin")
    meta["tokens"]["val"] = VAL_TOKENS
    (folder / "meta.json").write_text(json.dumps(meta))


def settings(steps: int, threads: str, overrides: list[str]) -> list[str]:
    """The key=value settings of a run on top of cpu-baby."""
    return [f"max_iters={steps}", f"threads={threads}", "eval_interval=1000000", "log_interval=10", *overrides]


def torch_default_threads(env: dict) -> int:
    """The thread count torch picks by itself in a fresh process (one per physical core)."""
    code = "import torch; print(torch.get_num_threads())"
    return int(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              check=True).stdout)


def final_row(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    final = next(r for r in reversed(rows) if r.get("kind") == "final")
    trained = [r for r in rows if r.get("kind") == "train"]
    return {**final, "threads_seen": sorted({r["threads"] for r in trained if r.get("threads") is not None}),
            "mean_load": statistics.fmean(r["load_average"] for r in trained) if trained else None}


class Competitor:
    """A second training with torch's default threads, running until `stop()`; started, it is waited
    for until it is stepping."""

    def __init__(self, out: Path, env: dict, overrides: list[str], default_threads: int):
        command = [sys.executable, "-m", "glassgpt", "train", "cpu-baby", *settings(10**8, str(default_threads),
                                                                                   overrides),
                   "log_interval=1", "--out", str(out)]  # a fresh folder each time: a second run there is refused
        self.errors = out.with_name(out.name + ".stderr")
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(self.errors, "w") as errors:
            self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
        stepping = False
        for line in self.process.stdout:
            if "| loss " in line:
                stepping = True
                break
        if not stepping:  # it ended before its first step: the measurement would not be contended
            self.process.wait()
            raise RuntimeError(f"the competing training ended before it stepped: {self.errors.read_text()[-500:]}")
        self.drain = threading.Thread(target=self.process.stdout.read, daemon=True)  # its log, unread
        self.drain.start()

    def stop(self) -> None:
        """Ends it; raises when it had ended by itself (then the case was not contended to the end)."""
        ended_early = self.process.poll() is not None
        self.process.terminate()  # SIGTERM: it saves a checkpoint and leaves
        self.process.communicate(timeout=120)
        if ended_early:
            raise RuntimeError(f"the competing training ended during the measurement: "
                               f"{self.errors.read_text()[-500:]}")


def measure(case: str, work: Path, env: dict, steps: int, overrides: list[str], default_threads: int) -> dict:
    from glassgpt.config import load_run_config
    from glassgpt.training import train

    run = work / case.replace(", ", "-").replace(" ", "-")
    threads = "auto" if case.endswith("auto") else str(default_threads)
    config = load_run_config("cpu-baby", settings(steps, threads, overrides))
    competitor = (Competitor(run.with_name(run.name + "-competitor"), env, overrides, default_threads)
                  if case.startswith("contended") else None)
    try:
        elapsed = stopwatch()
        train(config, run, log=lambda line: None)
        wall = elapsed()
    finally:
        if competitor is not None:
            competitor.stop()
    final = final_row(run)
    print(f"{case:<28} {final['tokens_per_s']:>8,.0f} tok/s  threads {final['threads_seen']}  "
          f"load {final['mean_load']:.2f}", flush=True)
    return {"case": case, "tokens_per_s": final["tokens_per_s"], "threads": final["threads_seen"],
            "load_average": final["mean_load"], "wall_seconds": wall, "train_seconds": final["train_seconds"],
            "steps": final["step"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps of each measured run")
    parser.add_argument("--rounds", type=int, default=1, help="the four cases this many times")
    parser.add_argument("--set", nargs="*", default=[], metavar="key=value", help="overrides for every run")
    parser.add_argument("--note", default="", help="free text saved with the result (e.g. 'machine shared')")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # they would fix the threads of every run
            os.environ.pop(name, None)
        os.environ["GLASSGPT_DATA_DIR"] = str(work / "data")
        env = dict(os.environ)
        default_threads = torch_default_threads(env)
        short_dataset(work / "data")
        for round_ in range(args.rounds):
            for case in (CASES if round_ % 2 == 0 else CASES[::-1]):
                rows.append({"round": round_, **measure(case, work / f"round{round_}", env, args.steps, args.set,
                                                        default_threads)})
    speed = {case: statistics.median(r["tokens_per_s"] for r in rows if r["case"] == case) for case in CASES}
    summary = {"contended_over_idle_auto": speed["contended, auto"] / speed["idle, auto"],
               "contended_over_idle_default": speed["contended, default threads"] / speed["idle, default threads"],
               "idle_auto_over_idle_default": speed["idle, auto"] / speed["idle, default threads"],
               "contended_auto_over_contended_default": speed["contended, auto"] / speed["contended, default threads"],
               "targets": {"contended_over_idle_auto": ">= 0.45", "idle_auto_over_idle_default": "0.97 to 1.03"}}
    print(f"\ncontended / idle: auto {summary['contended_over_idle_auto']:.2f}x, default threads "
          f"{summary['contended_over_idle_default']:.2f}x; idle auto / idle default "
          f"{summary['idle_auto_over_idle_default']:.3f}")
    machine = machine_with_load(torch.device("cpu"), load_before)
    busy = machine["loadavg_before"][0] > 0.5 * (machine["cpus_usable"] or 1)
    result = {"benchmark": "threads", "preset": "cpu-baby", "steps": args.steps, "rounds": args.rounds,
              "overrides": args.set, "default_threads": default_threads, "val_tokens": VAL_TOKENS,
              "note": args.note or ("machine shared with other work: the idle cases were not idle" if busy else ""),
              "machine": machine, "rows": rows, "tokens_per_s": speed, "summary": summary}
    publish(result, args.out, "threads")
    return result


if __name__ == "__main__":
    main()
