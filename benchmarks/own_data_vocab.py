"""What vocabulary for a small model on your own text: char, bpe:512 and bpe:4096 on cpu-baby.

The text is what every Debian machine has: /usr/share/common-licenses (14 licence texts
once symlinked duplicates are dropped, ~250 KB). For each tokenizer: `glassgpt prepare text
/usr/share/common-licenses --name licenses-<tok> --tokenizer <tok>` (the same documents, the
same validation document), then `glassgpt train cpu-baby dataset=licenses-<tok>
max_iters=<steps>` (vocab_size from the data, everything else cpu-baby's), and the final
whole-split validation loss converted to bits per byte of text (loss / ln 2 x tokens / bytes),
the one figure that compares tokenizers fairly.

Writes benchmarks/results/own-data-vocab-<date>.json with the machine described.
Run: python benchmarks/own_data_vocab.py [--steps 600] [--tokenizers char,bpe:512,bpe:4096]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from glassgpt.bench.timing import stopwatch

REPO = Path(__file__).resolve().parents[1]
LICENSES = Path("/usr/share/common-licenses")


def main(argv=None) -> dict:
    from safetensors.torch import load_file

    from glassgpt.bench.machine import machine_info
    from glassgpt.cli import main as glassgpt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, default=LICENSES, help="a file or folder of text")
    parser.add_argument("--steps", type=int, default=600, help="max_iters of each cpu-baby run")
    parser.add_argument("--tokenizers", default="char,bpe:512,bpe:4096")
    parser.add_argument("--extra", default="", help="more key=value overrides for every run, space-separated")
    parser.add_argument("--note", default="", help="free text saved with the result (e.g. 'machine shared')")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    info = machine_info(torch.device("cpu"))

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("GLASSGPT_DATA_DIR", str(Path(tmp) / "data"))
        for spec in args.tokenizers.split(","):
            name = "licenses-" + spec.replace(":", "")
            prepare = ["prepare", "text", str(args.text), "--name", name, "--tokenizer", spec]
            glassgpt(prepare)
            run = Path(tmp) / "runs" / name
            train = ["train", "cpu-baby", f"dataset={name}", f"max_iters={args.steps}", "device=cpu",
                     *args.extra.split(), "--out", str(run)]
            elapsed = stopwatch()
            glassgpt(train)
            seconds = elapsed()
            final = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                     if json.loads(line)["kind"] == "final"][-1]
            meta = json.loads((Path(os.environ["GLASSGPT_DATA_DIR"]) / name / "meta.json").read_text())
            config = json.loads((run / "config.json").read_text())
            params = sum(t.numel() for t in load_file(str(run / "model.safetensors")).values())
            rows.append({"tokenizer": spec, "vocab_size": config["model"]["vocab_size"], "parameters": params,
                         "tokens": meta["tokens"], "text_bytes": meta["text_bytes"],
                         "val_loss": final["val_loss"], "val_bits_per_byte": final["bits_per_byte"],
                         "train_seconds": seconds, "commands": [" ".join(["glassgpt", *prepare]),
                                                                " ".join(["glassgpt", *train[:-2]])]})
            print(f"{spec:<10} vocab {rows[-1]['vocab_size']:>5}  params {params:>9,}  val loss "
                  f"{final['val_loss']:.4f}  {final['bits_per_byte']:.4f} bits/byte  {seconds:.0f}s", flush=True)

    result = {"benchmark": "own-data-vocab", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "text": str(args.text), "steps": args.steps, "extra": args.extra, "note": args.note,
              "machine": info, "load_average_at_end": list(os.getloadavg()), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"own-data-vocab-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
