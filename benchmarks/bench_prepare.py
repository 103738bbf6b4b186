"""How fast `glassgpt prepare` turns text into GPT-2 BPE tokens: one process against a
pool of worker processes, on Tiny Shakespeare repeated to a few MB.

Measured (tokens per second, best and median of --repeats runs):
- `tokenize 1 process`: the prepare pipeline's tokenizer (`tokenize_documents`,
  one `encode_ordinary` call per document) in this process;
- `tokenize N workers`: the same pipeline with a `multiprocessing` pool of N workers
  (waves of documents, `imap` over consecutive batches, order kept);
- `tiktoken threads`: for reference, tiktoken's own `encode_ordinary_batch` with N threads;
- `prepare fineweb-edu, W workers`: the whole `prepare("fineweb-edu")` from a local jsonl
  file (reading through `datasets`, tokenizing, writing the .bin files).

Writes benchmarks/results/prepare-<time>.json with the machine's description.
Run: python benchmarks/bench_prepare.py [--megabytes 4] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch

from glassgpt.bench.machine import machine_with_load
from glassgpt.bench.report import publish
from glassgpt.bench.timing import stopwatch

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


def shakespeare_documents(megabytes: float) -> tuple[list[str], int]:
    """Tiny Shakespeare cut into documents at blank lines (speeches), repeated to `megabytes`."""
    mirror = os.environ.get("GLASSGPT_MIRROR")
    path = Path(mirror) / "tinyshakespeare.txt" if mirror else SHAKESPEARE
    speeches = [s for s in path.read_text(encoding="utf-8").split("\n\n") if s.strip()]
    size = sum(len(s) for s in speeches)
    copies = max(1, round(megabytes * 1e6 / size))
    return speeches * copies, copies


def timed(fn, repeats: int) -> tuple[list[float], int]:
    """Seconds of each of `repeats` calls of fn, and the tokens the last one made."""
    seconds, tokens = [], 0
    for _ in range(repeats):
        elapsed = stopwatch()
        tokens = fn()
        seconds.append(elapsed())
    return seconds, tokens


def run_pipeline(docs: list[str], workers: int) -> int:
    from glassgpt.data.fineweb import tokenize_documents

    return sum(len(batch) for batch in tokenize_documents(iter(docs), workers=workers))


def run_tiktoken_threads(docs: list[str], threads: int) -> int:
    from glassgpt.tokenizer import gpt2_encoding

    return sum(len(ids) + 1 for ids in gpt2_encoding().encode_ordinary_batch(docs, num_threads=threads))


def run_prepare(jsonl_dir: Path, data_dir: Path, workers: int, max_tokens: int) -> int:
    from glassgpt.data import prepare

    os.environ["GLASSGPT_MIRROR"] = str(jsonl_dir)
    os.environ["GLASSGPT_DATA_DIR"] = str(data_dir)
    path = prepare("fineweb-edu", max_tokens=max_tokens, force=True, workers=workers)
    meta = json.loads((path / "meta.json").read_text())
    return sum(meta["tokens"].values())


def versions() -> dict:
    """The versions of the tokenizing libraries, beside the machine record."""
    import numpy
    import tiktoken

    return {"numpy": numpy.__version__, "tiktoken": tiktoken.__version__}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--note", default="", help="free text saved with the result (e.g. 'machine shared')")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    docs, copies = shakespeare_documents(args.megabytes)
    text_bytes = sum(len(d.encode()) for d in docs)
    cases = {
        "tokenize 1 process": lambda: run_pipeline(docs, 1),
        f"tokenize {args.workers} workers": lambda: run_pipeline(docs, args.workers),
        f"tiktoken {args.workers} threads (reference)": lambda: run_tiktoken_threads(docs, args.workers),
    }
    with tempfile.TemporaryDirectory() as tmp:
        jsonl_dir = Path(tmp) / "mirror"
        (jsonl_dir / "fineweb-edu").mkdir(parents=True)
        with open(jsonl_dir / "fineweb-edu" / "docs.jsonl", "w") as f:
            for d in docs:
                f.write(json.dumps({"text": d}) + "\n")
        cap = 10 * run_pipeline(docs[:2000], 1) * len(docs) // 2000  # above the total: val is ~10%, nothing cut
        for workers in (1, args.workers):
            cases[f"prepare fineweb-edu, {workers} worker(s)"] = (
                lambda w=workers: run_prepare(jsonl_dir, Path(tmp) / "data", w, cap))
        rows = []
        for name, fn in cases.items():
            fn()  # warm-up: the BPE tables, worker start, `datasets` import
            seconds, tokens = timed(fn, args.repeats)
            rows.append({"case": name, "tokens": tokens, "seconds": seconds,
                         "best_tokens_per_s": tokens / min(seconds),
                         "median_tokens_per_s": tokens / statistics.median(seconds)})
            print(f"{name:<40} {tokens:>10,} tokens  best {rows[-1]['best_tokens_per_s']:>12,.0f} tok/s  "
                  f"median {rows[-1]['median_tokens_per_s']:>12,.0f} tok/s", flush=True)

    base = rows[0]["best_tokens_per_s"]
    print(f"\n{'case':<40} {'best tok/s':>12} {'speedup':>8}")
    for row in rows:
        row["speedup_vs_1_process"] = row["best_tokens_per_s"] / base
        print(f"{row['case']:<40} {row['best_tokens_per_s']:>12,.0f} {row['speedup_vs_1_process']:>7.2f}x")

    result = {"benchmark": "prepare",
              "text": f"Tiny Shakespeare x{copies}, "
                      f"{len(docs):,} documents, {text_bytes:,} bytes",
              "workers": args.workers, "repeats": args.repeats, "note": args.note,
              "machine": {**machine_with_load(torch.device("cpu"), load_before), **versions()}, "rows": rows}
    publish(result, args.out, "prepare")
    return result


if __name__ == "__main__":
    main()
