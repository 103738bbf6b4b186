"""HellaSwag (Zellers et al., 2019), scored the way llm.c and build-nanogpt do.

Each item is a context and four endings, one of them right (`label`). The model
reads `context + " " + ending` for each ending; an ending's score is the model's
loss on the ending's tokens only. The prediction is the ending with the lowest
summed loss (`acc`) or the lowest mean loss per token (`acc_norm`, which does not
favour short endings). This is the "completion style" evaluation: GPT-2 124M
gets acc_norm 0.2955 on the 10,042 validation items; chance is 0.25.

The file is the official `hellaswag_val.jsonl`, found like every raw file
(`GLASSGPT_MIRROR`, the download cache, then its URL) and verified by the git
blob id GitHub's tree gives for it (no SHA-256 for it could be established here).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from glassgpt.data.sources import RawFile
from glassgpt.errors import RunError, UsageError
from glassgpt.model import GPT
from glassgpt.progress import Progress
from glassgpt.stop import check_stop
from glassgpt.tokenizer import Tokenizer

HELLASWAG_VAL = RawFile(
    name="hellaswag_val.jsonl",
    url="https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
    # The blob id of data/hellaswag_val.jsonl in rowanz/hellaswag's master tree (unchanged
    # since its first commit, 6774d74). Its SHA-256 is not known here: see the module docstring.
    git_blob_sha1="0f5ee25d72216f12317d5d8a7b92deafa423d81e",
)
NUM_ENDINGS = 4


@dataclass(frozen=True)
class Item:
    context: str
    endings: tuple[str, ...]
    label: int


def read_items(path: Path, limit: int | None = None) -> list[Item]:
    """The items of a HellaSwag jsonl file (the first `limit`); a bad line is a RunError naming it."""
    items = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if limit is not None and len(items) >= limit:
                break
            if line.strip():
                items.append(_parse_item(line, f"{path} line {number}"))
    if not items:
        raise RunError(f"{path} holds no HellaSwag items")
    return items


def _parse_item(line: str, where: str) -> Item:
    try:
        d = json.loads(line)
    except json.JSONDecodeError as e:
        raise RunError(f"{where} is not valid JSON ({e.msg}): replace the file with a fresh copy") from None
    if not isinstance(d, dict):
        raise RunError(f"{where} is not a JSON object: replace the file with a fresh copy")
    context, endings, label = d.get("ctx"), d.get("endings"), d.get("label")
    if not isinstance(context, str):
        raise RunError(f"{where} has no text field 'ctx'")
    if not (isinstance(endings, list) and len(endings) == NUM_ENDINGS and all(isinstance(e, str) for e in endings)):
        raise RunError(f"{where}: 'endings' must be a list of {NUM_ENDINGS} strings")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < NUM_ENDINGS:
        raise RunError(f"{where}: 'label' must be a whole number from 0 to {NUM_ENDINGS - 1}, got {label!r}")
    return Item(context, tuple(endings), label)


def render(item: Item, tokenizer: Tokenizer, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens (4, T) of context + " " + each ending, and a mask (4, T) that is 1 on the
    ending's tokens. Rows are right-padded with 0; a row longer than `block_size`
    loses tokens from its start (the context), keeping the ending."""
    context = tokenizer.encode(item.context)
    rows, masks = [], []
    for ending in item.endings:
        ending_ids = tokenizer.encode(" " + ending)
        ids = (context + ending_ids)[-block_size:]
        mask = ([0] * len(context) + [1] * len(ending_ids))[-block_size:]
        rows.append(ids)
        masks.append(mask)
    width = max(len(r) for r in rows)
    tokens = torch.zeros(NUM_ENDINGS, width, dtype=torch.long)
    mask = torch.zeros(NUM_ENDINGS, width, dtype=torch.long)
    for i, (ids, m) in enumerate(zip(rows, masks)):
        tokens[i, :len(ids)] = torch.tensor(ids)
        mask[i, :len(m)] = torch.tensor(m)
    return tokens, mask


@torch.no_grad()
def ending_losses(model: GPT, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean loss (nats) of each row's masked tokens, each predicted from the tokens before it."""
    logits, _ = model(tokens)  # (4, T, V)
    shift_logits = logits[:, :-1].float()  # (4, T-1, V): predictions of tokens 1..T-1
    shift_tokens, shift_mask = tokens[:, 1:], mask[:, 1:].float()  # (4, T-1)
    losses = F.cross_entropy(shift_logits.flatten(0, 1), shift_tokens.flatten(), reduction="none")
    losses = losses.view(tokens.shape[0], -1) * shift_mask  # (4, T-1)
    total = losses.sum(dim=1)
    return total, total / shift_mask.sum(dim=1).clamp(min=1)


@dataclass(frozen=True)
class HellaSwagResult:
    items: int
    acc: float  # lowest summed loss is the right ending
    acc_norm: float  # lowest mean loss per token is the right ending


def evaluate_hellaswag(model: GPT, tokenizer: Tokenizer, items: list[Item], device: str | torch.device = "cpu",
                       progress: bool = False) -> HellaSwagResult:
    right, right_norm = 0, 0
    shown = Progress("hellaswag", len(items), "item") if progress else None
    for i, item in enumerate(items):
        check_stop()  # a stop request ends the evaluation within one item
        try:
            tokens, mask = render(item, tokenizer, model.config.block_size)
        except ValueError as e:  # a character outside a char vocabulary
            raise UsageError(f"this run's tokenizer cannot read HellaSwag: {e}") from None
        total, mean = ending_losses(model, tokens.to(device), mask.to(device))
        right += int(total.argmin().item() == item.label)
        right_norm += int(mean.argmin().item() == item.label)
        if shown is not None:
            shown.update(i + 1)
    if shown is not None:
        shown.close()
    return HellaSwagResult(len(items), right / len(items), right_norm / len(items))
