"""Findings in words, generated from the numbers of an analysis (see `analyze`).

Every sentence reads values out of the results dict; nothing is said that the
numbers do not show. The thresholds used to name things are module constants, and
`definitions(results)` states each of them in words: the report prints it beside the summary.
One name, one number: a head is a *sink* when its sink share (`window_sink_scores`, over the
validation windows) reaches the sink threshold, in the list of sinks, the sink rate and the
per-head kinds alike.

Every number a sentence reads carries its standard error ("0.45 ± 0.02") where the results hold
one (`<name>_se`), and a head is named by a threshold only when its score clears it by two
standard errors (`glassgpt.analysis.uncertainty.clears`). When a measure finds nothing, the
sentence says why that is expected and which recipe grows it (`results["training"]`, from the run).
"""

from __future__ import annotations

import math

import torch

from glassgpt.analysis.uncertainty import clears, plus_minus

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
INDUCTION_TOKENS_PER_ROOT = 10 ** 5.7  # Aoyama et al. 2025: induction heads after about 10^5.7 sqrt(B C) tokens
INDUCTION_RECIPE, SINK_RECIPE = "induction-text", "depth-scan"  # the presets that grow them on natural text
RECIPE_SHOWN_ON = {INDUCTION_RECIPE: "Tiny Shakespeare, Vim's help files and Python's standard library",
                   SINK_RECIPE: "Tiny Shakespeare, and with `n_layer=8` on Vim's help files and Python's "
                                "standard library"}  # their published runs
RECIPE_TOKENIZER = {INDUCTION_RECIPE: "bpe:512", SINK_RECIPE: "char"}  # the tokens each recipe was shown on
SHAKESPEARE_BY_TOKENIZER = {"char": "shakespeare-char", "gpt2": "shakespeare", "bpe:512": "shakespeare-bpe512"}  # built in


def _head(layer: int, head: int) -> str:
    return f"layer {layer} head {head}"


def _se(results: dict, name: str, like: torch.Tensor) -> torch.Tensor:
    """`results[name_se]` as a tensor, or NaN (unknown) where the results carry no error."""
    if f"{name}_se" in results:
        return torch.as_tensor(results[f"{name}_se"], dtype=torch.float32)
    return torch.full_like(like, float("nan"))


def _value_and_se(results: dict, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    value = torch.as_tensor(results[name]).float()
    return value, _se(results, name, value)


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


def _layer_means(results: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each layer's mean entropy and distance over its heads (L,) and their errors (NaN without them)."""
    entropy = torch.as_tensor(results["depth_scan"]).float().mean(dim=1)  # (L,)
    distance = torch.as_tensor(results["attention_distance"]).float().mean(dim=1)  # (L,)
    entropy_se = _se(results, "layer_entropy", entropy[:, None])[:, 0]
    distance_se = _se(results, "layer_distance", distance[:, None])[:, 0]
    return entropy, entropy_se, distance, distance_se


def layer_lines(results: dict) -> list[str]:
    """One line per layer: its kind, mean normalised entropy (and range over heads), mean distance."""
    entropy = torch.as_tensor(results["depth_scan"]).float()  # (L, H)
    means, means_se, distance, distance_se = _layer_means(results)
    window = int(results.get("window_length", 0))
    lines = []
    for layer in range(entropy.size(0)):
        e, d = float(means[layer]), float(distance[layer])
        lines.append(
            f"layer {layer}: {layer_kind(e, d, window)} - normalised entropy {plus_minus(e, means_se[layer])} "
            f"(heads {float(entropy[layer].min()):.2f} to {float(entropy[layer].max()):.2f}), "
            f"mean attention distance {plus_minus(d, distance_se[layer], '.1f')} tokens"
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
    entropy_se = _layer_means(results)[1]
    if float(entropy[least] - entropy[most]) > 0.05:
        sentence += (f" Layer {most} is the most focused (normalised entropy "
                     f"{plus_minus(entropy[most], entropy_se[most])}), layer {least} the most diffuse "
                     f"({plus_minus(entropy[least], entropy_se[least])}).")
    return sentence


def _sink_scores(results: dict) -> dict:
    """The sink scores the summary names sinks by: the validation windows' (older results: the prompt's)."""
    return results.get("window_sink_scores") or results["sink_scores"]


def _sinks_sentence(results: dict) -> str:
    sinks = results["sinks"]
    threshold = float(results.get("sink_threshold", 0.3))
    if not sinks:
        scores = _sink_scores(results)
        share, share_se = _value_and_se(scores, "max_key_share")
        layer, head = divmod(int(share.argmax()), share.size(1))
        return (f"No attention sinks: no head's sink share reaches {threshold:.0%} by two standard errors "
                f"(the most concentrated, {_head(layer, head)}, gives "
                f"{plus_minus(share[layer, head], share_se[layer, head], percent=True)}).{_no_sink_advice(results)}")
    described = [f"{_head(s['layer'], s['head'])} ({plus_minus(s['share'], s.get('share_se'), percent=True)} onto "
                 f"position {s['key_index']}" + (f", {s['token']!r}" if s.get("token") is not None else "") + ")"
                 for s in sinks[:5]]
    more = f" and {len(sinks) - 5} more" if len(sinks) > 5 else ""
    noun = "head is an attention sink" if len(sinks) == 1 else "heads are attention sinks"
    return f"{len(sinks)} {noun} (sink share at least {threshold:.0%}): {', '.join(described)}{more}."


def _minutes(training: dict, recipe: str) -> str:
    minutes = (training.get("recipe_minutes") or {}).get(recipe)
    return f" in about {minutes:.0f} minutes on this machine" if minutes else ""


def _recipe(training: dict, recipe: str, grows: str) -> str:
    """The command that grows what is missing, on this run's dataset when its tokens are the recipe's, else on
    the same text prepared with the recipe's tokenizer; how long it takes here, and where it was shown."""
    wanted, dataset = RECIPE_TOKENIZER[recipe], training["dataset"]
    shown = f"shown in `{wanted}` tokens on {RECIPE_SHOWN_ON[recipe]}"
    if training.get("tokenizer") in (None, wanted):
        return (f"`glassgpt train {recipe} dataset={dataset}` is the recipe that grows {grows}"
                f"{_minutes(training, recipe)} ({shown}).")
    built_in = SHAKESPEARE_BY_TOKENIZER.get(wanted) if dataset in SHAKESPEARE_BY_TOKENIZER.values() else None
    name = built_in or f"{dataset}-{wanted.replace(':', '')}"
    prepare = f"glassgpt prepare {built_in}" if built_in else f"glassgpt prepare text PATH --name {name} --tokenizer {wanted}"
    return (f"`glassgpt train {recipe}` is the recipe that grows {grows}{_minutes(training, recipe)} ({shown}); "
            f"this run's tokens are `{training['tokenizer']}`, so prepare its text as the recipe's first: "
            f"`{prepare}`, then `dataset={name}`.")


def _no_sink_advice(results: dict) -> str:
    """Why no sink, and the recipe that grows them (when the results know the run)."""
    training = results.get("training")
    if not training:
        return ""
    layers = torch.as_tensor(results["depth_scan"]).size(0)
    return (f" Sinks need enough optimisation, sit on the first token of a sequence and do not appear in layers 0-1 "
            f"(Gu et al. 2024); this model has {layers} layer{'s' if layers != 1 else ''} and its training windows "
            f"start anywhere in the text, with no beginning-of-sequence token. " + _recipe(training, SINK_RECIPE, "them"))


def expected_induction_tokens(batch_size: int, block_size: int) -> float:
    """Tokens after which an induction head is expected (Aoyama et al. 2025): 10^5.7 sqrt(B C)."""
    return INDUCTION_TOKENS_PER_ROOT * math.sqrt(batch_size * block_size)


def _tokens(n: float) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else f"{n:.0f}"


def _no_induction_advice(results: dict) -> str:
    """When an induction head is expected, how far this run got, and the recipe that grows one."""
    training = results.get("training")
    if not training:
        return ""
    B, C = int(training["batch_size"]), int(training["block_size"])
    return (f" At batch {B} and context {C} one is expected after about {_tokens(expected_induction_tokens(B, C))} "
            f"tokens (Aoyama et al. 2025: 10^5.7 x sqrt(B x C)); this run saw {_tokens(training['tokens_seen'])}. "
            + _recipe(training, INDUCTION_RECIPE, "one"))


def _induction_sentence(results: dict) -> str:
    scores, errors = _value_and_se(results, "induction")  # (L, H)
    seq_len = results.get("induction_seq_len")
    baseline = f"; even attention would score about {1 / (1.5 * seq_len):.2f}" if seq_len else ""
    found = clears(scores, errors, INDUCTION_THRESHOLD).nonzero().tolist()
    if not found:
        layer, head = divmod(int(scores.argmax()), scores.size(1))
        best = plus_minus(scores[layer, head], errors[layer, head])
        if float(scores[layer, head]) >= INDUCTION_THRESHOLD:  # above the threshold, within the noise
            return (f"No induction head that the noise allows: {_head(layer, head)} scores {best}, above "
                    f"{INDUCTION_THRESHOLD} but not by two standard errors{baseline}.")
        return f"No induction head: the best induction score is {best} ({_head(layer, head)}{baseline}).{_no_induction_advice(results)}"
    found.sort(key=lambda lh: -float(scores[lh[0], lh[1]]))
    named = ", ".join(f"{_head(layer, head)} ({plus_minus(scores[layer, head], errors[layer, head])})"
                      for layer, head in found[:5])
    noun = "head looks like an induction head" if len(found) == 1 else "heads look like induction heads"
    return f"{len(found)} {noun} on repeated random tokens: {named}{baseline}.{_previous_token_clause(results, found[0][0])}"


def _previous_token_clause(results: dict, induction_layer: int) -> str:
    """The previous-token head in a layer before the best induction head: the circuit's first half."""
    if "previous_token" not in results:
        return ""
    scores, errors = (t[:induction_layer] for t in _value_and_se(results, "previous_token"))  # (layers before, H)
    if scores.numel() == 0:
        return " No layer comes before it, so it cannot be the second half of an induction circuit."
    layer, head = divmod(int(scores.argmax()), scores.size(1))
    best = plus_minus(scores[layer, head], errors[layer, head])
    if not bool(clears(scores[layer, head], errors[layer, head], PREVIOUS_TOKEN_THRESHOLD)):
        return f" No previous-token head before it (the best, {_head(layer, head)}, gives {best})."
    return (f" Before it, {_head(layer, head)} is a previous-token head ({best} of its attention on the "
            "previous token): the two halves of the induction circuit.")


def _logit_lens_sentence(results: dict) -> str:
    """The lens read against the uniform baseline ln V: how much of the way from knowing nothing to
    the final loss each point has come. (The embedding alone is no baseline: with tied weights it
    can do worse than uniform.)"""
    import math

    lens = results["logit_lens"]
    loss, loss_se = _value_and_se(lens, "loss")
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
    fraction = (uniform - loss[1:]) / gap  # (L,)
    fraction_se = _se(lens, "gap_closed", fraction)
    closed = ", ".join(f"{labels[i]} {plus_minus(fraction[i - 1], fraction_se[i - 1], percent=True)}"
                       for i in range(1, loss.numel()))
    good_at = next(i for i in range(1, loss.numel()) if float(loss[i]) - final <= LENS_GOOD_FRACTION * gap)
    early = (f" {labels[good_at]} already comes within {LENS_GOOD_FRACTION:.0%} of the gap of the final loss "
             f"(loss {plus_minus(loss[good_at], loss_se[good_at])} there)." if good_at < loss.numel() - 1 else "")
    return (f"Logit lens (baselines: {against}; final loss {plus_minus(final, loss_se[-1])}, top-1 "
            f"{float(accuracy[-1]):.0%}): share of the gap from uniform to the final loss closed after {closed}."
            f"{early} {embed_note}")


def _circuit_heads_sentence(results: dict) -> str:
    """The two halves of the induction circuit on the validation text: previous-token heads and
    prefix-matching heads."""
    previous, previous_se = _value_and_se(results, "previous_token")  # (L, H)
    prefix, prefix_se = _value_and_se(results, "prefix_matching")  # (L, H)

    def best(scores: torch.Tensor, errors: torch.Tensor) -> str:
        layer, head = divmod(int(scores.argmax()), scores.size(1))
        return f"{_head(layer, head)} ({plus_minus(scores[layer, head], errors[layer, head])})"
    n_prev = int(clears(previous, previous_se, PREVIOUS_TOKEN_THRESHOLD).sum())
    n_prefix = int(clears(prefix, prefix_se, PREFIX_MATCHING_THRESHOLD).sum())
    return (f"On the validation text, {n_prev} head{'s' if n_prev != 1 else ''} put at least "
            f"{PREVIOUS_TOKEN_THRESHOLD:.0%} of their attention on the previous token (best: "
            f"{best(previous, previous_se)}) and {n_prefix} at least {PREFIX_MATCHING_THRESHOLD:.0%} on the token after "
            f"an earlier occurrence of the current one, prefix matching (best: {best(prefix, prefix_se)}), each by "
            "two standard errors.")


def _sink_rate_sentence(results: dict) -> str:
    rate = results["sink_rate"]
    first = torch.as_tensor(rate["first_position"]).float()
    any_key = torch.as_tensor(rate["any_key"]).float()
    threshold = float(results.get("sink_threshold", 0.3))
    per_layer = ", ".join(f"{float(r):.0%}" for r in first)
    by_errors = " by two standard errors" if "max_key_share_se" in _sink_scores(results) else ""
    return (f"Sink rate (Gu et al. 2024: heads whose sink share reaches {threshold:.0%}{by_errors}, over the "
            f"validation windows): {float(any_key.mean()):.0%} of heads sink into some single key, "
            f"{float(first.mean()):.0%} into position 0 (by layer: {per_layer}).")


def _ablation_sentence(results: dict) -> str:
    increase, errors = _value_and_se(results, "ablation")  # (L, H)
    H = increase.size(1)
    order = increase.flatten().argsort(descending=True).tolist()
    top = ", ".join(f"{_head(*divmod(i, H))} ({_signed(increase.flatten()[i], errors.flatten()[i])} nats)"
                    for i in order[:3])
    negligible = int((increase.abs() < NEGLIGIBLE_ABLATION).sum())
    where = ""
    if "ablation_tokens" in results:
        n, t = results["ablation_tokens"]
        where = f" (on {n} window{'s' if n != 1 else ''} of {t} tokens)"
    return (f"Most important heads by ablation{where}: {top}; {negligible} of {increase.numel()} heads change the loss "
            f"by less than {NEGLIGIBLE_ABLATION} nats when zeroed.")


def _signed(value, se) -> str:
    """'+0.500 ± 0.010' (3 decimals, a sign, no '-0.000')."""
    return plus_minus(round(float(value), 3) + 0.0, se, "+.3f").replace("± +", "± ")


def _icl_sentence(results: dict) -> str:
    """The in-context-learning score, and only what its error supports."""
    score, se = float(results["icl_score"]), results.get("icl_score_se")
    window = int(results.get("window_length", 0))
    measured = (f"In-context learning score (Olsson et al. 2022: the loss over the last sixteenth of each window minus "
                f"that a tenth of the way in, over {results.get('num_windows', '?')} windows of {window} tokens): "
                f"{_signed(score, se)} nats")
    if se is None or se != se:
        return measured + " (one window: no standard error, so no conclusion)."
    if score + 2 * se < 0:
        return measured + ": the context helps, later tokens are predicted better than early ones."
    if score - 2 * se > 0:
        return measured + ": later tokens are predicted worse than early ones, which the context should not do."
    return measured + ": no measurable in-context learning at this context length."


def head_kinds(results: dict) -> list[list[str]]:
    """Each head's kind, (L, H) words from HEAD_KINDS, the first that holds: induction (induction score
    at least INDUCTION_THRESHOLD), previous-token (attention on the previous token of the validation
    text at least PREVIOUS_TOKEN_THRESHOLD), sink (sink share at least the sink threshold), local
    (mean attention distance at most `local_distance`), else none of these; each by two standard
    errors where the results carry them. A measure missing from `results` names no head."""
    L, H = torch.as_tensor(results["depth_scan"]).shape
    window = int(results.get("window_length", 0))
    tests = []
    if "induction" in results:
        tests.append(("induction", clears(*_value_and_se(results, "induction"), INDUCTION_THRESHOLD)))
    if "previous_token" in results:
        tests.append(("previous-token", clears(*_value_and_se(results, "previous_token"), PREVIOUS_TOKEN_THRESHOLD)))
    if "window_sink_scores" in results or "sink_scores" in results:
        share = _value_and_se(_sink_scores(results), "max_key_share")
        tests.append(("sink", clears(*share, float(results.get("sink_threshold", 0.3)))))
    if "attention_distance" in results:
        distance = _value_and_se(results, "attention_distance")
        tests.append(("local", clears(*distance, local_distance(window), above=False)))
    return [[next((kind for kind, holds in tests if bool(holds[layer, head])), "none of these")
             for head in range(H)] for layer in range(L)]


def _head_kinds_sentence(results: dict) -> str:
    kinds = head_kinds(results)
    flat = [kind for row in kinds for kind in row]
    counts = ", ".join(f"{flat.count(kind)} {kind}" for kind in HEAD_KINDS if flat.count(kind))
    return (f"The {len(flat)} heads by kind (each named by the first that holds by two standard errors, in this "
            f"order): {counts}.")


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
        "± is one standard error over the validation windows (over the random sequences for induction); a head is "
        "named by a threshold only when its score clears it by two standard errors",
    ]


SECTIONS = [
    (("depth_scan", "attention_distance"), _layers_sentence),
    (("sinks", "sink_scores"), _sinks_sentence),
    (("sink_rate",), _sink_rate_sentence),
    (("previous_token", "prefix_matching"), _circuit_heads_sentence),
    (("depth_scan",), _head_kinds_sentence),
    (("induction",), _induction_sentence),
    (("icl_score",), _icl_sentence),
    (("logit_lens",), _logit_lens_sentence),
    (("ablation",), _ablation_sentence),
]


def summarize(results: dict) -> str:
    """A short written summary of the findings, one paragraph per measure present in `results`."""
    paragraphs = [write(results) for keys, write in SECTIONS if all(k in results for k in keys)]
    return "\n\n".join(paragraphs)
