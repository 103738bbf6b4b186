"""bpe:N against GPT-2's BPE: how long training a `bpe:N` takes, and how fast each encodes.

Text: Tiny Shakespeare (from GLASSGPT_MIRROR or ../shared/data), cut into documents at
blank lines (speeches) and repeated to --megabytes for the encode timings.

Measured, the variants taking turns (`glassgpt.bench.timing.measure`):
- `train bpe:N`: `BPETokenizer.train` (Hugging Face `tokenizers`) on Tiny Shakespeare once
  (1.1 MB), for each N of --sizes;
- encode throughput, in tokens and MB of text per second, of the documents:
  `gpt2 (tiktoken) 1 thread` (`encode_ordinary`, one call per document), `gpt2 (tiktoken)
  batch` (`encode_ordinary_batch`, --threads threads), `bpe:N 1 thread` (`encode`, one call
  per document), `bpe:N batch` (`encode_batch`, the library's own thread pool: all usable
  cores; this is what `glassgpt prepare text` calls);
- tokens per byte of each tokenizer on the text (what a model pays per byte).

Writes benchmarks/results/tokenizers-<date>.json with the machine described; say with
--note when the machine was shared.
Run: python benchmarks/bench_tokenizers.py [--megabytes 4] [--sizes 512,4096,16384] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


def shakespeare_text() -> str:
    mirror = os.environ.get("GLASSGPT_MIRROR")
    path = Path(mirror) / "tinyshakespeare.txt" if mirror else SHAKESPEARE
    return path.read_text(encoding="utf-8")


def documents(text: str, megabytes: float) -> list[str]:
    speeches = [s + "\n\n" for s in text.split("\n\n") if s.strip()]
    copies = max(1, round(megabytes * 1e6 / sum(len(s) for s in speeches)))
    return speeches * copies


def main(argv=None) -> dict:
    from glassgpt.bench.machine import machine_info
    from glassgpt.bench.timing import measure
    from glassgpt.tokenizer import BPETokenizer, gpt2_encoding

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=4.0, help="text encoded per timing")
    parser.add_argument("--sizes", default="512,4096,16384", help="the N of bpe:N, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="tiktoken batch threads (tokenizers uses its own pool)")
    parser.add_argument("--note", default="", help="free text saved with the result (e.g. 'machine shared')")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    info = machine_info(torch.device("cpu"))

    text = shakespeare_text()
    docs = documents(text, args.megabytes)
    text_bytes = sum(len(d.encode()) for d in docs)

    trained: dict[int, BPETokenizer] = {}

    def train(n: int):
        def run():
            trained[n] = BPETokenizer.train(iter([text]), n)
        return run

    train_times = measure({f"train bpe:{n}": train(n) for n in sizes}, torch.device("cpu"),
                          repeats=args.repeats, warmup=0)

    gpt2 = gpt2_encoding()
    counts: dict[str, int] = {}

    def count(name, fn):
        def run():
            counts[name] = fn()
        return run

    variants = {
        "gpt2 (tiktoken) 1 thread": count("gpt2", lambda: sum(len(gpt2.encode_ordinary(d)) for d in docs)),
        f"gpt2 (tiktoken) batch, {args.threads} threads": count(
            "gpt2", lambda: sum(map(len, gpt2.encode_ordinary_batch(docs, num_threads=args.threads)))),
    }
    for n, tok in trained.items():
        variants[f"bpe:{n} 1 thread"] = count(f"bpe:{n}", lambda tok=tok: sum(len(tok.encode(d)) for d in docs))
        variants[f"bpe:{n} batch (tokenizers pool)"] = count(
            f"bpe:{n}", lambda tok=tok: sum(map(len, tok.encode_batch(docs))))
    encode_times = measure(variants, torch.device("cpu"), repeats=args.repeats, warmup=1)

    rows = []
    for name, seconds in train_times.items():
        rows.append({"case": name, "seconds": seconds, "best_s": min(seconds), "median_s": statistics.median(seconds),
                     "text_bytes": len(text.encode())})
        print(f"{name:<40} best {min(seconds):8.3f} s  median {statistics.median(seconds):8.3f} s", flush=True)
    for name, seconds in encode_times.items():
        key = "gpt2" if name.startswith("gpt2") else name.split()[0]
        tokens = counts[key]
        rows.append({"case": name, "seconds": seconds, "tokens": tokens, "text_bytes": text_bytes,
                     "best_tokens_per_s": tokens / min(seconds), "median_tokens_per_s": tokens / statistics.median(seconds),
                     "best_mb_per_s": text_bytes / 1e6 / min(seconds), "tokens_per_byte": tokens / text_bytes})
        print(f"{name:<40} {tokens:>10,} tokens  best {rows[-1]['best_tokens_per_s']:>12,.0f} tok/s  "
              f"{rows[-1]['best_mb_per_s']:6.1f} MB/s  {rows[-1]['tokens_per_byte']:.3f} tokens/byte", flush=True)

    result = {"benchmark": "tokenizers", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "text": f"Tiny Shakespeare ({len(text.encode()):,} bytes) for training; "
                      f"{len(docs):,} speeches, {text_bytes:,} bytes for encoding",
              "sizes": sizes, "repeats": args.repeats, "threads": args.threads, "note": args.note,
              "tokenizers_version": __import__("tokenizers").__version__,
              "tiktoken_version": __import__("tiktoken").__version__,
              "machine": info, "load_average_at_end": list(os.getloadavg()), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"tokenizers-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
