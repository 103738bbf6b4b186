"""How long the attention view takes to answer a hover, in headless Chromium: the time from
the `mouseover` on a token to the end of the handler that re-shades every key token, for the
quickstart shape (4 layers, 4 heads, context 64) and, with `--long`, the GPT-2 head count at
1024 tokens (12 x 12). The page must answer within 100 ms.

    python benchmarks/view_hover.py [--long] [--repeats 20] [--chromium /usr/bin/chromium]

Each shape: a random model's view saved to a file, opened offline, then `--repeats` hovers
over positions spread along the text; the median and the slowest are recorded with the page's
load time. Writes benchmarks/results/view-hover-<time>.json with the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = {"quickstart": dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128),
          "gpt2-heads-1024": dict(vocab_size=65, block_size=1024, n_layer=12, n_head=12, n_embd=96)}
TINY = dict(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=16)
LIMIT_MS = 100.0

HOVERS = """(positions) => positions.map(i => {
    const t = performance.now();
    document.querySelector(`.gg-attention [data-pos='${i}']`)
        .dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
    return performance.now() - t; })"""


def measure(browser, label: str, shape: dict, repeats: int, folder: Path) -> dict:
    from glassgpt.analysis import view
    from glassgpt.bench.timing import stopwatch
    from glassgpt.config import GPTConfig
    from glassgpt.model import GPT

    torch.manual_seed(0)
    model = GPT(GPTConfig(**shape)).eval()
    T = shape["block_size"]
    ids = torch.randint(0, shape["vocab_size"], (T,), generator=torch.Generator().manual_seed(0))
    path = view(model, ids).save(folder / f"{label}.html")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:", "blob:"))
               else r.abort())
    clock = stopwatch()
    page.goto(path.as_uri())
    page.wait_for_selector(".gg-attention [data-pos='0']")
    load_s = clock()
    positions = [round(k * (T - 1) / max(repeats - 1, 1)) for k in range(repeats)]
    times = page.evaluate(HOVERS, positions)
    page.close()
    return {"shape": label, "layers": shape["n_layer"], "heads": shape["n_head"], "tokens": T,
            "page_bytes": path.stat().st_size, "load_s": round(load_s, 3), "hovers": len(times),
            "hover_ms_median": round(statistics.median(times), 2), "hover_ms_max": round(max(times), 2),
            "limit_ms": LIMIT_MS, "within_limit": max(times) < LIMIT_MS}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="also the GPT-2 head count at 1024 tokens")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--tiny", action="store_true", help=f"one tiny shape ({TINY}): a smoke test")
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from glassgpt.bench.machine import machine_with_load
    from glassgpt.bench.report import publish

    shapes = {"tiny": TINY} if args.tiny else {k: v for k, v in SHAPES.items() if args.long or k == "quickstart"}
    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"])
        rows = [measure(browser, label, shape, args.repeats, Path(tmp)) for label, shape in shapes.items()]
        browser.close()
    record = {
        "benchmark": "view-hover", "what": "attention view: mouseover on a token to the end of its handler",
        "browser": f"Chromium at {args.chromium}, headless", "rows": rows,
        "machine": machine_with_load(torch.device("cpu"), load_before),
        "note": args.note,
    }
    publish(record, args.out, "view-hover")
    return record


if __name__ == "__main__":
    main()
