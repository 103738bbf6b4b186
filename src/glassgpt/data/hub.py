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

A local folder is read only inside itself (`check_local_folder`): a README whose `configs`
point `data_files` or `data_dir` elsewhere (`../`, an absolute path, a URL) is refused, and so
is a link that leads out of the folder, unless `--follow-links`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterator

from glassgpt.data.documents import Source
from glassgpt.data.fineweb import stream_rows
from glassgpt.data.user import TextRequest, prepare_text
from glassgpt.errors import RunError, UsageError, first_line
from glassgpt.safe_read import read_bytes
from glassgpt.tokenizer import get_tokenizer, parse_tokenizer_spec

HF_STAGE_BYTES_PER_TOKEN = 6
README_MAX_BYTES = 1 << 20


def prepare_hf(out: Path, req: TextRequest, chunk_bytes: int) -> dict:
    """Stream enough of a Hugging Face dataset into out/.documents.jsonl, then prepare that."""
    hf = req.hf
    if Path(hf["dataset"]).is_dir():
        check_local_folder(Path(hf["dataset"]), bool(req.follow_links))
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


def check_local_folder(folder: Path, follow_links: bool = False) -> None:
    """Refuse a local dataset folder that would have `datasets` read outside it: its README's
    `data_files` / `data_dir` naming `..`, an absolute path or a URL, or (unless `follow_links`)
    a link inside it that leads out."""
    readme = folder / "README.md"
    for where in _readme_paths(readme):
        parts = where.replace("\\", "/").split("/")
        if "://" in where or where.startswith(("/", "~", "hf:")) or os.path.isabs(where) or ".." in parts:
            raise UsageError(f"{readme} points data_files at {where[:120]!r}, outside {folder}: a dataset folder is "
                             "read only inside itself; copy those files into it, and name them relative to it")
    if follow_links:
        return
    root = folder.resolve()
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            entry = Path(base) / name
            if entry.is_symlink() and not entry.resolve().is_relative_to(root):
                raise UsageError(f"{entry} is a link to {os.readlink(entry)}, outside {folder}: copy the file into "
                                 "the folder, or pass --follow-links to read it")


def _readme_paths(readme: Path) -> list[str]:
    """The `data_files` and `data_dir` strings of a dataset card's `configs` (its YAML header)."""
    if readme.is_symlink() or not readme.is_file():
        return []
    text = read_bytes(readme, README_MAX_BYTES, error=UsageError).decode("utf-8", errors="replace")
    if not text.startswith("---"):
        return []
    end = text.find("\n---", 3)
    import yaml  # a dependency of `datasets`

    try:
        header = yaml.safe_load(text[3:end if end >= 0 else len(text)])
    except yaml.YAMLError as e:
        raise UsageError(f"{readme}'s YAML header cannot be read ({first_line(e)}): fix or remove it") from None
    configs = header.get("configs") if isinstance(header, dict) else None
    found: list[str] = []
    for config in configs if isinstance(configs, list) else []:
        if isinstance(config, dict):
            _strings(config.get("data_files"), found, depth=3)
            _strings(config.get("data_dir"), found, depth=0)
    return found


def _strings(value, found: list[str], depth: int) -> None:
    """The strings in `value` (a string, or lists and dicts of them `depth` deep: a split's
    files, `{split, path}` entries), at most 10,000 (YAML aliases can make a small file huge)."""
    if len(found) > 10_000:
        raise UsageError("a dataset card lists more than 10,000 data files")
    if isinstance(value, str):
        found.append(value)
    elif depth > 0 and isinstance(value, (list, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            _strings(item, found, depth - 1)


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
        raise RunError(f"could not load {where} ({first_line(e)}): check the name, or without network "
                       "make sure it is in the Hugging Face cache (HF_HOME) or give a local folder") from None
    for row in stream_rows(stream, where):
        if column not in row:
            raise UsageError(f"{where} has no {column!r} column; it has {', '.join(map(repr, list(row)[:8]))}: "
                             "pick one with --text-column")
        if not isinstance(row[column], str):
            raise UsageError(f"{where}: column {column!r} holds {type(row[column]).__name__}, not text")
        yield row[column]
