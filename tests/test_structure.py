"""The structure the code promises (the design's layers, docs/explanation/design.md): what a module may import, and how long a
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


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """The glassgpt modules a file imports, at the top or inside a function, whatever the form:
    `import glassgpt.x`, `from glassgpt.x import name`, `from glassgpt.pkg import module` (the
    module, not the package) and relative imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            modules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            found.update(modules)
            if len(modules) < len(node.names):
                found.add(base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}

# The design's layers, lowest first: an import may go down or sideways, never up.
LAYERS = (
    ("leaves", ("glassgpt.errors", "glassgpt.safe_read", "glassgpt.config", "glassgpt.device", "glassgpt.revision",
                "glassgpt.atomic", "glassgpt.cpu", "glassgpt.ownership", "glassgpt.tensor_tree", "glassgpt.tokenizer",
                "glassgpt.progress", "glassgpt.threads", "glassgpt.stop")),
    ("model", ("glassgpt", "glassgpt.model", "glassgpt.hooks", "glassgpt.kv_cache", "glassgpt.precision",
               "glassgpt.limits", "glassgpt.inference.mode")),
    ("data", ("glassgpt.data",)),
    ("run directory", ("glassgpt.checkpoint", "glassgpt.hf", "glassgpt.shard_folders")),
    ("edges", ("glassgpt.cli", "glassgpt.commands", "glassgpt.demo", "glassgpt.__main__")),
)


def layer_of(module: str) -> int:
    """The index of a module's layer; jobs (training, inference, evaluation, analysis, sae, ...) sit
    between the run directory and the edges."""
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or (module.startswith(p + ".") and p != "glassgpt") for p in prefixes):
            return index if index < 4 else 5
    return 4


def test_no_import_cycle_anywhere_in_the_package():
    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in GRAPH[start])

    assert len(GRAPH) > 60 and "glassgpt.analysis.streaming" in GRAPH["glassgpt.analysis.suite"]
    cycles = sorted(name for name in GRAPH if reaches(name, name, {name}))
    assert cycles == [], cycles


def test_no_import_runs_back_up_the_layers():
    up = sorted(f"{source} -> {target}" for source, targets in GRAPH.items() for target in targets
                if layer_of(target) > layer_of(source))
    assert up == []


def test_no_forwarding_shims_no_module_getattr_no_private_name_across_modules():
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        assert not any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body), name
        assert "importable from here" not in path.read_text(), name
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("glassgpt"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                assert not private, f"{name} imports {private} from {node.module}"


def test_the_tests_mirror_the_package():
    tests = Path(__file__).resolve().parent
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))} - {"artifacts"}
    packages = {p.parent.name for p in SRC.glob("*/__init__.py")}
    assert packages - {"bench"} <= folders | {"benchmarks"}, packages - folders
    assert not [p.name for p in tests.glob("test_*.py") if p.name != "test_structure.py"]
