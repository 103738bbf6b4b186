"""The structure the code promises (DESIGN.md's layers): what a module may import, and how long a
function may grow. Checked on the source itself, so a change that breaks it fails here."""

import ast
import subprocess
import sys
from pathlib import Path

from conftest import make_tiny_run

SRC = Path(__file__).resolve().parents[1] / "src" / "glassgpt"


def test_loading_a_run_never_imports_the_sampling_code(tmp_path):
    run = make_tiny_run(tmp_path / "run")
    code = ("import sys; from glassgpt.checkpoint import load_run; load_run(sys.argv[1], dtype='bfloat16'); "
            "assert 'glassgpt.inference.generate' not in sys.modules, 'load_run imported glassgpt.inference.generate'")
    result = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_importing_the_training_loop_loads_neither_the_analysis_package_nor_matplotlib():
    code = ("import sys, glassgpt.training.loop; bad = [m for m in sys.modules if m == 'matplotlib' or "
            "m.startswith('glassgpt.analysis')]; assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_no_function_of_the_training_loop_is_longer_than_80_lines_and_the_loop_fits_a_screen():
    lengths = dict(functions(SRC / "training" / "loop.py"))
    assert {name: n for name, n in lengths.items() if n > 80} == {}
    assert lengths["_loop"] <= 60


def imports_of(path: Path) -> set[str]:
    """The glassgpt modules a file imports, at the top or inside a function (a module's
    `__getattr__`, which forwards old names at first use, aside)."""
    found = set()

    def visit(node, in_getattr=False):
        for child in ast.iter_child_nodes(node):
            inner = in_getattr or (isinstance(child, ast.FunctionDef) and child.name == "__getattr__")
            if not inner and isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("glassgpt"):
                found.add(child.module)
                found.update(f"{child.module}.{a.name}" for a in child.names)
            elif not inner and isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("glassgpt"))
            visit(child, inner)
    visit(ast.parse(path.read_text()))
    return found


def test_no_import_cycle_in_the_analysis_package():
    modules = {f"glassgpt.analysis.{p.stem}": p for p in (SRC / "analysis").glob("*.py") if p.stem != "__init__"}
    graph = {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in graph[start])

    cycles = sorted(name for name in graph if reaches(name, name, {name}))
    assert cycles == [], cycles
    assert "glassgpt.analysis.streaming" not in graph["glassgpt.analysis.measures"]
