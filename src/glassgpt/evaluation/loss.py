"""Evaluating a finished (or converted) run: loss over a whole split, with the
sliding-window evaluation papers quote.

Windows of `context` tokens start every `stride` tokens. The first window scores
all its targets; each later one scores only the targets the previous windows did
not reach, its last `stride`. So every target but those of the first window is
predicted from at least `context - stride` tokens of history. `stride = context`
is the non-overlapping evaluation that training runs (cheap, but the tokens at
the start of each window see little history, so it overstates the loss);
a small stride costs `context / stride` times the compute.

    windows (context 8, stride 4) over tokens 0..15; s = scored target
    x: 0 1 2 3 4 5 6 7            targets 1..8 all scored
    x:         4 5 6 7 8 9 10 11  targets 9..12 scored (history >= 4)
    x:                 8 9 ...15  targets 13..15 scored (the last window is short)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from glassgpt.errors import UsageError
from glassgpt.model import GPT
from glassgpt.progress import Progress
from glassgpt.stop import check_stop
from glassgpt.tokenizer import describe as describe_tokenizer  # `describe` below describes a result



@dataclass(frozen=True)
class Window:
    """Inputs `data[start : start + length]`; of its targets, the last `scored` count."""

    start: int
    length: int
    scored: int


def check_window_args(context: int, stride: int, block_size: int) -> None:
    if not 1 <= context <= block_size:
        raise UsageError(f"--context must be between 1 and the model's block_size {block_size}, got {context}")
    if not 1 <= stride <= context:
        raise UsageError(f"--stride must be between 1 and the context {context}, got {stride}")


def sliding_windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """The windows that score every target of `n_tokens` tokens (targets 1..n-1) once."""
    windows, scored_up_to = [], 0  # targets 1..scored_up_to are done
    start = 0
    while scored_up_to < n_tokens - 1:
        length = min(context, n_tokens - 1 - start)  # inputs start..start+length-1, targets up to start+length
        end = start + length
        windows.append(Window(start, length, end - scored_up_to))
        scored_up_to = end
        start += stride
    return windows


def window_batches(data: np.ndarray, windows: list[Window], context: int,
                   batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches (B, context) of inputs and targets; targets not scored (or padding) are -1."""
    for i in range(0, len(windows), batch_size):
        batch = windows[i: i + batch_size]
        x = torch.zeros(len(batch), context, dtype=torch.long)
        y = torch.full((len(batch), context), -1, dtype=torch.long)
        for row, w in enumerate(batch):
            chunk = torch.from_numpy(np.asarray(data[w.start: w.start + w.length + 1], dtype=np.int64))
            x[row, :w.length] = chunk[:-1]
            y[row, w.length - w.scored: w.length] = chunk[1 + w.length - w.scored:]
        yield x, y


@dataclass(frozen=True)
class LossResult:
    loss: float  # mean nats per scored token
    tokens: int  # targets scored
    windows: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.loss < 700 else math.inf


@torch.no_grad()
def token_losses(model: GPT, data: np.ndarray, context: int, stride: int, batch_size: int = 8,
                 device: str | torch.device = "cpu", progress: bool = False, label: str = "eval") -> torch.Tensor:
    """(len(data) - 1,) fp32 on the CPU: the cross-entropy (nats) of every target of `data`, in
    order (entry i is the loss of token i + 1), by sliding windows (module docstring).
    `progress`: say how far it has got on stderr (glassgpt.progress)."""
    check_window_args(context, stride, model.config.block_size)
    if len(data) < 2:
        raise UsageError(f"{len(data)} token(s) is too few to evaluate: one input and its next token at least")
    windows = sliding_windows(len(data), context, stride)
    out = torch.empty(len(data) - 1)
    shown = Progress(label, len(windows), "window") if progress else None
    done = 0
    for x, y in window_batches(data, windows, context, batch_size):
        check_stop()  # a stop request ends the evaluation within one batch
        x, y = x.to(device), y.to(device)  # (B, T) each
        logits, _ = model(x)  # (B, T, V)
        losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-1,
                                 reduction="none").view(y.shape).cpu()  # (B, T): 0 where not scored
        for row, w in enumerate(windows[done: done + len(x)]):
            first = w.length - w.scored  # the row's first scored position: target w.start + first + 1
            out[w.start + first: w.start + w.length] = losses[row, first: w.length]
        done += len(x)
        if shown is not None:
            shown.update(done)
    if shown is not None:
        shown.close()
    return out


def sliding_window_loss(model: GPT, data: np.ndarray, context: int, stride: int, batch_size: int = 8,
                        device: str | torch.device = "cpu", progress: bool = False) -> LossResult:
    """Mean cross-entropy (nats) of every target of `data`, by sliding windows (module docstring)."""
    losses = token_losses(model, data, context, stride, batch_size, device, progress)  # (N - 1,)
    return LossResult(losses.double().mean().item(), len(losses), len(sliding_windows(len(data), context, stride)))


def bits_per_unit(loss: float, tokenizer_name: str) -> dict[str, float]:
    """`bits_per_byte` / `bits_per_character` when one token is one of them."""
    unit = {"char": "character", "byte": "byte"}.get(tokenizer_name)
    return {f"bits_per_{unit}": loss / math.log(2)} if unit else {}


# ---------------------------------------------------------------- a run on a dataset split

def split_tokens(dataset: str, split: str, run_tokenizer) -> np.ndarray:
    """The prepared tokens of `dataset`'s `split`, checked to use the run's tokenizer."""
    from glassgpt.data import TokenDataset, check_dataset_name, dataset_path, is_prepared

    check_dataset_name(dataset)
    if not is_prepared(dataset_path(dataset)):
        raise UsageError(f"dataset {dataset} is not prepared: run `glassgpt prepare {dataset}` first")
    ds = TokenDataset.load(dataset)
    if not (ds.path / f"{split}.bin").is_file():
        splits = sorted(p.stem for p in ds.path.glob("*.bin"))
        raise UsageError(f"dataset {dataset} has no {split} split (it was prepared with {', '.join(splits)}): "
                         f"use --split {splits[-1] if splits else 'val'}"
                         + (f", or prepare it again with `glassgpt prepare {dataset} --force`"
                            if dataset == "enwik8" else ""))
    if ds.tokenizer.to_dict() != run_tokenizer.to_dict():
        raise UsageError(f"dataset {dataset} uses {describe_tokenizer(ds.tokenizer)}, but the run was trained with "
                         f"{describe_tokenizer(run_tokenizer)}: pick a dataset prepared with the run's tokenizer")
    return ds.split(split)


def evaluate_split(model: GPT, tokenizer, dataset: str, split: str, *, context: int, stride: int,
                   max_tokens: int | None = None, batch_size: int = 8, device: str | torch.device = "cpu",
                   progress: bool = False) -> dict:
    """The loss of `model` on a split, by sliding windows; a dict naming exactly what was scored."""
    check_window_args(context, stride, model.config.block_size)
    data = split_tokens(dataset, split, tokenizer)
    if max_tokens is not None:
        data = data[: max_tokens + 1]  # max_tokens targets
    result = sliding_window_loss(model, data, context, stride, batch_size, device, progress)
    return {"task": "loss", "dataset": dataset, "split": split, "tokens": result.tokens,
            "max_tokens": max_tokens, "context": context, "stride": stride,
            "min_history": context - stride if stride < context else 0, "windows": result.windows,
            "loss": result.loss, "perplexity": result.perplexity,
            **bits_per_unit(result.loss, tokenizer.name),
            **({} if max_tokens is not None else text_bits_per_byte(dataset, split, result, tokenizer.name))}


def text_bits_per_byte(dataset: str, split: str, result: LossResult, tokenizer_name: str) -> dict:
    """On a dataset that records its text's UTF-8 bytes (your own), the whole split's loss in
    bits per byte of that text, whatever the tokenizer: the figure that compares tokenizers."""
    from glassgpt.data import TokenDataset

    text_bytes = (TokenDataset.load(dataset).meta.get("text_bytes") or {}).get(split)
    if tokenizer_name == "byte" or type(text_bytes) is not int or text_bytes <= 0:
        return {}
    return {"bits_per_byte": result.loss * result.tokens / math.log(2) / text_bytes, "text_bytes": text_bytes}


def describe(result: dict) -> str:
    """A few lines for a person: what was scored, then the figures."""
    if result["task"] == "hellaswag":
        return (f"HellaSwag ({result['file']}): {result['items']:,} items, completion style\n"
                f"acc {result['acc']:.4f} | acc_norm {result['acc_norm']:.4f}")
    units = [k[len("bits_per_"):] for k in result if k.startswith("bits_per_")]
    unit = next((u for u in units if not (u == "byte" and "text_bytes" in result)), None)  # one token is one
    what = "the first " if result["max_tokens"] is not None else "all "
    history = (f"every token after the first window with at least {result['min_history']} tokens of history"
               if result["min_history"] else "non-overlapping windows")
    lines = [f"{result['dataset']} {result['split']} split: {what}{result['tokens']:,} tokens scored"
             + (f" (one {unit} each)" if unit else ""),
             f"context {result['context']}, stride {result['stride']}: {history} ({result['windows']:,} windows)"]
    figures = f"loss {result['loss']:.4f} nats/token | perplexity {result['perplexity']:.3f}"
    for u in units:
        figures += f" | {result['bits_per_' + u]:.4f} bits per {u}"
    if "text_bytes" in result:
        figures += f" (of the split's {result['text_bytes']:,} bytes of text)"
    return "\n".join(lines + [figures])


# ---------------------------------------------------------------- HellaSwag, and the run's metrics

def evaluate_hellaswag_file(model: GPT, tokenizer, limit: int | None = None, device: str | torch.device = "cpu",
                            progress: bool = False) -> dict:
    """HellaSwag's validation file (mirror, cache or download, verified), scored as a dict."""
    from glassgpt.evaluation import hellaswag
    from glassgpt.data import find_raw_file

    path = find_raw_file(hellaswag.HELLASWAG_VAL)
    items = hellaswag.read_items(path, limit)
    result = hellaswag.evaluate_hellaswag(model, tokenizer, items, device, progress)
    return {"task": "hellaswag", "file": hellaswag.HELLASWAG_VAL.name, "items": result.items,
            "acc": result.acc, "acc_norm": result.acc_norm}


def append_to_metrics(run_dir, result: dict, tensorboard: bool = False) -> dict:
    """Add `result` to the run's metrics.jsonl as a row of kind `eval_task`, at the run's
    last logged step (0 for a run never trained here); refused while a trainer writes the run."""
    from pathlib import Path

    from glassgpt import checkpoint as ckpt
    from glassgpt.training.log import MetricsLog, check_tensorboard_available, read_metrics

    run_dir = Path(run_dir)
    with ckpt.writer_lock(run_dir):
        metrics = MetricsLog(run_dir, enabled=True, tensorboard=tensorboard)
        steps = [r.get("step") for r in read_metrics(run_dir)]
        row = {"kind": "eval_task", "step": max((s for s in steps if isinstance(s, int)), default=0), **result}
        if tensorboard:
            check_tensorboard_available()
            metrics.open_tensorboard(None)
        try:
            metrics.append(row)
        finally:
            metrics.close()
    return row
