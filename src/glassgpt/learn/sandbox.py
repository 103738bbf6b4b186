"""Checking a learner's file in a child process, with a wall-time and a memory limit.

The child (`python -m glassgpt.learn.sandbox REQUEST`) builds the exercise's cases first, then
starts the clock, caps its address space (RLIMIT_AS, where the platform has it), imports the
learner's file and runs the check, and writes the result as JSON. What the learner's code prints
goes to a file the parent reads back. When time runs out, faulthandler writes where every thread
was and ends the child: the parent turns that into one sentence naming the learner's line.
"""

from __future__ import annotations

import faulthandler
import json
import linecache
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from glassgpt.learn.core import CheckResult, LearnerError, error_result, run_check

DEFAULT_TIME_LIMIT = 5.0  # seconds for the learner's code: the cases are a few KB each
DEFAULT_MEMORY_LIMIT = 2 * 2**30  # bytes the learner's code may add to the child's address space
STARTUP_ALLOWANCE = 120.0  # seconds for the child to import torch and build the cases on a busy machine
OUTPUT_TAIL = 2000  # characters of the learner's printed output kept in the result
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])  # the folder that holds the glassgpt package


def check_file(name: str, path: str | Path, time_limit: float = DEFAULT_TIME_LIMIT,
               memory_limit: int | None = DEFAULT_MEMORY_LIMIT) -> CheckResult:
    """Check the learner's file `path` against exercise `name` in a child process. A hang, an
    unbounded allocation or a crash comes back as a CheckResult with status "error"."""
    path = Path(path).resolve()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="glassgpt-learn-") as tmp:
        tmp = Path(tmp)
        request = {"exercise": name, "path": str(path), "time_limit": time_limit, "memory_limit": memory_limit,
                   "result": str(tmp / "result.json"), "dump": str(tmp / "dump.txt"), "output": str(tmp / "output.txt")}
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_PARENT, os.environ.get("PYTHONPATH")]))}
        try:
            child = subprocess.run([sys.executable, "-m", "glassgpt.learn.sandbox", json.dumps(request)],
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                                   timeout=time_limit + STARTUP_ALLOWANCE)
        except subprocess.TimeoutExpired:
            return error_result(name, f"the check did not finish within {time_limit + STARTUP_ALLOWANCE:.0f} s "
                                      "(the machine may be busy): try again", started)
        result = read_result(tmp / "result.json")
        if result is None:
            result = error_result(name, why_no_result(child, tmp / "dump.txt", path, time_limit, memory_limit), started)
        result.output = tail(tmp / "output.txt")
        result.seconds = time.perf_counter() - started
        return result


def read_result(path: Path) -> CheckResult | None:
    try:
        return CheckResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def tail(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-OUTPUT_TAIL:].strip()


def why_no_result(child: subprocess.CompletedProcess, dump: Path, path: Path, time_limit: float,
                  memory_limit: int | None) -> str:
    """One sentence for a child that ended without a result: out of time (naming the learner's line
    it was running), killed (out of memory) or crashed."""
    try:
        dumped = dump.read_text(encoding="utf-8", errors="replace")
    except OSError:
        dumped = ""
    if dumped.strip():
        at = running_line(dumped, path)
        return (f"your code did not finish within {time_limit:g} s" + (f"; it was running {at}" if at else "")
                + ": an endless loop? (if it is only slow, raise --time-limit)")
    if child.returncode == -signal.SIGKILL:
        limit = f" ({memory_limit / 2**30:.1f} GiB)" if memory_limit else ""
        return f"your code was killed, most likely for using more memory than the check allows{limit}"
    if child.returncode < 0:
        return f"your code crashed the Python process ({signal.Signals(-child.returncode).name})"
    last = (child.stderr or "").strip().splitlines()[-1:] or [f"exit status {child.returncode}"]
    return f"the check stopped without a result: {last[0]}"


def running_line(dumped: str, path: Path) -> str:
    """'mine.py:5 in layernorm: `while True:`' for the innermost frame of the learner's file in a
    faulthandler dump (most recent call first), or ''."""
    for m in re.finditer(r'File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<fn>\S+)', dumped):
        if Path(m.group("file")).resolve() == path:
            text = linecache.getline(str(path), int(m.group("line"))).strip()
            return f"{path.name}:{m.group('line')} in {m.group('fn')}" + (f": `{text}`" if text else "")
    return ""


# ---------------------------------------------------------------- the child

def limit_memory(extra: int | None) -> int | None:
    """Cap this process's address space at what it maps now plus `extra` bytes (Linux; elsewhere
    nothing is capped and None is returned)."""
    if extra is None:
        return None
    try:
        import resource

        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (mapped + extra, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ImportError, OSError, ValueError):
        return None
    return extra


def child_main(request: dict) -> None:
    import torch

    from glassgpt.learn.exercises import exercise
    from glassgpt.learn.stubs import load_functions

    torch.set_num_threads(1)
    ex = exercise(request["exercise"])
    cases = ex.cases()  # built, and torch's kernels warmed up, before the clock starts
    with open(request["output"], "w") as out, open(request["dump"], "w") as dump:
        sys.stdout.flush()
        os.dup2(out.fileno(), 1)  # the learner's prints (and anything torch says) go to the file
        os.dup2(out.fileno(), 2)
        memory = limit_memory(request["memory_limit"])
        faulthandler.dump_traceback_later(request["time_limit"], exit=True, file=dump)
        path = Path(request["path"])
        try:
            functions = load_functions(path, memory)
            result = run_check(ex, functions, source=str(path), where_from=path.name, cases=cases, memory_limit=memory)
        except LearnerError as e:
            result = error_result(ex.name, str(e))
        faulthandler.cancel_dump_traceback_later()
    target = Path(request["result"])
    target.with_suffix(".tmp").write_text(json.dumps(result.to_dict()), encoding="utf-8")
    os.replace(target.with_suffix(".tmp"), target)


if __name__ == "__main__":
    child_main(json.loads(sys.argv[1]))
