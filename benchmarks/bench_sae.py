"""Sparse autoencoders on a run's activations: training tokens/s and quality at a fixed budget.

Collects `--tokens` activations of `--hook` from the run's training split once (the same
rows for every trainer), trains glassgpt's TopK SAE on them for one pass, and evaluates
it on the validation split with `glassgpt.sae.evaluate_sae` (L0, FVU, CE loss recovered,
dead features). With `--saelens-python PATH` (a Python with `sae-lens` installed; it is
kept out of glassgpt's own environment), SAELens's TopK training SAE is trained on the
very same rows in that interpreter, its weights are loaded back into glassgpt's SAE class
(the same function: TopK of ReLU((x - b_dec) W_enc + b_enc)) and evaluated by the same code.

Writes benchmarks/results/sae-<date>.json with the machine's description.
Run: python benchmarks/bench_sae.py --run runs/quickstart --hook blocks.2.resid_post [--saelens-python /tmp/sl/bin/python]
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from glassgpt.bench.machine import machine_info
from glassgpt.bench.timing import stopwatch, time_call
from glassgpt.checkpoint import load_run
from glassgpt.data import TokenDataset, eval_windows
from glassgpt.sae import SAE, SAEConfig, SAETrainConfig, ActivationStream, evaluate_sae, train_sae

SAELENS_SCRIPT = Path(__file__).with_name("saelens_topk.py")


def collect(model, data, hook: str, tokens: int, batch_tokens: int, seed: int) -> torch.Tensor:
    """`tokens` rows of the hook's activation, in the order glassgpt's stream hands them out."""
    stream = ActivationStream(model, data, hook, batch_tokens=batch_tokens, seed=seed)
    batches = stream.batches()
    return torch.cat([next(batches) for _ in range(tokens // batch_tokens)])


def train_glassgpt(rows: torch.Tensor, config: SAEConfig, batch_tokens: int, lr: float, seed: int) -> SAE:
    sae = SAE(config, generator=torch.Generator().manual_seed(seed))
    steps = rows.size(0) // batch_tokens
    train_sae((rows[i * batch_tokens: (i + 1) * batch_tokens] for i in range(steps)), sae,
              SAETrainConfig(steps=steps, lr=lr))
    return sae


def train_saelens(python: str, rows: torch.Tensor, config: SAEConfig, batch_tokens: int, lr: float,
                  seed: int) -> tuple[SAE, float, str]:
    """SAELens's TopK SAE on the same rows, in its own interpreter: (the SAE, seconds, its version)."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(rows, Path(tmp) / "rows.pt")
        spec = {"d_in": config.d_in, "width": config.width, "k": config.k, "batch_tokens": batch_tokens, "lr": lr,
                "seed": seed, "rows": str(Path(tmp) / "rows.pt"), "out": str(Path(tmp) / "weights.pt")}
        done = subprocess.run([python, str(SAELENS_SCRIPT), json.dumps(spec)], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"SAELens failed: {done.stderr.strip()[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        weights = torch.load(Path(tmp) / "weights.pt", weights_only=True)
    sae = SAE(config)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(sae, name).copy_(weights[name])
    return sae, result["seconds"], result["version"]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--hook", default="blocks.2.resid_post")
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-windows", type=int, default=64)
    parser.add_argument("--saelens-python", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)

    model, tokenizer, run_config = load_run(args.run)
    for p in model.parameters():
        p.requires_grad_(False)
    dataset = TokenDataset.load(run_config.train.dataset)
    elapsed = stopwatch()
    rows = collect(model, dataset.split("train"), args.hook, args.tokens, args.batch_size, args.seed)
    collect_seconds = elapsed()
    config = SAEConfig(d_in=rows.size(1), width=args.width or 8 * rows.size(1), k=args.k)
    windows, targets = next(eval_windows(dataset.split("val"), model.config.block_size, args.eval_windows,
                                         max_batches=1))
    results = {}
    trained = {}
    seconds = time_call(lambda: trained.__setitem__("sae", train_glassgpt(rows, config, args.batch_size, args.lr,
                                                                             args.seed)), torch.device("cpu"))
    results["glassgpt"] = {"train_seconds": seconds, "tokens_per_s": rows.size(0) / seconds,
                           **evaluate_sae(model, trained["sae"], args.hook, windows, targets)}
    if args.saelens_python:
        sae, seconds, version = train_saelens(args.saelens_python, rows, config, args.batch_size, args.lr, args.seed)
        results[f"sae-lens {version}"] = {"train_seconds": seconds, "tokens_per_s": rows.size(0) / seconds,
                                          **evaluate_sae(model, sae, args.hook, windows, targets)}
    record = {
        "suite": "sae", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(torch.device("cpu")), "note": args.note,
        "command": "python benchmarks/bench_sae.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {"run": str(args.run), "hook": args.hook, "tokens": rows.size(0), "batch_tokens": args.batch_size,
                     "width": config.width, "k": config.k, "lr": args.lr, "collect_seconds": collect_seconds,
                     "threads": torch.get_num_threads()},
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"sae-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(record, indent=2))
    for name, r in results.items():
        print(f"{name:>20}: {r['tokens_per_s']:>10,.0f} tokens/s  FVU {r['fvu']:.3f}  CE recovered "
              f"{r['ce_loss_recovered']:.3f}  L0 {r['l0']:.1f}  dead {r['dead_features']}/{r['width']}")
    print(f"results written to {path}")
    return path


if __name__ == "__main__":
    main()
