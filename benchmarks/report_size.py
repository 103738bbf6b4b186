"""The size of `report.html` for a prompt as long as the model's context: the attention view
stores every head's causal half at 8 bits, compressed, so the page grows with layers x heads
x T^2 / 2 and with how much the attention spreads (diffuse heads compress worse).

    GLASSGPT_MIRROR=../shared/data python benchmarks/report_size.py [--run RUN ...] [--tiny]

Always measures the GPT-2 124M shape (12 layers, 12 heads, 768 wide, context 1024, GPT-2's
vocabulary) with random weights, whose heads are nearly uniform; each `--run` adds a trained
run at its own context. The prompt is the first `block_size` tokens of Tiny Shakespeare's
last tenth in the run's tokenizer; `glassgpt analyze RUN --windows 1 --prompt TEXT` writes the
report in a fresh process. Recorded per run: the page's bytes, the bytes of the embedded
attention patterns, the causal half's raw bytes at 8 bits and their ratio, and the time.
Writes benchmarks/results/report-size-<time>.json with the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
TINY = dict(n_layer=1, n_head=2, n_embd=32, block_size=64)  # --tiny: the same pipeline in seconds (a smoke test)
LIMIT_MB = {"gpt2-shape": 15.0}  # what the page must stay under


def build_gpt2_shape(run_dir: Path, tiny: bool) -> Path:
    from glassgpt.checkpoint import save_run
    from glassgpt.config import GPTConfig, RunConfig, TrainConfig
    from glassgpt.model import GPT
    from glassgpt.tokenizer import get_tokenizer

    torch.manual_seed(0)
    config = GPTConfig.preset("gpt2")
    if tiny:
        config = dataclasses.replace(config, **TINY)
    save_run(run_dir, GPT(config), get_tokenizer("gpt2"), RunConfig(config, TrainConfig(dataset="shakespeare")))
    return run_dir


def context_long_prompt(run_dir: Path) -> tuple[str, int]:
    """The first block_size tokens of Tiny Shakespeare's last tenth, as text, and their count."""
    from glassgpt.checkpoint import read_config, read_tokenizer
    from glassgpt.data.sources import TINY_SHAKESPEARE, find_raw_file

    run_config, raw = read_config(run_dir)
    tokenizer = read_tokenizer(run_dir, raw)
    text = find_raw_file(TINY_SHAKESPEARE).read_text(encoding="utf-8")
    tail = text[int(len(text) * 0.9):]
    ids = tokenizer.encode(tail[: 8 * run_config.model.block_size])[: run_config.model.block_size]
    prompt = tokenizer.decode(ids)
    while len(tokenizer.encode(prompt)) > run_config.model.block_size:  # a decode-encode round trip may split
        prompt = prompt[:-1]
    return prompt, len(tokenizer.encode(prompt))


def measure(label: str, run_dir: Path, out: Path, threads: int) -> dict:
    from glassgpt.analysis.view import decode_view_data, embedded_view_data
    from glassgpt.bench.timing import stopwatch

    prompt, tokens = context_long_prompt(run_dir)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    clock = stopwatch()
    result = subprocess.run([sys.executable, "-m", "glassgpt", "analyze", str(run_dir), "--windows", "1",
                             "--prompt", prompt, "--out", str(out)], capture_output=True, text=True, env=env)
    wall = clock()
    if result.returncode != 0:
        sys.exit(f"analyze {run_dir} failed:\n{result.stderr[-3000:]}")
    page = (out / "report.html").read_text(encoding="utf-8")
    data = embedded_view_data(page)
    L, H, T = data["L"], data["H"], data["T"]
    raw = L * H * T * (T + 1) // 2
    decoded = decode_view_data(page)["patterns"]
    record = {
        "run": label, "layers": L, "heads": H, "tokens": T, "prompt_tokens_asked": tokens,
        "page_bytes": len(page.encode("utf-8")), "page_mb": round(len(page.encode("utf-8")) / 1e6, 2),
        "pattern_payload_bytes": len(data["patterns"]), "causal_half_bytes_8bit": raw,
        "payload_over_raw": round(len(data["patterns"]) / raw, 4),
        "weights_at_zero": round(float((decoded[:, :, torch.tril_indices(T, T)[0], torch.tril_indices(T, T)[1]]
                                        == 0).float().mean()), 4),
        "analyze_wall_s": round(wall, 1),
    }
    if label in LIMIT_MB:
        record["limit_mb"] = LIMIT_MB[label]
        record["under_limit"] = record["page_mb"] < LIMIT_MB[label]
    return record


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, action="append", default=[], help="a trained run to measure too")
    parser.add_argument("--label", action="append", default=[], help="what each --run is, in words (in order)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help=f"the GPT-2 vocabulary on a tiny shape ({TINY}): a smoke test")
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from glassgpt.bench.machine import machine_with_load
    from glassgpt.bench.report import publish

    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("GLASSGPT_DATA_DIR", str(tmp / "data"))
        runs = {"gpt2-shape": build_gpt2_shape(tmp / "gpt2-shape", args.tiny)}
        labels = args.label + [str(path) for path in args.run[len(args.label):]]
        runs.update(dict(zip(labels, args.run)))
        rows = [measure(label, path, tmp / f"report-{i}", args.threads) for i, (label, path) in enumerate(runs.items())]
    record = {
        "benchmark": "report-size",
        "command": "glassgpt analyze RUN --windows 1 --prompt <block_size tokens of Tiny Shakespeare>",
        "gpt2_shape": (f"tiny shape {TINY}, GPT-2 vocabulary, random weights" if args.tiny else
                       "GPT-2 124M shape, random weights (12 layers, 12 heads, 768 wide, context 1024, vocab 50257)"),
        "rows": rows, "threads": args.threads,
        "machine": machine_with_load(torch.device("cpu"), load_before),
        "note": args.note,
    }
    publish(record, args.out, "report-size")
    return record


if __name__ == "__main__":
    main()
