"""`check(name, path_or_module)`: the exercise track's one entry point from Python."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

from glassgpt.errors import UsageError
from glassgpt.learn.core import CheckResult, run_check
from glassgpt.learn.exercises import exercise
from glassgpt.learn.sandbox import DEFAULT_MEMORY_LIMIT, DEFAULT_TIME_LIMIT, check_file


def check(name: str, path_or_module: str | os.PathLike | ModuleType | Mapping[str, Any] | Any, *,
          time_limit: float = DEFAULT_TIME_LIMIT, memory_limit: int | None = DEFAULT_MEMORY_LIMIT) -> CheckResult:
    """Check the learner's code for exercise `name`; `print(result)` shows the diagnosis.

    A path runs the file in a child process with a time limit (seconds) and a memory limit (bytes),
    so a hang or an unbounded allocation is one clear message. A module, a dict of functions or any
    object with them as attributes (a notebook's) is checked in this process, without limits."""
    ex = exercise(name)
    if isinstance(path_or_module, (str, os.PathLike)):
        path = Path(path_or_module)
        if not path.is_file():
            raise UsageError(f"{path} {'is a folder' if path.is_dir() else 'does not exist'}: give the Python file "
                             f"you wrote (glassgpt learn stub {name} --out {name}.py writes one to start from)")
        if time_limit <= 0:
            raise UsageError(f"the time limit must be a positive number of seconds, got {time_limit}")
        return check_file(name, path, time_limit, memory_limit)
    if isinstance(path_or_module, ModuleType):
        functions, where_from = vars(path_or_module), f"module {path_or_module.__name__}"
    elif isinstance(path_or_module, Mapping):
        functions, where_from = path_or_module, "your functions"
    else:
        functions = {fn: getattr(path_or_module, fn) for fn in ex.functions if hasattr(path_or_module, fn)}
        where_from = type(path_or_module).__name__
    return run_check(ex, functions, where_from=where_from)
