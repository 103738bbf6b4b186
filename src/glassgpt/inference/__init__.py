"""Inference: sampling (temperature, top-k, top-p) and generation with the KV cache, text in and out
(prompts, stop strings, streamed UTF-8), and `inference(model)` for measurements.

    from glassgpt.inference import generate
    out = generate(model, idx, max_new_tokens=200, temperature=0.8, top_k=50)
"""

from glassgpt.inference.generate import (apply_top_k, apply_top_p, generate, sample_next, sampling_probs, stream,
                                         stream_logits)
from glassgpt.kv_cache import KVCache
from glassgpt.inference.mode import inference
from glassgpt.precision import prepare_for_inference

__all__ = ["KVCache", "apply_top_k", "apply_top_p", "generate", "inference", "prepare_for_inference", "sample_next",
           "sampling_probs", "stream", "stream_logits"]
