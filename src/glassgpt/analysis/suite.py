"""Every measure at once: the numbers behind the report (and the demo)."""

from __future__ import annotations

import torch

from glassgpt.analysis.measures import (
    SINK_EPSILON, attention_distance, attention_patterns, batch_patterns, default_induction_seq_len, find_sinks, head_ablation,
    induction_scores, logit_lens, normalized_entropy, previous_token_stripe, repeated_random_tokens, sink_rate,
    sink_scores, window_average,
)
from glassgpt.model import GPT

MIN_INDUCTION_CONTEXT = 4  # two repeats of at least 2 tokens


def analyze(model: GPT, prompt_ids: torch.Tensor, windows: torch.Tensor, targets: torch.Tensor,
            tokens: list[str] | None = None, sink_threshold: float = SINK_EPSILON, induction_batch: int = 8,
            generator: torch.Generator | None = None) -> dict:
    """Run the analysis suite.

    prompt_ids (T,): the sequence whose attention is drawn and whose sinks are named
    (`tokens` labels its positions); windows, targets (B, Tw): validation text for the
    depth scan, attention distance, logit lens and head ablation. Returns a dict of
    tensors (and lists) that `summarize` and the report read.
    """
    patterns = attention_patterns(model, prompt_ids)  # (L, H, T, T)
    scores = sink_scores(patterns)
    results = {
        "prompt_patterns": patterns,
        "prompt_entropy": normalized_entropy(patterns),  # (L, H)
        "window_length": int(windows.size(-1)),
        "num_windows": int(windows.size(0)),
        "depth_scan": window_average(model, windows, normalized_entropy),  # (L, H)
        "attention_distance": window_average(model, windows, attention_distance),  # (L, H)
        "sink_scores": scores,
        "sink_threshold": sink_threshold,
        "sink_rate": sink_rate(scores, epsilon=sink_threshold),  # (L,) each: fraction of heads sinking
        "sinks": find_sinks(scores, threshold=sink_threshold, tokens=tokens),
        "logit_lens": logit_lens(model, windows, targets),
        "ablation": head_ablation(model, windows, targets),  # (L, H)
    }
    seq_len = default_induction_seq_len(model.config)
    if 2 * seq_len >= MIN_INDUCTION_CONTEXT:
        results["induction"] = induction_scores(model, seq_len=seq_len, batch=induction_batch, generator=generator)
        results["induction_seq_len"] = seq_len
        repeated = repeated_random_tokens(model.config.vocab_size, seq_len, induction_batch, generator)
        results["previous_token"] = previous_token_stripe(batch_patterns(model, repeated)).mean(dim=1)  # (L, H)
    return results
