"""The datasets glassgpt knows, and `prepare`: raw files to token files, once.

Prepared data lives in `<data dir>/<dataset>/{train,val[,test]}.bin` with a
`meta.json`. A dataset is filled in a hidden `.<dataset>.partial-<pid>-*`
folder and renamed into place only when complete, so an interrupted
preparation never looks prepared; the leftovers of a killed one are removed by
the next `prepare`. Preparing again is a no-op unless `force=True`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from glassgpt.data.enwik8 import prepare_enwik8
from glassgpt.data.fineweb import prepare_fineweb
from glassgpt.data.synthetic import VERSION as REPEATED_RANDOM_VERSION, prepare_repeated_random
from glassgpt.data.sources import TINY_SHAKESPEARE, data_dir, find_raw_file, prepare_chunk_bytes
from glassgpt.data.writing import token_dtype, write_split
from glassgpt.errors import UsageError, did_you_mean
from glassgpt.tokenizer import get_tokenizer, tokenizer_from_dict


def _prepare_shakespeare(out: Path, tokenizer_name: str, **_) -> dict:
    text = find_raw_file(TINY_SHAKESPEARE).read_text(encoding="utf-8")  # 1.1 MB: read whole
    tok = get_tokenizer("char", text=text) if tokenizer_name == "char" else get_tokenizer(tokenizer_name)
    n = len(text)
    splits = {"train": text[: int(n * 0.9)], "val": text[int(n * 0.9):]}
    counts = {name: write_split(out / f"{name}.bin", tok.encode(part), tok.vocab_size) for name, part in splits.items()}
    return {"tokenizer": tok.to_dict(), "tokens": counts, "source_sha256": TINY_SHAKESPEARE.sha256}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    prepare: Callable[..., dict]  # fills a folder with split files, returns the meta fields
    streamed: bool = False  # read from a stream of documents, so --max-tokens applies
    version: int = 1  # raised when the prepared files change: an older preparation is made again


DATASETS: dict[str, DatasetSpec] = {
    "shakespeare-char": DatasetSpec(
        "shakespeare-char", "Tiny Shakespeare, one token per character (65)",
        lambda out, **kw: _prepare_shakespeare(out, "char", **kw),
    ),
    "shakespeare": DatasetSpec(
        "shakespeare", "Tiny Shakespeare, GPT-2 BPE",
        lambda out, **kw: _prepare_shakespeare(out, "gpt2", **kw),
    ),
    "enwik8": DatasetSpec(
        "enwik8", "the first 10^8 bytes of English Wikipedia, one token per byte (90M/5M/5M)",
        prepare_enwik8,
    ),
    "fineweb-edu": DatasetSpec(
        "fineweb-edu", "FineWeb-Edu sample-10BT, GPT-2 BPE, streamed (cap with --max-tokens)",
        prepare_fineweb, streamed=True,
    ),
    "repeated-random": DatasetSpec(
        "repeated-random", "synthetic: random segments of 4-12 of 64 characters, each repeated once (grows induction heads)",
        prepare_repeated_random, version=REPEATED_RANDOM_VERSION,
    ),
}


def dataset_path(name: str) -> Path:
    return data_dir() / name


def check_dataset_name(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def is_prepared(path: Path) -> bool:
    return (path / "meta.json").is_file()


def is_current(path: Path, spec: DatasetSpec) -> bool:
    """Prepared, and by the dataset's current `version` (a folder from before versions counts as 1)."""
    return is_prepared(path) and json.loads((path / "meta.json").read_text()).get("version", 1) == spec.version


def prepare(name: str, *, max_tokens: int | None = None, force: bool = False, workers: int | None = None) -> Path:
    """Prepare a dataset into the data dir (once: a prepared dataset is left as it is)."""
    spec = check_dataset_name(name)
    if max_tokens is not None and not spec.streamed:
        streamed = ", ".join(n for n, s in DATASETS.items() if s.streamed)
        raise UsageError(f"--max-tokens applies to streamed datasets ({streamed}), not {name}: leave it out")
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers}")
    final = dataset_path(name)
    if is_current(final, spec) and not force:
        _check_same_cap(final, name, max_tokens)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_work(final)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=final.parent))
    try:
        meta = spec.prepare(work, max_tokens=max_tokens, workers=workers, chunk_bytes=prepare_chunk_bytes())
        meta["dataset"] = name
        meta["version"] = spec.version
        meta["dtype"] = token_dtype(tokenizer_from_dict(meta["tokenizer"]).vocab_size).name
        (work / "meta.json").write_text(json.dumps(meta, indent=2))
        if is_current(final, spec) and not force:
            return final  # another process finished the same dataset first
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _check_same_cap(path: Path, name: str, max_tokens: int | None) -> None:
    prepared_cap = json.loads((path / "meta.json").read_text()).get("max_tokens")
    if max_tokens is not None and max_tokens != prepared_cap:
        raise UsageError(f"{name} is already prepared with --max-tokens {prepared_cap}: "
                         f"add --force to prepare it again with {max_tokens}")


def remove_abandoned_work(final: Path) -> None:
    """Delete the partial folders of preparations whose process no longer runs."""
    for partial in final.parent.glob(f".{final.name}.partial-*"):
        pid = partial.name[len(f".{final.name}.partial-"):].split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
