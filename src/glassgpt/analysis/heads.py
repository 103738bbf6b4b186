"""What each head does, measured: where its attention goes, and what it writes.

Where it goes, as shares of its attention from query rows 1..T-1 (row 0 has no choice), each
over the rows where the keys in question exist, with its standard error over windows:
- by relative offset: the query itself, the previous token, 2 .. 7 tokens back (`OFFSETS`), and the
  last 2 .. `LAST_TOKENS` tokens together (a local head);
- the first position of the window;
- by token class, all the keys of the class before the query, and the most recent one: newlines,
  spaces, punctuation, capitals, digits, opening and closing brackets and quotes, straight quotes,
  and earlier copies of the query's own token. Classes come from the tokenizer's strings
  (`token_classes`), so they mean the same for characters, bytes, GPT-2's BPE and a trained one.
Beside each share, what uniform attention over the same rows would give (`uniform_shares`).

What it writes: its OV circuit, each source token's embedding through the layer's `ln_1`, the
head's value and output weights and `GPT.unembed` (`ov_promotions`), averaged over the tokens the
head attends to, weighted by the attention they receive: the tokens it promotes.

One sentence per head (`describe_heads`): a share of at least `DESCRIBED_SHARE` (and `MIN_LIFT` times
uniform attention's) with its error ("61% ± 3% on the most recent newline (uniform attention: 4%)"),
the one the head prefers most over uniform attention (`pick_behaviour`); or "diffuse" with its
normalised entropy when there is none and the entropy clears `DIFFUSE_ENTROPY` by two standard
errors; else its largest share.
"""

from __future__ import annotations

import unicodedata

import torch

from glassgpt.analysis.measures import device_of
from glassgpt.analysis.summary import DIFFUSE_ENTROPY, head_kinds
from glassgpt.analysis.uncertainty import Mean, clears, plus_minus
from glassgpt.errors import UsageError
from glassgpt.inference.mode import inference

OFFSETS = 8  # the offset profile: the query itself and 1 .. 7 tokens back
LAST_TOKENS = 4  # local windows: the last 2, 3 .. LAST_TOKENS tokens, the query's own included
DESCRIBED_SHARE = 0.40  # a head is described by a share from this much of its attention ...
MIN_LIFT = 1.5  # ... and this many times what uniform attention would put on the same keys
MIN_ROW_FRACTION = 0.1  # a behaviour is named only over at least this fraction of the rows (a class that is there)
TOP_SOURCES = 32  # source tokens (most attended first) whose OV outputs are averaged
TOP_PROMOTED = 3

# Each class: (name, words for all its keys, words for the most recent one).
CLASSES = {
    "newline": ("newlines", "the most recent newline"),
    "space": ("spaces", "the most recent space"),
    "punctuation": ("punctuation", "the most recent punctuation mark"),
    "capital": ("capitals", "the most recent capital"),
    "digit": ("digits", "the most recent digit"),
    "opener": ("opening brackets and quotes", "the most recent opening bracket or quote"),
    "closer": ("closing brackets and quotes", "the most recent closing bracket or quote"),
    "quote": ("straight quotes", "the most recent straight quote"),
}
STRAIGHT_QUOTES = "\"'`"


# ---------------------------------------------------------------- token classes, from the tokenizer's strings

def token_strings(tokenizer) -> list[str]:
    """The text of each token id (bytes that end inside a character decode to U+FFFD). A tokenizer
    that cannot say (no decoding, or no token with a printable character) is refused in one sentence."""
    try:
        texts = [tokenizer.decode_bytes([i]).decode("utf-8", errors="replace") for i in range(tokenizer.vocab_size)]
    except (AttributeError, NotImplementedError, TypeError, ValueError) as e:
        raise UsageError(f"the tokenizer {getattr(tokenizer, 'name', type(tokenizer).__name__)!r} cannot decode single "
                         f"tokens ({type(e).__name__}): head descriptions need each token's text") from None
    if not any(c.isprintable() and c != "\ufffd" and not c.isspace() for text in texts for c in text):
        raise UsageError(f"the tokenizer {getattr(tokenizer, 'name', '?')!r} has no token with a readable character: "
                         "head descriptions need the tokens' text (use a char, byte, gpt2 or bpe:N tokenizer)")
    return texts


def _class_of(text: str) -> dict[str, bool]:
    core = text.strip()
    categories = [unicodedata.category(c) for c in core]
    return {
        "newline": "\n" in text,
        "space": text[:1] in (" ", "\t"),
        "punctuation": bool(core) and all(c.startswith("P") for c in categories),
        "capital": core[:1].isupper(),
        "digit": core[:1].isdigit(),
        "opener": any(c in ("Ps", "Pi") for c in categories),
        "closer": any(c in ("Pe", "Pf") for c in categories),
        "quote": any(c in STRAIGHT_QUOTES for c in core),
    }


def token_classes(tokenizer, model_vocab: int | None = None) -> tuple[torch.Tensor, dict[str, tuple[str, str]]]:
    """(K, V) bool, which token ids are in each of the K classes (model_vocab: the model's padded
    vocabulary, whose extra ids are in none), and each class's words. A class whose members are
    more than whitespace ("spaces" of a BPE: tokens that start with one) is named for what they are."""
    texts = token_strings(tokenizer)
    V = max(model_vocab or 0, len(texts))
    masks = torch.zeros(len(CLASSES), V, dtype=torch.bool)
    masks[:, :len(texts)] = torch.tensor([list(_class_of(text).values()) for text in texts]).T  # (K, V)
    words = dict(CLASSES)
    space = masks[list(CLASSES).index("space")].nonzero().flatten().tolist()
    if any(texts[i].strip() for i in space):
        words["space"] = ("tokens that start with a space", "the most recent token that starts with a space")
    return masks, words


def classes_for(tokenizer, model_vocab: int) -> tuple[torch.Tensor, dict[str, tuple[str, str]]]:
    """`token_classes` of a tokenizer, or no classes at all without one (offsets, the first position and
    copies of the same token are measured all the same)."""
    if tokenizer is None:
        return torch.zeros(0, model_vocab, dtype=torch.bool), {}
    return token_classes(tokenizer, model_vocab)


# ---------------------------------------------------------------- where the attention goes

def candidate_names(words: dict[str, tuple[str, str]]) -> list[tuple[str, str]]:
    """(key, words) of every share `candidate_shares` measures, in its order."""
    offsets = [("offset_0", "itself"), ("offset_1", "the previous token")] + [
        (f"offset_{d}", f"the token {d} back") for d in range(2, OFFSETS)]
    local = [("last_2", "itself and the previous token")] + [
        (f"last_{k}", f"the last {k} tokens (itself and {k - 1} back)") for k in range(3, LAST_TOKENS + 1)]
    classes = [(name, all_of) for name, (all_of, _) in words.items()]
    recent = [(f"recent_{name}", most_recent) for name, (_, most_recent) in words.items()]
    same = [("same_token", "earlier copies of its own token"), ("recent_same_token", "the previous copy of its own token")]
    return offsets + local + [("first", "the first position")] + classes + recent + same


def _most_recent(marks: torch.Tensor) -> torch.Tensor:
    """(..., T) bool over keys -> (..., T): for each query i, the last key j < i that is marked, or -1."""
    T = marks.size(-1)
    positions = torch.arange(T, device=marks.device).expand_as(marks)
    last_upto = torch.where(marks, positions, torch.full_like(positions, -1)).cummax(dim=-1).values  # j <= i
    return torch.cat([torch.full_like(last_upto[..., :1], -1), last_upto[..., :-1]], dim=-1)  # j < i


def candidate_shares(pattern: torch.Tensor, idx: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every share of `candidate_names`, per window: pattern (b, H, T, T), idx (b, T), class masks (K, V) ->
    totals (b, H, S): attention on the candidate's keys summed over the query rows 1..T-1 where it has
    keys, and counts (b, 1, S): how many rows those are."""
    b, H, T, _ = pattern.shape
    pattern = pattern.float().tril()  # (b, H, T, T): keys j <= i
    idx = idx.to(pattern.device)
    rows = torch.arange(T, device=pattern.device)
    marks = masks.to(pattern.device)[:, idx]  # (K, b, T): each key's classes
    same = (idx[:, :, None] == idx[:, None, :]).tril(diagonal=-1)  # (b, T, T): an earlier copy of token i

    # sets of keys before the query: every key of a class, every earlier copy of the query's token
    keys = marks.permute(1, 2, 0).float()  # (b, T, K)
    self_weight = pattern.diagonal(dim1=-2, dim2=-1)[..., None]  # (b, H, T, 1): the weight j = i, left out
    class_share = pattern @ keys[:, None] - self_weight * keys[:, None]  # (b, H, T, T) x (b, 1, T, K) -> (b, H, T, K)
    class_valid = (keys.cumsum(dim=1) - keys) > 0  # (b, T, K): a key of the class before i
    same_share = (pattern * same[:, None]).sum(dim=-1, keepdim=True)  # (b, H, T, 1)

    # one key per query: each offset, the first position, the most recent key of each class, the previous copy
    single = torch.stack([(rows - d).expand(b, T) for d in range(OFFSETS)] + [torch.zeros_like(idx)]
                         + list(_most_recent(marks)) + [(same * (rows + 1)).amax(dim=-1) - 1], dim=-1)  # (b, T, n)
    single_share = pattern.gather(-1, single.clamp(min=0)[:, None].expand(b, H, T, single.size(-1)))  # (b, H, T, n)
    single_valid = single >= 0  # (b, T, n)

    # the last k tokens: offsets 0 .. k-1, those that exist
    last = (single_share[..., :OFFSETS] * single_valid[:, None, :, :OFFSETS]).cumsum(dim=-1)[..., 1:LAST_TOKENS]
    last_valid = torch.ones(b, T, LAST_TOKENS - 1, dtype=torch.bool, device=pattern.device)  # (b, T, LAST_TOKENS - 1)

    first, K = OFFSETS + 1, keys.size(-1)  # offsets and the first position; then the K most recent
    shares = torch.cat([single_share[..., :OFFSETS], last, single_share[..., OFFSETS:first], class_share,
                        single_share[..., first:first + K], same_share, single_share[..., -1:]], dim=-1)  # (b, H, T, S)
    valid = torch.cat([single_valid[..., :OFFSETS], last_valid, single_valid[..., OFFSETS:first], class_valid,
                       single_valid[..., first:first + K], same.any(dim=-1)[..., None], single_valid[..., -1:]],
                      dim=-1).float()  # (b, T, S), in `candidate_names` order
    valid[:, 0] = 0.0  # row 0 can only attend to itself
    return (shares * valid[:, None]).sum(dim=2), valid.sum(dim=1)[:, None]  # (b, H, S), (b, 1, S)


def shares_reducer(masks: torch.Tensor):
    """A streamed reducer (`glassgpt.analysis.streaming`) of `candidate_shares`."""
    def reduce(pattern: torch.Tensor, idx: torch.Tensor):
        return candidate_shares(pattern, idx, masks)
    return reduce


def received_reducer(ids: torch.Tensor):
    """A streamed reducer of the attention each token id receives, as a key, from rows 1..T-1:
    (b, H, U) over the ids `ids` (U,) (the windows' own tokens, sorted)."""
    def reduce(pattern: torch.Tensor, idx: torch.Tensor):
        mass = pattern.float()[:, :, 1:, :].sum(dim=2)  # (b, H, T): weight each key receives
        where = torch.searchsorted(ids.to(idx.device), idx)  # (b, T): each key's place among the ids
        out = torch.zeros(*mass.shape[:2], ids.numel(), device=mass.device)
        return out.scatter_add_(-1, where[:, None].expand_as(mass), mass), 1
    return reduce


def uniform_shares(windows: torch.Tensor, masks: torch.Tensor, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """What uniform causal attention (1 / (i + 1) on every key j <= i) scores on each candidate over
    the windows (B, T), the baseline each share is read against, and how many query rows each
    candidate was measured on: -> (S,), (S,)."""
    T = windows.size(1)
    uniform = torch.ones(T, T, device=windows.device).tril()
    uniform = uniform / uniform.sum(dim=-1, keepdim=True)  # (T, T)
    mean = Mean()
    for start in range(0, windows.size(0), batch_size):
        chunk = windows[start: start + batch_size]
        mean.add(*candidate_shares(uniform.expand(chunk.size(0), 1, T, T), chunk, masks))
    return mean.value[0], mean.count[0]  # (S,) each


# ---------------------------------------------------------------- what it writes

def ov_flops(model) -> float:
    """FLOPs `ov_promotions` spends: per head, TOP_SOURCES outputs decoded through the (C x V) unembedding."""
    cfg = model.config
    return 2.0 * cfg.n_layer * cfg.n_head * TOP_SOURCES * cfg.n_embd * cfg.vocab_size


def ov_promotions(model, received: torch.Tensor, ids: torch.Tensor, vocab_size: int | None = None) -> list[list[dict]]:
    """Each head's OV circuit read through `GPT.unembed`: for the TOP_SOURCES tokens that receive most
    of its attention (`received` (L, H, U) over the ids (U,)), the logits its output for that token
    alone would add (each source's embedding through `ln_1`, the head's value and output weights, then
    `unembed` less `unembed(0)`, centred), averaged with the attention as weights. Per head:
    `promotes` (TOP_PROMOTED token ids, most first) and `copying` (the attention-weighted fraction of
    sources whose most promoted token is the source itself). Ids at or past `vocab_size` (padding) are
    never promoted."""
    cfg = model.config
    H, hs, C = cfg.n_head, cfg.head_size, cfg.n_embd
    V = vocab_size or cfg.vocab_size
    out = []
    with inference(model):
        device = device_of(model)
        zero = model.unembed(torch.zeros(C, device=device), softcap=False)  # (V,): ln_f's bias alone
        for layer, block in enumerate(model.blocks):
            weight, bias = block.attn.c_attn.weight[2 * C:], block.attn.c_attn.bias  # the value rows: (C, C)
            rows = []
            for head in range(H):
                mass = received[layer, head]  # (U,)
                top = mass.argsort(descending=True)[:TOP_SOURCES]
                source = ids[top].to(device)  # (S,)
                x = block.ln_1(model.wte.weight[source])  # (S, C)
                v = torch.nn.functional.linear(x, weight, None if bias is None else bias[2 * C:])  # (S, C)
                v = v.view(-1, H, hs)[:, head]  # (S, hs)
                w_o = block.attn.c_proj.weight[:, head * hs:(head + 1) * hs]  # (C, hs)
                logits = (model.unembed(v @ w_o.T, softcap=False) - zero).float()[:, :V]  # (S, V)
                logits = logits - logits.mean(dim=-1, keepdim=True)
                w = mass[top].to(device).float()
                w = w / w.sum().clamp(min=1e-12)  # (S,)
                promoted = (w[:, None] * logits).sum(dim=0)  # (V,)
                copying = float((w * (logits.argmax(dim=-1) == source).float()).sum())
                rows.append({"promotes": promoted.topk(min(TOP_PROMOTED, V)).indices.tolist(), "copying": copying})
            out.append(rows)
    return out


# ---------------------------------------------------------------- one sentence per head

def describable(share: torch.Tensor, baseline: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(S,) bool: the behaviours a head may be described by. A share of at least DESCRIBED_SHARE, at
    least MIN_LIFT times what uniform attention gives there (on a short text the last 4 tokens hold
    most of any head's attention), measured over at least MIN_ROW_FRACTION of the rows."""
    usable = counts >= MIN_ROW_FRACTION * counts.max()
    return usable & (share >= DESCRIBED_SHARE) & (share >= MIN_LIFT * baseline)


def pick_behaviour(share: torch.Tensor, baseline: torch.Tensor, counts: torch.Tensor) -> int:
    """The candidate a head is described by: of the `describable` ones, the one it prefers most over
    uniform attention (the largest share / baseline: the previous token over the last two tokens, the
    most recent newline over all newlines); when there is none, the largest share measured over at
    least MIN_ROW_FRACTION of the rows. share, baseline, counts (S,) -> its index."""
    described = describable(share, baseline, counts)
    if not bool(described.any()):
        usable = counts >= MIN_ROW_FRACTION * counts.max()
        return int(torch.where(usable, share, torch.full_like(share, -1.0)).argmax())
    lift = share / baseline.clamp(min=1e-6)
    return int(torch.where(described, lift, torch.full_like(lift, -1.0)).argmax())


def head_sentence(share: float, share_se: float, words: str, baseline: float, entropy: float, entropy_se: float,
                  described: bool, diffuse: bool) -> str:
    """'61% ± 3% on the most recent newline (uniform attention: 4%)' for a `described` behaviour;
    else 'diffuse: normalised entropy 0.91 ...' when `diffuse`, else the largest share as an upper bound."""
    behaviour = f"{plus_minus(share, share_se, percent=True)} on {words} (uniform attention: {baseline:.0%})"
    if described:
        return behaviour
    if diffuse:
        return f"diffuse: normalised entropy {plus_minus(entropy, entropy_se)} (at most {behaviour})"
    return f"no one behaviour: at most {behaviour}; normalised entropy {plus_minus(entropy, entropy_se)}"


def describe_heads(results: dict, label=None) -> list[dict]:
    """One entry per head, from `analyze`'s results (`head_shares`, `head_shares_se`, `head_counts`,
    `head_baseline`, `candidate_names`, `depth_scan` and its `_se`, optionally `ov`): `layer`, `head`,
    `description` (the sentence), `share` and `share_se` (None when the head is called diffuse),
    `entropy`, `kind` (None for none of these), `behaviour` (the candidate's key), the `offsets` profile
    (OFFSETS shares) and, with `ov`, `promotes` (token labels by `label(id)`, else '#id') and `copying`."""
    shares, shares_se = results["head_shares"], results["head_shares_se"]  # (L, H, S)
    counts, baseline = results["head_counts"], results["head_baseline"]  # (S,) each
    names = results["candidate_names"]  # [(key, words)]
    entropy, entropy_se = results["depth_scan"], results["depth_scan_se"]  # (L, H)
    kinds = head_kinds(results)
    diffuse = clears(entropy, entropy_se, DIFFUSE_ENTROPY)
    heads = []
    for layer in range(shares.size(0)):
        for head in range(shares.size(1)):
            s = pick_behaviour(shares[layer, head], baseline, counts)
            share, se = float(shares[layer, head, s]), float(shares_se[layer, head, s])
            described = bool(describable(shares[layer, head], baseline, counts)[s])
            called_diffuse = not described and bool(diffuse[layer, head])
            entry = {
                "layer": layer, "head": head,
                "description": head_sentence(share, se, names[s][1], float(baseline[s]), float(entropy[layer, head]),
                                             float(entropy_se[layer, head]), described, called_diffuse),
                "described": described,
                "share": None if called_diffuse else share, "share_se": None if called_diffuse else se,
                "entropy": float(entropy[layer, head]), "entropy_se": float(entropy_se[layer, head]),
                "kind": None if kinds[layer][head] == "none of these" else kinds[layer][head],
                "behaviour": names[s][0],
                "offsets": [float(v) for v in shares[layer, head, :OFFSETS]],
                "offsets_se": [float(v) for v in shares_se[layer, head, :OFFSETS]],
            }
            if "ov" in results:
                ov = results["ov"][layer][head]
                promoted = [label(i) if label is not None else f"#{i}" for i in ov["promotes"]]
                entry.update(promotes=promoted, copying=ov["copying"])
                entry["description"] += f"; writes {', '.join(repr(t) for t in promoted)}"
            heads.append(entry)
    return heads


def prompt_heads(model, ids: list[int], patterns: torch.Tensor, tokenizer=None, max_ov_flops: float = 2e10) -> list[dict]:
    """`describe_heads` of one text: its token ids and attention patterns (L, H, T, T). One window has no
    spread to measure, so the shares carry no standard error; what the heads write is read when it
    costs at most `max_ov_flops` (`ov_flops`)."""
    from glassgpt.analysis.measures import attention_distance, normalized_entropy, previous_token_stripe, sink_scores
    from glassgpt.analysis.plots import token_labels

    masks, words = classes_for(tokenizer, model.config.vocab_size)
    idx = torch.tensor([ids])
    patterns = patterns.float().cpu()
    sums = [candidate_shares(patterns[layer][None], idx, masks) for layer in range(patterns.size(0))]
    shares = torch.stack([totals[0] / counts[0].clamp(min=1) for totals, counts in sums])  # (L, H, S)
    baseline, row_counts = uniform_shares(idx, masks)
    entropy = normalized_entropy(patterns)  # (L, H)
    results = {"head_shares": shares, "head_shares_se": torch.full_like(shares, float("nan")),
               "head_counts": row_counts, "head_baseline": baseline, "candidate_names": candidate_names(words),
               "depth_scan": entropy, "depth_scan_se": torch.full_like(entropy, float("nan")),
               "previous_token": previous_token_stripe(patterns), "attention_distance": attention_distance(patterns),
               "sink_scores": sink_scores(patterns), "window_length": len(ids)}
    if ov_flops(model) <= max_ov_flops:
        unique = idx.unique()
        received = torch.stack([received_reducer(unique)(patterns[layer][None], idx)[0][0]
                                for layer in range(patterns.size(0))])  # (L, H, U)
        results["ov"] = ov_promotions(model, received, unique, getattr(tokenizer, "vocab_size", None))
    label = (lambda i: token_labels(tokenizer, [i])[0]) if tokenizer is not None else None
    return describe_heads(results, label)


def described_count(heads: list[dict]) -> int:
    """How many heads are described by a behaviour (a share of at least DESCRIBED_SHARE, `describable`),
    or called diffuse."""
    return sum(1 for h in heads if h["share"] is None or h["described"])
