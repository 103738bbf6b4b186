"""Your own data: `prepare text` on folders, JSON lines, parquet and .gz; the
split by document; streaming in pieces; `bpe:N` trained with Hugging Face `tokenizers`;
`prepare hf` on a local dataset folder; a run trained on a user dataset; bad input; and
corrupt dataset files. No test touches the network."""

import gzip
import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from conftest import assert_clean_error, prepare_into, run_cli_process
from glassgpt.cli import main as cli_main
from glassgpt.data import TextRequest, TokenDataset, prepare_user
from glassgpt.data.documents import Source, _cut, is_word_boundary, safe_cut
from glassgpt.data.user import is_val_document
from glassgpt.errors import RunError, UsageError
from glassgpt.inference.text import StreamDecoder
from glassgpt.tokenizer import BPETokenizer, get_tokenizer, load_tokenizer, tokenizer_from_dict

DOCS = [
    "The first document.\nIt has two lines, caf\u00e9 and na\u00efve.\n",
    "Second: numbers 12345 and symbols <|endoftext|> stay text.\n",
    "Third \U0001F916 robot emoji, \u65e5\u672c\u8a9e too.\n",
    "Fourth and last, with a tab\tand  two spaces.\n",
] * 3  # 12 documents


def corpus_text(n_lines: int = 400) -> str:
    return "".join(f"Line {i}: the quick brown fox jumps over the lazy dog {i % 7} times.\n" for i in range(n_lines))


def by_hand(tok, docs, fraction=0.5):
    """[EOT, doc ...] per document, split with the documented rule: the expected token files."""
    out = {"train": [], "val": []}
    for i, doc in enumerate(docs):
        ids = ([tok.eot_token] if tok.eot_token is not None else []) + tok.encode(doc)
        out["val" if is_val_document(i, Fraction(str(fraction))) else "train"] += ids
    return out


def splits_of(name):
    ds = TokenDataset.load(name)
    return ds, {s: np.asarray(ds.split(s)).tolist() for s in ("train", "val")}


def cli(capsys, *args):
    """Run the command line in this process: (exit status, stdout, stderr)."""
    try:
        cli_main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_fails(capsys, code, args, *fragments):
    status, _, err = cli(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == code, (status, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def nothing_left(data_dir, name):
    assert not (data_dir / name).exists()
    assert not list(data_dir.glob(f".{name}.partial-*")) if data_dir.exists() else True


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(iter([corpus_text(300), *DOCS]), 600)


# ---------------------------------------------------------------- the same tokens as by hand

def test_a_folder_of_text_files_gives_the_by_hand_tokens(dirs, tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "skip.txt").write_text("never read")
    names = []
    for i, doc in enumerate(DOCS):  # plain, markdown, gzipped and nested, in sorted order
        rel = [f"a{i:02d}.txt", f"b{i:02d}.md", f"sub/c{i:02d}.txt.gz"][i % 3]
        path = folder / rel
        if rel.endswith(".gz"):
            path.write_bytes(gzip.compress(doc.encode()))
        else:
            path.write_text(doc, encoding="utf-8")
        names.append((str(path.relative_to(folder)), doc))
    (folder / "zz-link.txt").symlink_to(folder / "a00.txt")  # the same file twice is read once
    docs = [doc for _, doc in sorted(names)]
    prepare_user("notes", TextRequest(paths=[str(folder)], tokenizer="gpt2", val_fraction=0.5))
    ds, got = splits_of("notes")
    assert got == by_hand(get_tokenizer("gpt2"), docs)
    assert got["train"][0] == get_tokenizer("gpt2").eot_token
    meta = ds.meta
    assert len(meta["sources"]) == len(DOCS) and meta["documents"] == {"train": 6, "val": 6}
    import hashlib
    first = meta["sources"][0]
    assert first["sha256"] == hashlib.sha256(open(first["path"], "rb").read()).hexdigest()
    assert first["bytes"] == (folder / sorted(names)[0][0]).stat().st_size
    assert meta["text_bytes"]["val"] == sum(len(d.encode()) for i, d in enumerate(docs) if i % 2)


def test_a_jsonl_file_with_a_text_column_gives_the_by_hand_bpe_tokens(dirs, tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    lines = [json.dumps({"id": i, "body": doc}) for i, doc in enumerate(DOCS)]
    lines.insert(3, "")  # blank lines are no rows
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    prepare_user("rows", TextRequest(paths=[str(path)], tokenizer="bpe:300", text_column="body", val_fraction=0.5))
    ds, got = splits_of("rows")
    tok = ds.tokenizer
    assert tok.name == "bpe" and tok.vocab_size == 300
    assert got == by_hand(tok, DOCS)
    # trained on the training documents only: the same merges as training by hand on them
    by_hand_tok = BPETokenizer.train(iter([d for i, d in enumerate(DOCS) if i % 2 == 0]), 300)
    assert by_hand_tok.to_dict() == tok.to_dict()
    assert load_tokenizer(ds.path / "tokenizer.json").to_dict() == tok.to_dict()


def test_a_parquet_file_gives_the_by_hand_char_tokens(dirs, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"text": DOCS, "n": list(range(len(DOCS)))}), path, row_group_size=5)
    prepare_user("pq", TextRequest(paths=[str(path)], tokenizer="char", val_fraction=0.25))
    ds, got = splits_of("pq")
    assert ds.tokenizer.name == "char" and ds.tokenizer.chars == "".join(sorted(set("".join(DOCS))))
    assert got == by_hand(ds.tokenizer, DOCS, 0.25)
    assert ds.bits_per_unit(1.0).keys() == {"bits_per_character", "bits_per_byte"}


# ---------------------------------------------------------------- the split

def test_the_split_is_by_document_spread_and_deterministic(dirs, tmp_path):
    assert [i for i in range(30) if is_val_document(i, Fraction(1, 10))] == [9, 19, 29]
    assert sum(is_val_document(i, Fraction(1, 3)) for i in range(300)) == 100
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"document {i} " * 5}) + "\n" for i in range(40)))
    req = TextRequest(paths=[str(path)], tokenizer="byte", val_fraction=0.1)
    first = prepare_user("docs", req)
    before = {p.name: p.read_bytes() for p in first.glob("*.bin")}
    val_text = bytes(before["val.bin"]).decode()
    assert val_text == "".join(f"document {i} " * 5 for i in (9, 19, 29, 39))  # whole documents, spread
    assert prepare_user("docs", req) == first  # the same request again: nothing to do
    prepare_user("docs", req, force=True)
    assert {p.name: p.read_bytes() for p in first.glob("*.bin")} == before


def test_one_document_is_cut_near_its_end_at_a_line_start(dirs, tmp_path):
    text = corpus_text(100)
    path = tmp_path / "book.txt"
    path.write_text(text)
    prepare_user("book", TextRequest(paths=[str(path)], tokenizer="char", val_fraction=0.1))
    ds, got = splits_of("book")
    train, val = ds.tokenizer.decode(got["train"]), ds.tokenizer.decode(got["val"])
    assert train + val == text
    assert train.endswith("\n") and val.startswith("Line 9")  # the last ~10 lines
    assert 0.08 < len(val) / len(text) < 0.12


# ---------------------------------------------------------------- streaming

def test_a_corpus_larger_than_the_chunk_size_streams_with_the_same_tokens(dirs, tmp_path, monkeypatch):
    text = corpus_text(3000)  # ~190 KB in pieces of 4 KB
    monkeypatch.setenv("GLASSGPT_PREPARE_CHUNK_BYTES", "4096")
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "a.txt").write_text(text)
    (tmp_path / "big" / "b.txt").write_text("short second document\n")
    from glassgpt.data import documents as documents_module

    pieces = list(documents_module.documents(Source(tmp_path / "big" / "a.txt", "text", False), chunk_chars=4096))
    assert len(pieces) == 1
    parts = list(pieces[0])
    assert len(parts) > 40 and max(map(len, parts)) <= 4096 and "".join(parts) == text
    for spec in ("gpt2", "bpe:400"):
        name = spec.replace(":", "")
        prepare_user(name, TextRequest(paths=[str(tmp_path / "big")], tokenizer=spec, val_fraction=0.5))
        ds, got = splits_of(name)
        assert got["train"] == [ds.tokenizer.eot_token] + ds.tokenizer.encode(text), spec


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab .\n\t\u00e9"), max_size=300), st.integers(1, 40))
@example("a\n\nb\n\nc", 3)  # "a\n\n" + "b" is not "a\n\nb" in GPT-2 BPE: the cut must not go there
@example("one\ntwo\nthree\n", 9)
def test_pieces_join_to_the_text_and_encode_to_the_same_tokens(bpe, text, limit):
    parts = list(_cut(text, limit))
    assert "".join(parts) == text and all(0 < len(p) <= limit for p in parts)
    cut = safe_cut(text, limit) if text else None
    assert cut is None or 0 < cut <= min(limit, len(text))
    ends = np.cumsum([len(p) for p in parts])[:-1].tolist()
    if all(is_word_boundary(text, end) for end in ends):  # no piece had to be cut inside a line
        for tok in (get_tokenizer("gpt2"), bpe):
            assert sum((tok.encode(p) for p in parts), []) == tok.encode(text)


# ---------------------------------------------------------------- bpe:N

@settings(max_examples=150, deadline=None)
@given(st.text())
def test_bpe_round_trips_any_unicode_text(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert bpe.decode_bytes(ids) == text.encode("utf-8")
    assert all(0 <= i < bpe.vocab_size for i in ids)


def test_bpe_has_exactly_n_tokens_an_end_of_text_and_the_library_format(bpe, tmp_path):
    from tokenizers import Tokenizer as HFTokenizer

    for n in (257, 258, 600):
        assert BPETokenizer.train(iter([corpus_text(300), *DOCS]), n).vocab_size == n
    assert bpe.vocab_size == 600 and bpe.decode([bpe.eot_token]) == "<|endoftext|>"
    edge = "emoji \U0001F600\U0001F1EB\U0001F1F7 \u200d zero-width, \x00 nul, \r\n, \ufeff bom, <|endoftext|>"
    ids = bpe.encode(edge)
    assert bpe.eot_token not in ids and bpe.decode(ids) == edge
    bpe.save(tmp_path / "tokenizer.json")
    hf = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))  # the library reads it as its own
    assert hf.get_vocab_size() == 600 and hf.decode(ids) == edge
    again = tokenizer_from_dict(json.loads(json.dumps(bpe.to_dict())))
    assert again.encode(edge) == ids and again.eot_token == bpe.eot_token
    stream = StreamDecoder(bpe)  # streaming decode: an emoji split over tokens comes out whole
    assert "".join(stream.push([i]) for i in bpe.encode("a\U0001F600b")) + stream.flush() == "a\U0001F600b"


def test_bpe_sizes_and_tampered_descriptions_are_refused(bpe):
    with pytest.raises(UsageError, match="more text"):
        BPETokenizer.train(iter(["tiny text"]), 1000)
    for n in (256, 70000):
        with pytest.raises(UsageError, match="out of range"):
            BPETokenizer.train(iter(["x"]), n)
    d = bpe.to_dict()
    with pytest.raises(UsageError, match="says"):
        tokenizer_from_dict({**d, "vocab_size": 601})
    spec = json.loads(d["tokenizers_json"])
    spec["model"]["vocab"].pop("a")  # a byte missing from the vocabulary
    with pytest.raises(UsageError, match="out of vocabulary"):  # the library itself refuses it
        tokenizer_from_dict({**d, "tokenizers_json": json.dumps(spec)})
    with pytest.raises(UsageError, match="tokenizers JSON is not valid JSON"):
        tokenizer_from_dict({**d, "tokenizers_json": "{broken"})
    with pytest.raises(UsageError, match="id"):
        bpe.decode([600])


# ---------------------------------------------------------------- a run on your own data

def test_a_run_on_a_user_dataset_trains_samples_analyses_evaluates_and_resumes(dirs, tmp_path, capsys):
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(10):
        (folder / f"{i}.txt").write_text(corpus_text(40 + i))
    code, out, err = cli(capsys, "prepare", "text", "--name", "mine", "--tokenizer", "bpe:320",
                         "--val-fraction", "0.2", str(folder))  # PATH after the options, as people type it
    assert code == 0 and "mine is ready" in out, err
    run = tmp_path / "run"
    tiny = ["n_layer=1", "n_head=2", "n_embd=16", "block_size=16", "batch_size=2", "eval_iters=1",
            "eval_interval=2", "log_interval=2", "warmup_iters=1", "device=cpu"]
    code, out, err = cli(capsys, "train", "cpu-baby", "dataset=mine", "max_iters=2", *tiny, "--out", str(run))
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["vocab_size"] == 320  # from the prepared data, not the preset's 65
    assert load_tokenizer(run / "tokenizer.json").to_dict() == TokenDataset.load("mine").tokenizer.to_dict()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("bits_per_byte" in r for r in rows if r["kind"] in ("eval", "final"))

    code, out, err = cli(capsys, "sample", str(run), "--max-new-tokens", "20", "--seed", "1", "--stop", "zzz")
    assert code == 0 and "stopped" in err, err
    code, out, err = cli(capsys, "eval", str(run), "--json", "--device", "cpu")
    result = json.loads(out)
    assert code == 0 and result["bits_per_byte"] > 0 and result["text_bytes"] > 0
    code, out, err = cli(capsys, "analyze", str(run), "--windows", "1")
    assert code == 0 and (run / "analysis" / "report.html").is_file(), err
    code, out, err = cli(capsys, "train", "--resume", "--out", str(run), "max_iters=4")
    assert code == 0, err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows if "step" in r) == 4
    meta = dirs[0] / "mine" / "meta.json"
    good = meta.read_bytes()
    meta.write_bytes(b"")  # eval on a corrupt dataset is one line, not a traceback
    assert_fails(capsys, 1, ["eval", str(run), "--device", "cpu"], "meta.json is corrupt", "--force")
    meta.write_bytes(good)

    prepare_user("other", TextRequest(paths=[str(folder)], tokenizer="bpe:300", val_fraction=0.2))
    assert_fails(capsys, 2, ["eval", str(run), "--dataset", "other", "--device", "cpu"],
                 "bpe:300", "bpe:320", "the run's tokenizer")  # another bpe is another tokenizer
    config_path = run / "config.json"  # a run whose config.json holds no tokenizer reads tokenizer.json,
    config = json.loads(config_path.read_text())  # the `tokenizers` library's own file
    del config["tokenizer"]
    config_path.write_text(json.dumps(config))
    code, out, err = cli(capsys, "sample", str(run), "--max-new-tokens", "5", "--seed", "1")
    assert code == 0, err

    code, out, err = cli(capsys, "train", "cpu-baby", "dataset=mine", "vocab_size=400", "max_iters=1", *tiny,
                         "--out", str(tmp_path / "run2"))
    assert code == 0 and json.loads((tmp_path / "run2" / "config.json").read_text())["model"]["vocab_size"] == 400


def test_prepare_list_shows_built_in_and_own_datasets(dirs, tmp_path, capsys):
    (tmp_path / "a.txt").write_text(corpus_text(50))
    prepare_user("mine", TextRequest(paths=[str(tmp_path / "a.txt")], tokenizer="byte"))
    tokens = sum(TokenDataset.load("mine").meta["tokens"].values())
    for args in (["prepare", "--list"], ["datasets"]):
        code, out, err = cli(capsys, *args)
        assert code == 0, err
        line = next(line for line in out.splitlines() if line.startswith("mine "))
        assert "byte" in line and f"{tokens:,}" in line and "a.txt" in line
        assert "shakespeare-char" in out and "fineweb-edu" in out


# ---------------------------------------------------------------- prepare hf, offline

def test_prepare_hf_reads_a_local_dataset_folder(dirs, tmp_path):
    folder = tmp_path / "hfdata"
    (folder / "data").mkdir(parents=True)
    rows = [{"content": f"row {i}: " + "some words here. " * 8} for i in range(30)]
    (folder / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    req = TextRequest(paths=[], tokenizer="byte", text_column="content", val_fraction=0.1, max_tokens=2000,
                      hf={"dataset": str(folder), "config": None, "split": "train"})
    path = prepare_user("hfmine", req)
    ds, got = splits_of("hfmine")
    docs = [r["content"] for r in rows]
    want = by_hand(get_tokenizer("byte"), docs, 0.1)
    assert sum(len(v) for v in got.values()) == 2000  # the cap
    assert ds.meta["text_bytes"] == ds.meta["tokens"]  # bytes: the last document, cut at the cap, counted as cut
    assert got["val"] == want["val"][: len(got["val"])] and got["train"] == want["train"][: len(got["train"])]
    assert not list(path.glob(".documents*")) and ds.meta["kind"] == "hf"


def test_prepare_hf_names_a_dataset_that_is_neither_cached_nor_reachable(dirs, tmp_path):
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = run_cli_process("prepare", "hf", "nobody/no-such-dataset", "--name", "x", "--max-tokens", "100", env=offline)
    assert_clean_error(result, 1, "nobody/no-such-dataset")
    nothing_left(dirs[0], "x")


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written

def test_bad_input_is_one_line_exit_2_and_leaves_nothing(dirs, tmp_path, capsys):
    data_dir = dirs[0]
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "binary.bin").write_bytes(b"text\x00\x01\x02")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 ".encode("latin-1") * 40)
    (tmp_path / "rows.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    (tmp_path / "nums.jsonl").write_text(json.dumps({"text": 5}) + "\n")
    (tmp_path / "small.txt").write_text("too small")
    (tmp_path / "ok.txt").write_text(corpus_text(30))
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp_path / "ints.parquet")
    cases = [
        ([str(tmp_path / "missing.txt")], "missing.txt", "does not exist"),
        ([str(tmp_path / "empty.txt")], "empty.txt", "empty"),
        ([str(tmp_path / "emptydir")], "emptydir", "no files"),
        ([str(tmp_path / "binary.bin")], "binary.bin", "binary"),
        ([str(tmp_path / "latin1.txt")], "latin1.txt", "--errors replace"),
        ([str(tmp_path / "rows.jsonl")], "rows.jsonl", "'text'"),
        ([str(tmp_path / "nums.jsonl")], "nums.jsonl", "not text"),
        ([str(tmp_path / "ints.parquet")], "ints.parquet", "not text"),
        ([str(tmp_path / "bad.gz")], "bad.gz", ".gz"),
        ([str(tmp_path / "small.txt"), "--tokenizer", "byte"], "small.txt", "too few"),
        ([str(tmp_path / "ok.txt"), "--tokenizer", "bpe:256"], "bpe:256", "257"),
        ([str(tmp_path / "ok.txt"), "--tokenizer", "bpe:70000"], "bpe:70000", "65,536"),
        ([str(tmp_path / "ok.txt"), "--tokenizer", "bpe:5000"], "bpe:5000", "more text"),
        ([str(tmp_path / "ok.txt"), "--tokenizer", "bytes"], "bytes", "byte"),
        ([str(tmp_path / "ok.txt"), "--val-fraction", "0.9"], "--val-fraction", "0.5"),
    ]
    for paths, *fragments in cases:
        assert_fails(capsys, 2, ["prepare", "text", *paths, "--name", "bad"], *fragments)
        nothing_left(data_dir, "bad")
    assert_fails(capsys, 2, ["prepare", "text", str(tmp_path / "ok.txt"), "--name", "shakespeare-char"],
                 "shakespeare-char", "built-in")
    assert_fails(capsys, 2, ["prepare", "text", str(tmp_path / "ok.txt"), "--name", "../up"], "../up")
    assert_fails(capsys, 2, ["prepare", "text", str(tmp_path / "ok.txt")], "--name")
    assert_fails(capsys, 2, ["prepare", "shakespeare-char", "--tokenizer", "gpt2"], "--tokenizer")
    assert_fails(capsys, 2, ["prepare", "hf", "some/dataset", "--name", "x"], "--max-tokens")
    # --errors replace is the explicit way to read it
    code, out, err = cli(capsys, "prepare", "text", str(tmp_path / "latin1.txt"), "--name", "latin",
                         "--tokenizer", "char", "--errors", "replace")
    assert code == 0 and "\ufffd" in TokenDataset.load("latin").tokenizer.chars, err


# ---------------------------------------------------------------- corrupt datasets

CORRUPT_META = [b"", b"{not json", b"[]", b"\xff\xfe", json.dumps({"tokenizer": {"name": "byte"}}).encode(),
                json.dumps({"tokenizer": {"name": "byte"}, "dtype": "uint8", "tokens": {"train": "many"}}).encode(),
                json.dumps({"tokenizer": {"name": "char", "chars": 5}, "dtype": "uint8", "tokens": {}}).encode(),
                json.dumps({"tokenizer": {"name": "byte"}, "dtype": "float64", "tokens": {}}).encode()]


@pytest.fixture(scope="module")
def repeated_random_dir(tmp_path_factory) -> Path:
    """repeated-random prepared once for this module (its generator takes about a second)."""
    return prepare_into(tmp_path_factory.mktemp("repeated-random-data"), "repeated-random") / "repeated-random"


@pytest.mark.parametrize("content", CORRUPT_META, ids=range(len(CORRUPT_META)))
def test_a_corrupt_meta_json_is_a_clear_error_and_prepare_force_repairs_it(dirs, tmp_path, capsys, content,
                                                                          repeated_random_dir):
    data_dir = dirs[0]
    shutil.copytree(repeated_random_dir, data_dir / "repeated-random")
    good = (data_dir / "repeated-random" / "meta.json").read_bytes()
    (data_dir / "repeated-random" / "meta.json").write_bytes(content)
    with pytest.raises(RunError, match="meta.json is corrupt"):
        TokenDataset.load("repeated-random")
    line = assert_fails(capsys, 1, ["train", "induction", "max_iters=1", "--out", str(tmp_path / "r")], "meta.json")
    assert "--force" in line
    code, _, err = cli(capsys, "prepare", "repeated-random", "--force")
    assert code == 0 and "Traceback" not in err
    assert (data_dir / "repeated-random" / "meta.json").read_bytes() == good
    TokenDataset.load("repeated-random")


def test_a_corrupt_user_meta_json_is_repaired_by_prepare_text_force(dirs, tmp_path, capsys):
    data_dir = dirs[0]
    (tmp_path / "a.txt").write_text(corpus_text(50))
    args = ["prepare", "text", str(tmp_path / "a.txt"), "--name", "mine", "--tokenizer", "char"]
    assert cli(capsys, *args)[0] == 0
    (data_dir / "mine" / "meta.json").write_text("")
    assert_fails(capsys, 2, args, "mine", "--force")
    assert_fails(capsys, 2, ["prepare", "mine", "--force"], "mine")
    code, out, _ = cli(capsys, "datasets")
    assert code == 0
    assert cli(capsys, *args, "--force")[0] == 0
    TokenDataset.load("mine")


def test_token_ids_beyond_the_vocabulary_are_found_when_loading(dirs, tmp_path, capsys):
    data_dir = dirs[0]
    (tmp_path / "a.txt").write_text(corpus_text(50))
    prepare_user("mine", TextRequest(paths=[str(tmp_path / "a.txt")], tokenizer="char"))
    vocab = TokenDataset.load("mine").tokenizer.vocab_size
    train = data_dir / "mine" / "train.bin"
    raw = bytearray(train.read_bytes())
    raw[len(raw) // 2] = vocab  # one id just past the vocabulary
    train.write_bytes(bytes(raw))
    with pytest.raises(RunError, match=f"token id {vocab}, outside"):
        TokenDataset.load("mine").split("train")
    line = assert_fails(capsys, 1, ["train", "cpu-baby", "dataset=mine", "max_iters=1", "--out", str(tmp_path / "r")],
                        "train.bin")
    assert "--force" in line
    shutil.rmtree(tmp_path / "r", ignore_errors=True)


# ---------------------------------------------------------------- the benchmark runs

def test_the_tokenizer_benchmark_runs_and_writes_its_json(tmp_path, monkeypatch, mirror):
    import importlib.util
    from pathlib import Path

    monkeypatch.setenv("GLASSGPT_MIRROR", str(mirror))
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_tokenizers.py"
    spec = importlib.util.spec_from_file_location("bench_tokenizers", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--megabytes", "0.02", "--sizes", "300", "--repeats", "1", "--out", str(tmp_path)])
    cases = {row["case"]: row for row in result["rows"]}
    assert {"train bpe:300", "gpt2 (tiktoken) 1 thread", "bpe:300 1 thread"} <= cases.keys()
    assert cases["bpe:300 1 thread"]["tokens_per_byte"] > cases["gpt2 (tiktoken) 1 thread"]["tokens_per_byte"]
    saved = json.loads(next(tmp_path.glob("tokenizers-*.json")).read_text())
    assert saved["machine"]["cpu_count"] and saved["rows"] == result["rows"]


def test_the_vocabulary_comparison_runs_and_writes_its_json(dirs, tmp_path):
    import importlib.util
    from pathlib import Path

    (tmp_path / "texts").mkdir()
    for i in range(10):
        (tmp_path / "texts" / f"{i}.txt").write_text(corpus_text(30 + i))
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "own_data_vocab.py"
    spec = importlib.util.spec_from_file_location("own_data_vocab", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tiny = "n_layer=1 n_head=2 n_embd=16 block_size=16 batch_size=2 eval_iters=1 eval_interval=2 log_interval=2"
    result = module.main(["--text", str(tmp_path / "texts"), "--steps", "2", "--tokenizers", "char,bpe:300",
                          "--extra", tiny, "--out", str(tmp_path / "out")])
    rows = {row["tokenizer"]: row for row in result["rows"]}
    assert rows["bpe:300"]["vocab_size"] == 300 and rows["char"]["vocab_size"] < 100
    assert all(row["val_bits_per_byte"] > 0 for row in rows.values())
    assert next((tmp_path / "out").glob("own-data-vocab-*.json")).is_file()
