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
