"""The page of an SAE's features (`features.html`): every live feature, found by number or by token.

One offline file: the SAE's figures on top, then a validation window with the features that fire
on each of its tokens, then the features, drawn by inline JavaScript from data in the page (a
thousand features' contexts are too many elements to write out; the data is a few hundred
bytes per feature). The features come a hundred at a time ("show more"), most frequent first
(the dense ones, active on more than `DENSE` of the tokens, last), or by strength or number;
the search box finds a feature by its number ("123") or the features that peak on a token
("the": the token where their top contexts peak, then the tokens they promote).

Each feature shows its density, its largest activation, a histogram of its activations (x: the
activation on a log scale from its smallest to its largest, y: how many tokens), the tokens its
direction promotes and suppresses (residual stream only) and its top contexts: the token where
it peaks is outlined, every token is shaded by the feature's activation on it (hover for the number).
"""

from __future__ import annotations

import html
import json
from importlib import resources

from glassgpt.analysis.view import json_for_script
from glassgpt.sae.evaluate import DENSE

SHADES = 100  # the activations around a peak are sent as whole percents of the feature's max


def asset(name: str) -> str:
    return resources.files("glassgpt.sae").joinpath("page_assets", name).read_text(encoding="utf-8")


def page_data(features: list[dict], tokens_read: int | None = None,
              token_view: tuple[list[str], list] | None = None) -> dict:
    """The live features in the page's compact form: the token labels once (`vocab`), each feature's
    contexts as label indices and its activations as percents of its max."""
    vocab: dict[str, int] = {}

    def ids(labels: list[str]) -> list[int]:
        return [vocab.setdefault(label, len(vocab)) for label in labels]

    alive = sorted((f for f in features if f["density"] > 0), key=lambda f: (f["density"] > DENSE, -f["density"]))
    rows = []
    for f in alive:
        peak = f["max"] or 1.0
        row = {"i": f["feature"], "d": f["density"], "m": f["max"],
               "c": [[c["at"], c["activation"], ids(c["tokens"]),
                      [round(SHADES * min(max(a, 0.0) / peak, 1.0)) for a in c["activations"]]] for c in f["contexts"]]}
        if f["histogram"]:
            h = f["histogram"]
            row["h"] = [round(h["log10_min"], 3), round(h["log10_max"], 3), h["counts"]]
        if "promotes" in f:
            row["p"], row["s"] = ids(f["promotes"]), ids(f["suppresses"])
        rows.append(row)
    data = {"features": rows, "width": len(features), "tokens_read": tokens_read, "dense": DENSE}
    if token_view is not None:
        labels, fired = token_view
        data["text"] = [[vocab.setdefault(label, len(vocab)), [[f, round(v, 3)] for f, v in per]]
                        for label, per in zip(labels, fired)]
    data["vocab"] = list(vocab)
    return data


def decode_page_data(page: str) -> dict:
    """The data a features.html holds (page_data's dict), read back from the page."""
    start = page.index(DATA_OPEN) + len(DATA_OPEN)
    return json.loads(page[start: page.index("</script>", start)])


DATA_OPEN = "<script type='application/json' id='data'>"


def _figures(evaluation: dict) -> str:
    cells = []
    for key, value in evaluation.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        cells.append(f"<div><dt>{html.escape(key)}</dt><dd>{html.escape(shown)}</dd></div>")
    return f"<dl class='figures'>{''.join(cells)}</dl>"


def render_features_html(title: str, evaluation: dict, features: list[dict], limit: int | None = None,
                         token_view: tuple[list[str], list] | None = None, tokens_read: int | None = None) -> str:
    """The page (the module's docstring) of `features` (feature_stats' list): every live one, or the
    `limit` most frequent; with `token_view=(tokens, features_per_token)`, the text with the features
    on each token; `tokens_read`: how many validation tokens the features were measured on."""
    data = page_data(features, tokens_read, token_view)
    if limit is not None:
        data["features"] = data["features"][:limit]
    live = sum(1 for f in features if f["density"] > 0)
    full = sum(1 for f in features if f["density"] > 0 and len(f["contexts"]) >= 8)
    read = f" on {tokens_read:,} validation tokens" if tokens_read else ""
    intro = (f"<p>{live:,} of {len(features):,} features fire{read} ({full:,} of them in at least 8 different "
             "places, shown as their top contexts); all of them are below, the most frequent first (the dense ones, "
             f"active on more than {DENSE:.0%} of the tokens, last). For each: its density (the share of tokens it "
             "is active on), its largest activation, a <b>histogram</b> of its activations (left to right: the "
             "activation on a log scale from its smallest to its largest, marked under the axis; bar height: how "
             "many tokens), for the residual stream the tokens its direction promotes and suppresses through the "
             "unembedding, and its <b>top contexts</b>: the token where it peaks is outlined, each token is "
             "shaded by the feature's activation on it (hover for the number), and no two contexts repeat the "
             "same tokens or overlap.</p>")
    controls = ("<div class='controls'><label>Find <input id='search' type='search' autocomplete='off' "
                "placeholder='a feature number, e.g. 12, or a token, e.g. the'></label> "
                "<label>Order <select id='order'><option value='frequent'>most frequent first</option>"
                "<option value='strongest'>strongest first</option><option value='number'>by number</option>"
                "</select></label> <span id='shown' class='meta' role='status'></span></div>")
    text = ("<section id='text'><h2>Which features fire where</h2><p>A validation window: hover a token for its "
            "most active features, click it to show the first.</p><div id='text-tokens' class='ctx'></div>"
            "</section>") if token_view is not None else ""
    return "".join([
        "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>",
        f"<title>{html.escape(title)}</title><style>{asset('features.css')}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>", _figures(evaluation), intro, text,
        f"<h2>Features</h2>{controls}<div id='features'><p class='meta'>The features are drawn by the page's "
        "script: it needs JavaScript.</p></div><button id='more' type='button' hidden>Show more</button>",
        f"{DATA_OPEN}{json_for_script(data)}</script>",
        f"<script>{asset('features.js')}</script></body></html>"])
