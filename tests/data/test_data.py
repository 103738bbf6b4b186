"""Datasets end to end on small files the tests make themselves: enwik8 from a zip,
FineWeb-Edu from local parquet and jsonl files read by `datasets`, checksums,
missing files without network, idempotent and interrupted preparation, the
memory cap, and the batch loader. No test touches the network."""

import json
import math
import tracemalloc
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest
import torch

from conftest import assert_clean_error, make_enwik8_zip, pin_enwik8, run_cli, run_cli_process
from glassgpt import data
from glassgpt.cli import main as cli_main
from glassgpt.data import BatchLoader, TokenDataset, prepare
from glassgpt.data import enwik8 as enwik8_module
from glassgpt.data import fineweb as fineweb_module
from glassgpt.errors import RunError, UsageError
from glassgpt.tokenizer import GPT2_EOT, get_tokenizer

WIKI_TEXT = ("<page><title>Anarchism</title><text>'''Anarchism''' is a political philosophy "
             "\u2014 na\u00efve r\u00e9sum\u00e9 \u00fcber \u65e5\u672c [[Category:Theory]]</text></page>\n")


def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# ---------------------------------------------------------------- enwik8

def wiki_payload(n_bytes: int) -> bytes:
    text = (WIKI_TEXT * (n_bytes // len(WIKI_TEXT.encode()) + 1)).encode()
    return text[:n_bytes]


def test_enwik8_split_sizes_are_the_standard_90_5_5_million():
    assert enwik8_module.split_sizes(100_000_000) == {"train": 90_000_000, "val": 5_000_000, "test": 5_000_000}
    assert sum(enwik8_module.split_sizes(12_345).values()) == 12_345
    assert enwik8_module.ENWIK8_MEMBER.size == 100_000_000


def test_enwik8_prepares_bytes_into_a_90_5_5_split(dirs, monkeypatch):
    data_dir, mirror = dirs
    payload = wiki_payload(50_001)
    pin_enwik8(monkeypatch, make_enwik8_zip(mirror / "enwik8.zip", payload), payload)
    path = prepare("enwik8")

    ds = TokenDataset.load("enwik8")
    parts = {name: bytes(np.asarray(ds.split(name))) for name in ("train", "val", "test")}
    assert parts["train"] + parts["val"] + parts["test"] == payload
    assert {k: len(v) for k, v in parts.items()} == {"train": 45_000, "val": 2_500, "test": 2_501}
    assert ds.dtype == np.uint8 and ds.tokenizer.name == "byte" and ds.bits_per_token_unit == "byte"
    assert ds.bits_per_unit(math.log(2)) == {"bits_per_byte": 1.0}
    assert json.loads((path / "meta.json").read_text())["tokens"] == {"train": 45_000, "val": 2_500, "test": 2_501}


def test_enwik8_rejects_a_tampered_zip_and_prepares_nothing(dirs, monkeypatch):
    data_dir, mirror = dirs
    payload = wiki_payload(10_000)
    zip_path = make_enwik8_zip(mirror / "enwik8.zip", payload)
    pin_enwik8(monkeypatch, zip_path, payload)
    zip_path.write_bytes(zip_path.read_bytes()[:-10] + b"0123456789")  # tampered after its hash was pinned
    with pytest.raises(RunError, match="does not match its SHA-256"):
        prepare("enwik8")
    assert not (data_dir / "enwik8").exists()
    assert not list(data_dir.glob(".enwik8.partial-*"))


def test_enwik8_checks_the_unzipped_bytes_crc_and_hash(dirs, monkeypatch):
    data_dir, mirror = dirs
    payload = wiki_payload(10_000)
    zip_path = make_enwik8_zip(mirror / "enwik8.zip", payload, zipfile.ZIP_STORED)
    pin_enwik8(monkeypatch, None, payload)  # no zip hash: the member checks alone must catch corruption
    raw = bytearray(zip_path.read_bytes())
    raw[raw.index(payload[:100]) + 5000] ^= 0xFF  # one flipped byte inside the stored member
    zip_path.write_bytes(bytes(raw))
    with pytest.raises(RunError, match="is corrupt"):
        prepare("enwik8")

    make_enwik8_zip(zip_path, payload[::-1])  # right size and a valid CRC, but not the pinned content
    with pytest.raises(RunError, match="does not match its SHA-256"):
        prepare("enwik8")
    make_enwik8_zip(zip_path, payload[:-1])  # wrong size
    with pytest.raises(RunError, match="expected 10,000"):
        prepare("enwik8")
    assert not (data_dir / "enwik8").exists() and not list(data_dir.glob(".enwik8.partial-*"))


def test_a_corrupt_cached_download_is_deleted_and_fetched_again(dirs, monkeypatch):
    data_dir, _ = dirs
    payload = wiki_payload(8_000)
    good = make_enwik8_zip(data_dir.parent / "good.zip", payload)
    pin_enwik8(monkeypatch, good, payload)
    cached = data_dir / "downloads" / "enwik8.zip"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(good.read_bytes()[:-100])  # a truncated earlier download

    class Response:
        def __init__(self, body):
            self.body = body

        def __enter__(self):
            import io
            return io.BytesIO(self.body)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(good.read_bytes()))
    prepare("enwik8")
    assert cached.read_bytes() == good.read_bytes()
    assert bytes(np.asarray(TokenDataset.load("enwik8").split("test"))) == payload[-400:]


def test_a_missing_file_without_network_says_where_to_put_it(dirs, monkeypatch, capsys):
    data_dir, _ = dirs
    no_network(monkeypatch)
    with pytest.raises(RunError) as e:
        prepare("enwik8")
    message = str(e.value)
    assert "enwik8.zip" in message and str(data_dir / "downloads" / "enwik8.zip") in message
    assert "GLASSGPT_MIRROR" in message and "\n" not in message
    assert not list((data_dir / "downloads").glob("enwik8.zip.*")), "no partial download is left behind"

    with pytest.raises(SystemExit) as exit_info:  # the same through the command line: one line, exit 1
        cli_main(["prepare", "enwik8"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("glassgpt: error: could not download enwik8.zip")


# ---------------------------------------------------------------- preparing: once, atomically

def test_preparing_twice_is_a_no_op_and_force_redoes_it(dirs, monkeypatch):
    data_dir, mirror = dirs
    payload = wiki_payload(20_000)
    pin_enwik8(monkeypatch, make_enwik8_zip(mirror / "enwik8.zip", payload), payload)
    path = prepare("enwik8")
    before = {p.name: p.stat().st_ino for p in path.iterdir()}
    (mirror / "enwik8.zip").unlink()  # a no-op must not even need the source
    assert prepare("enwik8") == path
    assert {p.name: p.stat().st_ino for p in path.iterdir()} == before

    make_enwik8_zip(mirror / "enwik8.zip", payload)
    pin_enwik8(monkeypatch, mirror / "enwik8.zip", payload)
    prepare("enwik8", force=True)
    assert {p.name: p.stat().st_ino for p in path.iterdir()} != before
    assert bytes(np.asarray(TokenDataset.load("enwik8").split("train"))) == payload[:18_000]


def test_an_interrupted_preparation_never_looks_prepared(dirs, monkeypatch):
    data_dir, _ = dirs

    def interrupted(out, **kw):
        (out / "train.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    spec = data.DATASETS["enwik8"]
    monkeypatch.setitem(data.DATASETS, "enwik8", data.DatasetSpec("enwik8", "test", interrupted))
    with pytest.raises(KeyboardInterrupt):
        prepare("enwik8")
    assert not (data_dir / "enwik8").exists() and not list(data_dir.glob(".enwik8.partial-*"))
    with pytest.raises(UsageError, match="glassgpt prepare enwik8"):
        TokenDataset.load("enwik8")

    abandoned = data_dir / ".enwik8.partial-99999999-x"  # left by a killed process
    abandoned.mkdir()
    monkeypatch.setitem(data.DATASETS, "enwik8", spec)
    no_network(monkeypatch)
    with pytest.raises(RunError):
        prepare("enwik8")
    assert not abandoned.exists()


def test_a_truncated_split_file_is_detected(dirs, monkeypatch):
    data_dir, mirror = dirs
    payload = wiki_payload(10_000)
    pin_enwik8(monkeypatch, make_enwik8_zip(mirror / "enwik8.zip", payload), payload)
    path = prepare("enwik8")
    with open(path / "train.bin", "r+b") as f:
        f.truncate(5_000)
    with pytest.raises(RunError, match="not the 9,000 it was prepared with"):
        TokenDataset.load("enwik8").split("train")


def test_max_tokens_and_workers_are_checked(dirs):
    with pytest.raises(UsageError, match="--max-tokens applies to streamed datasets"):
        prepare("enwik8", max_tokens=100)
    with pytest.raises(UsageError, match="did you mean 'enwik8'"):
        prepare("enwik9")
    result = run_cli("prepare", "fineweb-edu", "--workers", "0")
    assert_clean_error(result, 2, "--workers")


# ---------------------------------------------------------------- the memory cap

def test_preparing_a_corpus_larger_than_the_chunk_size_stays_within_it(dirs, monkeypatch):
    data_dir, mirror = dirs
    payload = np.random.default_rng(0).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()  # 4 MiB
    pin_enwik8(monkeypatch, make_enwik8_zip(mirror / "enwik8.zip", payload), payload)

    def peak_bytes(chunk_bytes: int) -> int:
        monkeypatch.setenv("GLASSGPT_PREPARE_CHUNK_BYTES", str(chunk_bytes))
        tracemalloc.start()
        try:
            prepare("enwik8", force=True)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    capped = peak_bytes(64 << 10)
    assert capped < 1 << 20, f"peak {capped:,} bytes with a 64 KiB cap on a 4 MiB corpus"
    uncapped = peak_bytes(8 << 20)  # the same measure sees a big chunk: the cap is what keeps it small
    assert uncapped > 3 << 20, uncapped
    assert bytes(np.asarray(TokenDataset.load("enwik8").split("val"))) == payload[int(0.9 * len(payload)):][:len(payload) // 20]


def test_fineweb_documents_are_read_in_waves_of_bounded_size():
    docs = [f"document {i} " * (i % 7 + 1) for i in range(200)]
    waves = list(fineweb_module.document_waves(iter(docs), chunk_chars=300))
    assert [d for w in waves for d in w] == docs
    longest = max(len(d) for d in docs)
    assert all(sum(len(d) for d in w) < 300 + longest for w in waves)
    batches = fineweb_module.consecutive_batches(docs[:10], 4)
    assert [d for b in batches for d in b] == docs[:10] and len(batches) <= 4


def test_bad_chunk_size_setting_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("GLASSGPT_PREPARE_CHUNK_BYTES", "lots")
    with pytest.raises(UsageError, match="GLASSGPT_PREPARE_CHUNK_BYTES"):
        data.prepare_chunk_bytes()


# ---------------------------------------------------------------- FineWeb-Edu from local files

def fineweb_docs(n: int = 60) -> list[str]:
    rng = np.random.default_rng(1)
    words = ["photosynthesis", "the", "cell", "energy", "na\u00efve", "\u65e5\u672c", "<|endoftext|>", "42", "\n\n"]
    return [" ".join(rng.choice(words, size=int(rng.integers(5, 60)))) for _ in range(n)]


def expected_tokens(docs: list[str]) -> list[int]:
    tok = get_tokenizer("gpt2")
    return [t for d in docs for t in [GPT2_EOT, *tok.encode(d)]]


def write_parquet(folder, docs, n_files=2):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    per_file = math.ceil(len(docs) / n_files)
    for i in range(n_files):
        part = docs[i * per_file: (i + 1) * per_file]
        table = pa.table({"text": part, "id": [f"doc-{i}-{j}" for j in range(len(part))]})
        pq.write_table(table, folder / f"part-{i:02d}.parquet", row_group_size=7)


def write_jsonl(folder, docs):
    folder.mkdir(parents=True)
    with open(folder / "000.jsonl", "w") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"text": d, "id": i, "score": 3.5}) + "\n")


def read_splits(name="fineweb-edu"):
    ds = TokenDataset.load(name)
    return np.asarray(ds.split("val")).tolist(), np.asarray(ds.split("train")).tolist(), ds


def test_fineweb_from_local_parquet_with_worker_processes(dirs, monkeypatch):
    data_dir, mirror = dirs
    docs = fineweb_docs()
    write_parquet(mirror / "fineweb-edu", docs)
    monkeypatch.setenv("GLASSGPT_PREPARE_CHUNK_BYTES", "500")  # many waves, several batches each
    total = len(expected_tokens(docs))
    path = prepare("fineweb-edu", max_tokens=10 * total, workers=2)

    val, train, ds = read_splits()
    assert val + train == expected_tokens(docs)
    assert ds.dtype == np.uint16 and ds.tokenizer.name == "gpt2" and ds.bits_per_token_unit is None
    budget = fineweb_module.val_budget(10 * total)
    assert len(val) >= budget and val[0] == GPT2_EOT and train[0] == GPT2_EOT  # whole documents in each
    assert len([t for t in val if t == GPT2_EOT]) < len(docs) / 2
    meta = json.loads((path / "meta.json").read_text())
    assert "2 local parquet file(s)" in meta["source"] and meta["max_tokens"] == 10 * total


def test_fineweb_from_local_jsonl_in_one_process_matches_and_caps(dirs, monkeypatch):
    data_dir, _ = dirs
    docs = fineweb_docs()
    write_jsonl(data_dir / "downloads" / "fineweb-edu", docs)  # the data dir's cache, not the mirror
    monkeypatch.setenv("GLASSGPT_PREPARE_CHUNK_BYTES", "700")
    everything = expected_tokens(docs)
    prepare("fineweb-edu", max_tokens=1_000, workers=1)
    val, train, _ = read_splits()
    assert len(val) + len(train) == 1_000 and val + train == everything[:1_000]
    assert val == everything[: everything.index(GPT2_EOT, 1)]  # budget 10 tokens: the first document

    with pytest.raises(UsageError, match="--max-tokens 1000"):
        prepare("fineweb-edu", max_tokens=2_000)
    prepare("fineweb-edu", max_tokens=2_000, force=True, workers=2)
    val, train, _ = read_splits()
    assert val + train == everything[:2_000]


def test_fineweb_too_small_a_cap_and_missing_text_column_are_clear(dirs):
    data_dir, mirror = dirs
    write_jsonl(mirror / "fineweb-edu", ["one short document"])
    with pytest.raises(UsageError, match="raise --max-tokens"):
        prepare("fineweb-edu", max_tokens=3, workers=1)
    (mirror / "fineweb-edu" / "000.jsonl").write_text(json.dumps({"body": "no text here"}) + "\n")
    with pytest.raises(UsageError, match="'text' column"):
        prepare("fineweb-edu", max_tokens=100, workers=1)
    assert not (data_dir / "fineweb-edu").exists()


def test_fineweb_without_network_or_local_files_says_where_to_put_them(dirs, tmp_path):
    data_dir, mirror = dirs
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = run_cli_process("prepare", "fineweb-edu", "--max-tokens", "1000", env=offline)
    assert_clean_error(result, 1, "HuggingFaceFW/fineweb-edu", "fineweb-edu/", str(data_dir / "downloads"))


# ---------------------------------------------------------------- training on the new corpora

def test_training_on_enwik8_reports_bits_per_byte_in_every_eval(dirs, monkeypatch, tmp_path):
    from glassgpt.config import load_run_config
    from glassgpt.training import train

    _, mirror = dirs
    payload = wiki_payload(30_000)
    pin_enwik8(monkeypatch, make_enwik8_zip(mirror / "enwik8.zip", payload), payload)
    prepare("enwik8")
    rc = load_run_config("enwik8", ["n_layer=1", "n_head=2", "n_embd=16", "block_size=32", "batch_size=4",
                                    "max_iters=4", "eval_interval=2", "eval_iters=2", "dtype=float32",
                                    "device=cpu", "warmup_iters=1"])
    final = train(rc, tmp_path / "run", log=lambda s: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 2, 4]
    assert all(math.isclose(r["bits_per_byte"], r["val_loss"] / math.log(2)) for r in evals)
    assert math.isclose(final["bits_per_byte"], final["val_loss"] / math.log(2))


def test_fineweb_tiny_preset_trains_on_prepared_local_fineweb(dirs, tmp_path):
    from glassgpt.config import load_run_config
    from glassgpt.training import train

    _, mirror = dirs
    write_jsonl(mirror / "fineweb-edu", fineweb_docs(120))
    prepare("fineweb-edu", max_tokens=50_000, workers=1)
    rc = load_run_config("fineweb-edu-tiny", ["n_layer=1", "block_size=32", "batch_size=2", "max_iters=2",
                                              "eval_interval=2", "eval_iters=1"])
    final = train(rc, tmp_path / "run", log=lambda s: None)
    assert math.isfinite(final["val_loss"]) and "bits_per_byte" not in final


def test_new_presets_have_the_documented_shapes():
    from glassgpt.config import load_preset

    model, tc = load_preset("enwik8")
    assert (model.vocab_size, model.n_layer, model.block_size, tc.dataset) == (256, 12, 512, "enwik8")
    model, tc = load_preset("fineweb-edu-124m")
    assert (model.n_layer, model.n_head, model.n_embd, model.block_size) == (12, 12, 768, 1024)
    assert model.vocab_size >= 50257 and model.vocab_size % 128 == 0
    assert tc.batch_size * model.block_size * tc.grad_accum_steps == 524_288 and tc.dataset == "fineweb-edu"
    model, tc = load_preset("fineweb-edu-tiny")
    assert model.vocab_size == 50257 and tc.device == "cpu" and tc.dataset == "fineweb-edu"


# ---------------------------------------------------------------- the batch loader

def test_batch_loader_is_reproducible_differs_per_rank_and_resumes_exactly():
    tokens = np.arange(10_000, dtype=np.uint16)
    a = BatchLoader(tokens, block_size=8, batch_size=4, seed=7, rank=0)
    b = BatchLoader(tokens, block_size=8, batch_size=4, seed=7, rank=0)
    xa, ya = a.next_batch()
    xb, yb = b.next_batch()
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(ya[:, :-1], xa[:, 1:]) and torch.equal(ya[:, -1], xa[:, -1] + 1)

    # Two DDP ranks see different windows that together make the one-process global batch.
    ranks = [BatchLoader(tokens, block_size=8, batch_size=4, seed=3, rank=r, world_size=2) for r in (0, 1)]
    single = BatchLoader(tokens, block_size=8, batch_size=8, seed=3)
    x0, x1 = (loader.next_batch()[0] for loader in ranks)
    assert not torch.equal(x0, x1)
    assert torch.equal(torch.cat([x0, x1]), single.next_batch()[0])

    state = a.state_dict()
    expected = a.next_batch()[0]
    resumed = BatchLoader(tokens, block_size=8, batch_size=4, seed=0)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.next_batch()[0], expected)


def test_fineweb_reads_gzipped_jsonl_and_rejects_an_empty_copy(dirs, monkeypatch):
    import gzip

    data_dir, mirror = dirs
    folder = mirror / "fineweb-edu"
    folder.mkdir()
    docs = fineweb_docs(10)
    with gzip.open(folder / "000.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs)
    assert fineweb_module.builder_for(folder / "000.jsonl.gz") == "json"
    assert fineweb_module.builder_for(folder / "notes.txt") is None
    prepare("fineweb-edu", max_tokens=10_000, workers=1)
    val, train, _ = read_splits()
    assert val + train == expected_tokens(docs)

    (folder / "000.jsonl.gz").write_bytes(b"")  # unreadable
    with pytest.raises(RunError, match="could not read 1 local json file"):
        prepare("fineweb-edu", max_tokens=10_000, workers=1, force=True)
    with monkeypatch.context() as m:  # a stream with no rows at all (`datasets` refuses empty local files)
        m.setattr(fineweb_module, "open_documents", lambda: (iter([]), "an empty stream"))
        with pytest.raises(RunError, match="an empty stream holds no documents"):
            prepare("fineweb-edu", max_tokens=10_000, workers=2, force=True)
    assert TokenDataset.load("fineweb-edu").meta["tokens"]["train"] > 0  # the earlier copy is untouched


def test_prepare_command_says_when_there_was_nothing_to_do(dirs, monkeypatch):
    data_dir, mirror = dirs
    (mirror / "fineweb-edu").mkdir()
    (mirror / "fineweb-edu" / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in fineweb_docs(20)))
    first = run_cli("prepare", "fineweb-edu", "--max-tokens", "5000", "--workers", "2")
    assert first.returncode == 0 and "is ready in" in first.stdout and "already" not in first.stdout, first.stderr
    again = run_cli("prepare", "fineweb-edu")
    assert again.returncode == 0 and "already prepared" in again.stdout
    assert TokenDataset.load("fineweb-edu").meta["max_tokens"] == 5000


def test_the_prepare_command_offers_every_built_in_dataset():
    from glassgpt.commands.prepare import BUILT_IN
    from glassgpt.data.prepare import DATASETS

    assert BUILT_IN == tuple(DATASETS)


def test_shakespeare_bpe512_is_tiny_shakespeare_prepared_as_text_with_a_512_token_bpe(tmp_path, monkeypatch, mirror):
    """The built-in the induction-text recipe trains on is exactly what `prepare text FILE --tokenizer
    bpe:512` makes of Tiny Shakespeare: the recipe's published runs hold for either."""
    from glassgpt.data import TextRequest, prepare_user
    from glassgpt.data.sources import TINY_SHAKESPEARE, find_raw_file

    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GLASSGPT_MIRROR", str(mirror))
    no_network(monkeypatch)
    built_in = prepare("shakespeare-bpe512")
    as_text = prepare_user("mine", TextRequest([str(find_raw_file(TINY_SHAKESPEARE))], tokenizer="bpe:512"))
    meta = json.loads((built_in / "meta.json").read_text())
    assert meta["tokenizer"]["vocab_size"] == 512 and meta["source_sha256"] == TINY_SHAKESPEARE.sha256
    for split in ("train.bin", "val.bin"):
        assert (built_in / split).read_bytes() == (as_text / split).read_bytes()
