"""Pictures of the measures: each function takes tensors and returns a matplotlib Figure.

Figures are built with `matplotlib.figure.Figure`, not pyplot, so nothing is
shown or kept in a global list: save one with `fig.savefig(path)`, or let a
notebook display it.
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

VISIBLE_WHITESPACE = {"\n": "\u23ce", " ": "\u2423", "\t": "\u21e5", "\r": "\u240d"}
MAX_LABELLED_TICKS = 64
MAX_GRID_INCHES = 36.0  # widest attention grid: rendering a wider PNG costs seconds per layer at GPT-2 scale


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """One printable label per token, whitespace made visible (space as a visible-space sign, newline as a return sign)."""
    labels = []
    for i in ids:
        if not 0 <= int(i) < tokenizer.vocab_size:  # padding of the model's vocabulary: no such token
            labels.append(f"<{int(i)}?>")
            continue
        text = tokenizer.decode([int(i)])
        labels.append("".join(VISIBLE_WHITESPACE.get(c, c) for c in text) or "\u2205")
    return labels


def drawn_label(text: str) -> str:
    """A label as matplotlib shows it literally: a `$` would start mathtext (`$$` or `$\\x$`
    in a token is a parse error, or a formula), so each is escaped."""
    return text.replace("$", r"\$")


def _label_axes(ax, tokens: list[str], fontsize: float, queries: bool = True) -> None:
    """Token labels on both axes (keys along x, queries along y, unless `queries=False`); every
    k-th one when there are many."""
    step = max(1, -(-len(tokens) // MAX_LABELLED_TICKS))
    ticks = list(range(0, len(tokens), step))
    labels = [drawn_label(tokens[t]) for t in ticks]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
    if queries:
        ax.set_yticks(ticks, labels, fontsize=fontsize)
    else:
        ax.set_yticks(ticks, [])


def _tick_fontsize(T: int, panel_inches: float) -> float:
    return max(3.0, min(9.0, panel_inches * 72 / max(T, 1) * 0.8))


def plot_attention(pattern: torch.Tensor, tokens: list[str], title: str = "attention") -> Figure:
    """One head's pattern (T, T) as a heatmap, queries down, keys across, tokens on both axes."""
    pattern = torch.as_tensor(pattern).float().cpu()
    T = pattern.size(-1)
    size = min(12.0, max(4.0, 0.22 * T))
    fig = Figure(figsize=(size + 1.2, size), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(pattern.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
    _label_axes(ax, tokens, _tick_fontsize(T, size))
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.8, label="attention weight")
    return fig


def _text_inches(texts: list[str], fontsize: float) -> float:
    """The width of the longest of `texts` at `fontsize`, in inches (from the font's outlines)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    prop = FontProperties(size=fontsize)
    return max((text_to_path.get_text_width_height_descent(t, prop, ismath=False)[0] for t in texts), default=0.0) / 72


def plot_attention_grid(patterns: torch.Tensor, tokens: list[str], title: str | None = None,
                        first_layer: int = 0) -> Figure:
    """Every head of every layer: patterns (L, H, T, T) as an L-by-H grid of heatmaps. Rows are
    titled from layer `first_layer` on (to draw a slice of the layers).

    Laid out by hand, in inches, from the width of the longest token label: a layout engine
    would cost a second drawing pass (at GPT-2's 12 heads, 1 s of the 2.6 s a layer's PNG takes)."""
    patterns = torch.as_tensor(patterns).float().cpu()
    L, H, T, _ = patterns.shape
    panel = min(6.0, max(2.5, 0.12 * T), MAX_GRID_INCHES / H)  # GPT-2's 12 heads: 3 inches each
    fontsize = _tick_fontsize(T, panel)
    fig = Figure(dpi=100)
    labels = _text_inches(tokens, fontsize) + 0.12  # tick labels, their ticks and padding
    head_title, gap, colorbar = 0.3, 0.15, 1.1  # a panel's title; between panels; the colour bar and its label
    top = 0.45 if title else 0.1
    width = 0.1 + labels + H * panel + (H - 1) * gap + colorbar
    height = top + L * (head_title + panel + labels) + 0.1
    fig.set_size_inches(width, height)
    axes = fig.subplots(L, H, squeeze=False, gridspec_kw=dict(
        left=(0.1 + labels) / width, right=1 - colorbar / width, top=1 - (top + head_title) / height,
        bottom=(labels + 0.1) / height, wspace=gap / panel, hspace=(head_title + labels) / panel))
    for layer in range(L):
        for head in range(H):
            ax = axes[layer][head]
            image = ax.imshow(patterns[layer, head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            _label_axes(ax, tokens, fontsize, queries=head == 0)  # a row's queries are the same tokens
            ax.set_title(f"layer {first_layer + layer} head {head}", fontsize=9)
    grid_height = L * panel + (L - 1) * (head_title + labels)
    cax = fig.add_axes(((width - colorbar + 0.2) / width, (labels + 0.1 + 0.2 * grid_height) / height,
                        0.15 / width, 0.6 * grid_height / height))
    fig.colorbar(image, cax=cax, label="attention weight")
    if title:
        fig.suptitle(title, y=1 - 0.12 / height, va="top")
    return fig


def plot_head_heatmap(values: torch.Tensor, title: str, label: str, fmt: str = ".2f",
                      vmin: float | None = None, vmax: float | None = None) -> Figure:
    """One number per head: values (L, H) as a grid, layers down, heads across, each cell
    annotated. `vmin`/`vmax` fix the colour scale (e.g. 0 and 1 for shares)."""
    values = torch.as_tensor(values).float().cpu()
    L, H = values.shape
    width, height = min(14.0, 1.6 + 0.75 * H), min(12.0, 1.2 + 0.55 * L)
    fig = Figure(figsize=(width, height), dpi=100)
    # Fixed margins, in inches, for labels that are short numbers: a layout engine would cost a
    # second drawing pass, half the time of saving the PNG.
    fig.subplots_adjust(left=0.55 / width, right=1 - 0.95 / width, bottom=0.5 / height, top=1 - 0.35 / height)
    ax = fig.add_subplot()
    image = ax.imshow(values.numpy(), cmap="magma", aspect="auto", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(H), [str(h) for h in range(H)])
    ax.set_yticks(range(L), [str(layer) for layer in range(L)])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title)
    if L * H <= 256:
        low = float(values.min()) if vmin is None else vmin
        high = float(values.max()) if vmax is None else vmax
        for layer in range(L):
            for head in range(H):
                v = float(values[layer, head])
                light = high > low and (v - low) / (high - low) < 0.5
                ax.text(head, layer, format(v, fmt), ha="center", va="center", fontsize=7,
                        color="white" if light else "black")
    fig.colorbar(image, ax=ax, label=label, fraction=0.1, pad=0.04)
    return fig


def plot_logit_lens(result: dict) -> Figure:
    """The logit lens: loss and top-1 accuracy after the embedding and after each block, with the
    uniform and unigram baselines as lines when the result has them."""
    labels = result.get("labels") or [str(i) for i in range(len(result["loss"]))]
    x = list(range(len(labels)))
    fig = Figure(figsize=(max(6.0, 0.6 * len(labels) + 3), 3.6), dpi=100, layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(x, torch.as_tensor(result["loss"]).tolist(), "o-", color="tab:red")
    for key, style, name in (("uniform_loss", "--", "uniform ln V"), ("unigram_entropy", ":", "unigram entropy")):
        if key in result:  # the baselines, as horizontal lines
            loss_ax.axhline(float(result[key]), linestyle=style, color="gray", label=name)
    if "uniform_loss" in result or "unigram_entropy" in result:
        loss_ax.legend(fontsize=8)
    loss_ax.set_ylabel("cross-entropy (nats)")
    loss_ax.set_title("loss if the model stopped here")
    acc_ax.plot(x, torch.as_tensor(result["accuracy"]).tolist(), "o-", color="tab:blue")
    acc_ax.set_ylabel("top-1 accuracy")
    acc_ax.set_ylim(0, 1)
    acc_ax.set_title("next-token accuracy")
    for ax in (loss_ax, acc_ax):
        ax.set_xticks(x, labels, rotation=45, ha="right")
        ax.grid(alpha=0.3)
    return fig
