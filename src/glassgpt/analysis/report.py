"""`glassgpt analyze`: run the suite on a trained run and write a self-contained report.

The output folder holds report.html (every image embedded, opens offline),
analysis.json (every number) and the PNGs. It is built in a temporary folder
next to its destination and renamed into place, so a failed analysis leaves no
half report and the previous one, if any, stands.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from matplotlib.figure import Figure

from glassgpt.analysis.dynamics import DYNAMICS, analysis_rows, plot_dynamics
from glassgpt.training.log import read_metrics
from glassgpt.analysis.plots import plot_attention_grid, plot_head_heatmap, plot_logit_lens, token_labels
from glassgpt.analysis.run_facts import training_facts
from glassgpt.analysis.suite import analyze
from glassgpt.analysis.heads import described_count
from glassgpt.atomic import write_error
from glassgpt.analysis.summary import definitions, layer_lines, summarize
from glassgpt.analysis.uncertainty import plus_minus
from glassgpt.analysis.view import to_jsonable
from glassgpt.errors import GlassGPTError, RunError, UsageError
from glassgpt.limits import check_fits, inference_bytes
from glassgpt.progress import stages
from glassgpt.inference.text import check_text
from glassgpt.safe_read import read_json

DEFAULT_PROMPT = "First Citizen:\nBefore we proceed any further, hear me speak."
DEFAULT_PROMPT_TOKENS = 48  # prompt taken from the validation split when none is given
REPORT, NUMBERS = "report.html", "analysis.json"
MAX_NUMBERS_BYTES = 1 << 30  # analysis.json: a few MB at GPT-2 scale
MAX_EVALUATION_BYTES = 1 << 20  # an SAE's evaluation.json: a few hundred bytes
DEFAULT_TOKENS = 16384  # validation tokens measured by default: standard errors of about 0.01 on the shares
MIN_WINDOWS, MAX_DEFAULT_WINDOWS = 8, 256
MIN_MEASURE_TOKENS = 8  # a prompt measured alone (no validation split) needs this many tokens: the offset
# profile reaches 7 tokens back, and the in-context-learning score compares two bands of the window


def default_windows(block_size: int) -> int:
    """Validation windows measured when --windows is not given: DEFAULT_TOKENS tokens of them, 8 to 256."""
    return min(MAX_DEFAULT_WINDOWS, max(MIN_WINDOWS, -(-DEFAULT_TOKENS // block_size)))


# ---------------------------------------------------------------- inputs

def validation_windows(run_config, tokenizer, num_windows: int) -> tuple[torch.Tensor, torch.Tensor, str] | None:
    """Windows (B, block_size) and targets from the run's prepared validation split, spread
    evenly over it (each starting with the BOS, for a run trained with bos=true), with a sentence
    saying where they come from; None when unusable."""
    from glassgpt.data import TokenDataset, eval_windows

    name, block_size = run_config.train.dataset, run_config.model.block_size
    try:
        dataset = TokenDataset.load(name)
        val = dataset.split("val")
    except UsageError:
        return None  # not prepared (or unknown here): fall back to the prompt
    if dataset.tokenizer.to_dict() != tokenizer.to_dict() or len(val) <= block_size + 1:
        return None
    windows, targets = next(eval_windows(val, block_size, num_windows, max_batches=1, bos=run_bos(run_config, tokenizer)))
    note = (f"{num_windows} windows of {block_size} tokens spread evenly over the validation split of "
            f"the run's dataset {name!r} ({len(val):,} tokens)")
    return windows, targets, note


def run_bos(run_config, tokenizer) -> int | None:
    """The id a run trained with bos=true starts its windows with; None for the others."""
    from glassgpt.data import bos_token

    return bos_token(tokenizer) if run_config.train.bos else None


def prompt_ids(prompt: str | None, tokenizer, block_size: int, fallback: list[int] | None) -> list[int]:
    """The prompt's token ids, checked: not empty, inside the vocabulary, at most block_size tokens."""
    if prompt is None:
        if fallback is not None:
            return fallback
        try:
            ids = tokenizer.encode(DEFAULT_PROMPT)[:block_size]
        except UsageError as e:
            raise UsageError(f"the default prompt does not fit this model ({e}): give --prompt TEXT") from None
    elif prompt == "":
        raise UsageError("--prompt is empty: give some text to analyse, or leave --prompt out for the default")
    else:
        ids = tokenizer.encode(check_text(prompt, "--prompt"))  # UsageError naming a character outside the vocabulary
        if len(ids) > block_size:
            raise UsageError(f"--prompt is {len(ids)} tokens, longer than the model's block_size {block_size}: shorten it")
    if len(ids) < 2:
        raise UsageError("--prompt must be at least 2 tokens long: attention needs a past to look at")
    return ids


# ---------------------------------------------------------------- outputs

def figures(results: dict, tokens: list[str]) -> dict[str, Figure]:
    """Every figure of the report, by file name."""
    patterns = results["prompt_patterns"]  # (L, H, T, T)
    figs = {f"attention_layer{layer}.png": plot_attention_grid(patterns[layer: layer + 1], tokens,
                                                                title=f"layer {layer}: attention on the prompt",
                                                                first_layer=layer)
            for layer in range(patterns.size(0))}
    scores = results["sink_scores"]
    figs["depth_scan.png"] = plot_head_heatmap(results["depth_scan"], "depth scan: normalised attention entropy",
                                               "0 = one key, 1 = uniform over the past", vmin=0.0, vmax=1.0)
    figs["sink_first_position.png"] = plot_head_heatmap(scores["first_position_share"],
                                                        "share of attention on position 0", "share", fmt=".0%",
                                                        vmin=0.0, vmax=1.0)
    figs["sink_max_key.png"] = plot_head_heatmap(scores["max_key_share"],
                                                 "share of attention on the most-attended key", "share",
                                                 fmt=".0%", vmin=0.0, vmax=1.0)
    figs["attention_distance.png"] = plot_head_heatmap(results["attention_distance"], "mean attention distance",
                                                       "tokens back", fmt=".1f")
    figs["previous_token.png"] = plot_head_heatmap(results["previous_token"], "previous-token score",
                                                   "attention on the previous token", vmin=0.0, vmax=1.0)
    figs["prefix_matching.png"] = plot_head_heatmap(results["prefix_matching"], "prefix-matching score",
                                                    "attention on the token after an earlier occurrence",
                                                    vmin=0.0, vmax=1.0)
    figs["logit_lens.png"] = plot_logit_lens(results["logit_lens"])
    if "induction" in results:
        figs["induction.png"] = plot_head_heatmap(results["induction"], "induction score (repeated random tokens)",
                                                  "attention to the token after the earlier occurrence",
                                                  vmin=0.0, vmax=1.0)
    figs["ablation.png"] = plot_head_heatmap(results["ablation"], "loss increase when the head is zeroed",
                                             "nats", fmt=".3f")
    return figs


def png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# ---------------------------------------------------------------- the page

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
img{max-width:100%;height:auto;border:1px solid #eee}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f4f4f4}
pre{background:#f7f7f7;padding:.6em;white-space:pre-wrap}.note{color:#555}td.words{text-align:left}"""


def _img(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></p>'


def _pm(results: dict, name: str, layer: int, head: int, fmt: str = ".2f") -> str:
    """One head's `results[name]` with its error ('0.45 ± 0.02'), or '' when the results lack it."""
    if name not in results:
        return ""
    se = results.get(f"{name}_se")
    return plus_minus(results[name][layer, head], None if se is None else se[layer, head], fmt)


def heads_html(results: dict) -> str:
    """The table of every head: its description, its kind and its scores with their errors."""
    sinks = results["window_sink_scores"]
    rows = []
    for h in results["heads"]:
        layer, head = h["layer"], h["head"]
        rows.append([layer, head, h["kind"] or "", h["description"], _pm(results, "previous_token", layer, head),
                     _pm(results, "induction", layer, head), _pm(results, "prefix_matching", layer, head),
                     _pm(sinks, "max_key_share", layer, head), _pm(results, "depth_scan", layer, head),
                     _pm(results, "attention_distance", layer, head, ".1f"), _pm(results, "ablation", layer, head, ".3f")])
    described = described_count(results["heads"])
    return ("<h2 id='heads'>Every head</h2><p>What each head does, measured on the validation windows: its largest "
            "share of attention (by offset, by token class, or on the most recent token of a class) with its standard "
            "error and what uniform attention would give, or its normalised entropy when it spreads its attention; "
            f"then the tokens its OV circuit writes most. {described} of {len(results['heads'])} heads are described by a "
            "share of at least 40% (and 1.5 times what uniform attention would give) or are diffuse. Every score is ± one "
            "standard error.</p>"
            + _table(["layer", "head", "kind", "what it does", "previous token", "induction", "prefix matching",
                      "sink share", "entropy", "distance", "ablation (nats)"], rows, left=3))


def _table(header: list[str], rows: list[list], left: int | None = None) -> str:
    """An HTML table; column `left` (the one of words) is aligned left."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    cell = lambda i, c: f"<td{' class=words' if i == left else ''}>{html.escape(str(c))}</td>"  # noqa: E731
    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(run_dir: Path, results: dict, pngs: dict[str, bytes], prompt_text: str, source: str,
                view_html: str = "") -> str:
    e = html.escape
    lens = results["logit_lens"]
    sinks = results["sinks"]
    L = results["prompt_patterns"].size(0)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>glassgpt analysis: {e(run_dir.name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>What the model in <code>{e(str(run_dir))}</code> learned</h1>",
        f"<p class='note'>Prompt ({results['prompt_patterns'].size(-1)} tokens):</p><pre>{e(prompt_text)}</pre>",
        f"<p class='note'>Validation windows: {e(source)}.</p>",
        "<h2 id='summary'>Summary</h2>",
        "".join(f"<p>{e(p)}</p>" for p in summarize(results).split("\n\n")),
        "<p class='note'>The words above, as the numbers decide them:</p><ul class='note'>"
        + "".join(f"<li>{e(d)}</li>" for d in definitions(results)) + "</ul>",
        heads_html(results) if "heads" in results else "",
        ("<h2 id='interactive'>Interactive view</h2><p class='note'>Every head and every token of the prompt; works "
         "offline. The pictures below are the same numbers as images, for papers.</p>" + view_html) if view_html else "",
        "<h2 id='attention-maps'>Attention maps</h2><p>Every head of every layer on the prompt: queries down, "
        "keys across. A bright diagonal is local attention; a bright column is a sink.</p>",
        "".join(_img(f"attention_layer{i}.png", pngs[f"attention_layer{i}.png"]) for i in range(L)),
        "<h2 id='depth-scan'>Depth scan</h2><p>Mean normalised entropy of each head over the validation windows "
        "(1: attention spread evenly over the past; 0: all of it on one key).</p>",
        _img("depth_scan.png", pngs["depth_scan.png"]),
        "<ul>" + "".join(f"<li>{e(line)}</li>" for line in layer_lines(results)) + "</ul>",
        "<h2 id='sinks'>Attention sinks</h2><p>The maps: on the prompt, the share of each head's attention that "
        "lands on position 0 and on its single most-attended key. The list: the heads whose sink share over the "
        f"validation windows (see the summary's definitions) is at least {results['sink_threshold']:.0%}.</p>",
        _img("sink_first_position.png", pngs["sink_first_position.png"]),
        _img("sink_max_key.png", pngs["sink_max_key.png"]),
        _table(["layer", "head", "position", "token", "share", "share on position 0"],
               [[s["layer"], s["head"], s["key_index"], s["token"], plus_minus(s["share"], s.get("share_se"), percent=True),
                 f"{s['first_position_share']:.1%}"] for s in sinks]) if sinks else "<p>No sink heads.</p>",
        f"<p>Sink rate of Gu et al. (2024) over the validation windows: per layer, the fraction of heads whose "
        f"sink share (into any one key), or mean share on position 0, is at least {results['sink_threshold']:g}: "
        "the heads of the list above.</p>",
        _table(["layer", "heads sinking into position 0", "heads sinking into one key"],
               [[layer, f"{float(first):.0%}", f"{float(any_key):.0%}"] for layer, (first, any_key)
                in enumerate(zip(results["sink_rate"]["first_position"], results["sink_rate"]["any_key"]))]),
        "<h2 id='distance'>Local vs long-range attention</h2><p>Mean distance, in tokens, between a query and the "
        f"keys it attends to, over the validation windows (uniform attention over a {results['window_length']}-token "
        f"window gives {results['window_length'] / 4:.1f}; a previous-token head gives 1).</p>",
        _img("attention_distance.png", pngs["attention_distance.png"]),
        "<h2 id='previous-token'>Previous-token and prefix-matching heads</h2><p>The two halves of an induction "
        "circuit, on the validation windows: mean attention on the previous token, and (prefix matching, Olsson et "
        "al. 2022) on the token that followed an earlier occurrence of the current one.</p>",
        _img("previous_token.png", pngs["previous_token.png"]),
        _img("prefix_matching.png", pngs["prefix_matching.png"]),
        "<h2 id='logit-lens'>Logit lens</h2><p>The residual stream after the embedding and after each block, decoded "
        "through the final LayerNorm and the unembedding as if the model stopped there (validation windows, "
        f"{lens['positions_per_window']} positions of each). Baselines: uniform ln V = {lens['uniform_loss']:.4f} "
        f"nats (knowing nothing); the targets' unigram entropy {lens['unigram_entropy']:.4f} nats (knowing only "
        "token frequencies).</p>",
        _img("logit_lens.png", pngs["logit_lens.png"]),
        _table(["after", "loss (nats)", "top-1 accuracy"],
               [[label, plus_minus(lens["loss"][i], _at(lens.get("loss_se"), i), ".4f"),
                 plus_minus(lens["accuracy"][i], _at(lens.get("accuracy_se"), i), percent=True)]
                for i, label in enumerate(lens["labels"])]),
        "<h2 id='induction'>Induction heads</h2>",
        (f"<p>Mean attention from each token of a repeated random sequence ({results['induction_seq_len']} tokens, "
         "twice) to the token that followed its earlier occurrence.</p>" + _img("induction.png", pngs["induction.png"]))
        if "induction" in results else "<p>The context is too short to measure induction.</p>",
        "<h2 id='ablation'>Head ablation</h2><p>How much the validation loss rises when one head's output is zeroed "
        f"(on {results['ablation_tokens'][0]} window(s) of {results['ablation_tokens'][1]} tokens).</p>",
        _img("ablation.png", pngs["ablation.png"]),
        _evaluations_html(eval_task_rows(run_dir)),
        _saes_html(run_dir),
        _circuit_html(run_dir),
        _dynamics_section(pngs),
        "<p class='note'>All numbers: analysis.json next to this file.</p></body></html>",
    ]
    return "\n".join(parts)


def _at(values, i: int):
    return None if values is None else values[i]


def eval_task_rows(run_dir: Path) -> list[dict]:
    """The `glassgpt eval --append-metrics` results in the run's metrics.jsonl, oldest first."""
    return [row for row in read_metrics(run_dir) if row.get("kind") == "eval_task"]


def _saes_html(run_dir: Path) -> str:
    """The run's sparse autoencoders (glassgpt sae), their figures and their feature pages."""
    items = []
    for path in sorted((run_dir / "sae").glob("*/evaluation.json")):
        try:
            e = read_json(path, MAX_EVALUATION_BYTES)
            figures = (f"L0 {float(e['l0']):.1f}, FVU {float(e['fvu']):.3f}, CE loss recovered "
                       f"{float(e['ce_loss_recovered']):.3f}, {int(e['dead_features'])} dead of {int(e['width'])}")
        except (GlassGPTError, ValueError, KeyError, TypeError):
            continue  # an SAE folder that cannot be read is left out of the report
        page = path.parent / "features.html"
        items.append(f"<li><code>{html.escape(path.parent.name)}</code>: {figures} — features: "
                     f"<code>{html.escape(str(page))}</code></li>")
    if not items:
        return ""
    return ("<h2 id='saes'>Sparse autoencoders</h2><p>From <code>glassgpt sae</code>; each feature page lists "
            f"the features' top contexts and logit effects.</p><ul>{''.join(items)}</ul>")


MAX_CIRCUIT_BYTES = 64 * 1024 * 1024


def _circuit_html(run_dir: Path) -> str:
    """The run's circuit (glassgpt circuit), in its own sentences, and where its graph view is."""
    path = run_dir / "circuit" / "circuit.json"
    from glassgpt.circuits.view import graph_view

    if path.is_symlink() or not path.exists():
        return ""
    try:
        record = read_json(path, MAX_CIRCUIT_BYTES)
        lines = [line for line in record["summary"].splitlines() if line.strip()]
        view = graph_view(record)
    except (GlassGPTError, ValueError, KeyError, TypeError, AttributeError):
        return ""  # a circuit folder that cannot be read is left out of the report
    page = path.parent / "circuit.html"
    return ("<h2 id='circuit'>Circuit</h2><p>From <code>glassgpt circuit</code> (its page: "
            f"<code>{html.escape(str(page))}</code>). Click a head to open it in the interactive view above.</p>"
            + "".join(f"<p>{html.escape(line)}</p>" for line in lines) + view)


def _evaluations_html(rows: list[dict]) -> str:
    if not rows:
        return ""
    from glassgpt.evaluation.loss import describe

    def text(row: dict) -> str:
        try:
            return describe(row)
        except (KeyError, TypeError, ValueError):  # a row edited by hand: show it as it is
            return json.dumps(row)

    items = "".join(f"<li>step {r.get('step')}: {html.escape(text(r)).replace(chr(10), '<br>')}</li>" for r in rows)
    return f"<h2 id='evaluations'>Evaluations</h2><p>From <code>glassgpt eval --append-metrics</code>.</p><ul>{items}</ul>"


def _dynamics_section(pngs: dict[str, bytes]) -> str:
    if DYNAMICS not in pngs:
        return ""
    return ("<h2 id='dynamics'>During training</h2><p>The analysis rows of metrics.jsonl (the run's "
            "<code>analysis_interval</code>) against step: loss, in-context-learning score (loss late in the window "
            "minus early), the best induction and previous-token scores, sink shares and entropy of each layer, each in a "
            "band of two standard errors either side.</p>"
            + _img(DYNAMICS, pngs[DYNAMICS]))


def report_view(model, tokenizer, ids: list[int], tokens: list[str], results: dict, source: str) -> str:
    """The interactive view of the prompt, with the suite's per-head scores (validation windows)."""
    from glassgpt.analysis.view import render, view_data

    keys = [key for key in ("induction", "previous_token", "prefix_matching", "depth_scan", "attention_distance",
                            "ablation") if key in results]
    sinks = results["window_sink_scores"]
    scores = {key: results[key] for key in keys} | {key: sinks[key] for key in ("first_position_share", "max_key_share")}
    errors = {key: results[f"{key}_se"] for key in keys if f"{key}_se" in results}
    errors |= {key: sinks[f"{key}_se"] for key in ("first_position_share", "max_key_share") if f"{key}_se" in sinks}
    note = (f"Measured on {source} (± one standard error over them); induction on repeated random tokens; attribution "
            "(direct, to the true next token) on the prompt.")
    data = view_data(model, ids, tokens, lambda i: token_labels(tokenizer, [i])[0], scores=scores,
                     patterns=results["prompt_patterns"], notes={"scores": note}, scores_se=errors,
                     heads=results.get("heads"))
    return render(data)


# ---------------------------------------------------------------- progress

def progress_bars(disable: bool | None = None):
    """A `progress(stage, done, total)` for `write_report`, each stage shown in turn on stdout
    (glassgpt.progress.stages: a bar on a terminal, plain lines with an ETA otherwise;
    `disable=False` draws bars anyway, `disable=True` plain lines)."""
    return stages(terminal=None if disable is None else not disable)


# ---------------------------------------------------------------- writing

# The files a report folder holds; `--out` may replace a folder that holds these and nothing else.
REPORT_FILES = re.compile(r"report\.html|analysis\.json|attention_layer\d+\.png|depth_scan\.png|sink_first_position\.png"
                          r"|sink_max_key\.png|attention_distance\.png|previous_token\.png|prefix_matching\.png"
                          r"|logit_lens\.png|induction\.png|ablation\.png|dynamics\.png")


def check_out_dir(out: Path) -> None:
    """Refuse to replace anything but a new folder, an empty one, or an earlier report
    that holds nothing else (the folder could be the run itself, or the user's)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"{out} exists and is not a folder: choose another --out")
    if not out.exists():
        return
    entries = list(out.iterdir())
    if not entries:
        return
    foreign = [p.name for p in entries if not (REPORT_FILES.fullmatch(p.name) and p.is_file() and not p.is_symlink())]
    if foreign or not (out / NUMBERS).is_file():
        what = f"it holds {foreign[0]!r}, which" if foreign else "it has no analysis.json, so it"
        raise UsageError(f"{out} is not an earlier glassgpt report ({what} glassgpt did not write) and would be "
                         "replaced: choose a new or empty --out")


def replace_dir(tmp: Path, out: Path) -> None:
    """Put the finished folder `tmp` at `out`, replacing an earlier analysis there."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_finite_weights(model, run_dir: Path) -> None:
    """Refuse a model with NaN or infinite weights: every measure of it would be NaN."""
    broken = sum(int((~torch.isfinite(p)).sum()) for p in model.parameters())
    if broken:
        raise RunError(f"{run_dir} holds {broken:,} NaN or infinite weight(s): there is nothing to measure; "
                       "analyse an earlier checkpoint, or train again")


def write_report(run_dir: str | Path, prompt: str | None = None, out: str | Path | None = None,
                 num_windows: int | None = None, device: str = "cpu", seed: int = 0, dtype: str = "float32",
                 progress=None, warn=None) -> Path:
    """Analyse a run and write report.html, analysis.json and the PNGs into `out`
    (default RUN_DIR/analysis). `num_windows` validation windows (default `default_windows`);
    `dtype` is load_run's; `progress(stage, done, total)` hears how far it is, `warn(text)` of lines
    of metrics.jsonl that could not be read. Returns `out`."""
    from glassgpt.analysis.heads import token_strings
    from glassgpt.checkpoint import load_run

    run_dir = Path(run_dir)
    model, tokenizer, run_config = load_run(run_dir, device, dtype=dtype, decoding=False)
    check_finite_weights(model, run_dir)
    block_size = model.config.block_size
    out = Path(out) if out is not None else run_dir / "analysis"
    check_out_dir(out)
    token_strings(tokenizer)  # the head descriptions need readable tokens: refused now, before any work

    validation = validation_windows(run_config, tokenizer, num_windows or default_windows(block_size))
    default_ids = validation[0][0, :DEFAULT_PROMPT_TOKENS].tolist() if validation is not None else None
    ids = prompt_ids(prompt, tokenizer, block_size, default_ids)
    bos = run_bos(run_config, tokenizer)
    if bos is not None and ids[0] != bos:  # the model has only ever seen windows that start with it
        ids = [bos] + ids[: block_size - 1]
    if validation is not None:
        windows, targets, source = validation
    else:
        if len(ids) < MIN_MEASURE_TOKENS:
            raise UsageError(f"the prompt is {len(ids)} tokens; the run's dataset {run_config.train.dataset!r} is not "
                             f"prepared here, so the measures run on the prompt alone and need at least "
                             f"{MIN_MEASURE_TOKENS} tokens: give a longer --prompt, or prepare the dataset")
        windows = torch.tensor([ids])  # (1, T): the prompt itself, each token predicting the next
        targets = torch.tensor([ids[1:] + [-1]])
        source = (f"the prompt itself ({len(ids)} tokens), because the run's dataset "
                  f"{run_config.train.dataset!r} is not prepared here with this run's tokenizer")
    check_fits(inference_bytes(model.config, 1, windows.size(1)), device,
               f"analysing windows of {windows.size(1)} tokens", "give a shorter --prompt, or analyse on a GPU")

    tokens = token_labels(tokenizer, ids)
    generator = torch.Generator().manual_seed(seed)
    metrics_rows = read_metrics(run_dir, warn)
    results = analyze(model, torch.tensor(ids), windows, targets, tokens=tokens, generator=generator,
                      progress=progress, vocab_size=tokenizer.vocab_size, tokenizer=tokenizer, bos=bos)
    results["training"] = training_facts(run_config, metrics_rows, tokenizer)
    pngs = {name: png_bytes(fig) for name, fig in figures(results, tokens).items()}
    if analysis_rows(metrics_rows, model.config.n_layer):  # trained with analysis_interval: the run's curves
        pngs[DYNAMICS] = png_bytes(plot_dynamics(metrics_rows, model.config.n_layer))
    prompt_text = tokenizer.decode(ids)
    view_html = report_view(model, tokenizer, ids, tokens, results, source)
    numbers = {
        "run_dir": str(run_dir), "prompt": prompt_text, "prompt_ids": ids, "prompt_tokens": tokens,
        "validation_source": source, "model": run_config.to_dict()["model"],
        "summary": summarize(results), "layer_lines": layer_lines(results), **results,
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the report is an ordinary folder
        for name, png in pngs.items():
            (tmp / name).write_bytes(png)
        (tmp / NUMBERS).write_text(json.dumps(to_jsonable(numbers), indent=1, ensure_ascii=False, allow_nan=False),
                                   encoding="utf-8")
        (tmp / REPORT).write_text(render_html(run_dir, results, pngs, prompt_text, source, view_html),
                                  encoding="utf-8")
        replace_dir(tmp, out)
    except OSError as e:  # a full disk: one line naming the report, whichever file it stopped at
        raise write_error(e, out) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a folder this process made
    return out
