"""Scaling: time and memory of a train step as the sequence length and the model
width grow, manual attention against SDPA, with a plot.

Memory is measured two ways, by device:
- CUDA: `torch.cuda.max_memory_allocated` over one train step (peak, everything);
- CPU: the bytes autograd saves for the backward pass during the forward
  (`torch.autograd.graph.saved_tensors_hooks`, each storage once, parameters
  left out). That is the activation memory, the part that grows with T; the
  manual path keeps the (B, nh, T, T) attention pattern, SDPA does not.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from glassgpt.atomic import atomic_write
from glassgpt.bench.report import Recorder, Settings
from glassgpt.bench.variants import TRAIN
from glassgpt.bench.workloads import (build_model, make_train_step, model_config, peak_cuda_bytes, random_batch,
                                      saved_activation_bytes, twin)


def _memory_bytes(model, step, x, y, s: Settings) -> int:
    if s.device.type == "cuda":
        return peak_cuda_bytes(lambda: step(x, y), s.device)
    return saved_activation_bytes(lambda: model(x, y)[1], list(model.parameters()))


def scaling(rec: Recorder, s: Settings) -> None:
    base, batch, lengths, widths, width_T = s.choose(
        quick=(dict(n_layer=1, n_head=2, n_embd=16), 2, [16, 32], [16, 32], 16),
        cpu=(dict(n_layer=2, n_head=4, n_embd=128), 2, [64, 128, 256, 512, 1024], [64, 128, 256, 512], 256),
        cuda=(dict(n_layer=4, n_head=12, n_embd=768), 8, [256, 512, 1024, 2048, 4096], [256, 512, 768, 1024, 1536],
              1024),
    )
    memory_kind = "cuda peak allocated" if s.device.type == "cuda" else "saved activations (autograd)"
    points: list[dict] = []
    sweeps = [("T", T, dict(base, block_size=T), T) for T in lengths]
    sweeps += [("width", C, dict(base, n_embd=C, block_size=width_T), width_T) for C in widths]
    for axis, value, overrides, T in sweeps:
        cfg = model_config("cpu-baby", vocab_size=65, attn_impl="manual", pos_encoding="learned", **overrides)
        models = {"manual": build_model(cfg, s.device)}
        models["sdpa"] = twin(models["manual"], attn_impl="sdpa")
        x, y = random_batch(cfg.vocab_size, batch, T, s.device)
        steps = {impl: make_train_step(m, s.device) for impl, m in models.items()}
        shape = {"B": batch, "T": T, "C": cfg.n_embd, "L": cfg.n_layer, "nh": cfg.n_head}
        times = rec.compare(f"scaling {axis}={value}", {k: (lambda st=st: st(x, y)) for k, st in steps.items()},
                            workload=TRAIN, shape=shape, repeats=min(3, rec.settings.repeats),
                            tokens_per_call=batch * T)
        for impl, model in models.items():
            mem = _memory_bytes(model, steps[impl], x, y, s)
            rec.figure(f"scaling {axis}={value} {impl} memory", mem / 2**20, "MiB", memory=memory_kind, **shape)
            points.append({"axis": axis, "value": value, "impl": impl, "time_s": statistics.median(times[impl]),
                           "memory_bytes": mem})
    for impl in ("manual", "sdpa"):
        (t1, m1), (t2, m2) = [(p["value"], p["memory_bytes"]) for p in points
                              if p["axis"] == "T" and p["impl"] == impl][-2:]
        rec.figure(f"scaling {impl} memory exponent in T", math.log(m2 / m1) / math.log(t2 / t1), "power",
                   note=f"log(mem ratio) / log(T ratio) between T={t1} and T={t2}; 2 means quadratic")
    if rec.out_dir is not None:
        path = rec.out_dir / f"{rec.stamp}-scaling.png"
        plot_scaling(points, memory_kind, path)
        rec.plots.append(str(path))


def plot_scaling(points: list[dict], memory_kind: str, path: Path) -> None:
    """Four panels: time and memory against T, and against width; one line per attention path."""
    from matplotlib.figure import Figure  # the Figure API: no pyplot, no global backend switch

    fig = Figure(figsize=(10, 7), dpi=110)
    axes = fig.subplots(2, 2)
    for col, axis in enumerate(("T", "width")):
        for row, (key, label, scale) in enumerate((("time_s", "train step time (s)", 1.0),
                                                   ("memory_bytes", f"memory, MiB ({memory_kind})", 2**-20))):
            ax = axes[row][col]
            for impl, marker in (("manual", "o-"), ("sdpa", "s-")):
                xs = [p["value"] for p in points if p["axis"] == axis and p["impl"] == impl]
                ys = [p[key] * scale for p in points if p["axis"] == axis and p["impl"] == impl]
                ax.plot(xs, ys, marker, label=impl)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length T" if axis == "T" else "model width C")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3, which="both")
            ax.legend()
    fig.suptitle("glassgpt train step: manual attention vs SDPA")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
