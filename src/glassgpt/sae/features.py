"""What each feature of an SAE is: where it fires, how strongly, and what it does to the logits.

For every feature, on the validation windows:
- its top-activating contexts: the `top` positions where it is largest, each with the
  tokens around it and the feature's activation on each of them;
- a histogram of its non-zero activations (log10 bins) and its density (the share of
  tokens it is active on);
- its logit effect: its decoder direction read through the final norm's gain and the
  unembedding, the tokens it promotes and suppresses most (a linear reading: the norm's
  scale and a softcap are left out).
"""

from __future__ import annotations

import html
import json

import torch

from glassgpt.sae.activations import to_rows
from glassgpt.sae.evaluate import DENSE
from glassgpt.sae.model import SAE

HISTOGRAM_BINS = 20



@torch.no_grad()
def feature_activations(model, sae: SAE, hook: str, windows: torch.Tensor, head: int | None = None,
                        batch_size: int = 16) -> torch.Tensor:
    """(B, T, width): every feature's activation at every position of `windows` (B, T)."""
    sae.eval()
    out = []
    for i in range(0, windows.size(0), batch_size):
        x = windows[i: i + batch_size]
        _, cache = model.run_with_cache(x, names=[hook])
        out.append(sae.encode(to_rows(cache[hook], head).float()).view(x.size(0), x.size(1), -1).cpu())
    return torch.cat(out)


@torch.no_grad()
def logit_effects(model, sae: SAE, count: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(width, count) ids of the tokens each feature's direction promotes most, and suppresses most.
    Only for SAEs of the residual stream's width."""
    gain = model.ln_f.weight.float()  # (C,)
    effect = (sae.W_dec.float() * gain) @ model.lm_head.weight.float().t()  # (width, V)
    return effect.topk(count, dim=-1).indices, (-effect).topk(count, dim=-1).indices


def feature_stats(model, sae: SAE, hook: str, windows: torch.Tensor, labels, head: int | None = None,
                  top: int = 8, context: int = 12) -> list[dict]:
    """One dict per feature (see the module's docstring); `labels(ids) -> [str]` names tokens."""
    acts = feature_activations(model, sae, hook, windows, head)  # (B, T, W)
    B, T, W = acts.shape
    flat = acts.reshape(B * T, W)
    density = (flat > 0).float().mean(dim=0)  # (W,)
    best = flat.topk(min(top, B * T), dim=0)  # values, indices: (top, W)
    per_head = ".attn." in hook and not hook.endswith(".attn.out")  # q, k, v, z: not the residual basis
    residual = sae.config.d_in == model.config.n_embd and head is None and not per_head
    promoted, suppressed = logit_effects(model, sae) if residual else (None, None)
    features = []
    for f in range(W):
        values = flat[:, f][flat[:, f] > 0]
        histogram = []
        if values.numel():
            logs = values.log10()
            lo, hi = float(logs.min()), float(logs.max())
            counts = torch.histc(logs, bins=HISTOGRAM_BINS, min=lo, max=hi if hi > lo else lo + 1e-6)
            histogram = {"log10_min": lo, "log10_max": hi, "counts": [int(c) for c in counts]}
        contexts = []
        for value, position in zip(best.values[:, f].tolist(), best.indices[:, f].tolist()):
            if value <= 0:
                break
            b, t = divmod(position, T)
            start = max(0, t - context)
            ids = windows[b, start: t + 3].tolist()
            contexts.append({"activation": round(value, 4), "at": t - start, "tokens": labels(ids),
                             "activations": [round(float(a), 4) for a in acts[b, start: t + 3, f]]})
        entry = {"feature": f, "density": float(density[f]), "max": float(values.max()) if values.numel() else 0.0,
                 "histogram": histogram, "contexts": contexts}
        if promoted is not None:
            entry["promotes"], entry["suppresses"] = labels(promoted[f].tolist()), labels(suppressed[f].tolist())
        features.append(entry)
    return features


@torch.no_grad()
def features_per_token(model, sae: SAE, hook: str, ids: list[int], head: int | None = None,
                       count: int = 3) -> list[list[tuple[int, float]]]:
    """For each token of `ids`, its `count` most active features as (feature, activation)."""
    acts = feature_activations(model, sae, hook, torch.tensor([ids], device=next(model.parameters()).device),
                               head)[0]  # (T, width)
    top = acts.topk(min(count, acts.size(-1)), dim=-1)
    return [[(int(f), round(float(v), 4)) for f, v in zip(fs, vs) if v > 0]
            for fs, vs in zip(top.indices.tolist(), top.values.tolist())]


def steering_hook(sae: SAE, feature: int, strength: float, head: int | None = None):
    """A hook function that adds `strength` times the feature's decoder direction to the
    activation at every position: generation then runs with the feature pushed on."""
    from glassgpt.sae.activations import from_rows, to_rows

    direction = sae.W_dec[feature].detach()  # (d_in,)

    def steer(act: torch.Tensor, hook) -> torch.Tensor:
        rows = to_rows(act, head)
        return from_rows(rows + strength * direction.to(rows.dtype), act, head)
    return steer


# ---------------------------------------------------------------- the page

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
.feature{border-top:1px solid #ddd;padding:.6em 0}.ctx{font-family:ui-monospace,monospace;white-space:pre;
margin:.15em 0;font-size:14px}.ctx span{border-radius:2px}.tok{color:#333}.meta{color:#666;font-size:13px}
svg{vertical-align:middle}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2em .5em}"""


def _context_html(ctx: dict, peak: float) -> str:
    spans = []
    for i, (token, a) in enumerate(zip(ctx["tokens"], ctx["activations"])):
        alpha = 0 if peak <= 0 else min(1.0, a / peak)
        border = "outline:1px solid #c33;" if i == ctx["at"] else ""
        spans.append(f"<span title='{a:.3f}' style='background:rgba(230,80,40,{alpha:.2f});{border}'>"
                     f"{html.escape(token)}</span>")
    return f"<div class='ctx'>{''.join(spans)}  <span class='meta'>{ctx['activation']:.3f}</span></div>"


def _histogram_svg(histogram) -> str:
    if not histogram:
        return ""
    counts = histogram["counts"]
    top = max(counts) or 1
    bars = "".join(f"<rect x='{i * 6}' y='{30 - 30 * c / top:.1f}' width='5' height='{30 * c / top:.1f}' fill='#c55'/>"
                   for i, c in enumerate(counts))
    return (f"<svg width='{6 * len(counts)}' height='30' role='img' aria-label='activation histogram'>{bars}</svg> "
            f"<span class='meta'>10^{histogram['log10_min']:.1f} .. 10^{histogram['log10_max']:.1f}</span>")


def _token_view_html(tokens: list[str], per_token: list[list[tuple[int, float]]]) -> str:
    """The text, each token carrying the features that fire on it (hover to read, click to go there)."""
    spans = []
    for token, fired in zip(tokens, per_token):
        label = ", ".join(f"feature {f}: {v:.3f}" for f, v in fired) or "no feature"
        target = f" href='#f{fired[0][0]}'" if fired else ""
        spans.append(f"<a class='tok'{target} title='{html.escape(label)}' data-features='"
                     f"{html.escape(json.dumps(fired))}'>{html.escape(token)}</a>")
    return ("<h2>Which features fire where</h2><p>A validation window: hover a token for its most active "
            f"features, click it to jump to the first.</p><div class='ctx'>{''.join(spans)}</div>")


def render_features_html(title: str, evaluation: dict, features: list[dict], limit: int = 200,
                         token_view: tuple[list[str], list] | None = None) -> str:
    """A page of the most frequent live features (at most `limit`), with the SAE's figures on top
    and, with `token_view=(tokens, features_per_token)`, the text with the features on each token."""
    # the most frequent first, but the dense ones (active on more than a tenth of the tokens) last:
    # they are rarely readable alone
    alive = sorted((f for f in features if f["density"] > 0), key=lambda f: (f["density"] > DENSE, -f["density"]))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{v:.4g}</td></tr>" if isinstance(v, float)
                   else f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in evaluation.items())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<table>{rows}</table>",
             f"<p>{len(alive)} of {len(features)} features are active on the validation windows; the "
             f"{min(limit, len(alive))} most frequent are shown (the dense ones, active on more than {DENSE:.0%} of "
             "the tokens, last), each with its top contexts (the token where it "
             "peaks is outlined; hover a token for the activation), a histogram of its activations and, for the "
             "residual stream, the tokens its direction promotes and suppresses through the unembedding.</p>"]
    if token_view is not None:
        parts.append(_token_view_html(*token_view))
    for f in alive[:limit]:
        logits = ""
        if "promotes" in f:
            logits = (f"<div class='meta'>promotes {html.escape(' '.join(f['promotes']))} · suppresses "
                      f"{html.escape(' '.join(f['suppresses']))}</div>")
        contexts = "".join(_context_html(c, f["max"]) for c in f["contexts"])
        dense = " · dense" if f["density"] > DENSE else ""
        parts.append(f"<div class='feature' id='f{f['feature']}'><b>feature {f['feature']}</b> "
                     f"<span class='meta'>density {f['density']:.2%}{dense} · max {f['max']:.3f}</span> "
                     f"{_histogram_svg(f['histogram'])}{logits}{contexts}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
