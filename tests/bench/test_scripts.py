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
        "bench_make": ["--target", "quickstart", "--make-args=-n", "--out", str(out)],  # -n: the commands, not run
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
        "sweep_recipes": ["--grid", "smoke", "--out", str(out / "sweep.jsonl"), "--publish", "--results", str(out)],
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


def test_vs_nanogpt_prints_its_ratios_under_the_cpu_they_hold_on():
    machine = {"cpu_model": "AMD EPYC 7B13", "cpu_capability": "AVX2", "native_bfloat16_matmul": False,
               "torch_threads": 2, "load_average": [0.1, 0.2, 0.3]}
    summary = {"nanogpt": {"wall_s": 144.0, "wall_vs_nanogpt": 1.0, "final_val_loss": 1.8857,
                           "time_to_target": {"wall_s": 143.0}, "time_to_target_vs_nanogpt_wall": 0.99},
               "cpu-baby": {"wall_s": 120.0, "wall_vs_nanogpt": 0.83, "final_val_loss": 1.7543, "train_step_s": 0.07,
                            "train_step_vs_cpu_baby": 1.0, "time_to_target": None},
               "cpu-speedrun": {"wall_s": 100.0, "wall_vs_nanogpt": 0.69, "final_val_loss": 1.6466,
                                "train_step_s": 0.09, "train_step_vs_cpu_baby": 1.29,
                                "time_to_target": {"wall_s": 40.0}, "time_to_target_vs_nanogpt_wall": 0.28}}
    text = load("bench_vs_nanogpt").ratios_table(summary, machine, 1.8857)
    assert text.splitlines()[0] == "AMD EPYC 7B13 (AVX2; native bf16 matmul: False), 2 threads, load 0.1 before"
    speedrun = next(line for line in text.splitlines() if line.startswith("cpu-speedrun"))
    assert speedrun.split() == ["cpu-speedrun", "100", "s", "0.69x", "40", "s", "0.28x", "1.6466", "1.29x"]
    assert "not reached" in next(line for line in text.splitlines() if line.startswith("cpu-baby"))
    assert ", 1 thread, " in load("bench_vs_nanogpt").ratios_table(summary, machine, 1.8857, threads=1)



def test_the_make_benchmark_reads_what_pytest_and_the_quickstart_say_of_themselves():
    said = load("bench_make").what_it_said("....\n===== 1311 passed, 2 skipped, 51 warnings in 301.52s (0:05:01) =====\n")
    assert said == {"pytest": "1311 passed, 2 skipped, 51 warnings", "pytest_seconds": 301.52}
    said = load("bench_make").what_it_said("...\n1314 passed, 53 warnings in 422.47s (0:07:02)\nmake: done\n")
    assert said == {"pytest": "1314 passed, 53 warnings", "pytest_seconds": 422.47}  # pytest -q: no ='s
    said = load("bench_make").what_it_said("step 1600\ndone: val loss 1.7543 (whole val split)\nROMEO:\n")
    assert said == {"done": "done: val loss 1.7543 (whole val split)"}


@pytest.mark.slow
def test_sweep_recipes_runs_its_grid_in_lanes_each_a_process_of_its_own(tmp_path, prepared_data_dir):
    import subprocess
    import sys

    env = {**__import__("os").environ, "GLASSGPT_DATA_DIR": str(prepared_data_dir), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(BENCHMARKS / "sweep_recipes.py"), "--grid", "smoke", "--lanes", "2",
                             "--out", str(tmp_path / "sweep.jsonl")], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "sweep.jsonl").read_text().splitlines()]
    assert [r["preset"] for r in rows] == ["induction-text", "depth-scan"]  # in the grid's order
    assert all(r["steps"] == 2 and r["threads"] == 1 for r in rows)
