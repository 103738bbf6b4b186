"""`glassgpt compare RUN [RUN ...]`: runs side by side, on one page and in one table.

The page (no script, no network: the curves are inline SVG) shows the runs' train
and val losses overlaid against step, tokens and wall time, the config keys that
differ between the runs, and their final figures: val loss, bits per character
(or byte) where the tokenizer has them, tokens/s, and what the speed ran under: torch's
CPU threads, the machine's load average while training, the machine. Every file read is
untrusted: rows that do not look like glassgpt's are skipped by `read_metrics`.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from glassgpt.errors import UsageError
from glassgpt.safe_read import open_regular

MARK = "<!-- glassgpt compare -->"  # the first line of a page this command wrote (it may replace only those)
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]
MAX_RUNS = 32


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def run_names(paths: list[Path]) -> list[str]:
    """Each run's folder name, or its whole path where two names clash."""
    names = [p.name or str(p) for p in paths]
    return [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names)]


def load(run_dir: Path) -> dict:
    """One run's config (flattened) and the curves and final figures of its metrics.jsonl."""
    from glassgpt.checkpoint import read_config
    from glassgpt.training.log import read_metrics

    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} does not exist or is not a run folder")
    run_config, _ = read_config(run_dir)
    config = flatten(run_config.to_dict())
    rows = read_metrics(run_dir)
    tokens_per_step = config["train.batch_size"] * config["model.block_size"] * config.get("train.grad_accum_steps", 1)

    def number(row, key):
        value = row.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None

    def curve(kind, key):
        return [(r["step"], number(r, key), number(r, "elapsed_s")) for r in rows
                if r.get("kind") == kind and number(r, key) is not None]

    final = next((r for r in reversed(rows) if r.get("kind") == "final"), None)
    trained = [r for r in rows if r.get("kind") == "train"]
    threads = sorted({int(r["threads"]) for r in trained if isinstance(r.get("threads"), int)})
    loads = [number(r, "load_average") for r in trained if number(r, "load_average") is not None]
    train, val = curve("train", "train_loss"), curve("eval", "val_loss")
    speeds = [number(r, "tokens_per_s") for r in rows if r.get("kind") == "train" and number(r, "tokens_per_s")]
    bits = next(((k, number(final or {}, k)) for k in (final or {}) if k.startswith("bits_per")), None)
    if final is None and val:
        last_eval = next(r for r in reversed(rows) if r.get("kind") == "eval")
        bits = next(((k, number(last_eval, k)) for k in last_eval if k.startswith("bits_per")), None)
    last_step = max([s for s, _, _ in train + val], default=0)
    return {
        "dir": run_dir, "config": config, "tokens_per_step": tokens_per_step, "train": train, "val": val,
        "finished": final is not None,
        "step": final["step"] if final is not None else last_step,
        "val_loss": number(final, "val_loss") if final is not None else (val[-1][1] if val else None),
        "bits": bits,
        "tokens_per_s": number(final, "tokens_per_s") if final is not None else
        (sum(speeds) / len(speeds) if speeds else None),
        "wall_s": number(final, "wall_seconds") if final is not None else
        max([t for _, _, t in train + val if t is not None], default=None),
        "threads": threads, "load": sum(loads) / len(loads) if loads else None,
        "machine": machine_of(final, run_dir),
    }


def machine_of(final: dict | None, run_dir: Path) -> str | None:
    """The CPU and its usable cores (the final row's), or the platform the run was saved on."""
    if final is not None and isinstance(final.get("cpu"), str):
        cores = final.get("usable_cores")
        return final["cpu"][:80] + (f", {cores} cores" if isinstance(cores, int) else "")
    from glassgpt.checkpoint import read_config

    machine = (read_config(run_dir)[1].get("provenance") or {}).get("machine")
    return machine[:80] if isinstance(machine, str) else None


def differing(runs: list[dict]) -> list[tuple[str, list]]:
    """The config keys whose values are not the same in every run, with each run's value."""
    keys = sorted(set().union(*(r["config"] for r in runs)))
    missing = object()
    out = []
    for key in keys:
        values = [r["config"].get(key, missing) for r in runs]
        if any(v != values[0] for v in values[1:]):
            out.append((key, ["-" if v is missing else v for v in values]))
    return out


# ---------------------------------------------------------------- the table

def _fmt(value, spec: str = ".4f") -> str:
    if value is None:
        return "-"
    return format(value, spec) if abs(value) < 1e9 else f"{value:.4g}"  # no column of 300 digits


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if abs(seconds) < 120 else f"{_fmt(seconds / 60, '.1f')} min"


def final_rows(runs: list[dict], names: list[str]) -> tuple[list[str], list[list[str]]]:
    bits_name = next((r["bits"][0].replace("_", " ") for r in runs if r["bits"]), "bits per character")
    header = ["run", "steps", "tokens", "wall time", "val loss", bits_name, "tokens/s", "threads", "load"]
    rows = [[name, f"{r['step']:,}" + ("" if r["finished"] else " (unfinished)"), f"{r['step'] * r['tokens_per_step']:,}",
             _duration(r["wall_s"]), _fmt(r["val_loss"]), _fmt(r["bits"][1] if r["bits"] else None),
             _fmt(r["tokens_per_s"], ",.0f"), _threads(r["threads"]), _fmt(r["load"], ".1f")]
            for name, r in zip(names, runs)]
    return header, rows


def _threads(counts: list[int]) -> str:
    """'2', or '1-2' for a run whose thread count changed while it trained; '-' when not recorded."""
    if not counts:
        return "-"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def machines(runs: list[dict], names: list[str]) -> list[str]:
    """One line per machine the runs trained on (the runs named when there are several)."""
    seen: dict[str, list[str]] = {}
    for name, r in zip(names, runs):
        seen.setdefault(r["machine"] or "not recorded", []).append(name)
    if len(seen) == 1:
        return [f"machine: {next(iter(seen))}"]
    return [f"machine: {machine} ({', '.join(who)})" for machine, who in seen.items()]


SPEED_NOTE = ("tokens/s depends on the threads and on the machine's load (the 1-minute load average while "
              "training; above the cores, other work shared them): compare speeds between runs with the same "
              "threads on a quiet machine")


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


# ---------------------------------------------------------------- the page

# The axes below work on finite floats of any size: a span is taken as hi/n - lo/n (or on halves),
# never hi - lo, which overflows to infinity when the two are far apart (1e308 and -1e308).

def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = hi / n - lo / n
    step = 10.0 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if raw <= m * step)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int(hi / step - first / step + 1e-9) + 1)]


def _widen(lo: float, hi: float) -> tuple[float, float]:
    """One value (lo == hi) as a span that floats tell apart, widened towards zero."""
    if hi > lo:
        return lo, hi
    d = max(1.0, abs(lo) * 1e-9)
    return (lo - d, lo) if lo > 0 else (lo, lo + d)


def _axis(lo: float, hi: float, start: float, end: float):
    """The map from [lo, hi] onto [start, end] (a point's pixel)."""
    half_span = hi / 2 - lo / 2
    return lambda v: start + (v / 2 - lo / 2) / half_span * (end - start)


def svg_chart(series: list[dict], xlabel: str, title: str, width: int = 760, height: int = 300) -> str:
    """Lines (and points) of `series` ({name, colour, points [(x, y)], dashed}) on shared axes, as SVG."""
    series = [{**s, "points": [(float(x), float(y)) for x, y in s["points"]]} for s in series]
    pts = [p for s in series for p in s["points"]]
    if not pts:
        return f"<p>{html.escape(title)}: no points to draw.</p>"
    left, right, top, bottom = 60, 16, 28, 42
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    (x0, x1), (y0, y1) = _widen(x0, x1), _widen(y0, y1)
    sx, sy = _axis(x0, x1, left, width - right), _axis(y0, y1, height - bottom, top)
    out = [f'<svg class="chart" role="img" aria-label="{html.escape(title)}" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-size="11" font-family="sans-serif">',
           f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    for t in _ticks(x0, x1):
        out.append(f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{top}" y2="{height - bottom}" stroke="#eee"/>'
                   f'<text x="{sx(t):.1f}" y="{height - bottom + 14}" text-anchor="middle">{t:g}</text>')
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:.4g}</text>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 8}" text-anchor="middle">{html.escape(xlabel)}</text>'
               f'<text transform="translate(14 {(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">loss (nats)</text>')
    for s in series:
        if not s["points"]:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s["points"])
        dash = ' stroke-dasharray="6 3"' if s["dashed"] else ""
        out.append(f'<polyline fill="none" stroke="{s["colour"]}" stroke-width="{2 if s["dashed"] else 1.3}"{dash} '
                   f'points="{path}"><title>{html.escape(s["name"])}</title></polyline>')
        if s["dashed"] or len(s["points"]) == 1:  # val points, and a lone train point a line would not show
            out.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{s["colour"]}"><title>'
                       f'{html.escape(s["name"])}: {y:.4f} at {x:g}</title></circle>' for x, y in s["points"])
    out.append("</svg>")
    return "".join(out)


def render(runs: list[dict], names: list[str]) -> str:
    e = html.escape
    header, rows = final_rows(runs, names)
    charts = []
    for xlabel, x in (("step", lambda r, s, t: s), ("tokens", lambda r, s, t: s * r["tokens_per_step"]),
                      ("wall time (s)", lambda r, s, t: t)):
        series = []
        for i, (name, r) in enumerate(zip(names, runs)):
            colour = COLOURS[i % len(COLOURS)]
            for kind, dashed in (("train", False), ("val", True)):
                points = [(x(r, s, t), y) for s, y, t in r[kind] if x(r, s, t) is not None]
                series.append({"name": f"{name} {kind}", "colour": colour, "points": points, "dashed": dashed})
        charts.append(svg_chart(series, xlabel, f"train (solid) and val (dashed) loss against {xlabel}"))
    legend = "".join(f'<li><span style="color:{COLOURS[i % len(COLOURS)]}">&#9632;</span> <code>{e(name)}</code> '
                     f'({e(str(r["dir"]))})</li>' for i, (name, r) in enumerate(zip(names, runs)))
    diff = differing(runs)
    diff_html = ("<table><tr><th>key</th>" + "".join(f"<th>{e(n)}</th>" for n in names) + "</tr>" +
                 "".join(f"<tr><td><code>{e(k)}</code></td>" + "".join(f"<td>{e(str(v))}</td>" for v in values)
                         + "</tr>" for k, values in diff) + "</table>") if diff else \
        "<p>The runs' configs are the same.</p>"
    table = ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>" +
             "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>"
             + "<p>" + "<br>".join(e(line) for line in machines(runs, names)) + "</p>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}"
             "th{background:#f4f4f4}td:first-child{text-align:left}h2{border-bottom:1px solid #ccc;margin-top:1.6em}"
             "ul{list-style:none;padding:0}svg.chart{max-width:100%;height:auto;display:block;margin:.6em 0}")
    return "\n".join([
        MARK, "<!doctype html><html><head><meta charset='utf-8'><title>glassgpt compare</title>",
        f"<style>{style}</style></head><body><h1>{len(runs)} run{'s' if len(runs) != 1 else ''} compared</h1>",
        f"<ul>{legend}</ul>", "<h2 id='final'>Final figures</h2>", table,
        "<p>Tokens: steps x batch_size x block_size x grad_accum_steps (per process). Wall time and tokens/s are "
        "the final row's (train seconds only for tokens/s); for an unfinished run, the last row's. "
        f"Threads: torch's CPU threads while training; load: the machine's 1-minute load average then. {SPEED_NOTE}.</p>",
        "<h2 id='config'>Config keys that differ</h2>", diff_html, "<h2 id='curves'>Curves</h2>", *charts,
        "</body></html>"])


def check_out(out: Path) -> None:
    if out.is_symlink() or out.is_dir():
        raise UsageError(f"{out} is a folder or a link: choose a file name for --out")
    if out.exists():
        with open_regular(out, error=UsageError, fix="choose another --out") as (f, _):
            if not f.read(len(MARK)).decode("utf-8", "replace") == MARK:
                raise UsageError(f"{out} exists and is not a page glassgpt compare wrote: choose another --out")


def compare(run_dirs: list[str | Path], out: str | Path = "compare.html") -> tuple[Path, str]:
    """Write the comparison page to `out`; return its path and the table printed on the terminal."""
    from glassgpt.atomic import atomic_write_text

    if not run_dirs:
        raise UsageError("give at least one run to compare")
    if len(run_dirs) > MAX_RUNS:
        raise UsageError(f"compare takes at most {MAX_RUNS} runs, got {len(run_dirs)}")
    paths = [Path(p) for p in run_dirs]
    out = Path(out)
    check_out(out)
    runs = [load(p) for p in paths]
    names = run_names(paths)
    header, rows = final_rows(runs, names)
    table = text_table(header, rows) + "\n" + "\n".join(machines(runs, names)) + f"\n({SPEED_NOTE})"
    diff = differing(runs)
    if diff:
        table += "\n\nconfig keys that differ:\n" + text_table(["key", *names], [[k, *map(str, v)] for k, v in diff])
    elif len(runs) > 1:
        table += "\n\nthe runs' configs are the same"
    if out.parent != Path(""):
        out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render(runs, names))
    return out, table
