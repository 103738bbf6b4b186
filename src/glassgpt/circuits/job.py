"""`glassgpt circuit RUN --task induction|repeat | --pairs FILE`: find the circuit of a task in a
run's model and write its folder (default RUN/circuit):

    circuit.json   nodes, edges (src, dst, score[, exact]), circuit (the edges kept), faithfulness,
                   curve ([edges, faithfulness]), the metric, per-head checks, the summary
    circuit.png    the circuit beside its faithfulness curve
    circuit.html   the graph view (offline), and the attention view of one of the task's prompts

The steps: the clean and corrupted runs of every pair; EAP-IG scores for every edge; exact
patching of every edge as the check on them (when the graph has at most EXACT_LIMIT edges);
faithfulness by patching, for the top n edges over a range of n; the smallest circuit reaching
the target; each head's own effect (its output patched, or zeroed) and, when `glassgpt analyze`
has run, its description, to cross-check the heads the circuit names.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import torch

from glassgpt.circuits.faithfulness import Circuit, faithfulness_curve, smallest_circuit
from glassgpt.circuits.graph import Graph, slot_node
from glassgpt.circuits.patching import PairRuns
from glassgpt.circuits.scoring import (eap_scores, exact_edge_effects, exact_node_effects, node_scores,
                                       rank_correlation, rank_correlation_se)
from glassgpt.circuits.tasks import Task, induction_task, read_pairs, repeat_task
from glassgpt.circuits.view import render
from glassgpt.errors import RunError, UsageError

JSON, PNG, HTML = "circuit.json", "circuit.png", "circuit.html"
CIRCUIT_FILES = (JSON, PNG, HTML)
EXACT_LIMIT = 2000  # edges: up to this many, each is also patched on its own (one forward pass each)
TASKS = ("induction", "repeat")
MAX_NAMED_HEADS = 8  # heads the summary names, by |score|


def round_score(x: float) -> float | None:
    """A score as circuit.json and the view both hold it: 6 significant digits (None for NaN)."""
    return None if not math.isfinite(x) else float(f"{x:.6g}")


def check_out(out: Path) -> None:
    """A new or empty folder, or an earlier circuit folder holding nothing else (never the user's own)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"{out} exists and is not a folder: choose another --out")
    if not out.exists() or not any(out.iterdir()):
        return
    foreign = [p.name for p in out.iterdir() if p.name not in CIRCUIT_FILES or not p.is_file() or p.is_symlink()]
    if foreign or not (out / JSON).is_file():
        what = f"it holds {foreign[0]!r}" if foreign else f"it has no {JSON}"
        raise UsageError(f"{out} is not an earlier glassgpt circuit folder ({what}) and would be replaced: "
                         "choose a new or empty --out")


def build_task(model, tokenizer, run_config, task: str | None, pairs: str | Path | None, n_pairs: int, span: int,
               seed: int, metric: str | None) -> Task:
    """The task the command names: exactly one of --task and --pairs."""
    if (task is None) == (pairs is None):
        raise UsageError("give one of --task induction|repeat and --pairs FILE")
    block_size, vocab_size = model.config.block_size, tokenizer.vocab_size
    if pairs is not None:
        return read_pairs(pairs, tokenizer, vocab_size, block_size, metric)
    if task == "induction":
        return induction_task(vocab_size, block_size, n_pairs, seed, metric, decode=tokenizer.decode)
    if task == "repeat":
        return repeat_task(validation_tokens(run_config, tokenizer), block_size, n_pairs, span, seed, metric,
                           decode=tokenizer.decode)
    raise UsageError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")


def validation_tokens(run_config, tokenizer):
    from glassgpt.data import TokenDataset

    name = run_config.train.dataset
    try:
        dataset = TokenDataset.load(name)
    except UsageError as e:
        raise UsageError(f"the repeat task reads the run's validation text, and dataset {name!r} is not ready "
                         f"here ({e})") from None
    if dataset.tokenizer.to_dict() != tokenizer.to_dict():
        raise UsageError(f"dataset {name!r} here is prepared with another tokenizer than the run's: the repeat task "
                         "needs the run's own validation text")
    return dataset.split("val")


def zeroed_heads(runs: PairRuns) -> dict[str, torch.Tensor]:
    """The change of the metric on each clean prompt (N,) when each head's output is zeroed."""
    from glassgpt.analysis.measures import zero_head
    from glassgpt.inference.mode import inference

    clean = runs.clean_metric.double()
    changes = {}
    with inference(runs.model):
        for layer in range(runs.graph.n_layer):
            for head in range(runs.graph.n_head):
                values = [r.batch.metric(runs.model.run_with_hooks(
                    r.batch.clean.to(runs.device), fwd_hooks=[(f"blocks.{layer}.attn.z", zero_head(head))])[0]).cpu()
                    for r in runs.runs]
                changes[f"L{layer}.H{head}"] = torch.cat(values).double() - clean
    return changes


def head_descriptions(run_dir: Path, graph: Graph) -> dict[str, str]:
    """Each head's kind from the run's analysis (RUN/analysis/analysis.json), when there is one."""
    from glassgpt.checkpoint import read_json

    path = run_dir / "analysis" / "analysis.json"
    if not path.is_file():
        return {}
    try:
        results = read_json(path)
        if isinstance(results.get("heads"), list):  # per head: layer, head, description
            return {f"L{h['layer']}.H{h['head']}": str(h["description"]) for h in results["heads"]}
        from glassgpt.analysis.summary import head_kinds

        kinds = head_kinds(results)
        return {f"L{layer}.H{head}": kinds[layer][head] for layer in range(graph.n_layer)
                for head in range(graph.n_head) if layer < len(kinds) and head < len(kinds[layer])}
    except (RunError, KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError):
        return {}  # an analysis of another shape (or damaged) describes nothing


def with_se(name: str, values: torch.Tensor) -> dict:
    """{name: the mean of per-pair values, name_se: its standard error}, as circuit.json holds them."""
    mean, se = mean_se(values)
    return {name: round_score(mean), f"{name}_se": round_score(se)}


def mean_se(values: torch.Tensor) -> tuple[float, float]:
    values = values.double()
    se = float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else math.nan
    return float(values.mean()), se


def find_circuit(run_dir: str | Path, *, task: str | None = None, pairs: str | Path | None = None,
                 out: str | Path | None = None, target: float = 0.8, steps: int = 5, n_pairs: int = 32,
                 span: int = 8, seed: int = 0, metric: str | None = None, device: str = "cpu",
                 dtype: str = "float32") -> dict:
    """Find, measure and write the circuit of a task in the run's model; returns circuit.json's record."""
    from glassgpt.bench.timing import stopwatch
    from glassgpt.checkpoint import load_run

    if not 0 < target <= 1:
        raise UsageError(f"--target is a faithfulness in (0, 1], got {target}")
    run_dir = Path(run_dir)
    model, tokenizer, run_config = load_run(run_dir, device, dtype=dtype)
    out = Path(out) if out is not None else run_dir / "circuit"
    check_out(out)
    the_task = build_task(model, tokenizer, run_config, task, pairs, n_pairs, span, seed, metric)
    elapsed, seconds = stopwatch(device), {}
    runs = PairRuns(model, the_task.batches)
    check_gap(runs, the_task)
    seconds["runs"] = elapsed()
    scores = eap_scores(runs, steps)
    seconds["scores"] = elapsed() - seconds["runs"]
    graph = runs.graph
    exact = exact_edge_effects(runs) if graph.n_edges <= EXACT_LIMIT else None
    seconds["exact"] = elapsed() - sum(seconds.values())
    curve = faithfulness_curve(runs, scores)
    best = smallest_circuit(runs, scores, target, curve) or curve[-1]
    seconds["curve"] = elapsed() - sum(seconds.values())
    checks = {"patched": dict(zip(graph.sources, exact_node_effects(runs, per_pair=True))),
              "zeroed": zeroed_heads(runs), "descriptions": head_descriptions(run_dir, graph)}
    record = make_record(run_dir, the_task, runs, scores, exact, curve, best, target, steps, checks)
    record["view_prompt"] = "the first clean prompt of the task: " + repr(the_task.examples[0]["clean"])
    seconds["total"] = elapsed()
    record["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    write_folder(out, graph, record, scores, best, model, tokenizer, the_task)
    return record


def check_gap(runs: PairRuns, task: Task) -> None:
    clean, corrupted = runs.clean_metric, runs.corrupted_metric
    if not (clean.isfinite().all() and corrupted.isfinite().all()):
        raise UsageError(f"the {task.metric} metric is not finite on some pairs: check the answer tokens and positions")
    gap = float(clean.double().mean() - corrupted.double().mean())
    if abs(gap) < 1e-6:
        raise UsageError(f"the clean and corrupted prompts give the same {task.metric} ({float(clean.mean()):.4g}): "
                         "the corruption changes nothing the metric sees, so no circuit can be measured; "
                         "choose pairs that differ where it matters")


def make_record(run_dir: Path, task: Task, runs: PairRuns, scores: torch.Tensor, exact: torch.Tensor | None,
                curve: list[Circuit], best: Circuit, target: float, steps: int, checks: dict) -> dict:
    graph = runs.graph
    edges = []
    for edge in graph.edges:
        u, d = graph.edge_index(edge)
        row = {"src": edge.src, "dst": edge.dst, "score": round_score(float(scores[u, d]))}
        if exact is not None:
            row["exact"] = round_score(float(exact[u, d]))
        edges.append(row)
    by_edge = {(e["src"], e["dst"]): e for e in edges}
    circuit = [{k: by_edge[e][k] for k in ("src", "dst", "score")} for e in graph.edges_in(best.keep)]
    clean, clean_se = mean_se(runs.clean_metric)
    corrupted, corrupted_se = mean_se(runs.corrupted_metric)
    gap, gap_se = mean_se(runs.clean_metric - runs.corrupted_metric)  # paired: the same prompts but the corruption
    in_circuit = {graph.sources[u] for u in best.keep.nonzero()[:, 0].tolist()} | {
        slot_node(graph.slots[d]) for d in best.keep.nonzero()[:, 1].tolist()}
    totals = node_scores(scores)
    heads = [{"node": name, "layer": layer, "head": head, "in_circuit": name in in_circuit,
              "score": round_score(float(totals[graph.source_index(name)])),
              **with_se("patched", checks["patched"][name]), **with_se("zeroed", checks["zeroed"][name]),
              "description": checks["descriptions"].get(name)}
             for layer in range(graph.n_layer) for head in range(graph.n_head) for name in [f"L{layer}.H{head}"]]
    agreement = None
    if exact is not None:
        values, effects = scores[graph.mask], exact[graph.mask]  # (E,) each
        agreement = {"spearman_abs": rank_correlation(values.abs(), effects.abs()),
                     "spearman_abs_se": rank_correlation_se(values.abs(), effects.abs()),
                     "spearman": rank_correlation(values, effects), "spearman_se": rank_correlation_se(values, effects),
                     "edges": graph.n_edges}
    record = {
        "title": f"Circuit for the {task.name} task in {run_dir.name}", "run_dir": str(run_dir),
        "task": {"name": task.name, "description": task.description, "pairs": task.n_pairs, "examples": task.examples},
        "method": {"name": "EAP-IG" if steps > 1 else "EAP", "steps": steps,
                   "path": "embeddings, corrupted to clean" if steps > 1 else "the clean run's gradient"},
        "metric": {"name": task.metric, "clean": clean, "clean_se": clean_se, "corrupted": corrupted,
                   "corrupted_se": corrupted_se, "gap": gap, "gap_se": gap_se,
                   "gap_significant": not math.isfinite(gap_se) or abs(gap) >= 2 * gap_se},
        "nodes": graph.nodes,
        "node_scores": {name: round_score(float(totals[u])) for u, name in enumerate(graph.sources)},
        "node_patching": {name: round_score(float(v.double().mean())) for name, v in checks["patched"].items()},
        "heads": heads, "edges": edges, "circuit": circuit,
        "faithfulness": best.faithfulness.value, "faithfulness_se": best.faithfulness.se, "target": target,
        "reached_target": best.faithfulness.value >= target, "circuit_top": best.top,
        "circuit_edges": best.n_edges, "total_edges": graph.n_edges,
        "curve": [[c.n_edges, c.faithfulness.value] for c in curve],
        "curve_se": [c.faithfulness.se for c in curve], "agreement": agreement,
    }
    record["summary"] = summary(record)
    return record


def _pm(value: float, se: float | None, digits: int = 3) -> str:
    if se is None or not math.isfinite(se):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} \u00b1 {se:.{digits}f}"


def summary(r: dict) -> str:
    """The record in sentences, one a line, each number with its standard error."""
    m = r["metric"]
    lines = [f"Task: {r['task']['description']}.",
             f"Metric ({m['name']}, mean over {r['task']['pairs']} pairs): {_pm(m['clean'], m['clean_se'])} on the "
             f"clean prompts, {_pm(m['corrupted'], m['corrupted_se'])} on the corrupted ones."]
    if not m["gap_significant"]:
        lines.append(f"The corruption moves the metric by only {_pm(m['gap'], m['gap_se'])}, less than twice its "
                     "standard error: the model does not measurably do this task, so no circuit below means much.")
    a = r["agreement"]
    method = f"{r['method']['name']} ({r['method']['steps']} steps)" if r["method"]["steps"] > 1 else "EAP"
    lines.append(f"Edges scored by {method}: {r['total_edges']}." + (
        f" Against exact patching of each edge on its own: Spearman {_pm(a['spearman_abs'], a['spearman_abs_se'], 2)} "
        f"on |score| (the order the circuit is cut in), {_pm(a['spearman'], a['spearman_se'], 2)} signed "
        "(standard errors over the edges)." if a else
        f" (Over {EXACT_LIMIT} edges: not checked edge by edge.)"))
    share = r["circuit_edges"] / r["total_edges"]
    f = _pm(r["faithfulness"], r["faithfulness_se"])
    if r["reached_target"]:
        lines.append(f"Smallest circuit reaching faithfulness {r['target']:g}: {r['circuit_edges']} edges "
                     f"({share:.0%} of {r['total_edges']}), faithfulness {f}, measured by patching every other edge "
                     "from the corrupted run.")
    else:
        lines.append(f"No circuit of top edges reaches faithfulness {r['target']:g}; the whole graph is kept "
                     f"({r['circuit_edges']} edges, faithfulness {f}).")
    heads = sorted((h for h in r["heads"] if h["in_circuit"]), key=lambda h: -abs(h["score"] or 0))
    if heads:
        described = [f"{h['node']} ({h['description'] + '; ' if h['description'] else ''}patched "
                     f"{_pm(h['patched'], h['patched_se'])}, zeroed {_pm(h['zeroed'], h['zeroed_se'])})"
                     for h in heads[:MAX_NAMED_HEADS]]
        more = f", and {len(heads) - MAX_NAMED_HEADS} more" if len(heads) > MAX_NAMED_HEADS else ""
        hint = "" if any(h["description"] for h in heads) else " (glassgpt analyze RUN first describes each head)"
        lines.append(f"Its heads, by score, with the change of the {m['name']} when each head's output alone is "
                     f"patched from the corrupted run or zeroed{hint}: {', '.join(described)}{more}.")
    return "\n".join(lines)


def write_folder(out: Path, graph: Graph, record: dict, scores: torch.Tensor, best: Circuit, model, tokenizer,
                 task: Task) -> None:
    """circuit.json, circuit.png and circuit.html, written whole into a temporary folder, then put at `out`."""
    from glassgpt.analysis.plots import token_labels
    from glassgpt.analysis.report import png_bytes, replace_dir
    from glassgpt.analysis.view import render as render_attention, view_data
    from glassgpt.bench.report import finite_or_none
    from glassgpt.circuits.drawing import picture

    ids = task.batches[0].clean[0].tolist()
    first = max((h for h in record["heads"] if h["in_circuit"]), key=lambda h: abs(h["score"] or 0), default=None)
    data = view_data(model, ids, token_labels(tokenizer, ids), lambda i: token_labels(tokenizer, [i])[0],
                     title="attention on the task's first clean prompt")
    fragment = render_attention(data, layer=first["layer"] if first else 0, head=first["head"] if first else 0)
    png = png_bytes(picture(graph, scores, best.keep, record["curve"], record["target"], record["title"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        tmp.chmod(0o755)
        (tmp / JSON).write_text(json.dumps(finite_or_none(record), indent=1, ensure_ascii=False, allow_nan=False),
                                encoding="utf-8")
        (tmp / PNG).write_bytes(png)
        (tmp / HTML).write_text(render(record, fragment), encoding="utf-8")
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
