"""The exercise track's machinery: what an exercise is, how a learner's functions are called, and
how a check turns their outputs into a diagnosis.

An `Exercise` holds its reference functions (the solution, whose signatures and docstrings are
the stub), its cases (inputs and the outputs glassgpt's own code or the reference gives) and its
catalogue of `Mistake`s. Each mistake is a named mutation of the reference with a detector: a
function that calls the learner's code on inputs of its own choosing and returns one sentence
saying what is wrong and where to look, or None. Detectors read a property of the learner's
outputs (the weight above the diagonal, the scale of the scores, the feature a head receives), so
two mistakes in one file are both named.

`run_check(exercise, functions)` runs in whatever process holds the learner's code:
`glassgpt.learn.sandbox` runs it in a child process with a time and a memory limit.
"""

from __future__ import annotations

import inspect
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

PACKAGE_DIR = str(Path(__file__).resolve().parents[1])  # glassgpt's own files: never shown to the learner
TORCH_DIR = str(Path(torch.__file__).resolve().parent)


# ---------------------------------------------------------------- what an exercise is made of

@dataclass(frozen=True)
class Case:
    """One call of a learner's function and the output it must give."""

    label: str  # what the case tries: "random input", "length 1", "a glassgpt model's weights"
    function: str
    args: tuple
    expected: Any  # a tensor, a tuple of tensors, or a number
    atol: float = 1e-5
    rtol: float = 1e-4


@dataclass(frozen=True)
class Mistake:
    """A common mistake: `mutant` is the reference with it ({function name: function}; the test
    suite checks each one is diagnosed), `detect(learner)` the sentence that names it, or None."""

    name: str
    summary: str
    mutant: Mapping[str, Callable]
    detect: Callable[["Learner"], str | None]


def catalogue(function: str, *rows: tuple) -> tuple[Mistake, ...]:
    """The mistakes of one function of an exercise, from rows (name, summary, mutant, detect)."""
    return tuple(Mistake(name, summary, {function: mutant}, detect) for name, summary, mutant, detect in rows)


@dataclass(frozen=True)
class Exercise:
    name: str
    title: str
    reference: Mapping[str, Callable]  # the solution, function by function, in the stub's order
    outputs: Mapping[str, tuple[str, ...]]  # the names of what each function returns (one name: one tensor)
    cases: Callable[[], list[Case]]
    mistakes: tuple[Mistake, ...]
    glassgpt_code: str  # where glassgpt computes the same thing, e.g. "glassgpt.model.LayerNorm"

    @property
    def functions(self) -> tuple[str, ...]:
        return tuple(self.reference)


# ---------------------------------------------------------------- calling the learner's code

class LearnerError(Exception):
    """The learner's code failed (an exception, a missing function, a wrong signature): the
    message is for the learner, in one paragraph, and never names glassgpt's internals."""


class LearnerMemoryError(LearnerError):
    """The learner's code asked for more memory than it may have."""


def clone_args(args: tuple) -> tuple:
    """Tensors copied (a learner's in-place edit must not reach the expected outputs); lists of
    tensors too; anything else (numbers, callables) as it is."""
    def clone(a):
        if isinstance(a, torch.Tensor):
            return a.clone()
        if isinstance(a, list):
            return [clone(x) for x in a]
        return a
    return tuple(clone(a) for a in args)


def is_learner_frame(filename: str, source: str | None) -> bool:
    if source is not None:
        return Path(filename).resolve() == Path(source).resolve() if not filename.startswith("<") else False
    return not (filename.startswith(PACKAGE_DIR) or filename.startswith(TORCH_DIR))


def where(error: BaseException, source: str | None) -> str:
    """'mine.py:12 in layernorm: `var = ...`' for the innermost line of the learner's own code in
    an exception's traceback ('' when none is), glassgpt's and torch's frames left out."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if is_learner_frame(f.filename, source)]
    if isinstance(error, SyntaxError) and error.filename and is_learner_frame(error.filename, source):
        text = (error.text or "").strip()
        return f"{Path(error.filename).name}:{error.lineno}" + (f": `{text}`" if text else "")
    if not frames:
        return ""
    f = frames[-1]
    line = (f.line or "").strip()
    return f"{Path(f.filename).name}:{f.lineno} in {f.name}" + (f": `{line}`" if line else "")


def is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and (
        "can't allocate memory" in text or "not enough memory" in text or "out of memory" in text))


def describe_failure(error: BaseException, function: str, source: str | None,
                     memory_limit: int | None = None) -> LearnerError:
    """An exception raised inside the learner's function as a LearnerError for the learner."""
    at = where(error, source)
    at_text = f" at {at}" if at else ""
    if isinstance(error, NotImplementedError):
        return LearnerError(f"{function} is not written yet: it still raises NotImplementedError{at_text}")
    if is_out_of_memory(error):
        limit = f" ({memory_limit / 2**30:.1f} GiB)" if memory_limit else ""
        return LearnerMemoryError(f"{function} asked for more memory than the check allows{limit}{at_text}: "
                                  "an allocation that grows without bound? the inputs here are a few KB")
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return LearnerError(f"{function} raised {type(error).__name__}{': ' + message if message else ''}{at_text}")


class Learner:
    """The learner's functions, called with copied inputs; an exception inside them becomes a
    LearnerError naming their own line."""

    def __init__(self, functions: Mapping[str, Callable], source: str | None = None,
                 memory_limit: int | None = None):
        self.functions = functions
        self.source = source
        self.memory_limit = memory_limit

    def __call__(self, name: str, *args):
        try:
            return self.functions[name](*clone_args(args))
        except (Exception, SystemExit) as e:  # the learner's code may raise anything, even exit()
            raise describe_failure(e, name, self.source, self.memory_limit) from None


def check_signatures(exercise: Exercise, functions: Mapping[str, Any], where_from: str) -> None:
    """LearnerError, in one sentence, when a function is missing, is no function, or cannot be
    called the way the exercise calls it (every parameter of the reference, by position)."""
    missing = [name for name in exercise.functions if name not in functions]
    if missing:
        wanted = ", ".join(f"{n}{inspect.signature(exercise.reference[n])}" for n in missing)
        raise LearnerError(f"{where_from} has no {' and no '.join(missing)}: the {exercise.name} exercise needs "
                           f"{wanted} (glassgpt learn stub {exercise.name} writes the stub)")
    for name in exercise.functions:
        fn = functions[name]
        if not callable(fn):
            raise LearnerError(f"{name} in {where_from} is a {type(fn).__name__}, not a function")
        reference = inspect.signature(exercise.reference[name])
        try:
            theirs = inspect.signature(fn)
        except (TypeError, ValueError):
            continue  # a builtin or C function: nothing to compare
        params = list(reference.parameters)
        required = [p for p in params if reference.parameters[p].default is inspect.Parameter.empty]
        for count in {len(required), len(params)}:
            try:
                theirs.bind(*range(count))
            except TypeError:
                raise LearnerError(f"{name}{theirs} in {where_from} cannot be called as {name}{reference}: "
                                   f"give it that signature ({count} arguments, in that order)") from None


# ---------------------------------------------------------------- comparing outputs

def as_tuple(value, names: tuple[str, ...]) -> tuple:
    return tuple(value) if len(names) > 1 and isinstance(value, (tuple, list)) else (value,)


def first_difference(got, expected, name: str, atol: float, rtol: float) -> str | None:
    """None when `got` is `expected` within the tolerance, else one sentence: the wrong type,
    shape or dtype, or the first element (in row-major order) that differs."""
    if not isinstance(expected, torch.Tensor):
        expected = torch.tensor(float(expected))
    if not isinstance(got, torch.Tensor):
        if isinstance(got, (int, float)) and expected.dim() == 0:
            got = torch.tensor(float(got))
        else:
            return f"{name} is a {type(got).__name__}, expected a Tensor of shape {tuple(expected.shape)}"
    if got.shape != expected.shape:
        return f"{name} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if got.dtype != expected.dtype and expected.is_floating_point():
        dtypes = (str(t.dtype).removeprefix("torch.") for t in (got, expected))
        return "{} is {}, expected {}".format(name, *dtypes)
    if not expected.is_floating_point():
        bad = (got != expected)
    else:
        bad = ~within(got, expected, atol, rtol)
    if not bool(bad.any()):
        return None
    index = tuple(int(i) for i in bad.nonzero()[0])
    at = f"[{', '.join(map(str, index))}]" if index else ""
    count = f" ({int(bad.sum())} of {expected.numel()} elements differ)" if expected.numel() > 1 else ""
    return f"{name}{at} is {fmt(got[index])}, expected {fmt(expected[index])}{count}"


def within(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> torch.Tensor:
    """Elementwise: |got - expected| <= atol + rtol |expected| where expected is finite; the very
    same value (an infinity, NaN) where it is not."""
    g, e = got.detach().double(), expected.detach().double()
    finite = torch.isfinite(e)
    near = (g - e).abs() <= atol + rtol * e.abs().nan_to_num(posinf=0.0)
    return torch.where(finite, near & torch.isfinite(g), (g == e) | (torch.isnan(g) & torch.isnan(e)))


def fmt(value) -> str:
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        return str(v)
    return f"{v:.6g}" if v == int(v) or abs(v) >= 1e-3 else f"{v:.3e}"


def case_difference(exercise: Exercise, case: Case, got) -> str | None:
    names = exercise.outputs[case.function]
    expected = as_tuple(case.expected, names)
    if len(names) > 1 and (not isinstance(got, (tuple, list)) or len(got) != len(names)):
        return f"{case.function} returned {type(got).__name__}, expected a tuple ({', '.join(names)})"
    for name, g, e in zip(names, as_tuple(got, names), expected):
        why = first_difference(g, e, name, case.atol, case.rtol)
        if why:
            return why
    return None


# ---------------------------------------------------------------- the result

@dataclass
class Diagnosis:
    mistake: str  # the catalogue's name
    text: str


@dataclass
class CheckResult:
    """What a check found; `print(result)` shows it as the command line does."""

    exercise: str
    status: str  # "passed", "wrong" (the diagnosis says why) or "error" (the code could not be checked)
    message: str = ""  # wrong: the first difference; error: what stopped the check
    diagnoses: list[Diagnosis] = field(default_factory=list)
    cases: int = 0
    failed: int = 0
    seconds: float = 0.0
    output: str = ""  # what the learner's code printed (its tail)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __str__(self) -> str:
        if self.passed:
            return f"{self.exercise}: right. All {self.cases} cases agree with the reference ({self.seconds:.1f}s)."
        if self.status == "error":
            lines = [f"{self.exercise}: could not be checked. {self.message}"]
        else:
            lines = [f"{self.exercise}: wrong in {self.failed} of {self.cases} cases.",
                     f"  first difference: {self.message}"]
            lines += [f"  - {d.text} [{d.mistake}]" for d in self.diagnoses]
            if not self.diagnoses:
                lines.append("  no mistake of the catalogue matches: compare your code with the stub's docstring "
                             "at the first difference")
        if self.output:
            lines.append("  your code printed:\n" + "\n".join("    " + line for line in self.output.splitlines()))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def to_dict(self) -> dict:
        return {"exercise": self.exercise, "status": self.status, "message": self.message,
                "diagnoses": [[d.mistake, d.text] for d in self.diagnoses], "cases": self.cases,
                "failed": self.failed, "seconds": self.seconds, "output": self.output}

    @classmethod
    def from_dict(cls, d: dict) -> "CheckResult":
        return cls(d["exercise"], d["status"], d["message"], [Diagnosis(*pair) for pair in d["diagnoses"]],
                   d["cases"], d["failed"], d["seconds"], d.get("output", ""))


def error_result(exercise: str, message: str, started: float | None = None) -> CheckResult:
    return CheckResult(exercise, "error", message, seconds=time.perf_counter() - started if started else 0.0)


# ---------------------------------------------------------------- the check

def run_check(exercise: Exercise, functions: Mapping[str, Any], source: str | None = None,
              where_from: str = "your code", cases: list[Case] | None = None,
              memory_limit: int | None = None) -> CheckResult:
    """Every case of the exercise on the learner's functions, then, if any differs, every detector
    of the catalogue. `cases` may be built beforehand (the sandbox builds them before the clock starts)."""
    started = time.perf_counter()
    cases = exercise.cases() if cases is None else cases
    try:
        check_signatures(exercise, functions, where_from)
    except LearnerError as e:
        return error_result(exercise.name, str(e), started)
    learner = Learner(functions, source, memory_limit)
    with torch.no_grad():  # the exercises compute values, never gradients
        return compare_and_diagnose(exercise, learner, cases, started)


def compare_and_diagnose(exercise: Exercise, learner: Learner, cases: list[Case], started: float) -> CheckResult:
    """Every case; then, when one differs, the catalogue. A case whose call raises counts as a
    difference; when every difference is an exception and no detector recognises the code, the
    result is an error naming the learner's line."""
    differences, errors = [], []
    for case in cases:
        try:
            got = learner(case.function, *case.args)
        except LearnerMemoryError as e:
            return error_result(exercise.name, f"{e} (case: {case.label})", started)
        except LearnerError as e:
            errors.append(f"{e} (case: {case.label})")
            differences.append(errors[-1])
            continue
        why = case_difference(exercise, case, got)
        if why:
            differences.append(f"{case.label}: {case.function} -> {why}")
    seconds = lambda: time.perf_counter() - started  # noqa: E731
    if not differences:
        return CheckResult(exercise.name, "passed", cases=len(cases), seconds=seconds())
    try:
        diagnoses = diagnose(exercise, learner)
    except LearnerMemoryError as e:
        return error_result(exercise.name, str(e), started)
    if len(errors) == len(differences) and not diagnoses:
        return error_result(exercise.name, errors[0], started)
    return CheckResult(exercise.name, "wrong", differences[0], diagnoses, len(cases), len(differences), seconds())


def diagnose(exercise: Exercise, learner: Learner) -> list[Diagnosis]:
    """The catalogue's detectors that recognise the learner's code. A detector whose probe makes
    the learner's code fail says nothing (the first difference is already reported)."""
    found = []
    for mistake in exercise.mistakes:
        try:
            text = mistake.detect(learner)
        except LearnerMemoryError:
            raise
        except Exception:  # the learner's code failed on the probe, or returned what the probe cannot read
            text = None
        if text:
            found.append(Diagnosis(mistake.name, text))
    return found
