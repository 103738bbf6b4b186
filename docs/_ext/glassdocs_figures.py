"""Which committed results file backs which table: every measured figure in README.md and the
docs is rendered from a JSON in benchmarks/results/ by one function here, with a provenance
line (machine, command, date) taken from that JSON.

A page holds a rendered table between two markers:

    <!-- figure: NAME -->
    ...the table, written by `python docs/_ext/generate.py`...
    <!-- /figure -->

`check(paths)` names every block whose text differs from what its JSON renders today, every
figure name that is not in the registry and every registered file that does not exist; the
docs build and tests/docs/test_docs.py both call it.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"(<!-- figure: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /figure -->)", re.S)


class FigureError(ValueError):
    """A figure block that names no registered figure, or a registered file that is missing."""


@dataclass(frozen=True)
class Figure:
    json: str  # a file name in benchmarks/results/
    command: str  # what wrote it
    render: Callable[[dict], list[str]]  # the JSON -> the table's lines

    def load(self) -> dict:
        path = RESULTS / self.json
        if not path.is_file():
            raise FigureError(f"benchmarks/results/{self.json} does not exist")
        return json.loads(path.read_text())


# ---------------------------------------------------------------- formatting

def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def cpu_kind(m: dict) -> str:
    """What the CPU computes fast, in words: torch's kernel level (`get_cpu_capability()`, or from
    the flags where an older file did not record it) and its 16-bit matrix instructions."""
    flags = m.get("cpu_flags") or []
    level = m.get("cpu_capability") or ("AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "")
    half = [f for f in ("avx512_bf16", "avx512_fp16", "amx_bf16", "bf16") if f in flags]
    if m.get("native_bfloat16_matmul") is False and m.get("native_float16_matmul") is False:
        half = ["16-bit matmul emulated"]  # whatever the flags say: torch does not use them here
    words = " + ".join([level, *half]) if level else ", ".join(half)
    return f" ({words})" if words else ""


def machine_of(d: dict) -> str:
    """The machine in words, from either of the two machine records the benchmarks write: the CPU,
    what it computes fast and the threads torch used, or the GPU; the load before."""
    m = d.get("machine", {})
    gpu = m.get("gpu") or m.get("cuda_device")
    cores = m.get("cpu_count") or m.get("cpus")
    words = f"one {gpu}" if gpu else f"{m.get('cpu_model', 'CPU')}{cpu_kind(m)}, {cores} cores".replace("CPU, ", "")
    if not gpu and "cpu_model" not in m:
        words = f"a {cores}-core CPU{cpu_kind(m)}"
    threads = d.get("threads") or m.get("torch_threads")  # the runs' own setting, where the script took one
    if not gpu and threads:
        words += f", {threads} thread{'s' if threads != 1 else ''}"
    load = m.get("load_average") or m.get("loadavg_before")
    if load:
        words += f", load average {load[0]:.1f} before"
    torch_version = m.get("torch")
    return f"{words}, torch {torch_version}" if torch_version else words


def date_of(d: dict) -> str:
    date = d.get("date") or d.get("machine", {}).get("date", "")
    return date[:10]


def provenance(fig: Figure, d: dict) -> str:
    return (f"*Source: `benchmarks/results/{fig.json}` — {machine_of(d)}; "
            f"`{fig.command}`; {date_of(d)}.*")


def x(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}x"


# ---------------------------------------------------------------- the tables

def vs_nanogpt_cpu(d: dict) -> list[str]:
    s = d["summary"]
    target = d["target_val_loss"]
    rows = []
    names = {"nanogpt": "nanoGPT (its README's CPU command)", "cpu-baby": "`glassgpt train cpu-baby`",
             "cpu-speedrun": "`glassgpt train cpu-speedrun`"}
    for key, label in names.items():
        if key not in s:  # a sitting that ran only some of the presets (--presets)
            continue
        r = s[key]
        tt = r["time_to_target"]
        loss = f"{r['final_val_loss']:.4f}" + (" (20-batch estimate)" if key == "nanogpt" else " (whole split)")
        rows.append([label, f"{r['wall_s']:.1f} s ({x(r['wall_vs_nanogpt'])})", loss,
                     f"step {tt['step']}, {tt['wall_s']:.1f} s ({x(r['time_to_target_vs_nanogpt_wall'])})"])
    mode = "run, all three at once" if d.get("mode") == "parallel" else "run, back to back"
    if d.get("rounds", 1) > 1:
        mode += f", the median of {d['rounds']} rounds"
    lines = table([mode, "wall (whole process)", "final val loss", f"first eval at val <= {target}"], rows)
    for key, label in names.items():
        per_round = s.get(key, {}).get("wall_vs_nanogpt_per_round")
        if key != "nanogpt" and per_round:
            lines += ["", f"{label}, wall / nanoGPT's in each round (order reversed every other round): "
                      + ", ".join(f"{r:.2f}" for r in per_round)
                      + f"; median {s[key]['wall_vs_nanogpt_median_of_rounds']:.2f}."]
    return lines


def muon_step_cost(d: dict) -> list[str]:
    """benchmarks/bench_options.py with the Muon variants: cpu-speedrun's step against cpu-baby's."""
    r = d["results"]
    picked = d["muon_precision"]
    rows = [[f"`cpu-speedrun` as glassgpt runs it (Muon in {picked}, picked on this CPU)",
             f"{r['cpu-speedrun']['median_step_s'] * 1e3:.0f} ms", x(r["cpu-speedrun"]["ratio_to_cpu_baby"])]]
    for dtype, how in (("bfloat16", "torch.optim.Muon's precision"), ("float32", "")):
        row = r[f"cpu-speedrun muon={dtype}"]
        rows.append([f"`cpu-speedrun`, Muon in {dtype}" + (f" ({how})" if how else ""),
                     f"{row['median_step_s'] * 1e3:.0f} ms", x(row["ratio_to_cpu_baby"])])
    rows.append(["`cpu-baby`", f"{r['cpu-baby']['median_step_s'] * 1e3:.0f} ms", x(1.0)])
    threads = f"{d['threads']} thread{'s' if d['threads'] != 1 else ''}"
    return table([f"train step, {threads}, in turns ({d['rounds']} rounds)", "median step",
                  "step / cpu-baby's"], rows)


def vs_nanogpt_gpu(d: dict) -> list[str]:
    s = d["summary"]
    rows = []
    for key, label in (("nanogpt", "nanoGPT `train_shakespeare_char.py`"),
                       ("shakespeare-char", "`glassgpt train shakespeare-char`")):
        r = s[key]
        rows.append([label, f"{r['wall_s']:.1f} s ({x(r['wall_vs_nanogpt'])})",
                     f"{r['final_val_loss']:.4f}", f"step {r['time_to_target']['step']}"])
    return table(["run, back to back", "wall (whole process)", "val loss at step 5000",
                  f"first eval at val <= {d['target_val_loss']}"], rows)


def _comparison(d: dict, name: str, b: str | None = None) -> dict:
    for c in d["comparisons"]:
        if c["name"] == name and (b is None or c["b"] == b):
            return c
    raise KeyError(f"no comparison {name!r} (b={b!r})")


def _figure(d: dict, name: str) -> float:
    for f in d["figures"]:
        if f["name"] == name:
            return f["value"]
    raise KeyError(f"no figure {name!r}")


def inference(d: dict) -> list[str]:
    name = "gpt2-6L-512 decode: transformers fp32 vs glassgpt"
    first = _comparison(d, name)
    rows = [["transformers fp32 (`generate`)", "1.00", f"{first['tokens_per_s']['transformers fp32']:.1f}"]]
    if "glassgpt fp32 as built" in first["tokens_per_s"]:  # the weights through a run and load_run
        labels = {"glassgpt fp32 as built": "fp32, row-major as built (the layout training uses)",
                  "glassgpt fp32": "fp32 as `load_run` gives it (what `sample` and the demo run)",
                  "glassgpt bfloat16": "bfloat16 (`load_run(dtype=...)`)", "glassgpt float16": "float16 (`auto` on CPU)"}
    else:
        labels = {"glassgpt fp32 as loaded": "fp32, row-major",
                  "glassgpt fp32": "fp32 after `prepare_for_inference`",
                  "glassgpt bfloat16": "bfloat16", "glassgpt float16": "float16 (`auto` on CPU)"}
    for b, label in labels.items():
        c = _comparison(d, name, b)
        r = c["ratio"]
        rows.append([label, f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})", f"{c['tokens_per_s'][b]:.1f}"])
    return table(["glassgpt weights, batch 1, 64-token prompt, 256 new", "speed vs transformers fp32 (median, min-max)",
                  "tokens/s"], rows)


def tradeoffs(d: dict) -> list[str]:
    rows = []

    def add(label, name, meaning, b=None):
        rows.append([label, f"{_comparison(d, name, b)['ratio']['median']:.2f}", meaning])

    add("manual / SDPA attention, T=64", "attention layer T=64: fwd+bwd", "train with `attn_impl=sdpa`")
    add("manual / SDPA attention, T=1024", "attention layer T=1024: fwd+bwd", "the gap grows with the context")
    add("scratch / `nn.LayerNorm` (cpu-baby step)", "cpu-baby norm: train step", "the readable norm's cost")
    add("learned / RoPE positions (cpu-baby step)", "cpu-baby positions: train step", "below 1: RoPE costs this much")
    add("hook points idle / absent (train step)", "cpu-baby hooks: train step", "hooks cost nothing until attached")
    add("fp32 / bf16 autocast (cpu-baby step)", "cpu-baby precision: train step", "no bf16 units here: train fp32")
    add("eager / `torch.compile` (cpu-baby step)", "cpu-baby compile: train step", "after the compile itself")
    add("no KV cache / KV cache (gpt2, generate)", "gpt2 kv cache: generate", "keep the cache on")
    add("transformers / glassgpt (gpt2, train step)", "gpt2 vs transformers: train step", "above 1: glassgpt is faster")
    add("transformers / glassgpt (gpt2, generate)", "gpt2 vs transformers: generate", "same tokens")
    rows.append(["max logit difference vs transformers (gpt2)",
                 f"{_figure(d, 'gpt2 vs transformers: max |logit difference|'):.1e}", "the same function"])
    return table(["choice (A / B)", "time A / time B", "what it means"], rows)


def dynamics(d: dict) -> list[str]:
    rows = []
    for name, r in d["runs"].items():
        layer = max(range(len(r["sink_share_per_layer"])), key=lambda i: r["sink_share_per_layer"][i])
        rows.append([f"`{name}`", f"{r['largest_sink_share']:.2f} (layer {layer}, head {r['sink_head_per_layer'][layer]})",
                     ", ".join(f"{v:.2f}" for v in r["first_position_share_per_layer"]),
                     f"{max(r['induction_per_layer']):.2f}", f"{r['icl_score']:.2f}", f"{r['val_loss']:.3f}",
                     f"{r['train_seconds']:.1f} s"])
    return table(["run", "largest sink share (layer, head)", "share on position 0, per layer", "best induction score",
                  "ICL score", "val loss", "train time"], rows)


def attention_sink_cost(d: dict) -> list[str]:
    c = d["attention_cost"]
    rows = [[f"`attn_sink={kind}`", f"{c[kind + '/sdpa']['ms']:.2f} ({c[kind + '/sdpa']['ratio_to_none']:.2f})",
             f"{c[kind + '/manual']['ms']:.2f} ({c[kind + '/manual']['ratio_to_none']:.2f})"]
            for kind in ("none", "learned", "gate")]
    return table(["one attention layer, forward + backward (B 32, T 64, C 64)", "sdpa ms (x none)", "manual ms (x none)"], rows)


def mfu(d: dict) -> list[str]:
    rows = []
    for shape in ("gpt2", "shakespeare-char", "cpu-baby"):
        eager = _figure(d, f"{shape} bfloat16: tokens/s")
        compiled = _figure(d, f"{shape} bfloat16 compiled: tokens/s")
        rows.append([f"`{shape}`", f"{eager:,.0f}", f"{compiled:,.0f} ({compiled / eager:.2f}x)",
                     f"{100 * _figure(d, f'{shape} bfloat16 compiled: MFU'):.1f}% / "
                     f"{100 * _figure(d, f'{shape} bfloat16 compiled: MFU vs data sheet'):.1f}%"])
    return table(["bf16 train step", "eager tokens/s", "compiled tokens/s", "compiled MFU (measured peak / data sheet)"], rows)


def compile_cpu(d: dict) -> list[str]:
    """benchmarks/bench_compile.py: eager against compiled, the steady step, the whole run, RoPE's cost."""
    st, whole = d["steady_state"], d["whole_run"]
    tok, ratio = st["tokens_per_s_median"], st["ratio_median"]
    threads = d["machine"].get("torch_threads")
    rows = [[f"train step, RoPE (tokens/s, {threads} thread{'s' if threads != 1 else ''})", f"{tok['eager rope']:,.0f}",
             f"{tok['compiled rope']:,.0f}", x(ratio["eager / compiled, rope"])],
            ["train step, learned positions (tokens/s)", f"{tok['eager learned']:,.0f}",
             f"{tok['compiled learned']:,.0f}", x(ratio["eager / compiled, learned"])],
            ["RoPE's step / learned positions' step", f"{ratio['rope / learned, eager']:.2f}",
             f"{ratio['rope / learned, compiled']:.2f}", ""],
            ["first compiled step (the compile, cold)", "", f"{st['first_compiled_step_s']['compiled rope']:.0f} s", ""]]
    wall = whole["wall_s_median"]
    for name in ("compiled cold", "compiled warm"):
        ratios = whole["wall_eager_over_compiled"][name]
        rows.append([f"whole run, {whole['steps']} steps, {name.split()[1]} compile (wall)", f"{wall['eager']:.0f} s",
                     f"{wall[name]:.0f} s", x(statistics.median(ratios))])
    evals = {k: statistics.median(r["eval_seconds"] for r in runs) for k, runs in whole["runs"].items()}
    rows.append(["their evaluations, the same eager code in every run (a gauge of the load)",
                 f"{evals['eager']:.0f} s", f"{evals['compiled cold']:.0f} s cold, {evals['compiled warm']:.0f} s warm", ""])
    opt = d["optimizer_step"]["step_ms_median"]
    rows.append(["AdamW step alone: Python loop (torch's CPU default) / fused", f"{opt['loop']:.2f} ms",
                 f"{opt['fused']:.2f} ms (fused)", x(d["optimizer_step"]["ratio_median"])])
    return table([f"`{d['preset']}`, eager / compiled", "eager", "compiled", "eager / compiled"], rows)


def readme_results(d: dict) -> list[str]:
    s = d["summary"]
    rows = [
        ["nanoGPT's CPU recipe, 2,000 steps", f"{s['nanogpt']['wall_s']:.0f} s",
         f"{s['nanogpt']['final_val_loss']:.3f} (its 20-batch estimate)"],
        [f"`glassgpt train cpu-baby` (the quickstart, {steps(d, 'cpu-baby')} steps)",
         f"{s['cpu-baby']['wall_s']:.0f} s ({x(s['cpu-baby']['wall_vs_nanogpt'])})",
         f"{s['cpu-baby']['final_val_loss']:.3f}"],
        [f"`glassgpt train cpu-speedrun` (Muon, relu², qk-norm, {steps(d, 'cpu-speedrun')} steps)",
         f"{s['cpu-speedrun']['wall_s']:.0f} s ({x(s['cpu-speedrun']['wall_vs_nanogpt'])})",
         f"{s['cpu-speedrun']['final_val_loss']:.3f}"],
    ]
    wall = "wall time" + (f" (median of {d['rounds']} rounds)" if d.get("rounds", 1) > 1 else "")
    return table(["Tiny Shakespeare, characters, on a CPU", wall, "val loss (glassgpt: the whole split)"], rows)


def steps(d: dict, preset: str) -> str:
    """A glassgpt run's max_iters, from the config it saved."""
    return f"{d['runs'][preset]['config']['train']['max_iters']:,}"


def readme_transformers(d: dict) -> list[str]:
    def shape(name):
        sh = _comparison(d, name)["shape"]
        return f"B {sh['B']}, T {sh['T']}" if "B" in sh else f"{sh['prompt']}-token prompt, {sh['new']} new"

    rows = [
        [f"train step, GPT-2 small ({shape('gpt2 vs transformers: train step')})", f"{_comparison(d, 'gpt2 vs transformers: train step')['ratio']['median']:.2f}x",
         f"max logit difference {_figure(d, 'gpt2 vs transformers: max |logit difference|'):.1e}"],
        [f"greedy generation, GPT-2 small ({shape('gpt2 vs transformers: generate')})", f"{_comparison(d, 'gpt2 vs transformers: generate')['ratio']['median']:.2f}x",
         f"same tokens: {_figure(d, 'gpt2 vs transformers: greedy tokens that agree'):.0%}"],
    ]
    return table(["glassgpt against Hugging Face transformers", "speed (transformers time / glassgpt time)", "agreement"], rows)


def report_size(d: dict) -> list[str]:
    rows = []
    for r in d["rows"]:
        label = "GPT-2 124M shape, random weights" if r["run"] == "gpt2-shape" else r["run"]
        rows.append([label, f"{r['layers']} x {r['heads']}", r["tokens"], f"{r['causal_half_bytes_8bit'] / 1e6:.1f} MB",
                     f"{r['pattern_payload_bytes'] / 1e6:.2f} MB", f"{r['weights_at_zero']:.0%}",
                     f"**{r['page_mb']:.2f} MB**"])
    return table(["model", "layers x heads", "tokens", "causal half at 8 bits", "stored (deflate + base64)",
                  "weights that round to 0", "report.html"], rows)


def view_hover(d: dict) -> list[str]:
    rows = [[f"{r['layers']} x {r['heads']}, {r['tokens']} tokens", f"{r['page_bytes'] / 1e6:.2f} MB",
             f"{r['load_s']:.2f} s", f"{r['hover_ms_median']:.1f} ms", f"**{r['hover_ms_max']:.1f} ms**"]
            for r in d["rows"]]
    return table(["view (random weights)", "page", "open to first token", f"hover, median of {d['rows'][0]['hovers']}",
                  "slowest hover"], rows)


def recipe(d: dict) -> list[str]:
    """benchmarks/sweep_recipes.py --publish: a natural-text recipe's runs, each clause of its promise as a
    number with its error, ✓ where it held at the end."""
    induction = d["runs"][0]["check"] == "induction-text"
    rows = []
    for r in d["runs"]:
        extra = [o for o in r["overrides"] if o.split("=")[0] not in ("dataset", "seed", "threads")]
        seed = next((o.split("=")[1] for o in r["overrides"] if o.startswith("seed=")), "1337")
        run = f"`{r['config']['train']['dataset']}` seed {seed}" + "".join(f" `{o}`" for o in extra)
        first = "-" if r["first_kept_step"] is None else f"step {r['first_kept_step']:,} ({r['first_kept_seconds']:.0f} s)"
        cpu = f"{r['cpu_seconds']:.0f} s" if r.get("cpu_seconds") is not None else "-"
        marks = ["✓" if ok else "✗" for _, ok in r["clauses"]]
        if induction:
            c = r["scores"]["induction_circuit"]
            figures = [f"L{c['layer']}H{c['head']}", f"{marks[0]} {c['induction']:.2f} ± {c['induction_se']:.2f}",
                       f"{marks[1]} {c['prefix_matching']:.2f} ± {c['prefix_matching_se']:.2f}",
                       f"{marks[2]} {c['ablation_repeated']:+.2f} ± {c['ablation_repeated_se']:.2f}"]
        else:
            texts = [text for text, _ in r["clauses"]]
            distance = re.search(r"attends (\S+ ± \S+|\S+) tokens", texts[1])
            last, early = (re.match(r"(\d+%)", text) for text in texts[2:4])
            figures = [f"{marks[0]} {len(r['scores']['sink_rate'])}", f"{marks[1]} {distance.group(1) if distance else '-'}",
                       f"{marks[2]} {last.group(1) if last else '-'}", f"{marks[3]} {early.group(1) if early else '-'}"]
        rows.append([run, f"{r['steps']:,}", f"{r['wall_seconds']:.0f} s (load {r['load_before'][0]:.1f})", cpu, first,
                     *figures])
    shared = " (a shared machine)" if d.get("contended") else ""
    head = (["head", "induction on repeated random tokens (>= 0.3)", "prefix matching on the text (>= 0.3)",
             "ablation on the text's repeated spans, nats (> 0)"] if induction else
            ["layers (>= 6)", "layer 0's distance, tokens (<= 3)", "last layer sinking (>= 50%)", "layers 0-1 sinking (<= 10%)"])
    return table(["run", "steps", f"wall{shared}", "CPU, one thread", "every clause held from", *head], rows)


def threads(d: dict) -> list[str]:
    """benchmarks/bench_threads.py: training speed alone and beside a second training, per thread setting."""
    speed = d["tokens_per_s"]

    def used(case: str) -> str:
        counts = sorted({t for r in d["rows"] if r["case"] == case for t in r["threads"]})
        return " or ".join(map(str, counts)) + (" thread" if counts == [1] else " threads")

    rows = []
    for label, key in ((f"torch's default ({d['default_threads']} threads)", "default threads"), ("`threads=auto`", "auto")):
        alone, beside = speed[f"idle, {key}"], speed[f"contended, {key}"]
        rows.append([label, f"{alone:,.0f} tokens/s ({used(f'idle, {key}')})",
                     f"{beside:,.0f} tokens/s ({used(f'contended, {key}')})", f"**{x(beside / alone)}**"])
    return table(["cpu-baby", f"alone (median of {d['rounds']} rounds)", "beside a second training", "beside / alone"],
                 rows)


def make_times(d: dict) -> list[str]:
    """benchmarks/bench_make.py: `make TARGET` from fresh clones, one after another."""
    rows = []
    for r in d["runs"]:
        minutes, seconds = divmod(r["wall_seconds"], 60)
        said = (f"{r['pytest']} in {r['pytest_seconds']:.0f} s" if "pytest" in r
                else r.get("done", "").split(" | ")[0].removeprefix("done: "))
        rows.append([f"fresh clone {r['run']}", f"**{int(minutes)} min {seconds:02.0f} s**",
                     "passed" if r["returncode"] == 0 else f"failed ({r['returncode']})", said])
    header = [f"`make {d['target']}`", "in all (install included)", "result", "what it printed"]
    if not any(row[-1] for row in rows):  # an older record kept no output of a passing run
        header, rows = header[:-1], [row[:-1] for row in rows]
    return table(header, rows)


FORCED_AVX2 = "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2"  # torch as on a CPU without 16-bit instructions
MUON_STEP_ARGS = ("--threads 1 --rounds 15 --steps 2 "
                  "--variants 'cpu-baby,cpu-speedrun,cpu-speedrun muon=bfloat16,cpu-speedrun muon=float32'")
FIGURES: dict[str, Figure] = {
    "readme-vs-transformers": Figure("20261122-085448-all.json", "glassgpt bench", readme_transformers),
    "readme-vs-nanogpt": Figure("vs-nanogpt-20261201-220029.json",
                                "python benchmarks/bench_vs_nanogpt.py --nanogpt PATH --rounds 5", readme_results),
    "vs-nanogpt-cpu-idle": Figure("vs-nanogpt-20261201-220029.json",
                                  "python benchmarks/bench_vs_nanogpt.py --nanogpt PATH --rounds 5", vs_nanogpt_cpu),
    "vs-nanogpt-gpu": Figure("vs-nanogpt-20261123-021442.json",
                             "python benchmarks/bench_vs_nanogpt.py --nanogpt PATH --recipe shakespeare-char",
                             vs_nanogpt_gpu),
    "inference": Figure("20261201-140021-inference.json", "glassgpt bench inference", inference),
    "tradeoffs": Figure("20261122-085448-all.json", "glassgpt bench", tradeoffs),
    "dynamics": Figure("dynamics-20261123-023840.json", "python benchmarks/bench_dynamics.py", dynamics),
    "attention-sink-cost": Figure("dynamics-20261123-023840.json", "python benchmarks/bench_dynamics.py",
                                  attention_sink_cost),
    "report-size": Figure("report-size-20261201-142234.json", "python benchmarks/report_size.py", report_size),
    "view-hover": Figure("view-hover-20261201-130221.json", "python benchmarks/view_hover.py --long", view_hover),
    "compile-cpu": Figure("compile-20261201-133313.json", "python benchmarks/bench_compile.py --threads 1 --rounds 3 --repeats 6",
                          compile_cpu),
    "muon-step-native": Figure("options-20261207-204603.json", f"python benchmarks/bench_options.py {MUON_STEP_ARGS}",
                               muon_step_cost),
    "muon-step-forced": Figure("options-20261207-204706.json", f"{FORCED_AVX2} python benchmarks/bench_options.py "
                               f"{MUON_STEP_ARGS}", muon_step_cost),
    "vs-nanogpt-cpu-forced": Figure("vs-nanogpt-20261207-204126.json", f"{FORCED_AVX2} python "
                                    "benchmarks/bench_vs_nanogpt.py --nanogpt PATH --parallel --threads 1", vs_nanogpt_cpu),
    "recipe-depth-scan": Figure("recipe-depth-scan-20261208-022858.json",
                                "python benchmarks/sweep_recipes.py --grid depth-scan --lanes 2 --threads 1 --publish", recipe),
    "recipe-induction-text": Figure("recipe-induction-text-20261208-013903.json",
                                    "python benchmarks/sweep_recipes.py --grid induction-text --lanes 2 --threads 1 --publish",
                                    recipe),
    "make-quickstart": Figure("make-quickstart-20261208-000311.json", "python benchmarks/bench_make.py --target quickstart", make_times),
    "make-test": Figure("make-test-20261208-001734.json", "python benchmarks/bench_make.py --target test --runs 2", make_times),
    "threads": Figure("threads-20261207-222937.json", "python benchmarks/bench_threads.py --steps 300 --rounds 2", threads),
    "mfu-gpu": Figure("20261123-015819-mfu.json", "glassgpt bench mfu --device cuda", mfu),
}


def render(name: str) -> str:
    """The text between a block's markers: the table, a blank line, the provenance line."""
    if name not in FIGURES:
        raise FigureError(f"no figure named {name!r} in docs/_ext/glassdocs_figures.py (known: {', '.join(FIGURES)})")
    fig = FIGURES[name]
    d = fig.load()
    return "\n".join(fig.render(d)) + "\n\n" + provenance(fig, d) + "\n"


def refresh_text(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("name")) + m.group(4), text)


def refresh(path: Path) -> bool:
    """Rewrite the figure blocks of one page; True when it changed."""
    text = path.read_text()
    new = refresh_text(text)
    if new != text:
        path.write_text(new)
    return new != text


def check(paths: list[Path]) -> list[str]:
    """One line per problem: 'PAGE:LINE: figure NAME ...'."""
    problems = []
    for path in paths:
        text = path.read_text()
        for m in BLOCK.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            where = f"{path.relative_to(ROOT)}:{line}"
            try:
                want = render(m.group("name"))
            except (FigureError, KeyError) as e:
                problems.append(f"{where}: figure {m.group('name')}: {e}")
                continue
            if m.group("body") != want:
                problems.append(f"{where}: figure {m.group('name')} differs from "
                                f"benchmarks/results/{FIGURES[m.group('name')].json}: "
                                "run `python docs/_ext/generate.py`")
    for name, fig in FIGURES.items():
        if not (RESULTS / fig.json).is_file():
            problems.append(f"docs/_ext/glassdocs_figures.py: figure {name}: benchmarks/results/{fig.json} does not exist")
    return problems


def pages() -> list[Path]:
    """Every page that may hold figure blocks."""
    return [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)]
