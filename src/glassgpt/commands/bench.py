"""`glassgpt bench [WHAT]`: the design's trade-offs measured side by side, as JSON."""

from __future__ import annotations

import sys
from pathlib import Path

from glassgpt.commands.options import add_device, positive_int

HELP = "benchmark the design's trade-offs side by side"


def add_arguments(parser) -> None:
    parser.add_argument("what", nargs="?", default="all", metavar="WHAT",
                        help="all, attention, layernorm, positions, hooks, precision, compile, kvcache, transformers, "
                             "inference, scaling, mfu or train")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and few repeats (seconds, not minutes)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks") / "results", help="folder for the JSON (and PNG)")
    add_device(parser)
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (inductor, eager, aot_eager)")
    parser.add_argument("--note", default="", help="free text stored in the JSON settings, e.g. 'machine was shared'")
    parser.add_argument("--run", type=Path, default=None, metavar="RUN_DIR",
                        help="a trained run: the inference suite also measures half precision's agreement on it")


def run(args) -> None:
    from glassgpt.bench import format_table, run as run_suite

    path, result = run_suite(args.what, quick=args.quick, out_dir=args.out, device=args.device, threads=args.threads,
                             compile_backend=args.compile_backend, notes=args.note, run_dir=args.run,
                             log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(result))
    print(f"results written to {path}")
