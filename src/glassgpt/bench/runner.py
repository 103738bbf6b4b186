"""Run benchmark suites, write one JSON file per run, and return it for printing."""

from __future__ import annotations

import contextlib
import datetime
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from glassgpt.bench import generation, scaling, throughput, variants
from glassgpt.bench.machine import machine_info
from glassgpt.bench.report import Recorder, Settings, write_json
from glassgpt.errors import UsageError, did_you_mean
from glassgpt.device import resolve_device

SUITES: dict[str, Callable[[Recorder, Settings], None]] = {
    "attention": variants.attention,
    "layernorm": variants.layernorm,
    "positions": variants.positions,
    "hooks": variants.hooks,
    "precision": variants.precision,
    "compile": variants.torch_compile,
    "kvcache": generation.kvcache,
    "transformers": generation.transformers,
    "inference": generation.inference,
    "scaling": scaling.scaling,
    "mfu": throughput.mfu,
    "train": throughput.train,
}
CHOICES = ["all", *SUITES]
DEFAULT_OUT = Path("benchmarks") / "results"
COMPILE_BACKENDS = ("inductor", "eager", "aot_eager")


def suite_names(what: str) -> list[str]:
    if what == "all":
        return list(SUITES)
    if what not in SUITES:
        raise UsageError(f"unknown benchmark {what!r}{did_you_mean(what, CHOICES)}; choose one of {', '.join(CHOICES)}")
    return [what]


def check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file, not a folder: give a folder for the results")


@contextlib.contextmanager
def cold_compile_settings():
    """Compile from scratch each time (no on-disk cache: compile times are honest), and let
    dynamo keep one compiled graph per model instead of falling back to eager after 8."""
    import torch._dynamo
    import torch._inductor.config as inductor_config

    saved = (inductor_config.force_disable_caches, torch._dynamo.config.cache_size_limit)
    inductor_config.force_disable_caches = True
    torch._dynamo.config.cache_size_limit = max(64, saved[1])
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*force_disable_caches.*")
            yield
    finally:
        inductor_config.force_disable_caches, torch._dynamo.config.cache_size_limit = saved
        torch._dynamo.reset()


@contextlib.contextmanager
def restore_threads(count: int):
    try:
        yield
    finally:
        torch.set_num_threads(count)


def run(what: str = "all", *, quick: bool = False, out_dir: str | Path = DEFAULT_OUT, device: str = "auto",
        compile_backend: str = "inductor", threads: int | None = None, notes: str = "",
        log: Callable[[str], None] = print, run_dir: str | Path | None = None) -> tuple[Path, dict]:
    """Run the suite(s) named by `what` and write `<out_dir>/<time>-<what>.json`.
    Returns (path of the JSON file, its contents). A suite that raises is recorded
    under `skipped` with its error, and the others still run. `threads` sets torch's
    CPU threads for the run (on a busy machine, 1 avoids threads waiting on each other).
    `run_dir`: a trained run, for the inference suite's accuracy figures."""
    names = suite_names(what)
    if compile_backend not in COMPILE_BACKENDS:
        raise UsageError(f"compile backend must be one of {', '.join(COMPILE_BACKENDS)}, got {compile_backend!r}")
    resolved_device = resolve_device(device)  # checks the name, and that the device exists
    if run_dir is not None:
        from glassgpt.checkpoint import check_run_dir

        check_run_dir(run_dir)
    if threads is not None and threads < 1:
        raise UsageError(f"threads must be at least 1, got {threads}")
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    settings = Settings(quick=quick, device=resolved_device, repeats=3 if quick else 5, warmup=1,
                        min_sample_s=0.002 if quick else 0.05,
                        compile_backend=compile_backend, notes=notes,
                        run_dir=str(run_dir) if run_dir is not None else None)
    stamp = f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{what}{'-quick' if quick else ''}"
    rec = Recorder(settings, log, out_dir, stamp)
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    machine = machine_info(settings.device)  # load average before the run
    started = time.perf_counter()
    with cold_compile_settings(), restore_threads(threads_before):
        for name in names:
            rec.suite = name
            log(f"[{name}]")
            suite_started = time.perf_counter()
            try:
                SUITES[name](rec, settings)
            except Exception as e:  # one broken suite must not lose the others' numbers
                rec.skip(name, f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            rec.figure("suite wall time", time.perf_counter() - suite_started, "s")
            if settings.device.type == "cuda":
                torch.cuda.empty_cache()
    result = rec.to_dict(what, machine, time.perf_counter() - started)
    path = write_json(result, out_dir / f"{stamp}.json")
    return path, result
