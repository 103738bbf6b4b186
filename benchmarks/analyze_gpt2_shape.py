"""Time and peak memory of `glassgpt analyze` on a GPT-2 124M shape (12 layers, 768 wide,
context 1024, vocabulary 50257) with random weights, 8 validation windows of 1024 tokens.

    GLASSGPT_MIRROR=../shared/data python benchmarks/analyze_gpt2_shape.py [--windows 8] [--threads 2]

Builds the run in a temporary folder (Tiny Shakespeare in GPT-2 BPE for the windows),
runs the command under `/usr/bin/time -v` in a fresh process, and writes
benchmarks/results/analyze-gpt2-shape-<time>.json with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


TINY = dict(n_layer=1, n_head=2, n_embd=32, block_size=64)  # --tiny: the same pipeline in seconds (a smoke test)


def build_run(run_dir: Path, tiny: bool = False) -> None:
    import dataclasses

    from glassgpt.checkpoint import save_run
    from glassgpt.config import GPTConfig, RunConfig, TrainConfig
    from glassgpt.model import GPT
    from glassgpt.tokenizer import get_tokenizer

    torch.manual_seed(0)
    config = GPTConfig.preset("gpt2")
    if tiny:
        config = dataclasses.replace(config, **TINY)
    save_run(run_dir, GPT(config), get_tokenizer("gpt2"), RunConfig(config, TrainConfig(dataset="shakespeare")))


def cpu_seconds(time_output: str) -> float:
    """User + system CPU seconds from GNU time -v: less swayed than wall time by other jobs on the machine."""
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", time_output).group(1))
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", time_output).group(1))
    return user + system


def peak_and_wall(time_output: str) -> tuple[float, float]:
    """Peak RSS (GiB) and wall seconds from GNU time -v."""
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_output).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", time_output).group(1)
    seconds = 0.0
    for part in wall.split(":"):
        seconds = seconds * 60 + float(part)
    return rss_kb / 2**20, seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default="", help="what else ran on the machine (the load average after the run is recorded)")
    parser.add_argument("--tiny", action="store_true", help=f"a GPT-2 vocabulary on a tiny shape ({TINY}): a smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from glassgpt.bench.machine import machine_info
    from glassgpt.bench.report import publish
    from glassgpt.bench.timing import stopwatch
    from glassgpt.data import prepare

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "GLASSGPT_DATA_DIR": str(tmp / "data"), "OMP_NUM_THREADS": str(args.threads)}
        os.environ["GLASSGPT_DATA_DIR"] = env["GLASSGPT_DATA_DIR"]
        prepare("shakespeare")
        build_run(tmp / "run", tiny=args.tiny)
        command = ["/usr/bin/time", "-v", sys.executable, "-m", "glassgpt", "analyze", str(tmp / "run"),
                   "--windows", str(args.windows), "--out", str(tmp / "report")]
        clock = stopwatch()
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        elapsed = clock()
        if result.returncode != 0:
            sys.exit(f"analyze failed:\n{result.stderr[-3000:]}")
        peak_gib, wall = peak_and_wall(result.stderr)
        numbers = json.loads((tmp / "report" / "analysis.json").read_text())
    record = {
        "benchmark": "analyze-gpt2-shape",
        "command": f"glassgpt analyze RUN --windows {args.windows}",
        "model": (f"tiny shape {TINY}, GPT-2 vocabulary, random weights" if args.tiny else
                  "GPT-2 124M shape, random weights (12 layers, 12 heads, 768 wide, context 1024, vocab 50257)"),
        "windows": args.windows, "window_length": numbers["window_length"], "threads": args.threads,
        "peak_rss_gib": round(peak_gib, 3), "wall_s": round(wall, 1), "wall_s_outer": round(elapsed, 1),
        "cpu_s": round(cpu_seconds(result.stderr), 1), "load_average_after": list(os.getloadavg()),
        "logit_lens_positions_per_window": numbers["logit_lens"]["positions_per_window"],
        "ablation_tokens": numbers["ablation_tokens"],
        "machine": machine_info(torch.device("cpu")),
        "note": args.note,
    }
    publish(record, args.out, "analyze-gpt2-shape")
    return record


if __name__ == "__main__":
    main()
