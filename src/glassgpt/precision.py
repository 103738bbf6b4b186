"""Precision and memory layout for inference: which dtype the weights are cast to, the cast
itself, and the layout that makes batch-1 decoding fast.

Below both the run directory (`checkpoint.load_run` loads weights in a dtype) and the sampler
(`glassgpt sample`, the demo and the benchmark prepare a model to generate), so that loading a run
never imports the sampling code. `glassgpt.inference.generate` re-exports these names.
"""

from __future__ import annotations

import contextlib

import torch

from glassgpt.device import fast_matmul
from glassgpt.errors import UsageError


INFERENCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *INFERENCE_DTYPES)


def inference_dtype(name: str, device: torch.device | str = "cpu", decoding: bool = True) -> torch.dtype:
    """A `--dtype` name -> the torch dtype the weights are cast to. `auto`: the fastest for the
    work, on this device (docs: explanation/cpu-speed).

    - Decoding (`decoding`: sample, the demo): one token at a time, matrix-vector products that
      read every weight once. On a CPU float16: half the bytes, and the kernels convert on the
      fly on any x86 CPU (F16C) or ARM one; the fastest to decode on AMD Zen 4 (`glassgpt bench
      inference`: 2.2x float32's tokens/s, bfloat16 1.5x).
    - Whole windows (analyze, eval, sampling without the KV cache): matrix products. On a CPU the
      16-bit dtype it multiplies natively (bfloat16 with AVX-512 BF16 or AMX, float16 with
      AVX-512 FP16), else float32: an emulated one is 3-7x slower than float32 (Zen 4's float16,
      an AVX2 CPU's bfloat16 and float16).
    - CUDA: bfloat16 from Ampere on, float16 before (not measured here: no GPU was available);
      MPS: float32.
    """
    if name == "auto":
        device = torch.device(device)
        if device.type == "cuda":
            return torch.bfloat16 if fast_matmul(torch.bfloat16, device) else torch.float16
        if device.type != "cpu":
            return torch.float32
        if decoding:
            return torch.float16
        return next(dt for dt in (torch.bfloat16, torch.float16, torch.float32) if fast_matmul(dt, device))
    if name not in INFERENCE_DTYPES:
        raise UsageError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {name!r}")
    return INFERENCE_DTYPES[name]


def cast_weights(model, dtype: torch.dtype):
    """Cast the parameters to `dtype`, in place, and return the model. Not `model.to(dtype)`:
    buffers such as RoPE's frequencies stay fp32 (rounded to 16 bits they would shift the
    angles of far positions)."""
    for param in model.parameters():  # a tied weight is one parameter, cast once
        param.data = param.data.to(dtype)
    return model


def prepare_for_inference(model, dtype: torch.dtype | None = None):
    """Get a model ready to generate, in place, and return it (in eval mode).

    - `dtype`: `cast_weights`. The model computes its LayerNorm statistics, softmax,
      rotary angles and logits in fp32 whatever the weights' dtype.
    - On CPU in fp32, the unembedding (lm_head, tied to wte) is stored transposed
      (column-major: the same (V, C) tensor, strides (1, V)). At batch 1 every layer is a
      matrix-vector product; for the (V, C) = (50257, 512) unembedding `x @ W.t()` with W
      row-major runs at ~9 GB/s on the benchmark machine, with W column-major at ~23 GB/s,
      and it is 57% of the weights. The other layers are fast either way, and float16 is
      fast only row-major, so nothing else moves.

    Values, parameter names and tying are unchanged: only where the numbers sit in memory.
    `checkpoint.load_run` calls it, so every model loaded for inference has this layout;
    calling it again changes nothing. `save_run` writes a prepared model row-major
    (`row_major`), as safetensors requires. Inference only: training keeps the layout it was built with.
    """
    if dtype is not None:
        cast_weights(model, dtype)
    weight = model.lm_head.weight
    if weight.device.type == "cpu" and weight.dtype == torch.float32 and weight.is_contiguous():
        weight.data = weight.data.t().contiguous().t()  # (V, C) column-major; wte shares it
    return model.eval()


@contextlib.contextmanager
def row_major(model):
    """Within the block, every parameter stored row-major (what safetensors can save); the
    layout `prepare_for_inference` chose comes back afterwards. Values never change."""
    layouts = {param: param.data for param in model.parameters() if not param.data.is_contiguous()}
    for param, data in layouts.items():
        param.data = data.contiguous()
    try:
        yield model
    finally:
        for param, data in layouts.items():
            param.data = data
