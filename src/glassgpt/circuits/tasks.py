"""Tasks: pairs of clean and corrupted prompts, and the metric a circuit is judged by.

Three sources of pairs:

- `induction_task`: `n` random distinct tokens, then the same `n` again (clean), against `n`
  other random tokens, then the same second half (corrupted: nothing in it repeats).
  Metric: the loss on the n - 1 tokens of the repeat that an induction head can predict.
- `repeat_task`: spans of the run's own validation text that occur twice within one
  context window (clean), against the same window with the first occurrence replaced by
  another span of the text (corrupted). Metric: the loss on the second occurrence.
- `read_pairs`: a JSON-lines file, one pair per line (see PAIRS_FORMAT).

Pairs of one length run as one batch; pairs of different lengths may share a task. A pair's
clean and corrupted prompts must have the same number of tokens: patching swaps activations
position by position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from glassgpt.circuits.metrics import Batch, LogitDifference, PositionLoss
from glassgpt.errors import UsageError
from glassgpt.safe_read import loads_json, read_text

METRICS = ("loss", "logit-diff")
MAX_PAIRS_BYTES = 64 * 1024 * 1024
MAX_PAIRS = 10_000
BATCH_SIZE = 32  # pairs per forward pass
PAIRS_FORMAT = """\
One JSON object per line:
  {"clean": "When Mary and John went out, John gave a drink to",
   "corrupted": "When Mary and John went out, Anna gave a drink to",
   "answer": " Mary", "wrong": " John"}
clean, corrupted: text (encoded with the run's tokenizer) or a list of token ids, of the same length in tokens.
answer, wrong: one token each (text that encodes to one token, or an id): the metric is
  logit(answer) - logit(wrong) at the last position (logit-diff); with --metric loss, or
  without "wrong", the loss of answer at the last position.
positions (instead of answer): a list of positions whose next clean token's loss is the metric."""
KEYS = {"clean", "corrupted", "answer", "wrong", "positions"}


@dataclass
class Task:
    name: str
    description: str  # one sentence: what the pairs are and what is measured
    metric: str  # "loss" or "logit-diff"
    batches: list[Batch]
    examples: list[dict] = field(default_factory=list)  # a few pairs, as the tokenizer prints them

    @property
    def n_pairs(self) -> int:
        return sum(b.clean.size(0) for b in self.batches)


def check_metric(metric: str | None, default: str, allowed: tuple[str, ...], why: str) -> str:
    chosen = metric or default
    if chosen not in METRICS:
        raise UsageError(f"--metric must be one of {', '.join(METRICS)}, got {chosen!r}")
    if chosen not in allowed:
        raise UsageError(f"--metric {chosen} cannot be computed for this task: {why}")
    return chosen


def loss_batches(clean: torch.Tensor, corrupted: torch.Tensor, targets: torch.Tensor) -> list[Batch]:
    """(N, T) prompts and targets (-1: not counted), cut into batches of BATCH_SIZE pairs."""
    return [Batch(clean[i: i + BATCH_SIZE], corrupted[i: i + BATCH_SIZE], PositionLoss(targets[i: i + BATCH_SIZE]))
            for i in range(0, clean.size(0), BATCH_SIZE)]


def show(decode, clean: list[int], corrupted: list[int], measured: str) -> dict:
    return {"clean": decode(clean), "corrupted": decode(corrupted), "measured": measured}


# ---------------------------------------------------------------- induction

def induction_task(vocab_size: int, block_size: int, pairs: int = 32, seed: int = 0, metric: str | None = None,
                   decode=None) -> Task:
    """Repeated random tokens against unrepeated ones (see the module's docstring)."""
    from glassgpt.analysis.measures import induction_probe_length

    check_metric(metric, "loss", ("loss",), "the induction task measures the loss on the repeat; "
                 "logit-diff needs answer and wrong tokens: give them in --pairs FILE")
    n = induction_probe_length(block_size, vocab_size)
    if n < 2:
        raise UsageError(f"the induction task needs a context of at least 4 tokens, this model has {block_size}")
    generator = torch.Generator().manual_seed(seed)
    orders = torch.stack([torch.randperm(vocab_size, generator=generator) for _ in range(pairs)])  # (N, V)
    first = orders[:, :n]  # (N, n) distinct tokens
    if vocab_size >= 2 * n:
        other = orders[:, n: 2 * n]  # none of the first half's tokens
    else:
        other = torch.stack([torch.randperm(vocab_size, generator=generator)[:n] for _ in range(pairs)])
    clean, corrupted = torch.cat([first, first], 1), torch.cat([other, first], 1)  # (N, 2n) each
    targets = torch.full_like(clean, -1)
    targets[:, n: 2 * n - 1] = clean[:, n + 1:]  # position n + i predicts the repeat's token i + 1
    decode = decode or (lambda ids: " ".join(map(str, ids)))
    examples = [show(decode, clean[i].tolist(), corrupted[i].tolist(), f"loss on positions {n}..{2 * n - 2}")
                for i in range(min(3, pairs))]
    description = (f"{pairs} pairs: {n} random tokens then the same {n} again (clean) against {n} other random "
                   f"tokens then the same second half (corrupted); metric: the loss on the {n - 1} tokens of the "
                   "repeat an induction head can predict")
    return Task("induction", description, "loss", loss_batches(clean, corrupted, targets), examples)


# ---------------------------------------------------------------- repeated spans of the validation text

def find_repeats(tokens: np.ndarray, span: int, window: int, limit: int) -> list[tuple[int, int]]:
    """(first, second) starts of spans of `span` tokens (at least 3 distinct) that occur twice
    with both occurrences inside `window` tokens ending at the second's end, the first the only
    earlier one there; windows do not overlap. At most `limit`, scanning from the start."""
    last: dict[bytes, int] = {}
    found: list[tuple[int, int]] = []
    end_of_previous = -1
    for p in range(len(tokens) - span + 1):
        piece = tokens[p: p + span]
        key = piece.tobytes()
        q = last.get(key)
        last[key] = p
        start = p + span - window
        if q is None or p - q < span or q < start or start <= end_of_previous or len(set(piece.tolist())) < 3:
            continue
        before = tokens[start: p]
        occurrences = sum(1 for i in range(len(before) - span + 1) if before[i: i + span].tobytes() == key)
        if occurrences == 1:
            found.append((q, p))
            end_of_previous = p + span - 1
            if len(found) >= limit:
                break
    return found


def repeat_task(tokens: np.ndarray, block_size: int, pairs: int = 32, span: int = 8, seed: int = 0,
                metric: str | None = None, decode=None, max_window: int = 128, scan_tokens: int = 2_000_000) -> Task:
    """Spans of the validation text `tokens` that repeat, against the same windows with the
    first occurrence replaced by another span of the text (see the module's docstring)."""
    check_metric(metric, "loss", ("loss",), "the repeat task measures the loss on the repeated span; "
                 "logit-diff needs answer and wrong tokens: give them in --pairs FILE")
    window = min(block_size, max_window)
    if span < 2 or 2 * span > window:
        raise UsageError(f"--span must be from 2 to {window // 2} tokens (two spans in a window of {window}), "
                         f"got {span}")
    tokens = np.asarray(tokens[:scan_tokens]).astype(np.int64)
    found = find_repeats(tokens, span, window, limit=50 * pairs)
    if len(found) < min(pairs, 4):
        raise UsageError(f"the validation text holds only {len(found)} spans of {span} tokens that repeat within "
                         f"{window} tokens: try a shorter --span, or --pairs FILE")
    chosen = [found[round(i * (len(found) - 1) / max(pairs - 1, 1))] for i in range(min(pairs, len(found)))]
    rng = np.random.default_rng(seed)
    clean, corrupted, targets = [], [], []
    for q, p in chosen:
        start = p + span - window
        ids = tokens[start: p + span]  # (window,): ends with the second occurrence
        while True:  # another span of the text, which differs from the first occurrence
            r = int(rng.integers(0, len(tokens) - span))
            other = tokens[r: r + span]
            if not np.array_equal(other, tokens[q: q + span]):
                break
        bad = ids.copy()
        bad[q - start: q - start + span] = other
        target = np.full(window, -1)
        target[p - start: window - 1] = ids[p - start + 1:]  # the second occurrence, each token predicting the next
        clean.append(ids)
        corrupted.append(bad)
        targets.append(target)
    clean_t, corrupted_t, targets_t = (torch.from_numpy(np.stack(a)) for a in (clean, corrupted, targets))
    decode = decode or (lambda ids: " ".join(map(str, ids)))
    examples = [show(decode, clean[i].tolist(), corrupted[i].tolist(),
                     f"loss on the second {decode(tokens[chosen[i][1]: chosen[i][1] + span].tolist())!r}")
                for i in range(min(3, len(chosen)))]
    description = (f"{len(chosen)} windows of {window} tokens of the validation text in which a span of {span} "
                   "tokens occurs twice (clean), against the same windows with the first occurrence replaced by "
                   f"another span of the text (corrupted); metric: the loss on the second occurrence's {span - 1} "
                   "predictable tokens")
    return Task("repeat", description, "loss", loss_batches(clean_t, corrupted_t, targets_t), examples)


# ---------------------------------------------------------------- a pairs file

@dataclass
class Pair:
    clean: list[int]
    corrupted: list[int]
    answer: int | None
    wrong: int | None
    positions: list[int] | None


def read_pairs_file(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines file, bounded; one UsageError naming the line otherwise."""
    path = Path(path)
    text = read_text(path, MAX_PAIRS_BYTES, error=UsageError, fix="give a UTF-8 file of JSON lines, split if larger")
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = loads_json(line, f"--pairs {path} line {number}", error=UsageError, fix="one object per line")
        if not isinstance(row, dict):
            raise UsageError(f"--pairs {path} line {number} is not a JSON object: write {{\"clean\": ..., ...}}")
        rows.append(row)
        if len(rows) > MAX_PAIRS:
            raise UsageError(f"--pairs {path} holds more than {MAX_PAIRS:,} pairs: use fewer")
    if not rows:
        raise UsageError(f"--pairs {path} holds no pairs: write one JSON object per line, "
                         '{"clean": ..., "corrupted": ..., "answer": ..., "wrong": ...}')
    return rows


def token_ids(value, tokenizer, vocab_size: int, where: str) -> list[int]:
    """Text (encoded) or a list of ids (checked against the vocabulary)."""
    if isinstance(value, str):
        try:
            return tokenizer.encode(value)
        except UsageError as e:
            raise UsageError(f"{where}: {e}") from None
    if isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        outside = [i for i in value if not 0 <= i < vocab_size]
        if outside:
            raise UsageError(f"{where}: token id {outside[0]} is outside the vocabulary 0..{vocab_size - 1}")
        return value
    raise UsageError(f"{where} must be text or a list of token ids, got {type(value).__name__}")


def one_token(value, tokenizer, vocab_size: int, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < vocab_size:
            raise UsageError(f"{where}: token id {value} is outside the vocabulary 0..{vocab_size - 1}")
        return value
    if not isinstance(value, str):
        raise UsageError(f"{where} must be one token: text or a token id, got {type(value).__name__}")
    ids = token_ids(value, tokenizer, vocab_size, where)
    if len(ids) != 1:
        raise UsageError(f"{where} {value!r} is {len(ids)} tokens, not 1: give a single token (or its id)")
    return ids[0]


def parse_pair(row: dict, tokenizer, vocab_size: int, block_size: int, where: str) -> Pair:
    unknown = sorted(set(row) - KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; a pair has {', '.join(sorted(KEYS))}")
    for key in ("clean", "corrupted"):
        if key not in row:
            raise UsageError(f"{where} has no {key!r}: every pair needs clean and corrupted prompts")
    clean = token_ids(row["clean"], tokenizer, vocab_size, f"{where} clean")
    corrupted = token_ids(row["corrupted"], tokenizer, vocab_size, f"{where} corrupted")
    if len(clean) != len(corrupted):
        raise UsageError(f"{where}: clean is {len(clean)} tokens and corrupted {len(corrupted)}: they must be "
                         "the same length (patching swaps activations position by position)")
    if not 1 <= len(clean) <= block_size:
        raise UsageError(f"{where}: the prompts are {len(clean)} tokens; this model reads 1 to {block_size}")
    answer = one_token(row["answer"], tokenizer, vocab_size, f"{where} answer") if "answer" in row else None
    wrong = one_token(row["wrong"], tokenizer, vocab_size, f"{where} wrong") if "wrong" in row else None
    positions = row.get("positions")
    if positions is not None:
        if answer is not None or wrong is not None:
            raise UsageError(f"{where}: give positions or answer (and wrong), not both")
        if (not isinstance(positions, list) or not positions or
                not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(clean) - 1 for i in positions)):
            raise UsageError(f"{where}: positions must be a list of positions 0..{len(clean) - 2} "
                             "(each predicts the clean prompt's next token)")
    elif answer is None:
        raise UsageError(f"{where} has neither answer nor positions: say what the clean prompt should predict")
    if wrong is not None and answer is None:
        raise UsageError(f"{where} has wrong but no answer")
    return Pair(clean, corrupted, answer, wrong, positions)


def pair_metric(pairs: list[Pair], metric: str | None, path: Path) -> str:
    """The metric every pair of the file can give: logit-diff needs answer and wrong on every line."""
    all_wrong = all(p.wrong is not None for p in pairs)
    default = "logit-diff" if all_wrong else "loss"
    why = ("logit-diff needs an answer and a wrong token on every line, and line "
           f"{next((i for i, p in enumerate(pairs, 1) if p.wrong is None), 0)} of {path} has no wrong token")
    return check_metric(metric, default, METRICS if all_wrong else ("loss",), why)


def pairs_batches(pairs: list[Pair], metric: str) -> list[Batch]:
    """Pairs grouped by length, BATCH_SIZE to a batch, each with its metric."""
    by_length: dict[int, list[Pair]] = {}
    for pair in pairs:
        by_length.setdefault(len(pair.clean), []).append(pair)
    batches = []
    for T, group in sorted(by_length.items()):
        for i in range(0, len(group), BATCH_SIZE):
            chunk = group[i: i + BATCH_SIZE]
            clean = torch.tensor([p.clean for p in chunk])
            corrupted = torch.tensor([p.corrupted for p in chunk])
            if metric == "logit-diff":
                measure = LogitDifference(torch.tensor([p.answer for p in chunk]),
                                          torch.tensor([p.wrong for p in chunk]), torch.full((len(chunk),), T - 1))
            else:
                targets = torch.full((len(chunk), T), -1)
                for row, p in enumerate(chunk):
                    if p.positions is not None:
                        targets[row, p.positions] = clean[row, [i + 1 for i in p.positions]]
                    else:
                        targets[row, T - 1] = p.answer
                measure = PositionLoss(targets)
            batches.append(Batch(clean, corrupted, measure))
    return batches


def read_pairs(path: str | Path, tokenizer, vocab_size: int, block_size: int, metric: str | None = None) -> Task:
    """A task from a JSON-lines pairs file (PAIRS_FORMAT); bad input raises UsageError naming the line."""
    path = Path(path)
    rows = read_pairs_file(path)
    pairs = [parse_pair(row, tokenizer, vocab_size, block_size, f"--pairs {path} line {i}")
             for i, row in enumerate(rows, 1)]
    chosen = pair_metric(pairs, metric, path)
    what = ("logit(answer) - logit(wrong) at the last position" if chosen == "logit-diff"
            else "the loss of the answer (or of the next token at the given positions)")
    examples = [show(tokenizer.decode, p.clean, p.corrupted,
                     what if p.positions is None else f"loss at positions {p.positions}") for p in pairs[:3]]
    description = f"{len(pairs)} pairs from {path.name}; metric: {what}"
    return Task(f"pairs:{path.name}", description, chosen, pairs_batches(pairs, chosen), examples)
