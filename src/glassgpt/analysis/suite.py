"""Every measure at once: the numbers behind the report (and the demo).

Sized for GPT-2 124M on a laptop CPU: the validation windows go through the model
once, every measure reduced inside its hook layer by layer (`window_statistics`),
and the two measures whose cost grows with the vocabulary or with the number of
heads (the logit lens and head ablation) get a budget of forward FLOPs. Small
models fit their budgets whole; a large one decodes an even subset of positions
and ablates heads on the first tokens of the windows. The results say how much.
"""

from __future__ import annotations

from typing import Callable

import torch

from glassgpt.analysis.dynamics import in_context_learning
from glassgpt.analysis.heads import (
    candidate_names, classes_for, describe_heads, ov_flops, ov_promotions, received_reducer, shares_reducer,
    uniform_shares,
)
from glassgpt.analysis.measures import (
    SINK_EPSILON, attention_patterns, default_induction_seq_len, find_sinks, head_ablation_statistics,
    normalized_entropy, sink_rate, sink_scores,
)
from glassgpt.analysis.plots import token_labels
from glassgpt.analysis.streaming import induction_statistics, window_sink_scores, window_statistics
from glassgpt.model import GPT
from glassgpt.stop import check_stop

MIN_INDUCTION_CONTEXT = 4  # two repeats of at least 2 tokens
LENS_FLOPS = 1e12  # forward FLOPs the logit lens may spend decoding (2 C V per position and point)
ABLATION_FLOPS = 1e12  # forward FLOPs head ablation may spend (one pass per head)
OV_FLOPS = 1e12  # FLOPs reading what each head writes may spend (`ov_flops`): GPT-2 small spends 1.8e11
MIN_ABLATION_TOKENS = 16
INDUCTION_BATCH = 32  # repeated random sequences: the induction score's error about 0.01 where a head is near 0.3
WINDOW_MEASURES = ("depth_scan", "attention_distance", "previous_token", "prefix_matching",  # (L, H), with _se
                   "layer_entropy", "layer_distance")  # (L, 1): each layer's mean over its heads

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def forward_flops_per_token(model: GPT, seq_len: int) -> float:
    """Forward FLOPs per token: a third of the training estimate, plus the unembedding when it is tied
    (the estimate leaves tied embeddings out)."""
    cfg = model.config
    return model.estimate_flops_per_token(seq_len) / 3 + (2 * cfg.n_embd * cfg.vocab_size if cfg.tie_weights else 0)


def lens_position_budget(model: GPT, num_windows: int) -> int:
    """Positions per window the logit lens may decode within LENS_FLOPS (at least 1)."""
    cfg = model.config
    per_position = 2 * cfg.n_embd * cfg.vocab_size * (cfg.n_layer + 1)
    return max(1, int(LENS_FLOPS // (per_position * num_windows)))


def ablation_slice(model: GPT, windows: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows head ablation runs on within ABLATION_FLOPS: all of them when they fit, else as
    many whole windows as fit, else the first window cut to its first tokens (at least
    MIN_ABLATION_TOKENS)."""
    B, T = windows.shape
    passes = model.config.n_layer * model.config.n_head + 1
    tokens = int(ABLATION_FLOPS // (passes * forward_flops_per_token(model, T)))
    if tokens >= T:
        keep = min(B, tokens // T)
        return windows[:keep], targets[:keep]
    keep = min(T, max(MIN_ABLATION_TOKENS, tokens))
    return windows[:1, :keep], targets[:1, :keep]


def _windows_are_the_prompt(windows: torch.Tensor, prompt_ids: torch.Tensor) -> bool:
    """Whether the windows are the prompt alone (no validation split): then its labels name the sink keys."""
    prompt_ids = torch.as_tensor(prompt_ids).flatten()
    return windows.size(0) == 1 and windows.size(1) == prompt_ids.numel() and torch.equal(windows[0].cpu(), prompt_ids.cpu())


def analyze(model: GPT, prompt_ids: torch.Tensor, windows: torch.Tensor, targets: torch.Tensor,
            tokens: list[str] | None = None, sink_threshold: float = SINK_EPSILON, induction_batch: int = INDUCTION_BATCH,
            generator: torch.Generator | None = None, progress: Progress | None = None,
            vocab_size: int | None = None, tokenizer=None, bos: int | None = None) -> dict:
    """Run the analysis suite.

    prompt_ids (T,): the sequence whose attention is drawn and whose sinks are named
    (`tokens` labels its positions); windows, targets (B, Tw): validation text for the
    depth scan, attention distance, sink rate, previous-token and prefix-matching scores,
    the in-context-learning score, the head descriptions, logit lens and head ablation, each with
    its standard error over the windows (`<name>_se`). `tokenizer` gives the token classes the
    heads are described by (without it: offsets, the first position and copies of the same token)
    and names the tokens they write. `progress(stage, done, total)` is told as windows pass.
    `bos`: the id a model trained with bos=true saw first; the induction probe starts with it too.
    Returns a dict of tensors (and lists) that `summarize` and the report read.
    """
    def report(stage: str, done: int, total: int) -> None:  # told after every forward pass
        check_stop()  # a stop request ends the analysis here
        if progress is not None:
            progress(stage, done, total)

    B = windows.size(0)
    patterns = attention_patterns(model, prompt_ids)  # (L, H, T, T): the prompt only, short
    scores = sink_scores(patterns)
    masks, words = classes_for(tokenizer, model.config.vocab_size)
    ids = windows.unique()  # (U,) sorted: the tokens the heads' received attention is counted over
    done = [0]

    def windows_done(n: int) -> None:
        done[0] += n
        report("validation windows", done[0], B)

    report("validation windows", 0, B)
    stats = window_statistics(model, windows, targets, max_lens_positions=lens_position_budget(model, B),
                              progress=windows_done, generator=generator,
                              reducers={"head_shares": shares_reducer(masks), "received": received_reducer(ids)})
    window_sinks = window_sink_scores(stats)
    baseline, row_counts = uniform_shares(windows, masks)
    results = {
        "prompt_patterns": patterns,
        "prompt_entropy": normalized_entropy(patterns),  # (L, H)
        "window_length": int(windows.size(-1)),
        "num_windows": int(B),
        **{name: stats[name] for name in WINDOW_MEASURES},  # (L, H) each
        **{f"{name}_se": stats[f"{name}_se"] for name in WINDOW_MEASURES},  # (L, H) each: over the windows
        "sink_scores": scores,
        "sink_threshold": sink_threshold,
        "sinks": find_sinks(window_sinks, threshold=sink_threshold,  # over the windows: the sink rate's heads
                            tokens=tokens if _windows_are_the_prompt(windows, prompt_ids) else None),
        "window_sink_scores": window_sinks,
        "sink_rate": sink_rate(window_sinks, epsilon=sink_threshold),  # (L,) each: fraction of heads sinking
        "logit_lens": stats["logit_lens"],
        **in_context_learning(model, windows, targets),
        "head_shares": stats["head_shares"], "head_shares_se": stats["head_shares_se"],  # (L, H, S)
        "head_baseline": baseline, "head_counts": row_counts,  # (S,) each
        "candidate_names": candidate_names(words),
    }
    if ov_flops(model) <= OV_FLOPS:
        results["ov"] = ov_promotions(model, stats["received"], ids, vocab_size)
    seq_len = default_induction_seq_len(model.config, vocab_size, bos is not None)  # vocab_size: the tokenizer's (padding)
    if 2 * seq_len >= MIN_INDUCTION_CONTEXT:
        report("induction", 0, 1)
        results.update(induction_statistics(model, seq_len=seq_len, batch=induction_batch, generator=generator,
                                            vocab_size=vocab_size, bos=bos))
        results["induction_seq_len"] = seq_len
        report("induction", 1, 1)
    ablation_windows, ablation_targets = ablation_slice(model, windows, targets)
    heads = model.config.n_layer * model.config.n_head
    report("head ablation", 0, heads)
    results.update(head_ablation_statistics(model, ablation_windows, ablation_targets,
                                            progress=lambda done, total: report("head ablation", done, total)))
    results["ablation_tokens"] = [int(ablation_windows.size(0)), int(ablation_windows.size(1))]
    label = (lambda i: token_labels(tokenizer, [i])[0]) if tokenizer is not None else None
    results["heads"] = describe_heads(results, label)
    return results
