"""The learner's side of an exercise: the stub file (the reference's signatures and docstrings,
bodies left to write) and the loading of the file they wrote."""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import inspect
import textwrap
from pathlib import Path

from glassgpt.learn.core import Exercise, LearnerError, describe_failure, where

STUB_IMPORTS = "import math\n\nimport torch\nimport torch.nn.functional as F\n"


def function_stub(fn) -> str:
    """A function's `def` line and docstring as the reference has them, its body `raise NotImplementedError`."""
    source = textwrap.dedent(inspect.getsource(fn))
    node = ast.parse(source).body[0]
    lines = source.splitlines()
    docstring_end = node.body[0].end_lineno  # the reference's first statement is its docstring
    return "\n".join(lines[:docstring_end] + ["    raise NotImplementedError  # your code here"]) + "\n"


def stub_text(exercise: Exercise, filename: str = "mine.py") -> str:
    """The stub of an exercise: a module the learner fills in and checks."""
    header = (f'"""{exercise.title}: an exercise of glassgpt\'s track.\n\n'
              f"Write the function{'s' if len(exercise.functions) > 1 else ''} below, then check "
              f"{'them' if len(exercise.functions) > 1 else 'it'}:\n\n"
              f"    glassgpt learn check {exercise.name} {filename}\n\n"
              f"glassgpt computes the same thing in {exercise.glassgpt_code}.\n"
              '"""\n\n')
    body = "\n\n".join(function_stub(exercise.reference[name]) for name in exercise.functions)
    return header + STUB_IMPORTS + "\n\n" + body


def load_functions(path: str | Path, memory_limit: int | None = None) -> dict:
    """Import the learner's file and return its names. LearnerError, naming their line, when it does
    not parse or fails while being imported."""
    path = Path(path)
    name = f"glassgpt_learner_{path.stem}"
    loader = importlib.machinery.SourceFileLoader(name, str(path))  # whatever the file's suffix
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    try:
        loader.exec_module(module)
    except SyntaxError as e:
        raise LearnerError(f"{path.name} does not parse: {e.msg} at {where(e, str(path))}") from None
    except (Exception, SystemExit) as e:  # whatever the learner's module does at import
        raise describe_failure(e, f"importing {path.name}", str(path), memory_limit) from None
    return vars(module)
