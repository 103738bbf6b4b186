"""Every script in benchmarks/ runs, at a tiny size, through its own `main(argv)`: none can break
silently. Each imports the installed package (no sys.path edits) and times through
glassgpt.bench.timing; the numbers are not checked here, only that the script gets to its end."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def tiny_args(out: Path, data_dir: Path = Path("data")) -> dict[str, list[str]]:
    """The arguments that make each script run in seconds (`data_dir`: shakespeare-char, prepared)."""
    return {
        "analyze_gpt2_shape": ["--tiny", "--windows", "2", "--threads", "1", "--out", str(out)],
        "bench_circuit": ["--runs", "cpu-baby:induction", "--pairs", "4", "--threads", "1", "--out", str(out), "--set",
                          "max_iters=2", "eval_interval=2", "eval_iters=1", "n_layer=1", "n_head=2", "n_embd=16",
                          "batch_size=2", "block_size=16", "device=cpu"],
        "bench_compile": ["--set", "n_layer=1", "n_head=2", "n_embd=16", "block_size=16", "batch_size=2",
                          "eval_interval=2", "eval_iters=1", "--steps", "2", "--rounds", "1", "--repeats", "1",
                          "--inner", "1", "--backend", "eager", "--threads", "1", "--out", str(out)],
        "bench_dynamics": ["--runs", "sinks-none", "--repeats", "1", "--threads", "1", "--out", str(out), "--set",
                           "max_iters=2", "eval_interval=2", "eval_iters=1", "analysis_interval=2", "n_layer=1",
                           "batch_size=2", "block_size=16", "device=cpu"],
        "bench_options": ["--rounds", "1", "--steps", "1", "--variants", "cpu-baby,qk_norm=true", "--out", str(out)],
        "bench_prepare": ["--megabytes", "0.02", "--workers", "1", "--repeats", "1", "--out", str(out)],
        "bench_threads": ["--steps", "2", "--set", "n_layer=1", "n_embd=16", "block_size=16", "batch_size=2",
                          "--out", str(out)],
        "bench_vs_nanogpt": ["--max-iters", "2", "--presets", "cpu-baby", "--threads", "1", "--out", str(out),
                             "--data-dir", str(data_dir)],
        "generate_vs_hf": ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--prompt-len", "4",
                           "--new-tokens", "4", "--uncached-new-tokens", "2", "--out", str(out)],
        "induction_search": ["smoke", "8x32x2", "1e-3", "rope", "2", "64", "--batch", "2", "--every", "2"],
        "induction_sweep": ["--grid", "smoke", "--steps", "1", "--workers", "0", "--out", str(out / "sweep.jsonl")],
        "report_size": ["--tiny", "--threads", "1", "--out", str(out)],
        "rope_variants": ["--repeats", "1", "--inner", "1", "--batch", "2"],
        "view_hover": ["--tiny", "--repeats", "3", "--out", str(out)],
    }


# Run at a tiny size by another test (it needs a trained run, which that file makes).
SMOKED_ELSEWHERE = {"bench_sae": "tests/sae/test_sae.py::test_the_sae_benchmark_runs_at_a_tiny_size",
                    "bench_tokenizers": "tests/data/test_own_data.py::test_the_tokenizer_benchmark_runs_and_writes_its_json",
                    "own_data_vocab": "tests/data/test_own_data.py::test_the_vocabulary_comparison_runs_and_writes_its_json"}
# Not benchmarks of glassgpt: run by one in another interpreter (which has no glassgpt).
HELPERS = {"saelens_topk": "bench_sae.py runs it in an interpreter with sae-lens"}
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem not in HELPERS)
RUN_HERE = [name for name in SCRIPTS if name not in SMOKED_ELSEWHERE]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_script_has_tiny_arguments_here_a_main_and_no_path_edits():
    assert set(tiny_args(Path("."))) == set(RUN_HERE)
    for name in SCRIPTS:
        source = (BENCHMARKS / f"{name}.py").read_text()
        assert re.search(r"^def main\(argv", source, re.M), f"{name}: no main(argv)"
        assert "sys.path" not in source and "PYTHONPATH" not in source, f"{name}: imports the package from its path"
        assert "time.perf_counter" not in source and "time.time()" not in source, \
            f"{name}: times by hand, not through glassgpt.bench.timing"
        assert "glassgpt.bench.timing" in source, name
        assert "platform.platform" not in source and ('"machine"' not in source or "glassgpt.bench.machine" in source), \
            f"{name}: describes its machine by hand, not through glassgpt.bench.machine"


@pytest.mark.slow
@pytest.mark.parametrize("name", RUN_HERE)
def test_each_benchmark_script_runs_at_a_tiny_size(name, tmp_path, monkeypatch, small_data_env, capsys):
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(small_data_env))  # put back afterwards, whatever the script sets
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "results"
    out.mkdir()
    result = load(name).main(tiny_args(out, small_data_env)[name])
    assert result, f"{name} returned nothing"
    written = list(out.glob("*.json")) + list(out.glob("*.jsonl"))
    for path in written:
        text = path.read_text()
        [json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else json.loads(text)
