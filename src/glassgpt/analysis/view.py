"""Interactive views that work offline: attention, logit lens, per-token loss, per-head scores.

One component, plain JavaScript and CSS from `view_assets/` inlined into the page
(no CDN, no network, no build step), used by report.html, the demo's Inside tab
and Jupyter:

    from glassgpt.analysis import view
    view("runs/quickstart", "ROMEO: wherefore art thou?")   # or view(model, text, tokenizer=...)

The page carries its numbers in one JSON block (`<script type="application/json"
class="gg-data">`). Attention patterns are stored as their causal half only
(query i keeps keys 0..i), quantised to 8 bits (`round(w * 255)`), compressed
with zlib and base64-encoded; the page decompresses them with the browser's own
DecompressionStream. A shown weight is therefore within 1/510 (about 0.002) of
the model's, printed to 3 decimals.

Test hooks (the design's Views contract, docs/explanation/design.md): tokens are `[data-pos=i]`; the attention view's
root `.gg-attention` carries `data-layer`, `data-head`, `data-mode`
("from": where token i looks, "to": what looks at it) and `data-selected`;
while token i is selected every visible key token j carries `data-weight`. The
per-token loss strip's tokens carry `data-loss`, each per-head score cell
`data-layer`, `data-head`, `data-value` (and `data-se`, its standard error, where
measured); the logit lens's cells `data-rank`; the head sentences' rows
(`table.gg-heads tr`) `data-layer`, `data-head`, and `.gg-about` the open head's.
"""

from __future__ import annotations

import base64
import html
import json
import math
import zlib
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

from glassgpt.errors import UsageError

LEVELS = 255  # 8 bits per weight
PRECISION = 0.5 / LEVELS  # the largest error of a shown weight
LENS_TOP_K = 5
LENS_FLOPS = 2e12  # forward FLOPs the prompt's logit lens may spend; beyond it, an even subset of positions


# ---------------------------------------------------------------- the causal half, 8 bits

def quantize_patterns(patterns: torch.Tensor) -> bytes:
    """(L, H, T, T) attention patterns -> bytes: for each layer, head and query i, the
    weights on keys 0..i as round(w * 255), in that order (L H T (T + 1) / 2 bytes)."""
    L, H, T, _ = patterns.shape
    rows, cols = torch.tril_indices(T, T)  # row-major: query 0 key 0, query 1 keys 0..1, ...
    half = patterns.detach().float().cpu()[:, :, rows, cols]  # (L, H, T (T + 1) / 2)
    return (half.clamp(0, 1) * LEVELS).round().to(torch.uint8).contiguous().numpy().tobytes()


def dequantize_patterns(data: bytes, L: int, H: int, T: int) -> torch.Tensor:
    """The inverse of `quantize_patterns`, up to PRECISION: bytes -> (L, H, T, T), zeros above the diagonal."""
    half = torch.frombuffer(bytearray(data), dtype=torch.uint8).float().view(L, H, -1) / LEVELS
    rows, cols = torch.tril_indices(T, T)
    out = torch.zeros(L, H, T, T)
    out[:, :, rows, cols] = half
    return out


def encode_bytes(data: bytes) -> str:
    return base64.b64encode(zlib.compress(data, 9)).decode("ascii")  # level 9: 10% smaller than 6 on trained heads


def decode_bytes(text: str) -> bytes:
    return zlib.decompress(base64.b64decode(text))


def embedded_view_data(page: str) -> dict:
    """The JSON block of the first view in an HTML page, as stored (`patterns` still encoded)."""
    start = page.index('class="gg-data">') + len('class="gg-data">')
    return json.loads(page[start: page.index("</script>", start)])


def decode_view_data(page: str) -> dict:
    """The JSON block of the first view in an HTML page, with `patterns` decoded to (L, H, T, T)."""
    data = embedded_view_data(page)
    data["patterns"] = dequantize_patterns(decode_bytes(data["patterns"]), data["L"], data["H"], data["T"])
    return data


# ---------------------------------------------------------------- the numbers

def unembed(model, x: torch.Tensor) -> torch.Tensor:
    """Residual stream (..., C) -> logits (..., V) as the model's own head computes them."""
    if hasattr(model, "unembed"):
        return model.unembed(x)
    logits = model.lm_head(model.ln_f(x)).float()
    cap = model.config.logit_softcap
    return cap * torch.tanh(logits / cap) if cap else logits


def _round(values, digits: int = 4) -> list:
    return [None if v != v else round(float(v), digits) for v in torch.as_tensor(values).flatten().tolist()]


def lens_positions(model, T: int) -> list[int]:
    """The positions the prompt's logit lens decodes: all of them within LENS_FLOPS, else an even subset."""
    cfg = model.config
    per_position = 2 * cfg.n_embd * cfg.vocab_size * (cfg.n_layer + 1)
    keep = max(1, min(T, int(LENS_FLOPS // per_position)))
    return list(range(T)) if keep >= T else sorted({round(i * (T - 1) / max(keep - 1, 1)) for i in range(keep)})


def head_attribution(model, cache: dict, logits: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """Mean direct logit attribution (L, H) of each head to the true next token, over the prompt's positions."""
    from glassgpt.analysis.circuits import attribute_from_cache

    total = torch.zeros(model.config.n_layer, model.config.n_head)
    for position in range(len(ids) - 1):
        total += attribute_from_cache(model, cache, logits, ids[position + 1], position)["heads"]
    return total / max(len(ids) - 1, 1)


def prompt_scores(patterns: torch.Tensor, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-head scores measured on the prompt alone (the Jupyter view and the demo; the report
    passes its own, measured on validation windows)."""
    from glassgpt.analysis.measures import normalized_entropy, prefix_matching, previous_token_stripe, sink_scores

    sinks = sink_scores(patterns)
    return {"previous_token": previous_token_stripe(patterns),  # (L, H)
            "prefix_matching": prefix_matching(patterns[:, None], idx),  # (L, 1, H, T, T) with (1, T) -> (L, H)
            "first_position_share": sinks["first_position_share"], "max_key_share": sinks["max_key_share"],
            "depth_scan": normalized_entropy(patterns)}


SCORES = [  # key, title, what the value is, colour scale ("share": 0..1, "signed": around 0, "free": min..max)
    ("induction", "induction", "attention to the token after the earlier occurrence (repeated random tokens)", "share"),
    ("previous_token", "previous token", "attention on the previous token", "share"),
    ("prefix_matching", "prefix matching", "attention on the token after an earlier occurrence of the current one",
     "share"),
    ("first_position_share", "sink: position 0", "share of attention on position 0", "share"),
    ("max_key_share", "sink: one key", "share of attention on the most-attended key", "share"),
    ("depth_scan", "depth scan", "normalised entropy: 0 = one key, 1 = uniform over the past", "share"),
    ("attention_distance", "attention distance", "mean tokens back", "free"),
    ("ablation", "ablation", "loss increase (nats) when the head is zeroed", "signed"),
    ("attribution", "attribution", "mean direct logit attribution to the true next token", "signed"),
]


def view_data(model, ids: list[int], tokens: list[str], decode=None, scores: dict | None = None,
              patterns: torch.Tensor | None = None, title: str = "", notes: dict | None = None,
              scores_se: dict | None = None, heads: list[dict] | None = None, tokenizer=None) -> dict:
    """Everything a view shows, as JSON-ready numbers: the prompt's attention patterns (quantised),
    the logit lens's top predictions per layer and position with the rank of the true next token,
    the loss on each token, the per-head scores (`scores`: name -> (L, H); the prompt's own
    are measured when it is None) with their standard errors (`scores_se`: name -> (L, H)), and one
    sentence per head (`heads`, as `glassgpt.analysis.heads.describe_heads` gives them; measured on
    the prompt, with `tokenizer`'s token classes, when None). `decode(id)` names a predicted token."""
    from glassgpt.analysis.measures import pattern_names
    from glassgpt.inference.mode import inference

    cfg = model.config
    T, L, H = len(ids), cfg.n_layer, cfg.n_head
    check_prompt(len(ids), cfg.block_size)
    device = next(model.parameters()).device
    idx = torch.tensor([ids], device=device)
    points = ["embed"] + [f"blocks.{i}.resid_post" for i in range(L)]
    dla_names = [f"blocks.{i}.attn.z" for i in range(L)] + ([] if cfg.attn_only else
                                                              [f"blocks.{i}.mlp.out" for i in range(L)])
    names = list(dict.fromkeys(points + dla_names + ([] if patterns is not None else pattern_names(model))))
    with inference(model):
        logits, cache = model.run_with_cache(idx, names=names)
        if patterns is None:
            patterns = torch.stack([cache[n][0].float() for n in pattern_names(model)])  # (L, H, T, T)
        logits = logits.float()
        positions = lens_positions(model, T)
        top_ids, top_p, ranks, p_true = [], [], [], []
        targets = torch.tensor(ids[1:] + [-1], device=device)
        for name in points:
            lens = unembed(model, cache[name][0, positions]).float().log_softmax(-1)  # (P, V)
            p, i = lens.exp().topk(min(LENS_TOP_K, lens.size(-1)), dim=-1)
            top_ids.append(i.cpu())
            top_p.append(p.cpu())
            tgt = targets[positions].clamp(min=0)
            true_logp = lens.gather(-1, tgt[:, None])  # (P, 1)
            rank = (lens > true_logp).sum(-1) + 1
            valid = targets[positions] >= 0
            ranks.append(torch.where(valid, rank, 0).cpu())
            p_true.append(torch.where(valid, true_logp[:, 0].exp(), torch.zeros(())).cpu())
        token_loss = F.cross_entropy(logits[0, :-1], idx[0, 1:], reduction="none").cpu()  # (T-1,): token i+1's loss
        own = prompt_scores(patterns.cpu(), idx[0].cpu()) if scores is None else {}
        if T >= 2:
            own["attribution"] = head_attribution(model, cache, logits, ids)
    all_scores = {**own, **(scores or {})}
    if heads is None:
        from glassgpt.analysis.heads import prompt_heads

        heads = prompt_heads(model, ids, patterns, tokenizer) if T >= 2 else []
    scores_se = scores_se or {}
    used = sorted({int(i) for t in top_ids for i in t.flatten().tolist()} | set(int(i) for i in ids))
    decode = decode or (lambda i: f"#{i}")
    return {
        "v": 1, "title": title, "L": L, "H": H, "T": T, "tokens": tokens, "ids": [int(i) for i in ids],
        "precision": round(PRECISION, 6), "patterns": encode_bytes(quantize_patterns(patterns)),
        "lens": {"labels": ["embed"] + [f"block {i}" for i in range(L)], "positions": positions,
                 "k": int(top_ids[0].size(-1)),
                 "top_ids": [int(v) for t in top_ids for v in t.flatten().tolist()],
                 "top_p": [round(float(v), 3) for t in top_p for v in t.flatten().tolist()],
                 "rank": [int(v) for t in ranks for v in t.tolist()],
                 "p_true": [round(float(v), 3) for t in p_true for v in t.tolist()]},
        "vocab": {str(i): decode(i) for i in used},
        "loss": [None] + _round(token_loss, 3),  # loss[i]: predicting token i from the tokens before it
        "uniform_loss": round(math.log(cfg.vocab_size), 3),
        "scores": [{"key": key, "title": name, "what": what, "scale": scale,
                    "values": [_round(row) for row in torch.as_tensor(all_scores[key]).float().cpu()],
                    "se": ([_round(row) for row in torch.as_tensor(scores_se[key]).float().cpu()]
                           if key in scores_se else None)}
                   for key, name, what, scale in SCORES if key in all_scores],
        "heads": [{"layer": h["layer"], "head": h["head"], "kind": h["kind"], "description": h["description"]}
                  for h in heads],
        "notes": notes or {},
    }


def check_prompt(T: int, block_size: int) -> None:
    if T == 0:
        raise UsageError("the text is empty: give at least 2 tokens to look at")
    if T < 2:
        raise UsageError("the text is 1 token long: attention needs at least 2 tokens (a past to look at)")
    if T > block_size:
        raise UsageError(f"the text is {T} tokens, longer than the model's context of {block_size}: shorten it")


# ---------------------------------------------------------------- the page

def asset(name: str) -> str:
    return resources.files("glassgpt.analysis").joinpath("view_assets", name).read_text(encoding="utf-8")


def to_jsonable(value):
    """Tensors to (nested) lists of numbers rounded to 6 digits, recursively; a number that is
    not finite (a measure that overflowed in float16, say) becomes null, so JSON stays JSON."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.tolist() if not value.is_floating_point() else value.double().round(decimals=6).tolist()
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_for_script(data: dict) -> str:
    """JSON safe inside <script>: no `</`, no `<!--`, sorted keys (the same numbers give the same bytes)."""
    text = json.dumps(to_jsonable(data), ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render(data: dict | None, error: str | None = None, layer: int = 0, head: int = 0,
           with_assets: bool = True) -> str:
    """The view as an HTML fragment: its root, its data and (unless `with_assets=False`, for a
    page that already holds them once) the inline CSS and JS. With `error`, a page that says it."""
    if error is not None or data is None:
        body = f'<div class="gg-view"><p class="gg-error" role="alert">{html.escape(error or "nothing to show")}</p></div>'
        return (f"<style>{asset('view.css')}</style>" if with_assets else "") + body
    if not (0 <= layer < data["L"] and 0 <= head < data["H"]):
        raise UsageError(f"layer must be in 0..{data['L'] - 1} and head in 0..{data['H'] - 1}, "
                         f"got layer {layer}, head {head}")
    parts = [f'<div class="gg-view" data-initial-layer="{layer}" data-initial-head="{head}">',
             '<p class="gg-loading">Loading the interactive view (it needs JavaScript).</p>',
             f'<script type="application/json" class="gg-data">{json_for_script(data)}</script></div>']
    if with_assets:
        parts = [f"<style>{asset('view.css')}</style>"] + parts + [f"<script>{asset('view.js')}</script>"]
    return "".join(parts)


def page(fragment: str, title: str = "glassgpt view") -> str:
    """A whole HTML document around a view fragment."""
    return ("<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>{html.escape(title)}</title></head><body>{fragment}</body></html>")


def srcdoc_iframe(document: str, height: int = 900) -> str:
    """The document in an iframe (the demo's Inside tab: Gradio does not run scripts put in its HTML)."""
    return (f'<iframe class="gg-frame" title="glassgpt view" style="width:100%;height:{height}px;border:0" '
            f'sandbox="allow-scripts" srcdoc="{html.escape(document, quote=True)}"></iframe>')


class View:
    """What `glassgpt.analysis.view` returns: shown by Jupyter (`_repr_html_`), or saved (`save`)."""

    def __init__(self, data: dict, layer: int = 0, head: int = 0):
        self.data, self.layer, self.head = data, layer, head
        self.fragment = render(data, layer=layer, head=head)  # checks layer and head

    def _repr_html_(self) -> str:
        return self.fragment

    def html(self) -> str:
        return page(self.fragment, self.data.get("title") or "glassgpt view")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.html(), encoding="utf-8")
        return path

    @property
    def patterns(self) -> torch.Tensor:
        """The patterns as the page holds them: (L, H, T, T), each weight within PRECISION."""
        d = self.data
        return dequantize_patterns(decode_bytes(d["patterns"]), d["L"], d["H"], d["T"])


def view(model, text, tokenizer=None, layer: int = 0, head: int = 0, title: str = "") -> View:
    """The interactive view of `text` (a string, or token ids) through `model` (a GPT, or a run
    directory whose tokenizer is then used). Bad input raises UsageError with one sentence."""
    from glassgpt.analysis.plots import token_labels

    if isinstance(model, (str, Path)):
        from glassgpt.checkpoint import load_run

        model, run_tokenizer, _ = load_run(model)
        tokenizer = tokenizer or run_tokenizer
    if isinstance(text, str):
        if tokenizer is None:
            raise UsageError("text is a string but no tokenizer was given: pass tokenizer=, or token ids")
        if text == "":
            raise UsageError("the text is empty: give at least 2 tokens to look at")
        ids = tokenizer.encode(text)
    else:
        ids = [int(i) for i in torch.as_tensor(text).flatten().tolist()]
    cfg = model.config
    check_prompt(len(ids), cfg.block_size)
    if not (0 <= layer < cfg.n_layer and 0 <= head < cfg.n_head):
        raise UsageError(f"layer must be in 0..{cfg.n_layer - 1} and head in 0..{cfg.n_head - 1}, "
                         f"got layer {layer}, head {head}")
    if any(not 0 <= i < cfg.vocab_size for i in ids):
        raise UsageError(f"token ids must be in 0..{cfg.vocab_size - 1}")
    if tokenizer is not None:
        tokens, decode = token_labels(tokenizer, ids), lambda i: token_labels(tokenizer, [i])[0]
    else:
        tokens, decode = [f"#{i}" for i in ids], None
    return View(view_data(model, ids, tokens, decode, title=title, tokenizer=tokenizer), layer, head)
