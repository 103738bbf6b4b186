"""`glassgpt circuit RUN_DIR --task induction|repeat | --pairs FILE`: the circuit of a task, found by EAP-IG and
measured by patching (circuit.json, circuit.png, circuit.html)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from glassgpt.commands.options import add_device, add_dtype, add_run_dir, capped_int, float_arg, positive_int, seed_int

HELP = "find the circuit of a task in a run's model (EAP-IG), measure its faithfulness by patching"
DESCRIPTION = ("Scores every edge of the model's graph (embeddings, heads with their query, key and value inputs, "
               "MLPs, logits) by EAP-IG on pairs of clean and corrupted prompts, checks the scores against exact "
               "patching of each edge, measures the faithfulness of the top edges by patched forward passes, and "
               "writes RUN_DIR/circuit/: circuit.json, circuit.png and circuit.html (the graph view).")
METRICS = ("loss", "logit-diff")  # glassgpt.circuits.tasks.METRICS, without importing torch


def add_arguments(parser) -> None:
    add_run_dir(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", choices=("induction", "repeat"), default=None,
                        help="induction: repeated random tokens against unrepeated; repeat: spans of the run's "
                             "validation text that repeat, against the same with the first occurrence replaced")
    source.add_argument("--pairs", type=Path, default=None, metavar="FILE",
                        help='JSON lines: {"clean": ..., "corrupted": ..., "answer": ..., "wrong": ...} '
                             "(docs: How-to, Find a circuit)")
    parser.add_argument("--metric", choices=METRICS, default=None,
                        help="loss on the predicted tokens, or logit(answer) - logit(wrong) (default: logit-diff "
                             "for pairs with a wrong token, else loss)")
    parser.add_argument("--out", type=Path, default=None, help="folder to write (default: RUN_DIR/circuit)")
    parser.add_argument("--target", type=float_arg, default=0.8,
                        help="the faithfulness the smallest circuit must reach, in (0, 1]")
    parser.add_argument("--steps", type=capped_int(100), default=5,
                        help="integrated-gradient steps of EAP-IG (1: plain EAP)")
    parser.add_argument("--num-pairs", type=capped_int(4096), default=32, help="pairs of the built-in task")
    parser.add_argument("--span", type=positive_int, default=8, help="repeat: tokens in the repeated span")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the built-in task's random tokens")
    add_device(parser)
    add_dtype(parser)


def run(args) -> None:
    from glassgpt.circuits.job import CIRCUIT_FILES, find_circuit
    from glassgpt.device import resolve_device

    out = args.out or args.run_dir / "circuit"
    record = find_circuit(args.run_dir, task=args.task, pairs=args.pairs, out=out, target=args.target,
                          steps=args.steps, n_pairs=args.num_pairs, span=args.span, seed=args.seed,
                          metric=args.metric, device=str(resolve_device(args.device)), dtype=args.dtype)
    for line in record["summary"].splitlines():
        print(textwrap.fill(line, width=100) + "\n")
    print(f"circuit written to {out} ({', '.join(CIRCUIT_FILES)}); open {out / 'circuit.html'}")
