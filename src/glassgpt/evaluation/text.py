"""Scoring any text with a run: `glassgpt eval RUN --text FILE...`.

Each file is one document, encoded with the run's own tokenizer (after its end-of-text token
where it has one, as prepared data starts every document) and scored by sliding windows
(glassgpt.evaluation.loss): each token is predicted from up to `context` tokens before it.
For each file and for all of them together:

- the loss in nats per token;
- bits per byte: the loss of the scored tokens in bits over the UTF-8 bytes they stand for,
  the figure that compares models with different tokenizers on the same text;
- each with its standard error, over blocks of `context` consecutive targets (neighbouring
  tokens' losses are not independent, blocks mostly are): the standard deviation of the blocks'
  bits per byte over sqrt(blocks), None with fewer than two blocks;
- the worst-predicted spans: the `SPAN_TOKENS` consecutive tokens with the most bits per byte,
  the worst first, none overlapping another, with the line each starts on.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from glassgpt import safe_read
from glassgpt.errors import UsageError
from glassgpt.evaluation.loss import check_window_args, token_losses

MAX_TEXT_BYTES = 256 << 20  # per file: scoring that much on a CPU takes hours already
SPAN_TOKENS = 16
WORST_SPANS = 5
CONTEXT_TOKENS = 8  # tokens shown before a span


def read_text(path: Path, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A file's text, through the bounded reader: a regular file, at most `max_bytes`, UTF-8
    (else one sentence naming it)."""
    return safe_read.read_text(path, max_bytes, error=UsageError,
                               fix="give a UTF-8 text file; score the start of a longer one with --max-tokens N")


def encode_document(tokenizer, text: str, path: Path) -> tuple[list[int], bool]:
    """The ids to score, and whether they start with the tokenizer's end-of-text token (context only)."""
    if not text:
        raise UsageError(f"--text {path} is empty: give a file with text")
    if tokenizer.name == "char":
        unknown = sorted(set(text) - set(tokenizer.chars))
        if unknown:
            shown = " ".join(repr(c) for c in unknown[:8])
            raise UsageError(f"--text {path} holds {len(unknown)} character(s) the run's char tokenizer has never "
                             f"seen ({shown}{' ...' if len(unknown) > 8 else ''}): remove them, or score with a run "
                             "whose tokenizer reads any text (byte, gpt2, bpe:N)")
    ids = tokenizer.encode(text)
    eot = tokenizer.eot_token
    return ([eot, *ids], True) if eot is not None else (ids, False)


def token_bytes(tokenizer, ids: list[int]) -> np.ndarray:
    """(len(ids),) the UTF-8 bytes each token stands for."""
    return np.array([len(tokenizer.decode_bytes([i])) for i in ids], dtype=np.int64)


def block_se(amount: np.ndarray, per: np.ndarray, block: int) -> float | None:
    """The standard error of sum(amount) / sum(per) (bits per byte, or nats per token with `per` all
    ones), from its value in each block of `block` targets; None with fewer than 2 blocks."""
    n = len(amount) // block
    if n < 2:
        return None
    per_block = amount[: n * block].reshape(n, block).sum(1) / np.maximum(per[: n * block].reshape(n, block).sum(1), 1)
    return float(per_block.std(ddof=1) / math.sqrt(n))


def worst_spans(bits: np.ndarray, nbytes: np.ndarray, count: int = WORST_SPANS, span: int = SPAN_TOKENS) -> list[int]:
    """Start indices (into the scored targets) of the `count` spans of `span` targets with the most
    bits per byte, worst first, none overlapping another."""
    span = min(span, len(bits))
    sums = np.convolve(bits, np.ones(span), "valid") / np.maximum(np.convolve(nbytes, np.ones(span), "valid"), 1)
    chosen: list[int] = []
    for start in np.argsort(-sums, kind="stable"):
        if all(abs(int(start) - other) >= span for other in chosen):
            chosen.append(int(start))
            if len(chosen) == count:
                break
    return chosen


def score_file(model, tokenizer, path: Path, *, context: int, stride: int, batch_size: int = 8,
               device: str | torch.device = "cpu", max_tokens: int | None = None, progress: bool = False) -> dict:
    """One file's figures (the module's docstring), and the per-target bits and bytes for the total."""
    check_window_args(context, stride, model.config.block_size)
    text = read_text(path)
    ids, has_eot = encode_document(tokenizer, text, path)
    if max_tokens is not None:
        ids = ids[: max_tokens + 1]
    if len(ids) < 2:
        raise UsageError(f"--text {path} is one token long: scoring needs a token and the one after it")
    losses = token_losses(model, np.asarray(ids, dtype=np.int64), context, stride, batch_size, device, progress,
                          label=f"scoring {path.name}").double().numpy()  # (N - 1,): target i + 1
    bits = losses / math.log(2)
    nbytes = token_bytes(tokenizer, ids[1:])  # the bytes of each scored target
    total_bytes = int(nbytes.sum())
    spans = []
    raw = text.encode("utf-8")
    offsets = np.concatenate([[0], np.cumsum(nbytes)])  # byte offset of each target in the scored text
    skipped = 0 if has_eot else len(tokenizer.decode_bytes(ids[:1]))  # an unscored first token
    for start in worst_spans(bits, nbytes):
        end = min(start + SPAN_TOKENS, len(bits))
        lo, hi = skipped + int(offsets[start]), skipped + int(offsets[end])
        before = skipped + int(offsets[max(0, start - CONTEXT_TOKENS)])
        spans.append({"bits_per_byte": float(bits[start:end].sum() / max(nbytes[start:end].sum(), 1)),
                      "line": raw[:lo].count(b"\n") + 1, "byte": lo,
                      "before": raw[before:lo].decode("utf-8", "replace"),
                      "text": raw[lo:hi].decode("utf-8", "replace")})
    return {"file": str(path), "tokens": len(bits), "bytes": total_bytes,
            "loss": float(losses.mean()), "loss_se": block_se(losses, np.ones_like(losses), context),
            "bits_per_byte": float(bits.sum() / max(total_bytes, 1)), "bits_per_byte_se": block_se(bits, nbytes, context),
            "worst_spans": spans, "_bits": bits, "_bytes": nbytes, "_losses": losses}


def score_texts(model, tokenizer, paths: list[Path], *, context: int, stride: int, batch_size: int = 8,
                device: str | torch.device = "cpu", max_tokens: int | None = None, progress: bool = False) -> dict:
    """Every file's figures, and all of them together (`total`): the result of `eval --text`."""
    files = [score_file(model, tokenizer, Path(p), context=context, stride=stride, batch_size=batch_size,
                        device=device, max_tokens=max_tokens, progress=progress) for p in paths]
    bits = np.concatenate([f.pop("_bits") for f in files])
    nbytes = np.concatenate([f.pop("_bytes") for f in files])
    losses = np.concatenate([f.pop("_losses") for f in files])
    total = {"tokens": len(bits), "bytes": int(nbytes.sum()), "loss": float(losses.mean()),
             "loss_se": block_se(losses, np.ones_like(losses), context), "bits_per_byte": float(bits.sum() / max(int(nbytes.sum()), 1)),
             "bits_per_byte_se": block_se(bits, nbytes, context)}
    return {"task": "text", "tokenizer": tokenizer.name, "context": context, "stride": stride,
            "max_tokens": max_tokens, "files": files, "total": total}


def _pm(value: float, se: float | None, spec: str = ".3f") -> str:
    return f"{value:{spec}}" + (f" ± {se:{spec}}" if se is not None else " (too short for an error bar)")


def describe_text(result: dict) -> str:
    """The lines `eval --text` prints."""
    cap = "" if result["max_tokens"] is None else f", the first {result['max_tokens']:,} tokens of each file"
    lines = [f"scored with the run's {result['tokenizer']} tokenizer, context {result['context']}, stride "
             f"{result['stride']}{cap}; ± is one standard error over blocks of context tokens"]
    rows = result["files"] + ([{"file": "all files", **result["total"]}] if len(result["files"]) > 1 else [])
    for r in rows:
        lines.append(f"{r['file']}: {r['tokens']:,} tokens, {r['bytes']:,} bytes | loss {_pm(r['loss'], r['loss_se'])} "
                     f"nats/token | {_pm(r['bits_per_byte'], r['bits_per_byte_se'])} bits per byte")
    for f in result["files"]:
        if f["worst_spans"]:
            lines.append(f"worst-predicted spans of {f['file']} (bits per byte, the span in [brackets]):")
            for span in f["worst_spans"]:
                shown = (span["before"] + "[" + span["text"] + "]").replace("\n", "\\n")
                lines.append(f"  {span['bits_per_byte']:6.2f}  line {span['line']}: {shown}")
    return "\n".join(lines)
