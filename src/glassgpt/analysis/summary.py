"""Findings in words, generated from the numbers of an analysis (see `analyze`).

Every sentence reads values out of the results dict; nothing is said that the
numbers do not show. The thresholds used to name things are module constants, and
`definitions(results)` states each of them in words: the report prints it beside the summary.
One name, one number: a head is a *sink* when its sink share (`window_sink_scores`, over the
validation windows) reaches the sink threshold, in the list of sinks, the sink rate and the
per-head kinds alike.
"""

from __future__ import annotations

import torch

FOCUSED_ENTROPY = 0.35  # mean normalised entropy below this: the layer's heads pick a few keys
DIFFUSE_ENTROPY = 0.70  # above this: they spread attention over most of the past
LOCAL_DISTANCE_FRACTION = 0.1  # mean distance under this fraction of the window (or 2 tokens): local
INDUCTION_THRESHOLD = 0.3  # induction score from which a head is called an induction head
PREVIOUS_TOKEN_THRESHOLD = 0.3  # attention to the previous token from which a head is called a previous-token head
LENS_GOOD_FRACTION = 0.1  # logit lens is "good" once within this fraction of the embed-to-final loss gap
NEGLIGIBLE_ABLATION = 0.01  # nats: removing such a head barely matters
PREFIX_MATCHING_THRESHOLD = 0.4  # prefix-matching score from which a head is counted as prefix matching
CIRCUIT_THRESHOLD = PREFIX_MATCHING_THRESHOLD  # its former name
HEAD_KINDS = ("induction", "previous-token", "sink", "local", "none of these")  # in this order of precedence


def _head(layer: int, head: int) -> str:
    return f"layer {layer} head {head}"


def local_distance(window: int) -> float:
    """The mean attention distance (tokens) at or under which attention is called local."""
    return max(2.0, LOCAL_DISTANCE_FRACTION * window)


def layer_kind(entropy: float, distance: float, window: int) -> str:
    """'local', 'focused', 'diffuse' or 'mixed', from a layer's mean entropy and attention distance
    (the words as `definitions` states them)."""
    if distance <= local_distance(window) and entropy < DIFFUSE_ENTROPY:
        return "local"
    if entropy < FOCUSED_ENTROPY:
        return "focused"
    if entropy > DIFFUSE_ENTROPY:
        return "diffuse"
    return "mixed"


def layer_lines(results: dict) -> list[str]:
    """One line per layer: its kind, mean normalised entropy (and range over heads), mean distance."""
    entropy = torch.as_tensor(results["depth_scan"]).float()  # (L, H)
    distance = torch.as_tensor(results["attention_distance"]).float()  # (L, H)
    window = int(results.get("window_length", 0))
    lines = []
    for layer in range(entropy.size(0)):
        e, d = float(entropy[layer].mean()), float(distance[layer].mean())
        lines.append(
            f"layer {layer}: {layer_kind(e, d, window)} - normalised entropy {e:.2f} "
            f"(heads {float(entropy[layer].min()):.2f} to {float(entropy[layer].max()):.2f}), "
            f"mean attention distance {d:.1f} tokens"
        )
    return lines


def _layers_sentence(results: dict) -> str:
    entropy = torch.as_tensor(results["depth_scan"]).float().mean(dim=1)  # (L,)
    distance = torch.as_tensor(results["attention_distance"]).float().mean(dim=1)  # (L,)
    window = int(results.get("window_length", 0))
    kinds: dict[str, list[int]] = {}
    for layer in range(entropy.numel()):
        kinds.setdefault(layer_kind(float(entropy[layer]), float(distance[layer]), window), []).append(layer)
    parts = [f"{'layer' if len(ls) == 1 else 'layers'} {', '.join(map(str, ls))} {'is' if len(ls) == 1 else 'are'} {kind}"
             for kind, ls in kinds.items()]
    sentence = (f"Across the depth, {'; '.join(parts)} (window of {window} tokens; local: mean attention distance "
                f"at most {local_distance(window):g} tokens and entropy at most {DIFFUSE_ENTROPY}; focused: mean "
                f"normalised entropy below {FOCUSED_ENTROPY}; diffuse: above {DIFFUSE_ENTROPY}; mixed: between).")
    most, least = int(entropy.argmin()), int(entropy.argmax())
    if float(entropy[least] - entropy[most]) > 0.05:
        sentence += (f" Layer {most} is the most focused (normalised entropy {float(entropy[most]):.2f}), "
                     f"layer {least} the most diffuse ({float(entropy[least]):.2f}).")
    return sentence


def _sink_scores(results: dict) -> dict:
    """The sink scores the summary names sinks by: the validation windows' (older results: the prompt's)."""
    return results.get("window_sink_scores") or results["sink_scores"]


def _sinks_sentence(results: dict) -> str:
    sinks = results["sinks"]
    if not sinks:
        share = torch.as_tensor(_sink_scores(results)["max_key_share"]).float()
        flat = int(share.argmax())
        layer, head = divmod(flat, share.size(1))
        threshold = float(results.get("sink_threshold", 0.3))
        return (f"No attention sinks: no head's sink share reaches {threshold:.0%} "
                f"(the most concentrated, {_head(layer, head)}, gives {float(share.max()):.0%}).")
    described = [f"{_head(s['layer'], s['head'])} ({s['share']:.0%} onto position {s['key_index']}"
                 + (f", {s['token']!r}" if s.get("token") is not None else "") + ")" for s in sinks[:5]]
    more = f" and {len(sinks) - 5} more" if len(sinks) > 5 else ""
    noun = "head is an attention sink" if len(sinks) == 1 else "heads are attention sinks"
    threshold = float(results.get("sink_threshold", 0.3))
    return f"{len(sinks)} {noun} (sink share at least {threshold:.0%}): {', '.join(described)}{more}."


def _induction_sentence(results: dict) -> str:
    scores = torch.as_tensor(results["induction"]).float()  # (L, H)
    seq_len = results.get("induction_seq_len")
    baseline = f"; even attention would score about {1 / (1.5 * seq_len):.2f}" if seq_len else ""
    found = (scores >= INDUCTION_THRESHOLD).nonzero().tolist()
    if not found:
        flat = int(scores.argmax())
        layer, head = divmod(flat, scores.size(1))
        return (f"No induction heads: the best induction score is {float(scores.max()):.2f} "
                f"({_head(layer, head)}{baseline}).")
    found.sort(key=lambda lh: -float(scores[lh[0], lh[1]]))
    named = ", ".join(f"{_head(layer, head)} ({float(scores[layer, head]):.2f})" for layer, head in found[:5])
    noun = "head looks like an induction head" if len(found) == 1 else "heads look like induction heads"
    return f"{len(found)} {noun} on repeated random tokens: {named}{baseline}.{_previous_token_clause(results, found[0][0])}"


def _previous_token_clause(results: dict, induction_layer: int) -> str:
    """The previous-token head in a layer before the best induction head: the circuit's first half."""
    if "previous_token" not in results:
        return ""
    scores = torch.as_tensor(results["previous_token"]).float()[:induction_layer]  # (layers before, H)
    if scores.numel() == 0:
        return " No layer comes before it, so it cannot be the second half of an induction circuit."
    layer, head = divmod(int(scores.argmax()), scores.size(1))
    best = float(scores.max())
    if best < PREVIOUS_TOKEN_THRESHOLD:
        return f" No previous-token head before it (the best, {_head(layer, head)}, gives {best:.2f})."
    return (f" Before it, {_head(layer, head)} is a previous-token head ({best:.2f} of its attention on the "
            "previous token): the two halves of the induction circuit.")


def _logit_lens_sentence(results: dict) -> str:
    """The lens read against the uniform baseline ln V: how much of the way from knowing nothing to
    the final loss each point has come. (The embedding alone is no baseline: with tied weights it
    can do worse than uniform.)"""
    import math

    lens = results["logit_lens"]
    loss = torch.as_tensor(lens["loss"]).float()
    labels = lens.get("labels") or [str(i) for i in range(loss.numel())]
    accuracy = torch.as_tensor(lens["accuracy"]).float()
    final, embed = float(loss[-1]), float(loss[0])
    uniform = float(lens.get("uniform_loss", float("nan")))
    unigram = lens.get("unigram_entropy")
    against = f"uniform ln V = {uniform:.2f}" + (f", the targets' unigram entropy {float(unigram):.2f}"
                                                 if unigram is not None else "")
    embed_note = (f"Decoding the embedding alone gives {embed:.2f} (top-1 {float(accuracy[0]):.0%})"
                  + (", worse than uniform." if embed > uniform else "."))
    if math.isnan(uniform) or final >= uniform:
        return (f"Logit lens: the final loss {final:.2f} is no better than knowing nothing ({against}). "
                + embed_note)
    gap = uniform - final
    closed = ", ".join(f"{labels[i]} {(uniform - float(loss[i])) / gap:.0%}" for i in range(1, loss.numel()))
    good_at = next(i for i in range(1, loss.numel()) if float(loss[i]) - final <= LENS_GOOD_FRACTION * gap)
    early = (f" {labels[good_at]} already comes within {LENS_GOOD_FRACTION:.0%} of the gap of the final loss "
             f"(loss {float(loss[good_at]):.2f} there)." if good_at < loss.numel() - 1 else "")
    return (f"Logit lens (baselines: {against}; final loss {final:.2f}, top-1 {float(accuracy[-1]):.0%}): "
            f"share of the gap from uniform to the final loss closed after {closed}.{early} {embed_note}")


def _circuit_heads_sentence(results: dict) -> str:
    """The two halves of the induction circuit on the validation text: previous-token heads and
    prefix-matching heads."""
    previous = torch.as_tensor(results["previous_token"]).float()  # (L, H)
    prefix = torch.as_tensor(results["prefix_matching"]).float()  # (L, H)

    def best(scores: torch.Tensor) -> str:
        layer, head = divmod(int(scores.argmax()), scores.size(1))
        return f"{_head(layer, head)} ({float(scores.max()):.2f})"
    n_prev = int((previous >= PREVIOUS_TOKEN_THRESHOLD).sum())
    n_prefix = int((prefix >= PREFIX_MATCHING_THRESHOLD).sum())
    return (f"On the validation text, {n_prev} head{'s' if n_prev != 1 else ''} put at least "
            f"{PREVIOUS_TOKEN_THRESHOLD:.0%} of their attention on the previous token (best: {best(previous)}) and "
            f"{n_prefix} at least {PREFIX_MATCHING_THRESHOLD:.0%} on the token after an earlier occurrence of the "
            f"current one, prefix matching (best: {best(prefix)}).")


def _sink_rate_sentence(results: dict) -> str:
    rate = results["sink_rate"]
    first = torch.as_tensor(rate["first_position"]).float()
    any_key = torch.as_tensor(rate["any_key"]).float()
    threshold = float(results.get("sink_threshold", 0.3))
    per_layer = ", ".join(f"{float(r):.0%}" for r in first)
    return (f"Sink rate (Gu et al. 2024: heads whose sink share reaches {threshold:.0%}, over the validation "
            f"windows): {float(any_key.mean()):.0%} of heads sink into some single key, "
            f"{float(first.mean()):.0%} into position 0 (by layer: {per_layer}).")


def _ablation_sentence(results: dict) -> str:
    increase = torch.as_tensor(results["ablation"]).float()  # (L, H)
    H = increase.size(1)
    order = increase.flatten().argsort(descending=True).tolist()
    top = ", ".join(f"{_head(*divmod(i, H))} ({round(float(increase.flatten()[i]), 3) + 0.0:+.3f} nats)" for i in order[:3])
    negligible = int((increase.abs() < NEGLIGIBLE_ABLATION).sum())
    where = ""
    if "ablation_tokens" in results:
        n, t = results["ablation_tokens"]
        where = f" (on {n} window{'s' if n != 1 else ''} of {t} tokens)"
    return (f"Most important heads by ablation{where}: {top}; {negligible} of {increase.numel()} heads change the loss "
            f"by less than {NEGLIGIBLE_ABLATION} nats when zeroed.")


def head_kinds(results: dict) -> list[list[str]]:
    """Each head's kind, (L, H) words from HEAD_KINDS, the first that holds: induction (induction score
    at least INDUCTION_THRESHOLD), previous-token (attention on the previous token of the validation
    text at least PREVIOUS_TOKEN_THRESHOLD), sink (sink share at least the sink threshold), local
    (mean attention distance at most `local_distance`), else none of these. A measure missing from
    `results` names no head."""
    L, H = torch.as_tensor(results["depth_scan"]).shape
    window = int(results.get("window_length", 0))
    tests = []
    if "induction" in results:
        tests.append(("induction", torch.as_tensor(results["induction"]).float() >= INDUCTION_THRESHOLD))
    if "previous_token" in results:
        tests.append(("previous-token", torch.as_tensor(results["previous_token"]).float() >= PREVIOUS_TOKEN_THRESHOLD))
    if "window_sink_scores" in results or "sink_scores" in results:
        share = torch.as_tensor(_sink_scores(results)["max_key_share"]).float()
        tests.append(("sink", share >= float(results.get("sink_threshold", 0.3))))
    if "attention_distance" in results:
        tests.append(("local", torch.as_tensor(results["attention_distance"]).float() <= local_distance(window)))
    return [[next((kind for kind, holds in tests if bool(holds[layer, head])), "none of these")
             for head in range(H)] for layer in range(L)]


def _head_kinds_sentence(results: dict) -> str:
    kinds = head_kinds(results)
    flat = [kind for row in kinds for kind in row]
    counts = ", ".join(f"{flat.count(kind)} {kind}" for kind in HEAD_KINDS if flat.count(kind))
    return f"The {len(flat)} heads by kind (each named by the first that holds, in this order): {counts}."


def definitions(results: dict) -> list[str]:
    """Every word the summary names things by, with its threshold: what the report prints beside it."""
    window = int(results.get("window_length", 0))
    threshold = float(results.get("sink_threshold", 0.3))
    return [
        f"sink share: in each validation window, the largest mean weight a head puts on one key, from the query "
        f"rows that can see that key (keys seen by at least a quarter of the rows, and position 0), averaged over "
        f"the windows; a head is a sink when it is at least {threshold:.0%} (Gu et al. 2024's 0.3)",
        f"induction head: induction score at least {INDUCTION_THRESHOLD} on repeated random tokens",
        f"previous-token head: at least {PREVIOUS_TOKEN_THRESHOLD:.0%} of its attention on the previous token of the "
        "validation text",
        f"prefix matching: at least {PREFIX_MATCHING_THRESHOLD:.0%} of its attention on the token after an earlier "
        "occurrence of the current one",
        f"local: mean attention distance at most {local_distance(window):g} tokens (the larger of 2 and "
        f"{LOCAL_DISTANCE_FRACTION:.0%} of the {window}-token window); for a layer, also entropy at most "
        f"{DIFFUSE_ENTROPY}",
        f"focused: a layer's mean normalised entropy below {FOCUSED_ENTROPY}; diffuse: above {DIFFUSE_ENTROPY}; "
        "mixed: in between",
        f"head kinds: the first of {', '.join(HEAD_KINDS[:-1])} that holds, else none of these",
    ]


SECTIONS = [
    (("depth_scan", "attention_distance"), _layers_sentence),
    (("sinks", "sink_scores"), _sinks_sentence),
    (("sink_rate",), _sink_rate_sentence),
    (("previous_token", "prefix_matching"), _circuit_heads_sentence),
    (("depth_scan",), _head_kinds_sentence),
    (("induction",), _induction_sentence),
    (("logit_lens",), _logit_lens_sentence),
    (("ablation",), _ablation_sentence),
]


def summarize(results: dict) -> str:
    """A short written summary of the findings, one paragraph per measure present in `results`."""
    paragraphs = [write(results) for keys, write in SECTIONS if all(k in results for k in keys)]
    return "\n\n".join(paragraphs)
