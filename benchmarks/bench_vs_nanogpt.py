"""nanoGPT's CPU recipe against glassgpt's cpu-baby and cpu-speedrun, back to back.

    python benchmarks/bench_vs_nanogpt.py --nanogpt /path/to/nanoGPT [--threads 1] [--parallel]
    python benchmarks/bench_vs_nanogpt.py --nanogpt /path/to/nanoGPT --recipe shakespeare-char   # on a GPU

`--recipe shakespeare-char` is the GPU comparison instead: nanoGPT's
`config/train_shakespeare_char.py` as it ships (6 layers, 384 wide, block 256, 5000
iterations; bf16 and torch.compile on a GPU) against glassgpt's `shakespeare-char`
preset with `device=cuda dtype=bfloat16 compile=true`.

nanoGPT (https://github.com/karpathy/nanoGPT, a checkout or an unpacked archive) is
run as its README says for a CPU ("baby GPT": 4 layers, 4 heads, 128 wide, block 64,
batch 12, 2000 iterations, `--device=cpu --compile=False --eval_iters=20
--dropout=0.0`), on Tiny Shakespeare from GLASSGPT_MIRROR or ../shared/data: its
`prepare.py` only downloads when `input.txt` is missing, so the local file is put
there first. Its code is run, never copied: the checkout is copied to a temporary
folder so the original stays untouched. Without --nanogpt (or NANOGPT_DIR), or when
the folder holds no nanoGPT, only glassgpt's runs are timed and the JSON says
nanoGPT was skipped. It runs on whatever CPU it finds and ends by printing the ratios
under that CPU's description (its model, torch's `get_cpu_capability()`, whether it
multiplies bfloat16 natively, the threads and the load).

Recorded per run: wall time of the whole process (start-up, data, evals and
checkpoints included), glassgpt's training time per step and its ratio to cpu-baby's,
every periodic val loss with the wall time at which it was printed, the first time
val loss <= the target (nanoGPT's final val loss of this sitting, or 1.8857 without
it), and for glassgpt its whole-split final val loss and the training / eval /
checkpoint split of its time. Periodic evals are
estimates on 20 batches (nanoGPT: random ones; glassgpt: fixed ones); glassgpt's
final figure reads every token of the val split.

Tiny Shakespeare is prepared afresh in a temporary data folder, unless `--data-dir` names one
where `shakespeare-char` is already prepared.

`--parallel` runs the three at once, one process each: on a machine shared with
other work, the load then falls on all three alike. `--rounds N` runs them back to
back N times, the order reversed every other round (a machine whose speed drifts
then favours no one); the summary takes each run's median round and adds the
per-round ratios. The load average before and after is stored with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

from glassgpt.bench.machine import machine_with_load
from glassgpt.bench.report import publish
from glassgpt.bench.timing import stopwatch

REPO = Path(__file__).resolve().parents[1]
NANOGPT_TARGET = 1.8857  # nanoGPT's final val loss on this recipe, measured on this machine
NANOGPT_ARGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"]
NANOGPT_GPU_ARGS = ["config/train_shakespeare_char.py"]  # its own defaults: cuda, bf16 where supported, compile
RECIPES = {  # name -> (nanoGPT's arguments, glassgpt presets, overrides for each glassgpt run, default target)
    "cpu-baby": (NANOGPT_ARGS, ["cpu-baby", "cpu-speedrun"], [], NANOGPT_TARGET),
    "shakespeare-char": (NANOGPT_GPU_ARGS, ["shakespeare-char"], ["device=cuda", "dtype=bfloat16", "compile=true"],
                         1.4697),  # nanoGPT's README: val 1.4697 on one A100
}
NANOGPT_EVAL = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")
GLASSGPT_EVAL = re.compile(r"^step\s+(\d+) \| val loss ([\d.]+)")


def find_tinyshakespeare() -> Path:
    for folder in (os.environ.get("GLASSGPT_MIRROR"), REPO.parent / "shared" / "data"):
        if folder and (Path(folder) / "tinyshakespeare.txt").is_file():
            return Path(folder) / "tinyshakespeare.txt"
    sys.exit("bench_vs_nanogpt: tinyshakespeare.txt not found: set GLASSGPT_MIRROR to the folder holding it")


def timed_run(cmd: list[str], cwd: Path, env: dict, eval_line: re.Pattern, log_path: Path) -> dict:
    """Run cmd, stamping each eval line with the seconds since the start."""
    elapsed = stopwatch()
    evals = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            m = eval_line.match(line.strip())
            if m:
                evals.append({"step": int(m.group(1)), "val_loss": float(m.groups()[-1]),
                              "wall_s": elapsed()})
        proc.wait()
    return {"command": cmd, "returncode": proc.returncode, "wall_s": elapsed(),
            "evals": evals, "log": str(log_path)}


def time_to(evals: list[dict], target: float) -> dict | None:
    hit = next((e for e in evals if e["val_loss"] <= target), None)
    return {"step": hit["step"], "wall_s": hit["wall_s"], "val_loss": hit["val_loss"]} if hit else None


def prepare_nanogpt(nanogpt: Path, work: Path, text: Path, env: dict) -> Path | None:
    if not (nanogpt / "train.py").is_file() or not (nanogpt / "data" / "shakespeare_char" / "prepare.py").is_file():
        return None
    copy = work / "nanoGPT"
    shutil.copytree(nanogpt, copy, ignore=shutil.ignore_patterns(".git", "out-*"))
    data = copy / "data" / "shakespeare_char"
    shutil.copyfile(text, data / "input.txt")  # prepare.py downloads only when input.txt is missing
    subprocess.run([sys.executable, "prepare.py"], cwd=data, env=env, check=True, capture_output=True)
    return copy


def nanogpt_run(copy: Path, work: Path, env: dict, args: list[str], extra: list[str]) -> dict:
    shutil.rmtree(work / "out-nanogpt", ignore_errors=True)  # this script's temporary folder: a fresh run each round
    result = timed_run([sys.executable, "train.py", *args, f"--out_dir={work / 'out-nanogpt'}", *extra],
                       copy, env, NANOGPT_EVAL, work / "nanogpt.log")
    result["final_val_loss_estimate"] = result["evals"][-1]["val_loss"] if result["evals"] else None
    return result


def glassgpt_run(preset: str, work: Path, env: dict, extra: list[str]) -> dict:
    run_dir = work / f"run-{preset}"
    shutil.rmtree(run_dir, ignore_errors=True)  # this script's temporary folder: a fresh run each round
    result = timed_run([sys.executable, "-m", "glassgpt", "train", preset, *extra, "--out", str(run_dir)], REPO, env,
                       GLASSGPT_EVAL, work / f"{preset}.log")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()] \
        if (run_dir / "metrics.jsonl").is_file() else []
    final = next((r for r in rows if r["kind"] == "final"), None)
    if final:
        result["final"] = {k: final[k] for k in ("val_loss", "train_seconds", "eval_seconds", "checkpoint_seconds",
                                                 "wall_seconds", "tokens_per_s") if k in final}
        last_step = max((r["step"] for r in rows if r["kind"] == "eval"), default=0)  # the whole-split eval
        result["evals"].append({"step": last_step, "val_loss": final["val_loss"], "wall_s": result["wall_s"],
                                "whole_split": True})
    result["config"] = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else None
    return result


def run_jobs(jobs: dict, parallel: bool, reverse: bool = False) -> dict:
    """Each job's result: all at once (`parallel`), or one after another (in reverse order if asked)."""
    results = {}
    if parallel:
        threads = [threading.Thread(target=lambda k=k, f=f: results.__setitem__(k, f())) for k, f in jobs.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results
    for name in (reversed(list(jobs)) if reverse else jobs):
        print(f"running {name} ...", flush=True)
        results[name] = jobs[name]()
    return results


def median_round(runs: list[dict]) -> dict:
    """The run whose wall time is the median (the lower middle one of an even number)."""
    return sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nanogpt", type=Path, default=os.environ.get("NANOGPT_DIR"), help="nanoGPT checkout (or NANOGPT_DIR)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="cpu-baby",
                   help="cpu-baby: nanoGPT's CPU baby GPT; shakespeare-char: its GPU recipe (needs CUDA)")
    p.add_argument("--presets", nargs="+", default=None, help="glassgpt presets to run (default: the recipe's)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for every run (default: torch's own)")
    p.add_argument("--parallel", action="store_true", help="run them all at once instead of back to back")
    p.add_argument("--rounds", type=int, default=1,
                   help="back to back: run them all this many times, the order reversed every other round; "
                        "the summary is each run's median round and the per-round ratios")
    p.add_argument("--note", default="")
    p.add_argument("--max-iters", type=int, default=None, help="cut every run short: a smoke test, not a result")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="a GLASSGPT_DATA_DIR where shakespeare-char is already prepared (default: prepare it afresh)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    nanogpt_args, presets, glass_overrides, default_target = RECIPES[args.recipe]
    presets = args.presets or presets

    text = find_tinyshakespeare()
    env = {**os.environ, "GLASSGPT_MIRROR": str(text.parent), "PYTHONUNBUFFERED": "1"}  # each line stamped when printed
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    work = Path(tempfile.mkdtemp(prefix="vs-nanogpt-"))
    env["GLASSGPT_DATA_DIR"] = str(args.data_dir or work / "data")
    if not args.data_dir:
        subprocess.run([sys.executable, "-m", "glassgpt", "prepare", "shakespeare-char"], env=env, check=True,
                       capture_output=True)
    copy = prepare_nanogpt(args.nanogpt, work, text, env) if args.nanogpt else None
    skipped = None if copy else f"nanoGPT not found at {args.nanogpt}" if args.nanogpt else "no --nanogpt given"

    load_before = os.getloadavg()
    jobs = {}
    if copy:
        nano_cut = [f"--max_iters={args.max_iters}", f"--lr_decay_iters={args.max_iters}", "--eval_interval=10"]
        jobs["nanogpt"] = lambda: nanogpt_run(copy, work, env, nanogpt_args, nano_cut if args.max_iters else [])
    glass_cut = glass_overrides + ([f"max_iters={args.max_iters}", "eval_interval=10"] if args.max_iters else [])
    for preset in presets:
        jobs[preset] = lambda preset=preset: glassgpt_run(preset, work, env, glass_cut)
    if args.parallel and args.rounds != 1:
        sys.exit("bench_vs_nanogpt: --rounds is for back-to-back runs, not --parallel")
    rounds = [run_jobs(jobs, args.parallel, reverse=i % 2 == 1) for i in range(args.rounds)]
    results = {name: median_round([r[name] for r in rounds]) for name in jobs}

    nano = results.get("nanogpt")
    target = nano["final_val_loss_estimate"] if nano and nano["final_val_loss_estimate"] else default_target
    summary = {}
    for name, r in results.items():
        hit = time_to(r["evals"], target)
        row = {"wall_s": r["wall_s"], "time_to_target": hit,
               "final_val_loss": (r.get("final") or {}).get("val_loss", r.get("final_val_loss_estimate"))}
        if nano:
            row["wall_vs_nanogpt"] = r["wall_s"] / nano["wall_s"]
            if hit:
                row["time_to_target_vs_nanogpt_wall"] = hit["wall_s"] / nano["wall_s"]
            if len(rounds) > 1:
                row["wall_vs_nanogpt_per_round"] = [rd[name]["wall_s"] / rd["nanogpt"]["wall_s"] for rd in rounds]
                row["wall_vs_nanogpt_median_of_rounds"] = statistics.median(row["wall_vs_nanogpt_per_round"])
        steps = ((r.get("config") or {}).get("train") or {}).get("max_iters")
        if r.get("final") and steps:
            row["train_step_s"] = r["final"]["train_seconds"] / steps  # training alone: no evals, no checkpoints
        summary[name] = row
    if "train_step_s" in summary.get("cpu-baby", {}):
        for row in summary.values():
            if "train_step_s" in row:
                row["train_step_vs_cpu_baby"] = row["train_step_s"] / summary["cpu-baby"]["train_step_s"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    record = {
        "what": f"nanoGPT's {args.recipe} recipe vs glassgpt {', '.join(presets)}", "recipe": args.recipe,
        "target_val_loss": target, "target_is": "nanoGPT's final val loss in this run" if nano else
        f"{default_target}, nanoGPT's reported final val loss (nanoGPT not run here)",
        "nanogpt_skipped": skipped, "mode": "parallel" if args.parallel else "back to back",
        "threads": args.threads, "note": args.note, "max_iters_cut": args.max_iters,
        "machine": machine_with_load(device, load_before),
        "rounds": len(rounds), "summary": summary, "runs": results,
        **({"runs_per_round": rounds} if len(rounds) > 1 else {}),
    }
    publish(record, args.out, "vs-nanogpt")
    print(ratios_table(summary, record["machine"], target, args.threads))
    if skipped:
        print(f"nanoGPT skipped: {skipped}")
    return record


def ratios_table(summary: dict, machine: dict, target: float, threads: int | None = None) -> str:
    """The ratios, one line a run, under the CPU they hold on (`threads`: each run's, if set)."""
    threads = threads or machine["torch_threads"]
    lines = [f"{machine['cpu_model']} ({machine['cpu_capability']}; native bf16 matmul: "
             f"{machine['native_bfloat16_matmul']}), {threads} thread{'s' if threads != 1 else ''}, "
             f"load {machine['load_average'][0]:.1f} before",
             f"{'run':<14} {'wall':>8} {'x nanoGPT':>9} {'to ' + format(target, '.4f'):>14} {'final val':>9} "
             f"{'step x cpu-baby':>15}"]
    for name, row in summary.items():
        hit = row["time_to_target"]
        to_target = (f"{hit['wall_s']:.0f} s" + (f" {row['time_to_target_vs_nanogpt_wall']:.2f}x"
                     if "time_to_target_vs_nanogpt_wall" in row else "")) if hit else "not reached"
        times = {key: f"{row[key]:.2f}x" if key in row else "-" for key in ("wall_vs_nanogpt", "train_step_vs_cpu_baby")}
        lines.append(f"{name:<14} {row['wall_s']:>6.0f} s {times['wall_vs_nanogpt']:>9} {to_target:>14} "
                     f"{row['final_val_loss'] or float('nan'):>9.4f} {times['train_step_vs_cpu_baby']:>15}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
