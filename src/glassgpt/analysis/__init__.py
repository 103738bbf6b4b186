"""See what a trained model learned: attention maps, depth scan, sinks, logit lens, circuits.

Each measure is a function from (model, tokens) or from tensors to tensors;
each plot takes tensors and returns a matplotlib Figure; `summarize` turns the
numbers into sentences, each score with its standard error (`uncertainty`);
`describe_heads` gives every head one measured sentence; `write_report` (behind
`glassgpt analyze`) does it all for a run directory. Usable from a notebook:

    from glassgpt.analysis import attention_patterns, plot_attention_grid
    patterns = attention_patterns(model, idx)          # (L, H, T, T)
    plot_attention_grid(patterns, tokens)
"""

from glassgpt.analysis.circuits import (
    activation_patching, direct_logit_attribution, logit_difference, patched_logits,
)
from glassgpt.analysis.heads import describe_heads, prompt_heads, token_classes
from glassgpt.analysis.measures import (
    SINK_EPSILON, mean_head, mean_z, attention_distance, attention_patterns, batch_patterns, find_sinks, head_ablation,
    head_ablation_statistics, induction_stripe, key_shares, normalized_entropy, prefix_matching,
    previous_token_stripe, repeated_random_tokens, sink_rate, sink_scores, zero_head,
)
from glassgpt.analysis.plots import (
    plot_attention, plot_attention_grid, plot_head_heatmap, plot_logit_lens, token_labels,
)
from glassgpt.analysis.report import write_report
from glassgpt.analysis.streaming import (
    depth_scan, induction_scores, induction_statistics, logit_lens, stream_patterns, unigram_entropy, window_statistics,
)
from glassgpt.analysis.suite import analyze
from glassgpt.analysis.summary import layer_lines, summarize
from glassgpt.analysis.view import View, view

__all__ = [
    "describe_heads", "head_ablation_statistics", "induction_statistics", "prompt_heads", "token_classes",
    "activation_patching", "direct_logit_attribution", "logit_difference", "mean_head", "mean_z", "patched_logits",
    "stream_patterns", "unigram_entropy", "window_statistics",
    "SINK_EPSILON", "induction_stripe", "key_shares", "prefix_matching", "previous_token_stripe", "sink_rate",
    "analyze", "attention_distance", "attention_patterns", "batch_patterns", "depth_scan", "find_sinks",
    "head_ablation", "induction_scores", "layer_lines", "logit_lens", "normalized_entropy", "plot_attention",
    "plot_attention_grid", "plot_head_heatmap", "plot_logit_lens", "repeated_random_tokens", "sink_scores",
    "summarize", "token_labels", "View", "view", "write_report", "zero_head",
]
