"""Muon at the precision the device multiplies fast in: the update equals torch.optim.Muon's,
the float32 and bfloat16 orthogonalisations agree, a run resumes across precisions, and the
precision is decided from the CPU's capability (mocked here, and once for real in a process whose
oneDNN is held to AVX2)."""

import os
import platform
import subprocess
import sys

import pytest
import torch

import glassgpt.cpu as cpu
import glassgpt.device as device_module
import glassgpt.training.muon as muon
from glassgpt.config import load_run_config
from glassgpt.cpu import CpuCapability, computes_natively
from glassgpt.training.loop import train
from glassgpt.training.muon import Muon, orthogonalisation_dtype, orthogonalise

SHAPES = [(48, 16), (16, 48), (32, 32)]  # tall, wide, square
TINY = ["n_layer=2", "n_head=2", "n_embd=32", "block_size=32", "batch_size=4", "eval_iters=2", "log_interval=1",
        "warmup_iters=2", "learning_rate=3e-3", "min_lr=3e-4", "device=cpu", "optimizer=muon",
        "lr_decay_iters=12", "eval_interval=6"]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def stepped(optimizer_class, shapes, steps: int, **kwargs) -> list[torch.Tensor]:
    """Weights of `shapes` after `steps` steps on fixed random gradients."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=gen)) for shape in shapes]
    opt = optimizer_class(params, lr=0.02, weight_decay=0.1, **kwargs)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return [p.detach() for p in params]


# ---------------------------------------------------------------- the update


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="this torch has no torch.optim.Muon to compare with")
@pytest.mark.parametrize("options", [{}, {"nesterov": False}, {"adjust_lr_fn": "match_rms_adamw"},
                                     {"momentum": 0.8, "ns_steps": 3}])
def test_the_update_is_torch_optim_muons(options):
    theirs = stepped(torch.optim.Muon, SHAPES, 3, **options)
    same_precision = stepped(Muon, SHAPES, 3, ns_dtype=torch.bfloat16, **options)
    in_float32 = stepped(Muon, SHAPES, 3, ns_dtype=torch.float32, **options)
    for t, b, f in zip(theirs, same_precision, in_float32):
        torch.testing.assert_close(b, t, rtol=0, atol=1e-6)  # bfloat16 as torch does it: the same numbers
        assert relative_error(f, t) < 1e-3  # float32: torch's within bfloat16's precision
        assert relative_error(f, t) > 0  # ... and really computed in another precision


def test_float32_and_bfloat16_orthogonalisations_agree_and_orthogonalise():
    gen = torch.Generator().manual_seed(1)
    for shape in SHAPES + [(128, 512)]:
        g = torch.randn(shape, generator=gen)
        f32, bf16 = orthogonalise(g, torch.float32), orthogonalise(g, torch.bfloat16)
        assert (f32.dtype, bf16.dtype, f32.shape) == (torch.float32, torch.bfloat16, g.shape)
        assert relative_error(bf16, f32) < 0.03, shape  # bfloat16 keeps 8 bits: ~0.4% a product, five steps
        s = torch.linalg.svdvals(g)
        top = torch.linalg.svdvals(f32)
        assert top.min() > 0.6 and top.max() < 1.21, (shape, top.min(), top.max(), s.min() / s.max())


def test_five_steps_take_singular_values_from_0003_into_068_120():
    """The claim beside NS_COEFFICIENTS: the singular vectors stay, and each singular value s of
    the normalised matrix becomes p(p(p(p(p(s))))), in [0.68, 1.20] wherever s >= 0.003."""
    gen = torch.Generator().manual_seed(2)
    u, _ = torch.linalg.qr(torch.randn(64, 64, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(64, 64, generator=gen, dtype=torch.float64))
    s = torch.logspace(-4, 0, 64, dtype=torch.float64)
    out = orthogonalise(u @ torch.diag(s) @ v.T, torch.float64, eps=0.0)
    mapped = torch.diagonal(u.T @ out @ v)  # out = U diag(mapped) V^T, if the vectors stayed
    torch.testing.assert_close(u @ torch.diag(mapped) @ v.T, out)
    normalised = s / s.norm()
    a, b, c = muon.NS_COEFFICIENTS
    expected = normalised
    for _ in range(muon.NS_STEPS):
        expected = a * expected + b * expected**3 + c * expected**5
    torch.testing.assert_close(mapped, expected)
    kept = mapped[normalised >= 0.003]
    assert len(kept) > 20 and kept.min() >= 0.68 and kept.max() <= 1.2025, (kept.min(), kept.max())
    assert mapped[normalised < 0.001].max() < 0.6  # below the range it does not reach the band


def test_the_state_is_the_same_in_both_precisions():
    """One fp32 momentum buffer per matrix, nothing about the precision: a state saved under one
    loads under the other, and each optimizer keeps its own precision."""
    gen = torch.Generator().manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]
    opt = Muon(params, ns_dtype=torch.bfloat16)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    saved = opt.state_dict()
    assert all(set(s) == {"momentum_buffer"} and s["momentum_buffer"].dtype == torch.float32
               for s in saved["state"].values())
    other = Muon(params, ns_dtype=torch.float32)
    other.load_state_dict(saved)
    assert other.ns_dtype == torch.float32
    assert "ns_dtype" not in saved["param_groups"][0]


class Spy:
    """orthogonalisation_dtype, fixed to `dtype`, recording that it was asked."""

    def __init__(self, dtype: torch.dtype):
        self.dtype, self.calls = dtype, 0

    def __call__(self, device: torch.device) -> torch.dtype:
        self.calls += 1
        return self.dtype


def test_a_run_saved_in_one_precision_resumes_in_the_other(monkeypatch, small_data_env, tmp_path):
    quiet = lambda line: None  # noqa: E731
    ran = {}
    for dtype, other in ((torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16)):
        name = str(dtype).removeprefix("torch.")
        monkeypatch.setattr(muon, "orthogonalisation_dtype", Spy(dtype))
        train(load_run_config("cpu-baby", [*TINY, "max_iters=6"]), tmp_path / name, log=quiet)
        spy = Spy(other)
        monkeypatch.setattr(muon, "orthogonalisation_dtype", spy)
        ran[name] = train(load_run_config("cpu-baby", [*TINY, "max_iters=12"]), tmp_path / name, resume=True,
                          log=quiet)
        assert spy.calls > 0  # the resumed steps ran in the other precision, not the saved one's
    monkeypatch.setattr(muon, "orthogonalisation_dtype", Spy(torch.float32))
    whole = train(load_run_config("cpu-baby", [*TINY, "max_iters=12"]), tmp_path / "whole", log=quiet)
    for name, result in ran.items():
        assert abs(result["val_loss"] - whole["val_loss"]) < 0.05, (name, result["val_loss"], whole["val_loss"])


# ---------------------------------------------------------------- the decision

AVX2 = CpuCapability("AMD EPYC 7B13", "AVX2", frozenset({"avx2", "fma", "f16c"}), x86=True)
ZEN4 = CpuCapability("AMD EPYC 9B14", "AVX512", frozenset({"avx2", "fma", "avx512f", "avx512_bf16"}), x86=True)
SAPPHIRE = CpuCapability("Intel Xeon", "AVX512", frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_fp16",
                                                             "amx_tile", "amx_bf16"}), x86=True)
APPLE = CpuCapability("Apple M2", "DEFAULT", None, x86=False)


def never(dtype):
    raise AssertionError("the flags settle it: nothing should be timed")


@pytest.mark.parametrize("capability, slowdown, bf16, fp16", [
    (AVX2, never, False, False),  # no 16-bit instructions: both emulated, nothing timed
    (ZEN4, lambda d: 0.5, True, False),  # bf16 instructions, used; no fp16 ones
    (ZEN4, lambda d: 40.0, False, False),  # bf16 instructions that this torch does not use (oneDNN held back)
    (SAPPHIRE, lambda d: {torch.bfloat16: 0.4, torch.float16: 1.1}[d], True, True),
    (APPLE, lambda d: {torch.bfloat16: 0.9, torch.float16: 7.5}[d], True, False),  # no flags: timed
])
def test_native_16_bit_matmul_is_decided_from_the_flags_then_a_timing(capability, slowdown, bf16, fp16):
    assert computes_natively(torch.bfloat16, capability, slowdown) is bf16
    assert computes_natively(torch.float16, capability, slowdown) is fp16
    assert computes_natively(torch.float32, capability, never)


def test_muon_orthogonalises_in_bf16_on_ampere_and_native_cpus_else_float32(monkeypatch):
    for native, want in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(device_module, "native_matmul", lambda dtype, native=native: native)
        assert orthogonalisation_dtype(torch.device("cpu")) == want
    for capability, want in (((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16), ((7, 5), torch.float32)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert orthogonalisation_dtype(torch.device("cuda:0")) == want
    assert orthogonalisation_dtype(torch.device("mps")) == torch.float32


def test_the_cpu_is_timed_once_per_process(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu, "this_cpu", lambda: APPLE)
    monkeypatch.setattr(cpu, "matmul_slowdown", lambda dtype: calls.append(dtype) or 0.5)
    cpu.native_matmul.cache_clear()
    try:
        assert cpu.native_matmul(torch.bfloat16) and cpu.native_matmul(torch.bfloat16)
        assert calls == [torch.bfloat16]
    finally:
        cpu.native_matmul.cache_clear()  # the next caller times the real CPU


def test_timing_the_cpu_leaves_the_global_rng_and_the_threads_alone():
    """The first Muon step of a run times the CPU: a resumed run's random draws must not move."""
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    cpu.matmul_slowdown(torch.bfloat16, repeats=1)  # on one thread, then torch's count back
    assert torch.equal(torch.rand(3), want) and torch.get_num_threads() == threads


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's ISA cap is x86's")
def test_with_onednn_held_to_avx2_bf16_is_emulated_and_muon_runs_in_float32():
    """Not mocked: a process whose oneDNN may use nothing above AVX2 (as on an AVX2-only CPU)
    times bf16 products far slower than fp32 ones and orthogonalises in float32."""
    code = ("import torch; from glassgpt.cpu import matmul_slowdown; "
            "from glassgpt.training.muon import orthogonalisation_dtype; "
            "print(matmul_slowdown(torch.bfloat16), orthogonalisation_dtype(torch.device('cpu')))")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    slowdown, dtype = out.split()
    assert float(slowdown) > 2 and dtype == "torch.float32", out
