"""`glassgpt prepare hf DATASET --name NAME --max-tokens N`: a Hugging Face dataset as your own data.

The dataset is streamed through `datasets` (`load_dataset(..., streaming=True)`): a name
on the Hub, a dataset in the local Hugging Face cache (offline too), or a local folder of
jsonl / parquet files. Enough documents for `--max-tokens` are written to a JSON-lines
file inside the folder being prepared, which is then prepared exactly like `prepare text`
(`glassgpt.data.user`) and deleted; the tokens written are capped at `--max-tokens`.
"Enough": `byte` counts bytes, `char` characters, `gpt2` its tokens, and `bpe:N` (not
trained yet) HF_STAGE_BYTES_PER_TOKEN bytes per token, more than a small BPE needs.
The built-in `fineweb-edu` reads FineWeb-Edu through the same `datasets` streaming, with
its own fixed split (first documents as validation) and parallel GPT-2 tokenizing.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator

from glassgpt.data.documents import Source
from glassgpt.data.fineweb import stream_rows
from glassgpt.data.user import TextRequest, prepare_text
from glassgpt.errors import RunError, UsageError
from glassgpt.tokenizer import get_tokenizer, parse_tokenizer_spec

HF_STAGE_BYTES_PER_TOKEN = 6


def prepare_hf(out: Path, req: TextRequest, chunk_bytes: int) -> dict:
    """Stream enough of a Hugging Face dataset into out/.documents.jsonl, then prepare that."""
    hf = req.hf
    stage = out / ".documents.jsonl"
    name, _ = parse_tokenizer_spec(req.tokenizer)
    count_tokens = get_tokenizer("gpt2").encode if name == "gpt2" else None
    needed = req.max_tokens * (HF_STAGE_BYTES_PER_TOKEN if name == "bpe" else 1)
    have, n_docs = 0, 0
    where = describe_hf(hf)
    with open(stage, "w", encoding="utf-8") as f:
        for text in hf_texts(hf["dataset"], hf.get("config"), hf.get("split") or "train", req.text_column):
            if not text:
                continue
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            n_docs += 1
            have += (len(count_tokens(text)) + 1 if count_tokens else len(text) if name == "char"
                     else len(text.encode("utf-8")))
            if have >= needed:
                break
    if n_docs == 0:
        raise UsageError(f"{where} holds no text in column {req.text_column!r}")
    staged = dataclasses.replace(req, text_column="text")
    try:
        meta = prepare_text(out, staged, chunk_bytes, [Source(stage, "jsonl", False)])
    finally:
        stage.unlink(missing_ok=True)
    meta["sources"] = [{"dataset": hf["dataset"], "config": hf.get("config"), "split": hf.get("split") or "train",
                        "documents_read": n_docs, "where": where}]
    meta["request"]["text_column"] = req.text_column
    meta["max_tokens"] = req.max_tokens
    return meta


def describe_hf(hf: dict) -> str:
    config = f", config {hf['config']}" if hf.get("config") else ""
    return f"Hugging Face dataset {hf['dataset']!r}{config}, split {hf.get('split') or 'train'!r}"


def hf_texts(dataset: str, config: str | None, split: str, column: str) -> Iterator[str]:
    """The `column` strings of a dataset, streamed by `datasets` (a local folder, the local
    cache, or the Hub)."""
    try:
        import datasets
    except ImportError:
        raise UsageError("prepare hf needs the `datasets` package: pip install 'glassgpt[fineweb]'") from None
    where = describe_hf({"dataset": dataset, "config": config, "split": split})
    try:
        stream = datasets.load_dataset(dataset, name=config, split=split, streaming=True)
    except Exception as e:  # `datasets` and the Hub client raise many kinds; each means the same here
        raise RunError(f"could not load {where} ({_first_line(e)}): check the name, or without network "
                       "make sure it is in the Hugging Face cache (HF_HOME) or give a local folder") from None
    for row in stream_rows(stream, where):
        if column not in row:
            raise UsageError(f"{where} has no {column!r} column; it has {', '.join(map(repr, list(row)[:8]))}: "
                             "pick one with --text-column")
        if not isinstance(row[column], str):
            raise UsageError(f"{where}: column {column!r} holds {type(row[column]).__name__}, not text")
        yield row[column]


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
