"""circuit.html: the graph view, offline, beside the attention view of one of the task's prompts.

The graph is an inline SVG drawn here (nodes by layer, as `layout.positions` places them; edges
as lines whose width grows with |score|, blue where patching the edge raises the metric, red
where it lowers it; the circuit's edges solid, the others faint); `view_assets/circuit.js`
(inlined, no network) shows an edge's or a node's numbers on hover or focus and opens a head,
on click or Enter, in the attention view below it (glassgpt.analysis.view's component).

Test hooks: every edge is `.gg-edge[data-src][data-dst][data-score]` (the score exactly as
circuit.json holds it) with `data-in-circuit` 1 or 0; every node `.gg-node[data-node]`, a head
also `[data-layer][data-head]`; the root `.gg-circuit-view` gets `data-opened` (the head last
opened) and `data-state=ready` once its script runs. Every text is escaped (`html.escape`).
"""

from __future__ import annotations

import html
from importlib import resources

from glassgpt.circuits.graph import Graph, slot_node
from glassgpt.circuits.layout import BOX, positions, slot_point, source_point

SCALE = (120.0, 96.0)  # px per grid unit, across and up
MARGIN = 60.0
MAX_DRAWN = 1500  # edges beyond the circuit's drawn at most (the strongest): a browser draws 30k lines slowly


def asset(name: str) -> str:
    return resources.files("glassgpt.circuits").joinpath("view_assets", name).read_text(encoding="utf-8")


def _attr(**values) -> str:
    return " ".join(f'{k.replace("_", "-")}="{html.escape(str(v), quote=True)}"' for k, v in values.items()
                    if v is not None)


def signed(x: float) -> str:
    return f"{x:+.4f}"


def svg(graph: Graph, edges: list[dict], nodes: dict[str, dict]) -> str:
    """The graph as SVG: `edges` as circuit.json writes them (src, dst, score, in_circuit, exact?),
    `nodes` name -> {score, in_circuit, description?}."""
    place = positions(graph)
    width = MARGIN * 2 + SCALE[0] * max(graph.n_head - 1, 1)
    top = max(y for _, y in place.values())
    height = MARGIN * 2 + SCALE[1] * top

    def at(point):
        return MARGIN + SCALE[0] * point[0], MARGIN + SCALE[1] * (top - point[1])

    strongest = max((abs(e["score"]) for e in edges), default=0.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
             f'height="{height:.0f}" role="img" aria-label="circuit graph">']
    for e in sorted(edges, key=lambda e: (e["in_circuit"], abs(e["score"]))):  # the circuit's drawn last, on top
        (x0, y0), (x1, y1) = at(source_point(place, e["src"])), at(slot_point(place, e["dst"]))
        exact = f"; exact patching {signed(e['exact'])}" if e.get("exact") is not None else ""
        title = f"{e['src']} \u2192 {e['dst']}: score {signed(e['score'])}{exact}"
        parts.append('<line class="gg-edge" tabindex="0" ' + _attr(
            data_src=e["src"], data_dst=e["dst"], data_score=repr(e["score"]), data_in_circuit=int(e["in_circuit"]),
            x1=f"{x0:.1f}", y1=f"{y0:.1f}", x2=f"{x1:.1f}", y2=f"{y1:.1f}",
            stroke="#2166ac" if e["score"] >= 0 else "#b2182b",
            stroke_width=f"{0.6 + 6.0 * abs(e['score']) / strongest:.2f}")
            + f"><title>{html.escape(title)}</title></line>")
    w, h = BOX[0] * SCALE[0], BOX[1] * SCALE[1]
    for name, (x, y) in place.items():
        cx, cy = at((x, y))
        info = nodes.get(name, {})
        layer, head = _head_of(name)
        words = [name]
        if info.get("score") is not None:
            words.append(f"node score {signed(info['score'])} (its edges' sum)")
        if info.get("description"):
            words.append(info["description"])
        if head is not None:
            words.append("click to open its attention")
        parts.append('<g class="gg-node" ' + _attr(
            data_node=name, data_layer=layer, data_head=head, data_in_circuit=int(bool(info.get("in_circuit"))),
            tabindex=0 if head is not None else None, role="button" if head is not None else None) + ">"
            f'<rect x="{cx - w:.1f}" y="{cy - h:.1f}" width="{2 * w:.1f}" height="{2 * h:.1f}" rx="6"></rect>'
            f'<text x="{cx:.1f}" y="{cy:.1f}">{html.escape(name)}</text>'
            f"<title>{html.escape('; '.join(words))}</title></g>")
    parts.append("</svg>")
    return "".join(parts)


def _head_of(name: str) -> tuple[int | None, int | None]:
    if name.startswith("L") and ".H" in name:
        layer, head = name[1:].split(".H")
        return int(layer), int(head)
    return None, None


def drawn_edges(edges: list[dict]) -> list[dict]:
    """The circuit's edges and at most MAX_DRAWN others, the strongest."""
    kept = [e for e in edges if e["in_circuit"]]
    others = sorted((e for e in edges if not e["in_circuit"]), key=lambda e: -abs(e["score"]))[:MAX_DRAWN]
    return kept + others


def graph_view(record: dict) -> str:
    """The graph view of a circuit.json record, as an HTML fragment with its CSS and script: for
    circuit.html and for the run's report. A record whose nodes are no model's graph raises ValueError."""
    graph = Graph.from_nodes(record["nodes"])
    in_circuit = {(e["src"], e["dst"]) for e in record["circuit"]}
    edges = [{"src": e["src"], "dst": e["dst"], "score": float(e["score"]), "exact": e.get("exact"),
              "in_circuit": (e["src"], e["dst"]) in in_circuit} for e in record["edges"]]
    used = {e["src"] for e in record["circuit"]} | {slot_node(e["dst"]) for e in record["circuit"]}
    described = {h["node"]: h["description"] for h in record["heads"]}
    nodes = {n: {"score": record["node_scores"].get(n), "in_circuit": n in used, "description": described.get(n)}
             for n in record["nodes"]}
    shown = drawn_edges(edges)
    note = (f"{len(shown)} of {len(edges)} edges drawn (the circuit's and the strongest others)."
            if len(shown) < len(edges) else "")
    return "".join([
        f"<style>{asset('circuit.css')}</style>",
        '<div class="gg-circuit-view">',
        ('<div class="gg-controls"><label><input type="checkbox" class="gg-only"> the circuit\'s edges only'
         "</label></div>"),
        ('<p class="gg-note">Nodes by layer, the embeddings at the bottom and the logits at the top; a head\'s '
         "three inputs are the query, key and value points along the bottom of its box, left to right. Line width "
         "grows with |score|: blue where patching the edge from the corrupted run raises the metric, red where it "
         "lowers it. Hover or focus an edge or a node for its numbers; click a head to open its attention. "
         f"{html.escape(note)}</p>"),
        f'<div class="gg-graphwrap">{svg(graph, shown, nodes)}</div>',
        '<p class="gg-info" aria-live="polite"></p>',
        "</div>",
        f"<script>{asset('circuit.js')}</script>",
    ])


def render(record: dict, attention_fragment: str) -> str:
    """The whole page: title, summary, the graph view, the curve's numbers, the attention view."""
    from glassgpt.analysis.view import page

    e = html.escape
    body = [
        f"<h1>{e(record['title'])}</h1>",
        "".join(f"<p>{e(p)}</p>" for p in record["summary"].split("\n")),
        graph_view(record),
        "<h2>Faithfulness against size</h2>",
        '<table class="gg-curve"><tr><th>edges</th><th>faithfulness</th></tr>' + "".join(
            f"<tr><td>{n}</td><td>{f:.3f}</td></tr>" for n, f in record["curve"]) + "</table>",
        f"<h2>Attention on one of the task's prompts</h2><p>{e(record['view_prompt'])}</p>",
        attention_fragment,
    ]
    return page("".join(body), record["title"])
