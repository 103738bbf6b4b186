"""Benchmarks: the code runs end to end on tiny shapes and writes complete JSON.
No test here asserts a speed: timings on a shared test machine mean nothing."""

import json
import math

import pytest
import torch

from glassgpt.bench import SUITES, format_markdown, format_table, run
from glassgpt.bench.machine import machine_info
from glassgpt.cpu import cpu_flags, native_matmul
from glassgpt.bench.timing import measure, ratio_summary
from glassgpt.bench.workloads import (build_model, hook_calls_per_forward, make_train_step, model_config,
                                      peak_matmul, random_batch, saved_activation_bytes, twin, without_hook_points)
from glassgpt.hf import to_hf
from glassgpt.hooks import HookPoint

from conftest import assert_clean_error, run_cli, tiny_config

MACHINE_FIELDS = {"platform", "cpu_model", "cpu_count", "torch", "device", "cuda_device", "date", "git_revision",
                  "torch_threads", "load_average", "cpu_capability", "cpu_flags", "native_bfloat16_matmul",
                  "native_float16_matmul", "matmul_time_vs_float32"}
COMPARISON_FIELDS = {"suite", "name", "workload", "shape", "a", "b", "times_s", "median_s", "ratio"}
RATIO_FIELDS = {"definition", "median", "min", "max", "q1", "q3", "per_repeat"}


def check_result(result: dict) -> None:
    assert {"what", "machine", "settings", "comparisons", "figures", "skipped", "plots"} <= set(result)
    assert MACHINE_FIELDS <= set(result["machine"])
    assert result["settings"]["quick"] is True
    for c in result["comparisons"]:
        assert COMPARISON_FIELDS <= set(c), c["name"]
        assert RATIO_FIELDS <= set(c["ratio"])
        n = len(c["times_s"][c["a"]])
        assert n >= 2 and len(c["times_s"][c["b"]]) == n == len(c["ratio"]["per_repeat"])
        for times in c["times_s"].values():
            assert all(math.isfinite(t) and t > 0 for t in times)
        for key in ("median", "min", "max", "q1", "q3"):
            assert math.isfinite(c["ratio"][key]) and c["ratio"][key] > 0, (c["name"], key)
        assert c["ratio"]["min"] <= c["ratio"]["median"] <= c["ratio"]["max"]
    for f in result["figures"]:
        assert {"suite", "name", "value", "unit"} <= set(f)


@pytest.fixture(scope="module")
def quick_all(tmp_path_factory):
    """Every suite once, quick, in this process (compile through the eager backend:
    dynamo traces the model for real, without minutes of C++ code generation)."""
    out = tmp_path_factory.mktemp("bench")
    path, result = run("all", quick=True, out_dir=out, threads=1, compile_backend="eager")
    return out, path, result


def test_all_suites_run_quick_and_write_complete_json(quick_all):
    out, path, result = quick_all
    assert path.parent == out and path.suffix == ".json"
    on_disk = json.loads(path.read_text())
    assert on_disk == json.loads(json.dumps(result, default=str))
    check_result(on_disk)
    failures = [s for s in on_disk["skipped"] if s["reason"].startswith("failed")]
    assert not failures, failures
    for suite in SUITES:
        measured = [c for c in on_disk["comparisons"] if c["suite"] == suite]
        measured += [f for f in on_disk["figures"] if f["suite"] == suite and f["name"] != "suite wall time"]
        assert measured, f"suite {suite} recorded nothing"


def test_each_comparison_the_brief_names_is_present(quick_all):
    pairs = {(c["suite"], c["a"], c["b"]) for c in quick_all[2]["comparisons"]}
    expected = {("attention", "manual", "sdpa"), ("layernorm", "scratch", "torch"), ("positions", "learned", "rope"),
                ("hooks", "idle", "absent"), ("precision", "float32", "bfloat16"), ("compile", "eager", "compiled"),
                ("kvcache", "no_cache", "cache"), ("transformers", "transformers", "glassgpt"),
                ("scaling", "manual", "sdpa"), ("train", "fp32", "bf16"), ("train", "fp32", "fp32+compile"),
                ("train", "fp32", "bf16+compile"), ("inference", "transformers fp32", "glassgpt float16"),
                ("inference", "transformers fp32", "glassgpt fp32"), ("inference", "transformers fp32", "glassgpt bfloat16")}
    assert expected <= pairs
    names = [c["name"] for c in quick_all[2]["comparisons"]]
    assert any("inference" in n for n in names if n.startswith("attention"))


def test_figures_mfu_compile_time_parity_and_plot(quick_all):
    out, _, result = quick_all
    figures = {f["name"]: f for f in result["figures"]}
    assert figures["peak matmul float32"]["value"] > 0
    mfu = [f for f in result["figures"] if f["name"].endswith(": MFU")]
    assert mfu and all(math.isfinite(f["value"]) and f["value"] > 0 for f in mfu)
    assert figures["tiny compile: compile time"]["unit"] == "s"
    assert figures["tiny kv cache: same tokens with and without"]["value"] is True
    assert figures["tiny vs transformers: max |logit difference|"]["value"] < 1e-4
    assert figures["tiny vs transformers: greedy tokens that agree"]["value"] == 1.0
    assert figures["hook point calls per forward"]["value"] > 0
    assert figures["tiny converted float16: top-1 agreement with fp32"]["value"] >= 0.99
    assert figures["tiny converted bfloat16: max |logit difference| vs fp32"]["value"] > 0
    assert len(result["plots"]) == 1 and result["plots"][0].endswith(".png")
    png = out / result["plots"][0].split("/")[-1]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_lists_every_comparison(quick_all):
    result = quick_all[2]
    table, markdown = format_table(result), format_markdown(result)
    for c in result["comparisons"]:
        assert c["name"] in table and c["name"] in markdown


def test_cli_bench_attention_quick_end_to_end(tmp_path):
    result = run_cli("bench", "attention", "--quick", "--out", str(tmp_path), "--threads", "1", "--note", "test run")
    assert result.returncode == 0, result.stderr
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    check_result(data)
    assert data["what"] == "attention" and data["settings"]["notes"] == "test run"
    assert {c["suite"] for c in data["comparisons"]} == {"attention"}
    assert "manual" in result.stdout and str(files[0]) in result.stdout


@pytest.mark.parametrize("args, fragment", [
    (["bench", "atention", "--quick"], "did you mean 'attention'"),
    (["bench", "hooks", "--quick", "--device", "tpu"], "device must be"),
    (["bench", "hooks", "--quick", "--compile-backend", "nope"], "compile backend"),
])
def test_cli_bench_bad_input_is_one_line(tmp_path, args, fragment):
    assert_clean_error(run_cli(*args, "--out", str(tmp_path)), 2, fragment)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_cli_bench_out_that_is_a_file(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert_clean_error(run_cli("bench", "hooks", "--quick", "--out", str(target)), 2, "is a file")


# ---------------------------------------------------------------- the parts


def test_measure_takes_turns_after_warmup():
    order = []
    variants = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    times = measure(variants, torch.device("cpu"), repeats=3, warmup=1, inner=1)
    assert order == ["a", "b"] * 4
    assert len(times["a"]) == len(times["b"]) == 3


def test_ratio_summary_is_per_repeat():
    r = ratio_summary([2.0, 4.0, 3.0, 8.0], [1.0, 1.0, 3.0, 2.0])
    assert r["per_repeat"] == [2.0, 4.0, 1.0, 4.0]
    assert (r["median"], r["min"], r["max"]) == (3.0, 1.0, 4.0)
    assert r["q1"] == 1.75 and r["q3"] == 4.0


def test_bypassed_hook_points_compute_the_same_and_never_run_a_hook():
    model = build_model(tiny_config(), torch.device("cpu")).eval()
    bare = without_hook_points(model)
    idx = torch.randint(0, 50, (2, 16))
    seen = []
    for m in (model, bare):
        for name in m.hook_names():
            m.add_hook(name, lambda x, hook: seen.append(hook.name))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], bare(idx)[0], rtol=0, atol=0)
    ran = len(seen)
    seen.clear()
    with torch.no_grad():
        bare(idx)
    assert ran > 0 and seen == []
    assert all(type(m) is HookPoint for m in model.modules() if isinstance(m, HookPoint))  # original untouched
    model.remove_hooks()
    assert hook_calls_per_forward(model, idx) == ran


def test_saved_activations_grow_quadratically_only_for_manual_attention():
    def saved(impl, T):
        cfg = model_config("cpu-baby", vocab_size=50, block_size=T, n_layer=1, n_head=2, n_embd=16, attn_impl=impl)
        model = build_model(cfg, torch.device("cpu"))
        x, y = random_batch(50, 2, T, torch.device("cpu"))
        return saved_activation_bytes(lambda: model(x, y)[1], list(model.parameters()))

    manual_growth = saved("manual", 256) / saved("manual", 128)
    sdpa_growth = saved("sdpa", 256) / saved("sdpa", 128)
    assert manual_growth > 2.5 and 1.5 < sdpa_growth < 2.5


def test_train_step_learns_and_transformers_copy_matches():
    cfg = model_config("cpu-baby", **dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16),
                       attn_impl="sdpa", norm="torch", pos_encoding="learned")
    model = build_model(cfg, torch.device("cpu"))
    hf = to_hf(model)
    idx = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=idx).logits, model.eval()(idx)[0], atol=1e-5, rtol=1e-5)
    model.train()
    step = make_train_step(model, torch.device("cpu"))
    x, y = random_batch(50, 2, 16, torch.device("cpu"))
    first = step(x, y).item()
    for _ in range(20):
        last = step(x, y).item()
    assert last < first
    assert torch.equal(twin(model).state_dict()["wte.weight"], model.state_dict()["wte.weight"])


def test_peak_matmul_is_positive_and_sized():
    flops, n = peak_matmul(torch.float32, torch.device("cpu"), max_n=256, target_s=1e-3, repeats=2)
    assert flops > 0 and n in (128, 256)


# ---------------------------------------------------------------- numbers that would be wrong if a suite measured the wrong thing

def test_hooks_suite_counts_every_hook_point_on_the_path_once():
    """Each block passes through 12 hook points on any path (resid_pre, ln_1, q, k, v, z, attn.out,
    resid_mid, ln_2, mlp.hidden, mlp.out, resid_post), RoPE adds rot_q and rot_k, the manual path
    scores and pattern; plus embed and ln_f."""
    from glassgpt.bench.variants import TINY
    from glassgpt.bench.workloads import model_config

    for impl in ("sdpa", "manual"):
        cfg = model_config("cpu-baby", **TINY, attn_impl=impl)
        model = build_model(cfg, torch.device("cpu"))
        rope = 2 if "blocks.0.attn.rot_q" in model.hook_names() else 0
        manual = 2 if impl == "manual" else 0
        expected = 2 + cfg.n_layer * (12 + rope + manual)
        x, _ = random_batch(cfg.vocab_size, 1, 16, torch.device("cpu"))
        assert hook_calls_per_forward(model, x) == expected, impl


def test_mfu_suite_figures_follow_from_its_own_timings(quick_all):
    """MFU = flops/token (the PaLM formula, counted here by hand for the model the suite
    timed) x its tokens/s / its measured peak."""
    from glassgpt.bench.variants import TINY
    from glassgpt.bench.workloads import model_config

    figures = {f["name"]: f for f in quick_all[2]["figures"]}
    tokens = figures["tiny float32: tokens/s"]
    T, tokens_per_s = tokens["T"], tokens["value"]
    cfg = model_config("cpu-baby", **TINY)
    weights = cfg.n_layer * (12 * cfg.n_embd ** 2 + 13 * cfg.n_embd) + 2 * cfg.n_embd  # blocks (with biases) + ln_f
    weights += cfg.vocab_size * cfg.n_embd  # the tied token table / head
    flops = 6 * weights + 12 * cfg.n_layer * cfg.n_head * cfg.head_size * T
    mfu = figures["tiny float32: MFU"]
    assert mfu["flops_per_token"] == flops
    assert mfu["value"] == pytest.approx(flops * tokens_per_s / (figures["peak matmul float32"]["value"] * 1e12))


def test_scaling_suite_sees_manual_attention_memory_grow_faster_in_T(quick_all):
    """Saved activations of manual attention hold (T, T) patterns: their growth in T is steeper
    than SDPA's. A suite that measured the wrong model or the wrong axis would not show it."""
    figures = {f["name"]: f["value"] for f in quick_all[2]["figures"]}
    manual, sdpa = figures["scaling manual memory exponent in T"], figures["scaling sdpa memory exponent in T"]
    assert abs(sdpa - 1.0) < 0.05, sdpa  # saved bytes, not timings: deterministic; SDPA's grow linearly in T
    assert manual > sdpa + 0.05, (manual, sdpa)  # quick mode's short T range: (T, T) patterns are a small share


def test_machine_info_says_what_the_cpu_computes_fast():
    """A figure's machine carries torch's kernel level, the 16-bit matmul precisions it runs
    natively (and the time of one such product against float32's), the threads and the load."""
    m = machine_info(torch.device("cpu"))
    assert m["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert m["torch_threads"] == torch.get_num_threads() and len(m["load_average"]) == 3
    for name in ("bfloat16", "float16"):
        assert m[f"native_{name}_matmul"] is native_matmul(getattr(torch, name))
        assert m["matmul_time_vs_float32"][name] > 0
    assert m["cpu_flags"] == cpu_flags()



def test_each_recording_measures_and_records_its_own_peak():
    """Two runs in one process each carry the peak their MFU figures divide by."""
    from glassgpt.bench.report import Recorder, Settings
    from glassgpt.bench.throughput import measured_peak

    settings = Settings(quick=True)
    for _ in range(2):
        rec = Recorder(settings)
        peak = measured_peak(rec, settings, "float32")
        assert measured_peak(rec, settings, "float32") == peak  # reused within the run
        named = [f for f in rec.figures if f["name"] == "peak matmul float32"]
        assert len(named) == 1 and named[0]["value"] * 1e12 == pytest.approx(peak)
