"""The datasets glassgpt knows, and `prepare`: raw files to token files, once.

Prepared data lives in `<data dir>/<dataset>/{train,val[,test]}.bin` with a
`meta.json` and glassgpt's marker `.glassgpt-dataset`. A dataset is filled in a hidden
`.<dataset>.partial-<pid>-*` folder and renamed into place only when complete, so an
interrupted preparation never looks prepared; the leftovers of a killed one are removed by
the next `prepare`. Preparing again is a no-op unless `force=True`.

What stands at `<data dir>/<dataset>` is replaced only when glassgpt prepared it
(`glassgpt.ownership`): a folder with its marker (or, prepared before markers, a `meta.json`
of glassgpt's naming the dataset) holding only the files glassgpt writes there. A file, a
link, a folder of the user's, or a dataset folder the user put other files into is refused,
naming the path, and left as it is.

Your own datasets (`prepare_user`: `glassgpt prepare text` and `prepare hf`, built in
`glassgpt.data.user`) go through the same folder-then-rename path, under any name that
is not a built-in one. A dataset's `meta.json` is checked whenever it is read
(`read_meta`): a corrupt one is a clear error, and `--force` always prepares again.
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
from glassgpt.data.documents import find_sources
from glassgpt.data.hub import prepare_hf
from glassgpt.data.user import USER_VERSION, TextRequest, check_request, check_user_name, prepare_text
from glassgpt.data.writing import token_dtype, write_split
from glassgpt.atomic import write_error
from glassgpt.errors import GlassGPTError, RunError, UsageError, did_you_mean
from glassgpt.ownership import (DATASET, MARKERS, foreign_entries, has_marker, process_alive, remove_owned_folder,
                                small_json, write_marker)
from glassgpt.safe_read import loads_json, read_bytes
from glassgpt.tokenizer import get_tokenizer, tokenizer_from_dict


def _prepare_shakespeare(out: Path, tokenizer_name: str, **_) -> dict:
    text = find_raw_file(TINY_SHAKESPEARE).read_text(encoding="utf-8")  # 1.1 MB: read whole
    tok = get_tokenizer("char", text=text) if tokenizer_name == "char" else get_tokenizer(tokenizer_name)
    n = len(text)
    splits = {"train": text[: int(n * 0.9)], "val": text[int(n * 0.9):]}
    counts = {name: write_split(out / f"{name}.bin", tok.encode(part), tok.vocab_size) for name, part in splits.items()}
    return {"tokenizer": tok.to_dict(), "tokens": counts, "source_sha256": TINY_SHAKESPEARE.sha256}


def _prepare_shakespeare_bpe(out: Path, vocab: int, chunk_bytes: int, **_) -> dict:
    """Tiny Shakespeare as `prepare text FILE --tokenizer bpe:VOCAB` makes it: a byte-level BPE trained on
    it, the last tenth (from a line start) for validation."""
    raw = find_raw_file(TINY_SHAKESPEARE)
    meta = prepare_text(out, TextRequest([str(raw)], tokenizer=f"bpe:{vocab}"), chunk_bytes)
    return {**meta, "source_sha256": TINY_SHAKESPEARE.sha256}


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
    "shakespeare-bpe512": DatasetSpec(
        "shakespeare-bpe512", "Tiny Shakespeare, a 512-token BPE trained on it (word pieces: the induction-text recipe)",
        lambda out, **kw: _prepare_shakespeare_bpe(out, 512, **kw),
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
    """The spec of a built-in dataset, or of one of the user's prepared datasets."""
    if name in DATASETS:
        return DATASETS[name]
    if isinstance(name, str) and _plain_name(name) and is_prepared(dataset_path(name)):
        return user_spec(name)
    users = user_dataset_names()
    known = ", ".join(DATASETS) + (f"; yours: {', '.join(users)}" if users else "")
    raise UsageError(f"unknown dataset {name!r}{did_you_mean(name, [*DATASETS, *users])}; known: {known} "
                     "(prepare your own with: glassgpt prepare text PATH... --name NAME)")


def _plain_name(name: str) -> bool:  # a name that can only be a folder directly inside the data dir
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".") and name != ".."


def user_spec(name: str) -> DatasetSpec:
    def refuse(out, **_):
        raise UsageError(f"{name} is your own dataset: prepare it again with the command that made it "
                         f"and --force (glassgpt prepare text|hf ... --name {name} --force)")
    return DatasetSpec(name, "your own dataset", refuse, version=USER_VERSION)


def user_dataset_names() -> list[str]:
    root = data_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in DATASETS and _plain_name(p.name)
                  and p.name != "downloads" and is_prepared(p))


def is_prepared(path: Path) -> bool:
    return (path / "meta.json").is_file()


DTYPES = ("uint8", "uint16", "uint32")
MAX_META_BYTES = 64 << 20  # a bpe:65536 tokenizer inside it takes a few MB


def read_meta(path: Path) -> dict:
    """A dataset's meta.json, checked: a JSON object with a loadable tokenizer, the dtype
    that tokenizer needs, and whole-number token counts. Anything else is a RunError that
    says how to repair it."""
    meta_path = path / "meta.json"
    repair = (f"prepare it again: glassgpt prepare {path.name} --force" if path.name in DATASETS else
              f"prepare it again with the command that made it and --force "
              f"(glassgpt prepare text|hf ... --name {path.name} --force)")

    def bad(what: str) -> RunError:
        return RunError(f"{meta_path} is corrupt ({what}): {repair}")

    if not (meta_path.exists() or meta_path.is_symlink()):
        raise UsageError(f"dataset {path.name!r} is not prepared: run `glassgpt prepare {path.name}`")
    try:
        raw = read_bytes(meta_path, MAX_META_BYTES)
        meta = loads_json(raw, meta_path) if raw.strip() else None
    except GlassGPTError as e:  # the bounded reader's sentence, inside this one's
        raise bad(str(e).removeprefix(f"{meta_path} ")) from None
    if not raw.strip():
        raise bad("empty")
    if not isinstance(meta, dict):
        raise bad(f"a JSON {type(meta).__name__}, not an object")
    try:
        tokenizer = tokenizer_from_dict(meta.get("tokenizer"))
    except UsageError as e:
        raise bad(f"field 'tokenizer': {e}") from None
    if meta.get("dtype") not in DTYPES or meta["dtype"] != token_dtype(tokenizer.vocab_size).name:
        raise bad(f"field 'dtype' is {str(meta.get('dtype'))[:40]!r}, not the "
                  f"{token_dtype(tokenizer.vocab_size).name} of a {tokenizer.vocab_size}-token vocabulary")
    tokens = meta.get("tokens", {})  # absent in hand-made folders: the split files' sizes are then not checked
    if not isinstance(tokens, dict) or not all(isinstance(k, str) and type(v) is int and v >= 0
                                               for k, v in tokens.items()):
        raise bad("field 'tokens' must map each split to a whole number of tokens")
    version = meta.get("version", 1)
    if type(version) is not int or version < 1:
        raise bad(f"field 'version' is {str(version)[:20]!r}, not a whole number from 1")
    return meta


def is_current(path: Path, spec: DatasetSpec) -> bool:
    """Prepared, by the dataset's current `version` (a folder from before versions counts as 1),
    with a meta.json that reads: a corrupt one is not current, so it is prepared again."""
    if not is_prepared(path):
        return False
    try:
        return read_meta(path).get("version", 1) == spec.version
    except GlassGPTError:
        return False


def prepare(name: str, *, max_tokens: int | None = None, force: bool = False, workers: int | None = None) -> Path:
    """Prepare a built-in dataset into the data dir (once: a prepared dataset is left as it is)."""
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
    return _build(final, spec, force, lambda work: spec.prepare(
        work, max_tokens=max_tokens, workers=workers, chunk_bytes=prepare_chunk_bytes()))


def prepare_user(name: str, req: TextRequest, *, force: bool = False,
                 notice: Callable[[str], None] | None = None) -> Path:
    """Prepare your own dataset `name` from files (`req.paths`) or a Hugging Face dataset
    (`req.hf`). Asked again for the same request it does nothing; a different one needs `force`.
    `notice` hears of what is left out (links out of a folder)."""
    check_user_name(name, DATASETS)
    check_request(req)
    final = dataset_path(name)
    spec = user_spec(name)
    request = req.recorded()
    if is_prepared(final) and not force:
        try:
            meta = read_meta(final)
        except GlassGPTError:
            raise UsageError(f"dataset {name!r} exists but its meta.json is corrupt: add --force to prepare it again")
        same_tokenizer = req.given_tokenizer is None or meta.get("tokenizer") == req.given_tokenizer.to_dict()
        if (meta.get("request") == request and meta.get("version") == USER_VERSION and _same_sources(meta, req)
                and same_tokenizer):
            return final
        raise UsageError(f"dataset {name!r} already exists, prepared from other input or settings: "
                         "add --force to replace it, or choose another --name")

    def fill(work: Path) -> dict:
        chunk = prepare_chunk_bytes()
        return prepare_hf(work, req, chunk) if req.hf else prepare_text(work, req, chunk, notice=notice)
    return _build(final, spec, force, fill)


def _same_sources(meta: dict, req: TextRequest) -> bool:
    """The files a dataset was prepared from are still there, at the sizes they had."""
    if req.hf:
        return True
    recorded = [(r.get("path"), r.get("bytes")) for r in meta.get("sources", []) if isinstance(r, dict)]
    try:
        found = find_sources(req.paths, req.glob, bool(req.follow_links))
        return recorded == [(str(s.path.resolve()), s.size) for s in found]
    except UsageError:
        return False


def _build(final: Path, spec: DatasetSpec, force: bool, fill: Callable[[Path], dict]) -> Path:
    """Fill a hidden folder next to `final` and rename it into place once it is complete."""
    name = final.name
    final.parent.mkdir(parents=True, exist_ok=True)
    check_replaceable(final)  # before anything is downloaded or written
    remove_abandoned_work(final)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=final.parent))
    try:
        write_marker(work, DATASET)
        meta = fill(work)
        meta["dataset"] = name
        meta["version"] = spec.version
        meta["dtype"] = token_dtype(tokenizer_from_dict(meta["tokenizer"]).vocab_size).name
        (work / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        if is_current(final, spec) and not force:
            return final  # another process finished the same dataset first
        check_replaceable(final)  # again: the folder may have changed while this one was filled
        _replace(work, final)
    except OSError as e:
        raise _naming(e, final) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)  # a name this process made: everything in it is its own
    return final


# The files glassgpt writes into a prepared dataset's folder (and may so remove or replace).
DATASET_FILES = frozenset({"meta.json", "train.bin", "val.bin", "test.bin", "tokenizer.json", ".documents.jsonl",
                           MARKERS[DATASET]})
# The keys glassgpt writes into a meta.json (a dataset from before markers is recognised by them).
META_KEYS = frozenset({"dataset", "version", "dtype", "tokenizer", "tokenizer_spec", "tokens", "kind", "text_bytes",
                       "documents", "sources", "val_rule", "request", "max_tokens", "source_sha256", "member_sha256",
                       "source", "generator"})


def owns(name: str) -> bool:
    return name in DATASET_FILES


def is_ours(path: Path) -> bool:
    """A dataset folder glassgpt prepared: its marker, or (prepared before markers) a meta.json
    holding only glassgpt's keys and naming this dataset, beside only glassgpt's files."""
    if has_marker(path, DATASET):
        return True
    if path.is_symlink() or not path.is_dir() or foreign_entries(path, owns):
        return False
    meta = small_json(path / "meta.json", MAX_META_BYTES)
    return isinstance(meta, dict) and meta.get("dataset") == path.name and "tokenizer" in meta and set(meta) <= META_KEYS


def check_replaceable(final: Path) -> None:
    """Refuse, naming the path, to prepare a dataset where something glassgpt did not write stands."""
    if not (final.exists() or final.is_symlink()):
        return
    fix = ("move it away, or prepare into another data folder (GLASSGPT_DATA_DIR)"
           + ("" if final.name in DATASETS else " or under another --name"))
    if final.is_symlink() or not final.is_dir():
        kind = "a link" if final.is_symlink() else "a file"
        raise UsageError(f"{final} is {kind} that glassgpt did not write, where dataset {final.name!r} goes: {fix}")
    if not is_ours(final):
        raise UsageError(f"{final} is a folder glassgpt did not prepare (it has no {MARKERS[DATASET]} and is not "
                         f"a dataset of glassgpt's), where dataset {final.name!r} goes: {fix}")
    foreign = foreign_entries(final, owns)
    if foreign:
        raise UsageError(f"{final} holds {foreign[0]!r}, which glassgpt did not write, and preparing again would "
                         "replace the folder: move it out, then prepare again")


def _replace(work: Path, final: Path) -> None:
    """Put the finished `work` folder at `final`; a dataset of glassgpt's there is moved aside
    first (under a name this process made) and its files removed once the new one stands."""
    if not (final.exists() or final.is_symlink()):
        os.replace(work, final)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-{os.getpid()}-", dir=final.parent))
    os.replace(final, aside / final.name)
    try:
        os.replace(work, final)
    except BaseException:
        os.replace(aside / final.name, final)  # the previous dataset stands
        aside.rmdir()
        raise
    remove_owned_folder(aside / final.name, owns)
    remove_owned_folder(aside, lambda name: False)


def _naming(e: OSError, final: Path) -> OSError:
    """A failed write (a full disk) while preparing, as an OSError naming the dataset's folder
    (an error that names another file, such as a source, is left as it is)."""
    if e.filename is not None and f".{final.name}.partial-" not in str(e.filename):
        return e
    return write_error(e, final) or e


def _check_same_cap(path: Path, name: str, max_tokens: int | None) -> None:
    prepared_cap = read_meta(path).get("max_tokens")
    if max_tokens is not None and max_tokens != prepared_cap:
        raise UsageError(f"{name} is already prepared with --max-tokens {prepared_cap}: "
                         f"add --force to prepare it again with {max_tokens}")


def remove_abandoned_work(final: Path) -> None:
    """Delete the folders of preparations whose process no longer runs (`.<name>.partial-<pid>-*`
    being filled, `.<name>.old-<pid>-*` being replaced): only the files glassgpt writes in them,
    and then each folder if nothing else is left."""
    for kind in ("partial", "old"):
        prefix = f".{final.name}.{kind}-"
        for leftover in final.parent.glob(prefix + "*"):
            pid = leftover.name[len(prefix):].split("-")[0]
            if not (pid.isdigit() and leftover.is_dir() and not leftover.is_symlink()) or process_alive(int(pid)):
                continue
            inner = leftover / final.name  # a dataset being replaced sits inside its `.old-` folder
            if kind == "old" and inner.is_dir() and not inner.is_symlink():
                remove_owned_folder(inner, owns)
            remove_owned_folder(leftover, owns)


# ---------------------------------------------------------------- what is there

def dataset_vocab_size(name: str) -> int | None:
    """The vocabulary of a prepared dataset's tokenizer; None when it is not prepared (or unreadable)."""
    path = dataset_path(name)
    if not _plain_name(name) or not is_prepared(path):
        return None
    try:
        return tokenizer_from_dict(read_meta(path)["tokenizer"]).vocab_size
    except GlassGPTError:
        return None


def describe_dataset(path: Path) -> str:
    meta = read_meta(path)
    spec = meta.get("tokenizer_spec") or meta["tokenizer"]["name"]
    tokens = meta.get("tokens", {})
    return f"{spec} tokenizer, " + ", ".join(f"{n:,} {split}" for split, n in tokens.items()) + " tokens"


def list_datasets() -> list[dict]:
    """One row per built-in dataset (prepared or not) and per prepared dataset of your own."""
    rows = []
    for name in [*DATASETS, *user_dataset_names()]:
        path = dataset_path(name)
        row = {"name": name, "tokenizer": "-", "tokens": "-",
               "about": DATASETS[name].description if name in DATASETS else "your own"}
        if is_prepared(path):
            try:
                meta = read_meta(path)
            except GlassGPTError:
                row["about"] = "corrupt meta.json: prepare it again with --force"
                rows.append(row)
                continue
            tok = tokenizer_from_dict(meta["tokenizer"])
            row["tokenizer"] = meta.get("tokenizer_spec") or (f"char ({tok.vocab_size})" if tok.name == "char" else tok.name)
            row["tokens"] = f"{sum(meta.get('tokens', {}).values()):,}"
            if name not in DATASETS:
                sources = meta.get("sources") or []
                first = sources[0].get("path") or sources[0].get("dataset") if sources and isinstance(sources[0], dict) else "?"
                row["about"] = f"your own, from {first}" + (f" and {len(sources) - 1} more" if len(sources) > 1 else "")
        elif name not in DATASETS:
            continue
        rows.append(row)
    return rows
