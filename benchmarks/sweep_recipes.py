"""The search behind the natural-text recipes `induction-text` and `depth-scan`: train, score, keep every run.

    python benchmarks/sweep_recipes.py --grid induction-shape --out sweep.jsonl
    python benchmarks/sweep_recipes.py --preset induction-text --set "dataset=vimdoc seed=2" --out sweep.jsonl
    python benchmarks/sweep_recipes.py --preset depth-scan --set dataset=shakespeare-char --publish

Each run is `glassgpt train PRESET key=value ...` on `--threads` CPU threads (default 1), into a temporary
run directory: one at a time in this process, or `--lanes` at a time, each in a process of its own. Its metrics.jsonl
is then read: the final analysis row is scored by the recipe's own checks
(`glassgpt.analysis.phenomena.induction_text_check` / `depth_scan_check`, chosen by `--check` or
by the preset's name), and the first analysis step at which every clause held is found, with the
tokens and the wall seconds it took to get there. One JSON line per run is appended to `--out`
(config, steps, tokens, wall, CPU and training seconds, the load average before and after, the
scores, the clauses), so a sweep cut short keeps what it ran. On a shared machine the wall time
says more about the neighbours than about the recipe; the process's CPU seconds, on one thread,
are about what the run takes on one idle core.

`--publish` writes the runs of this invocation as a benchmark (`benchmarks/results/recipe-NAME-*.json`,
with the machine and its load) for the docs. The datasets must be prepared first
(`glassgpt prepare shakespeare-char`, `glassgpt prepare text PATH --name NAME`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from glassgpt.bench.timing import stopwatch

REPO = Path(__file__).resolve().parents[1]
CHECKS = ("induction-text", "depth-scan")

# Named grids: (preset, overrides). Each is one sitting of the search (docs: Lab notebook, 2026-12-07).
GRIDS: dict[str, list[tuple[str, str]]] = {
    "smoke": [(name, "dataset=shakespeare-char min_train_tokens=0 max_iters=2 eval_interval=2 eval_iters=1 "
                     "analysis_interval=2 n_embd=32 block_size=16 batch_size=2") for name in ("induction-text", "depth-scan")],
    # the first shape (attention-only, 2 x 4 heads, 64 wide, context 128, batch 8, lr 1e-3 constant) on
    # plain text, then the learning rate and in-context repetition
    "induction-a": [("induction-text", "dataset=shakespeare-char max_iters=8000 repeat_fraction=0")]
    + [("induction-text", f"dataset=shakespeare-char max_iters=4000 {o}") for o in (
        "repeat_fraction=0 learning_rate=3e-3 min_lr=3e-3", "repeat_fraction=0.25", "repeat_fraction=0.5")],
    # the context: emergence slows with its length
    "induction-b": [("induction-text", f"dataset=shakespeare-char max_iters=4000 block_size={c} repeat_fraction={r}")
                    for c in (32, 64) for r in (0, 0.25)],
    # more copies per step: a larger batch and more windows repeated; and a BPE corpus, whose bigrams
    # predict more reliably than characters do (Aoyama et al. 2025)
    "induction-c": [("induction-text", f"dataset=shakespeare-char max_iters=3000 block_size=32 batch_size=32 repeat_fraction={r}")
                    for r in (0.5, 1.0)]
    + [("induction-text", "dataset=shakespeare-char max_iters=3000 block_size=64 batch_size=16 repeat_fraction=0.5")]
    + [("induction-text", f"dataset=vimdoc max_iters=3000 block_size=64 batch_size=16 repeat_fraction={r}") for r in (0, 0.5)],
    # (the repeat_fraction runs of induction-a to -c ran with each window's first half twice: a copy at a fixed
    # distance, which a fixed-offset head learns without any induction; since then the span's length varies)
    # spans of random length repeated: the copy's distance varies, so only an induction head can use it
    "induction-d": [("induction-text", f"dataset={d} max_iters=3000 block_size={c} batch_size={b} repeat_fraction=0.5")
                    for d, c, b in (("shakespeare-char", 32, 32), ("shakespeare-char", 64, 16), ("vimdoc", 64, 16))],
    # three layers: in two, layer 0 stays on the current token (mean distance 0.5) and layer 1 takes the previous
    # one, so nothing is left to compose an induction head with
    "induction-e": [("induction-text", f"dataset=shakespeare-char max_iters=5000 block_size=32 batch_size=32 n_layer=3 "
                                       f"repeat_fraction={r}") for r in (0.5, 0)],
    # MLPs back: an MLP can carry the current token's statistics, which attention-only models park in layer 0
    "induction-f": [("induction-text", f"dataset=shakespeare-char max_iters=5000 block_size={c} batch_size={b} attn_only=false "
                                       "repeat_fraction=0.5") for c, b in ((32, 32), (64, 16))],
    # wider: at 64 wide the attention-only model spends layer 0 on the current token (self-attention 0.66-0.81 in
    # every head: more room for its bigram table), so no head is left to look at the previous one
    "induction-h": [("induction-text", f"dataset=shakespeare-char max_iters=4000 block_size=64 batch_size=16 n_embd={w} "
                                       f"n_head={h} repeat_fraction={r}") for w, h, r in ((256, 8, 0.5), (256, 8, 0))],
    # a BPE corpus: technical prose repeats its words and names, and its bigrams predict more reliably
    # than characters' (Aoyama et al. 2025)
    "induction-g": [("induction-text", f"dataset=vimdoc max_iters=4000 block_size=64 batch_size=16 repeat_fraction={r}")
                    for r in (0.5, 0)],
    # (the grids above ran against the preset as it was then: context 128, 4 heads, lr 1e-3 constant, 4,000 steps)
    # BPE tokens (bpe:512 of Tiny Shakespeare: a word-piece repeat predicts more than a character's), the
    # schedule fitted to the time (lr 3e-3, cosine to 3e-4), and enough tokens (Aoyama et al.: ~10^5.7 sqrt(B C),
    # 11M at batch 8, context 64; the runs above saw at most 9M): with rope, learned positions, and every window
    # repeated, one change at a time from the first
    "induction-i": [("induction-text", "dataset=shakespeare-bpe512 block_size=64 batch_size=8 max_iters=80000 "
                                       f"max_minutes=8.5 learning_rate=3e-3 min_lr=3e-4 warmup_iters=200 {o} "
                                       "analysis_interval=2500 eval_interval=10000 n_layer=2 n_head=4")
                    for o in ("repeat_fraction=0.25", "repeat_fraction=0.25 pos_encoding=learned", "repeat_fraction=1.0")],
    # with every window repeated the transition comes in 3,000 steps, but layer 1 grows two induction heads
    # and removing one costs little: two heads a layer leave room for one; then a longer context (more
    # repeated spans in the probe's windows, a smaller error on the ablation)
    "induction-j": [("induction-text", f"dataset=shakespeare-bpe512 block_size={c} batch_size={b} max_iters=80000 "
                                       "max_minutes=5 learning_rate=3e-3 min_lr=3e-4 warmup_iters=200 repeat_fraction=1.0 "
                                       "analysis_interval=1000 eval_interval=10000 n_layer=2 n_head=2") for c, b in ((64, 8), (128, 4))],
    # the two-layer recipe (induction-j's first run) as a preset, on a second corpus and a second seed; published
    "induction-confirm": [("induction-text", f"dataset={d} seed={s} threads=1 n_layer=2")
                          for d, s in (("shakespeare-bpe512", 1337), ("vimdoc-bpe512", 1337), ("shakespeare-bpe512", 2))],
    # on vimdoc-bpe512 the two-layer recipe's layer 1 took the previous token (as at context 128): a third layer
    # lets layer 1 be the previous-token layer and layer 2 the induction layer
    "induction-m": [("induction-text", "dataset=vimdoc-bpe512 threads=1 n_layer=3 n_head=2")],
    # three layers of two heads on both corpora and a second seed (stopped after the first: it missed)
    "induction-confirm3": [("induction-text", f"dataset={d} seed={s} threads=1 n_head=2")
                           for d, s in (("shakespeare-bpe512", 1337), ("vimdoc-bpe512", 1337), ("shakespeare-bpe512", 2),
                                        ("vimdoc-bpe512", 2))],
    # three layers at two heads: layer 2 covers for the ablated induction head at context 64 (ablation +0.24 +- 0.29),
    # and at longer contexts prefix matching on the text slides under 0.3 + 2 se; one head a layer, no cover
    "induction-l": [("induction-text", f"dataset=shakespeare-bpe512 threads=1 {o}")
                    for o in ("n_head=2 block_size=128", "n_head=2 block_size=96", "n_head=1")],
    # one head a layer: every clause held from step 1,000 to about 18,000, then prefix matching on the text slid
    # under 0.3 + 2 se as the model learned the text (0.32 +- 0.03 at the end of 5 minutes): the same schedule
    # fitted to 2.5 minutes, on both corpora and a second seed (stopped after the first: no transition in 11,000
    # steps -- the faster decay sent it down the other path, layer 2 previous-token)
    "induction-n": [("induction-text", f"dataset={d} seed={s} threads=1")
                    for d, s in (("shakespeare-bpe512", 1337), ("vimdoc-bpe512", 1337), ("shakespeare-bpe512", 2))],
    # the preset as shipped (two layers of two heads) on vimdoc-bpe512 with a second and a third seed
    "induction-o": [("induction-text", f"dataset=vimdoc-bpe512 seed={s} threads=1") for s in (2, 3)],
    # the preset as shipped on 2026-12-07 (its output head tied to the token table), on both corpora with three
    # seeds in all: published as recipe-induction-text-20261207-235509.json
    "induction-text-tied": [("induction-text", f"dataset={d} seed={s} threads=1 tie_weights=true")
                       for d, s in (("shakespeare-bpe512", 1337), ("vimdoc-bpe512", 1337), ("shakespeare-bpe512", 2),
                                    ("vimdoc-bpe512", 2), ("vimdoc-bpe512", 3))],
    # untied token tables (tie_weights=false): with the output head tied to the token table, the direct path
    # (embedding -> unembedding) is symmetric and cannot hold a table of which token follows which, so layer 0's
    # heads attend to the current token to hold it and the previous-token race goes to layer 1 (the
    # lab notebook's runs 7 and 16, 2026-12-07).
    # Untied, on the two seeds that lost the race on vimdoc, a third corpus (Python's standard library: `prepare
    # text FOLDER --name pystd-bpe512 --tokenizer bpe:512` on a folder of /usr/lib/python3.11/*.py, 4.7 MB) tied and
    # untied, and Tiny Shakespeare; then a wider model and MLPs against the seed with the longest plateau
    "induction-p": [("induction-text", f"dataset={d} seed={s} threads=1{o}") for d, s, o in (
        ("vimdoc-bpe512", 1337, " tie_weights=false"), ("pystd-bpe512", 1337, " tie_weights=false"),
        ("vimdoc-bpe512", 3, " tie_weights=false"), ("pystd-bpe512", 1337, " tie_weights=true"),
        ("shakespeare-bpe512", 1337, " tie_weights=false"), ("shakespeare-bpe512", 2, " tie_weights=false"),
        ("vimdoc-bpe512", 1337, " tie_weights=false n_embd=128"), ("vimdoc-bpe512", 1337, " tie_weights=false attn_only=false"))],
    # the preset as shipped (its own output head), three corpora, two or three seeds each: the published runs
    "induction-text": [("induction-text", f"dataset={d} seed={s} threads=1")
                       for d in ("shakespeare-bpe512", "vimdoc-bpe512", "pystd-bpe512") for s in (1337, 2, 3)][:8],
    # the depth scan: the sinks recipe (lr 3e-3, weight decay 0.3) six layers deep, 128 and 64 wide
    "depth-a": [("depth-scan", f"dataset=shakespeare-char max_iters=1500 n_embd={w}") for w in (128, 64)],
    # on characters layer 0 looks 7 tokens back and a layer-1 head sinks; BPE tokens, and a shorter context
    "depth-b": [("depth-scan", "dataset=vimdoc max_iters=1500"),
                ("depth-scan", "dataset=shakespeare-char max_iters=1500 block_size=32 batch_size=24")],
    # a beginning-of-sequence token: one key every query sees, the same in every window
    "depth-c": [("depth-scan", "dataset=vimdoc max_iters=1500 bos=true")],
    # characters at context 32 with learned positions keep layer 0 local (2.6 tokens) and make layers 1-5 broad,
    # but only a quarter of the last layer's heads sink: weight decay, which shrinks the queries and keys that a
    # sink needs large, from 0.3 to 1.0 and to 0; then a BOS (the newline) at no weight decay
    "depth-f": [("depth-scan", f"dataset=shakespeare-char max_iters=1500 block_size=32 batch_size=24 pos_encoding=learned "
                               f"weight_decay={w}{b}") for w, b in ((1.0, ""), (0.0, ""), (0.0, " bos=true"))],
    # the setting that holds on Tiny Shakespeare, on a second corpus (the Vim help files as characters,
    # `prepare text /usr/share/vim/vim90/doc --name vimdoc-char --tokenizer char`), with and without the BOS
    "depth-g": [("depth-scan", f"dataset=vimdoc-char max_iters=1500 block_size=32 batch_size=24 pos_encoding=learned "
                               f"weight_decay=0.0 bos={b}") for b in ("true", "false")],
    # on the Vim help files a layer-1 head that attends to the most recent newline or space counts as a sink (its
    # key is seen by few rows): context 64 halves that share but loses the last layer's sinks; eight heads make the
    # one such head 6% of layers 0-1, and layer 0 then needs a few more steps to be local (2.76 +- 0.16 at 1,500)
    "depth-h": [("depth-scan", f"dataset=vimdoc-char max_iters=1500 block_size={c} batch_size={b} pos_encoding=learned "
                               f"weight_decay=0.0 bos=true n_head={h}") for c, b, h in ((64, 12, 4), (32, 24, 8))],
    # eight heads and 2,000 steps on both corpora: kept on the Vim help files (layer 0 2.53 tokens, half the last
    # layer sinking), but on Tiny Shakespeare the sinks move into layers 1-2 (19% of layers 0-1, a quarter of the last)
    "depth-i": [("depth-scan", f"dataset={d} max_iters=2000 block_size=32 batch_size=24 pos_encoding=learned "
                               "weight_decay=0.0 bos=true n_head=8") for d in ("vimdoc-char", "shakespeare-char")],
    # between the two contexts on the Vim help files: layer 1 clear again, but layer 0 at 2.83 +- 0.32 and a quarter
    # of the last layer sinking
    "depth-j": [("depth-scan", "dataset=vimdoc-char block_size=48 batch_size=16")],
    # the preset (four heads, 1,500 steps, the BOS, no weight decay) on both corpora and a second seed: published
    # as recipe-depth-scan-20261207-234007.json
    "depth-scan-2026-12-07": [("depth-scan", f"dataset={d}{seed}")
                   for d, seed in (("shakespeare-char", ""), ("shakespeare-char", " seed=2"), ("vimdoc-char", ""))],
    # a third corpus (Python's standard library as characters, `prepare text FOLDER --name pystd-char --tokenizer
    # char`), a second seed on the Vim help files, an output head of its own (which moved the induction recipe's
    # race), and more steps for the layer-1 heads to leave the most recent newline
    "depth-k": [("depth-scan", f"dataset={d}{o}") for d, o in (
        ("pystd-char", ""), ("vimdoc-char", " seed=2"), ("vimdoc-char", " tie_weights=false"),
        ("pystd-char", " tie_weights=false"), ("shakespeare-char", " tie_weights=false"), ("vimdoc-char", " max_iters=2500"))],
    # the heads of layers 0-1 that sink on the Vim help files and on Python's code (a quarter of them: layer-1 heads
    # on the most recent newline or on the first keys) were not moved by the output head or by another seed; eight
    # layers, so that layer 1 is further from the last
    "depth-l": [("depth-scan", f"dataset={d} n_layer=8") for d in ("vimdoc-char", "pystd-char", "shakespeare-char")],
    # eight layers keep layers 0-1 clear on the Vim help files and Python's code, but on Tiny Shakespeare layer 0
    # widens to 3.00 +- 0.05 tokens and a quarter of layers 0-1 sink: seven, on all three and a second seed
    "depth-m": [("depth-scan", f"dataset={d} n_layer=7{o}") for d, o in (
        ("shakespeare-char", ""), ("vimdoc-char", ""), ("pystd-char", ""), ("shakespeare-char", " seed=2"))],
    # the preset as shipped on Tiny Shakespeare, and with eight layers on the Vim help files and Python's code,
    # two seeds each: the published runs
    "depth-scan": [("depth-scan", f"dataset={d}{o}") for d, o in (
        ("vimdoc-char", " n_layer=8"), ("pystd-char", " n_layer=8"), ("vimdoc-char", " n_layer=8 seed=2"),
        ("pystd-char", " n_layer=8 seed=2"), ("shakespeare-char", ""), ("shakespeare-char", " seed=2"))],
}


def scored(rows: list[dict], check: str) -> dict:
    """The final analysis row's clauses, and where every clause first held: step, tokens, seconds."""
    from glassgpt.analysis.dynamics import analysis_rows
    from glassgpt.analysis.phenomena import depth_scan_check, induction_text_check, kept

    judge = induction_text_check if check == "induction-text" else depth_scan_check
    found = analysis_rows(rows)
    if not found:
        return {"kept": False, "clauses": [["no analysis row: train with analysis_interval > 0", False]],
                "first_kept_step": None, "first_kept_seconds": None}
    clauses = judge(found[-1])
    first = next((r["step"] for r in found if kept(judge(r))), None)
    elapsed = {r["step"]: r["elapsed_s"] for r in rows if r.get("kind") == "train" and "elapsed_s" in r}
    later = [s for s in elapsed if first is not None and s >= first]
    return {"kept": kept(clauses), "clauses": [[text, ok] for text, ok in clauses], "first_kept_step": first,
            "first_kept_seconds": elapsed[min(later)] if later else None}


def final_scores(rows: list[dict]) -> dict:
    """The figures of the last analysis row that the recipes are judged on."""
    from glassgpt.analysis.dynamics import analysis_rows

    last = analysis_rows(rows)[-1] if analysis_rows(rows) else {}
    keys = ("step", "induction", "previous_token", "induction_circuit", "attention_distance", "sink_rate",
            "sink_share", "first_position_share", "icl_score")
    return {k: last[k] for k in keys if k in last}


def run_one(preset: str, overrides: list[str], runs_dir: Path, check: str) -> dict:
    """Train one configuration and score it: one row of the sweep. A run stopped by a signal (the
    command saves a checkpoint and exits) is scored as far as it got, with `stopped` set."""
    from glassgpt.cli import main as glassgpt

    out = Path(tempfile.mkdtemp(prefix="run-", dir=runs_dir)) / "run"
    load_before = list(os.getloadavg())
    cpu_before = time.process_time()
    elapsed = stopwatch()
    stopped = False
    with contextlib.redirect_stdout(io.StringIO()):  # the command as a user runs it, its log kept quiet
        try:
            glassgpt(["train", preset, *overrides, "--out", str(out)])
        except SystemExit as e:  # the command failed (its one line is on stderr) or was stopped
            if not (out / "metrics.jsonl").is_file():
                raise
            stopped = e.code != 0
    return {"preset": preset, "overrides": overrides, "check": check, "wall_seconds": round(elapsed(), 1),
            "cpu_seconds": round(time.process_time() - cpu_before, 1),  # on one thread: about an idle core's wall
            "load_before": load_before, "load_after": list(os.getloadavg()), "threads": torch.get_num_threads(),
            "stopped": stopped, **score_run(out, check)}


def score_run(run_dir: Path, check: str) -> dict:
    """What a run directory says: its config, how far it trained, its final loss and its scores."""
    config = json.loads((run_dir / "config.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    final = next((r for r in reversed(rows) if r.get("kind") == "final"), {})
    model, recipe = config["model"], config["train"]
    steps = final.get("step", max((r["step"] for r in rows if "step" in r), default=0))
    tokens_per_step = recipe["batch_size"] * model["block_size"] * recipe["grad_accum_steps"]
    row = {"config": {"model": model, "train": recipe}, "steps": steps, "tokens": steps * tokens_per_step,
           "train_seconds": final.get("train_seconds"), "analysis_seconds": final.get("analysis_seconds"),
           "val_loss": final.get("val_loss"), "run_dir": str(run_dir), **scored(rows, check), "scores": final_scores(rows)}
    row["first_kept_tokens"] = None if row["first_kept_step"] is None else row["first_kept_step"] * tokens_per_step
    return row


def describe(row: dict) -> str:
    verdict = "KEPT" if row["kept"] else "missed"
    first = "" if row["first_kept_step"] is None else f", first at step {row['first_kept_step']} ({row['first_kept_seconds']:.0f}s)"
    clauses = "; ".join(("ok " if ok else "NO ") + text for text, ok in row["clauses"])
    return (f"{row['preset']} {' '.join(row['overrides'])}: {verdict}{first} | {row['steps']} steps, "
            f"{row['tokens']:,} tokens, {row['wall_seconds']:.0f}s wall, load {row['load_before'][0]:.1f} | {clauses}")


def table(rows: list[dict]) -> str:
    """The sweep as a markdown table for the lab notebook: one line per run, in the order run."""
    lines = ["| recipe | overrides | steps | tokens | wall s (load) | CPU s | kept | first kept | figures |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        s = r["scores"]
        if r["check"] == "induction-text":
            c = s.get("induction_circuit") or {}
            figures = (f"L{c.get('layer')}H{c.get('head')}: ind {c.get('induction', 0):.2f}, pm {c.get('prefix_matching', 0):.2f}, "
                       f"abl {c.get('ablation_repeated', 0):+.3f} ± {c.get('ablation_repeated_se', 0):.3f}")
        else:
            figures = (f"dist L0 {s['attention_distance'][0]:.1f}; sink rate "
                       + " ".join(f"{v:.2f}" for v in s["sink_rate"])
                       + "; first-pos " + " ".join(f"{v:.2f}" for v in s["first_position_share"]))
        first = "-" if r["first_kept_step"] is None else f"step {r['first_kept_step']} ({r['first_kept_seconds']:.0f} s)"
        overrides = " ".join(o for o in r["overrides"] if not o.startswith("dataset="))
        cpu = f"{r['cpu_seconds']:.0f}" if r.get("cpu_seconds") is not None else "-"
        dataset = r["config"]["train"]["dataset"]
        lines.append(f"| {r['preset']} on {dataset} | `{overrides}` | {r['steps']:,} | {r['tokens'] / 1e6:.1f}M | "
                     f"{r['wall_seconds']:.0f} ({r['load_before'][0]:.1f}) | {cpu} | {'yes' if r['kept'] else 'no'} | {first} | "
                     f"{figures} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--grid", choices=sorted(GRIDS), help="a named grid of (preset, overrides)")
    what.add_argument("--preset", help="one preset (or TOML file), with --set overrides")
    what.add_argument("--score", type=Path, metavar="RUN_DIR",
                      help="score a run directory trained earlier (e.g. one stopped by hand) instead of training; "
                           "--set names the overrides it was trained with, for the row")
    parser.add_argument("--set", default="", help="key=value overrides for --preset, space-separated")
    parser.add_argument("--check", choices=CHECKS, help="which recipe's checks score the runs (default: the preset's name)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", type=Path, help="append one JSON line per run to this file")
    parser.add_argument("--runs", type=Path, help="where run directories go (default: a temporary folder, removed)")
    parser.add_argument("--publish", action="store_true",
                        help="write this invocation's runs as benchmarks/results/recipe-<check>-<time>.json")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results", help="where --publish writes")
    parser.add_argument("--lanes", type=int, default=1,
                        help="runs at once, each in its own process on --threads threads (2 lanes of 1 thread: a 2-core machine)")
    parser.add_argument("--skip", type=int, default=0, help="leave out the grid's first N runs (a sweep resumed)")
    parser.add_argument("--note", default="", help="free text kept with every row (e.g. 'machine shared')")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.score:
        return [record(score_existing(args.score, args.set, args.check or "induction-text", args.note), args.out)]
    specs = (GRIDS[args.grid] if args.grid else [(args.preset, args.set)])[args.skip:]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = args.runs or Path(tmp)
        runs_dir.mkdir(parents=True, exist_ok=True)
        jobs = [(preset, shlex.split(overrides), runs_dir, args.check or (preset if preset in CHECKS else "induction-text"))
                for preset, overrides in specs]
        with contextlib.ExitStack() as stack:
            if args.lanes == 1:
                results = (run_one(*job) for job in jobs)
            else:  # each lane a process of its own, started afresh (spawn), recorded in the grid's order
                lanes = stack.enter_context(ProcessPoolExecutor(args.lanes, mp_context=multiprocessing.get_context("spawn"),
                                                                initializer=torch.set_num_threads, initargs=(args.threads,)))
                results = (future.result() for future in [lanes.submit(run_one, *job) for job in jobs])
            for result in results:
                rows.append(record({**result, "note": args.note}, args.out))
        if args.publish:
            publish_recipe(rows, args.results)
    return rows


def record(row: dict, out: Path | None) -> dict:
    """Print a row's one-line summary and append it to `out` (JSON lines)."""
    print(describe(row), flush=True)
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return row


def score_existing(run_dir: Path, overrides: str, check: str, note: str) -> dict:
    """A row for a run trained outside this script, e.g. stopped by hand: its wall time is its last logged one."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    wall = max((r.get("wall_seconds") or r.get("elapsed_s") or 0 for r in rows), default=0)
    return {"preset": json.loads((run_dir / "config.json").read_text()).get("preset", check), "overrides": shlex.split(overrides),
            "check": check, "wall_seconds": round(wall, 1), "cpu_seconds": None, "load_before": list(os.getloadavg()),
            "load_after": list(os.getloadavg()), "threads": None, "stopped": not any(r.get("kind") == "final" for r in rows),
            "note": note, **score_run(run_dir, check)}


def publish_recipe(rows: list[dict], results: Path) -> Path:
    """The runs of one recipe as a benchmark record: the machine with its load (before the first run, after
    the last), whether it was shared, and per run the command, steps, tokens, wall and CPU seconds, scores."""
    from glassgpt.bench.machine import machine_with_load
    from glassgpt.bench.report import publish

    check = rows[-1]["check"]
    machine = machine_with_load(torch.device("cpu"), rows[0]["load_before"])
    busy = 0.5 * (os.cpu_count() or 1)  # a load average above half the cores: the runs shared the machine
    record = {"benchmark": f"recipe-{check}", "machine": machine,
              "contended": any(r["load_before"][0] > busy or r["load_after"][0] > busy for r in rows),
              "runs": [{"command": f"glassgpt train {r['preset']} {' '.join(r['overrides'])}".strip(),
                        **{k: v for k, v in r.items() if k != "run_dir"}} for r in rows]}
    return publish(record, results, f"recipe-{check}")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
