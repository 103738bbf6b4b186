"""`glassgpt learn [stub NAME [--out FILE] | check NAME FILE]`: the exercise track (glassgpt.learn)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from glassgpt.errors import UsageError

HELP = "exercises: rebuild a GPT piece by piece, checked"
ACTIONS = ("list", "stub", "check")
DESCRIPTION = ("glassgpt learn lists the exercises and your progress; learn stub NAME [--out FILE] prints or writes "
               "an exercise's stub; learn check NAME FILE checks your file in a child process with a time and a "
               "memory limit: exit status 0 when it is right, 1 with the diagnosis when it is not, 2 for a usage "
               "error.")
MAX_TIME_LIMIT = 600.0


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_TIME_LIMIT:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_TIME_LIMIT:g} seconds, got {text}")
    return value


def mebibytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of MiB") from None
    if value < 64:
        raise argparse.ArgumentTypeError(f"must be at least 64 MiB, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", default="list", choices=ACTIONS, metavar="ACTION",
                        help="list (the default): the exercises and your progress; stub: an exercise's stub; "
                             "check: check your file")
    parser.add_argument("name", nargs="?", default=None, metavar="NAME", help="stub, check: the exercise")
    parser.add_argument("file", nargs="?", default=None, type=Path, metavar="FILE", help="check: your Python file")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="stub: write the stub to this new file instead of printing it (never overwrites)")
    parser.add_argument("--time-limit", type=seconds, default=5.0, metavar="SECONDS",
                        help="check: seconds your code may run")
    parser.add_argument("--memory-limit", type=mebibytes, default=2048, metavar="MIB",
                        help="check: MiB your code may allocate")


def run(args: argparse.Namespace) -> None:
    if args.action == "list":
        if args.name or args.file or args.out:
            raise UsageError("glassgpt learn lists the exercises; use learn stub NAME or learn check NAME FILE")
        print(listing())
    elif args.action == "stub":
        write_stub(args.name, args.out, args.file)
    else:
        check_and_record(args.name, args.file, args.time_limit, args.memory_limit * 2**20)


def listing() -> str:
    from glassgpt.learn.exercises import NAMES, TITLES
    from glassgpt.learn.progress import load_progress, progress_file

    progress = load_progress()
    width = max(map(len, NAMES))
    lines = ["Rebuild a GPT piece by piece; each piece is checked against glassgpt's own code.", "",
             f"  #  {'exercise':<{width}}  {'your last check':<22}  what you write"]
    for i, name in enumerate(NAMES, 1):
        seen = progress.get(name)
        state = "-" if seen is None else {"passed": "right", "wrong": "wrong", "error": "did not run"}[seen["status"]]
        if seen and seen["status"] != "passed" and seen.get("passed_at"):
            state += " (right before)"
        lines.append(f"{i:>3}  {name:<{width}}  {state:<22}  {TITLES[name]}")
    done = sum(1 for name in NAMES if progress.get(name, {}).get("status") == "passed")
    lines += ["", f"{done} of {len(NAMES)} right (progress in {progress_file()}).",
              "Start one with: glassgpt learn stub NAME --out NAME.py, then glassgpt learn check NAME NAME.py"]
    return "\n".join(lines)


def write_stub(name: str | None, out: Path | None, extra: Path | None) -> None:
    from glassgpt.learn.exercises import exercise
    from glassgpt.learn.stubs import stub_text

    if name is None or extra is not None:
        raise UsageError("learn stub takes one exercise: glassgpt learn stub NAME [--out FILE]")
    text = stub_text(exercise(name), out.name if out else f"{name}.py")
    if out is None:
        sys.stdout.write(text)
        return
    if out.exists() or out.is_symlink():
        raise UsageError(f"{out} already exists: choose another --out (your work there is left as it is)")
    with open(out, "x", encoding="utf-8") as f:  # "x": never over a file that appeared meanwhile
        f.write(text)
    print(f"wrote the {name} stub to {out}; check it with: glassgpt learn check {name} {out}")


def check_and_record(name: str | None, file: Path | None, time_limit: float, memory_limit: int) -> None:
    from glassgpt.learn.checking import check
    from glassgpt.learn.progress import record_progress

    if name is None or file is None:
        raise UsageError("learn check needs an exercise and your file: glassgpt learn check NAME FILE")
    result = check(name, file, time_limit=time_limit, memory_limit=memory_limit)
    print(result)
    record_progress(result, file.resolve())
    if not result.passed:
        sys.exit(1)
