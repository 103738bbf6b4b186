"""The two commands from a fresh clone: how long `make test` and `make quickstart` take.

    python benchmarks/bench_make.py --target test --runs 2 --note "nothing else running"
    python benchmarks/bench_make.py --target quickstart

Each run clones this repository (its committed HEAD) into a new folder beside it, so that
`../shared` resolves as it does for the checkout, runs `make TARGET` there with a fresh `.venv`
(every install included), and removes the clone afterwards. Recorded per run: the wall time, the
exit status, and what the output says of itself (pytest's count and time, the quickstart's
final loss line). The runs go one after another; the machine and its load average before and
after are saved with them: on a busy machine the times say more about the neighbours.
`--make-args` passes options to make (`-n`: print the commands without running them).

Writes benchmarks/results/make-TARGET-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import torch

from glassgpt.bench.machine import machine_with_load
from glassgpt.bench.report import publish
from glassgpt.bench.timing import stopwatch

REPO = Path(__file__).resolve().parents[1]
PYTEST_SUMMARY = re.compile(r"^=* ?(\d+ passed[^\n]*?) in ([\d.]+)s", re.M)  # "-q" prints it without the ='s


def fresh_clone(number: int) -> Path:
    """A clone of REPO's HEAD in a new folder beside it (never one that exists)."""
    folder = REPO.parent / f"glassgpt-clone-{os.getpid()}-{time.time_ns()}-{number}"
    subprocess.run(["git", "clone", "-q", str(REPO), str(folder)], check=True)
    return folder


def what_it_said(output: str) -> dict:
    """The figures a run prints about itself."""
    said = {}
    if match := PYTEST_SUMMARY.search(output):
        said |= {"pytest": match.group(1), "pytest_seconds": float(match.group(2))}
    if done := [line for line in output.splitlines() if line.startswith("done: ")]:
        said["done"] = done[-1]
    return said


def time_make(target: str, make_args: list[str], number: int) -> dict:
    clone = fresh_clone(number)
    try:
        elapsed = stopwatch()
        result = subprocess.run(["make", *make_args, target], cwd=clone, capture_output=True, text=True)
        wall = elapsed()
    finally:
        shutil.rmtree(clone)  # the clone is this script's own folder
    output = result.stdout + result.stderr
    row = {"run": number, "wall_seconds": wall, "returncode": result.returncode,
           "load_average_after": list(os.getloadavg()), **what_it_said(output)}
    if result.returncode != 0:
        row["output_tail"] = output[-3000:]
    minutes, seconds = divmod(wall, 60)
    print(f"make {target} #{number}: {int(minutes)} min {seconds:.0f} s, exit {result.returncode}"
          + (f", {row['pytest']} in {row['pytest_seconds']:.0f} s" if "pytest" in row else ""), flush=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="test", help="the make target (default: test)")
    parser.add_argument("--runs", type=int, default=1, help="fresh clones, one after another (default: 1)")
    parser.add_argument("--make-args", nargs="*", default=[], help="options for make, e.g. -n")
    parser.add_argument("--note", default="", help="free text saved with the result (e.g. 'machine shared')")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    rows = [time_make(args.target, args.make_args, i) for i in range(1, args.runs + 1)]
    walls = [r["wall_seconds"] for r in rows]
    result = {"benchmark": "make", "target": args.target, "make_args": args.make_args, "revision": revision,
              "note": args.note, "machine": machine_with_load(torch.device("cpu"), load_before), "runs": rows,
              "median_wall_seconds": statistics.median(walls), "all_passed": all(r["returncode"] == 0 for r in rows)}
    publish(result, args.out, f"make-{args.target}")
    return result


if __name__ == "__main__":
    main()
