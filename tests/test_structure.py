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
            "assert 'glassgpt.generate' not in sys.modules, 'load_run imported glassgpt.generate'")
    result = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_importing_the_training_loop_loads_neither_the_analysis_package_nor_matplotlib():
    code = ("import sys, glassgpt.train; bad = [m for m in sys.modules if m == 'matplotlib' or "
            "m.startswith('glassgpt.analysis')]; assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_no_function_of_the_training_loop_is_longer_than_80_lines_and_the_loop_fits_a_screen():
    lengths = dict(functions(SRC / "train.py"))
    assert {name: n for name, n in lengths.items() if n > 80} == {}
    assert lengths["_loop"] <= 60
