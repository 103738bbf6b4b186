"""Values a file can hold that once ended in a traceback, a hang or a gigabyte: corpora
(parquet strings that are not UTF-8, a glob pathlib refuses, inputs that inflate), token
labels that matplotlib reads as maths, numbers at the edge of a float in `compare` and
`analyze`, and NaN weights. Each is now a result or one line."""

import gzip
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from glassgpt.safe_read import read_json

from conftest import assert_clean_error, cli, make_tiny_run

HUGE = 1.7976931348623157e308  # the largest float: the span of it and its negative overflows


def corpus_lines(n: int = 400) -> list[str]:
    return [f"Line {i}: the quick brown fox jumps over the lazy dog {i % 7} times." for i in range(n)]


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("values") / "run")


@pytest.fixture
def run(tiny_run, tmp_path, data_dir) -> Path:
    shutil.copytree(tiny_run, tmp_path / "run")
    return tmp_path / "run"


def write_parquet(path: Path, texts: list[bytes], **options) -> None:
    """A parquet file whose 'text' column (typed string) holds exactly these bytes, UTF-8 or not."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = pa.array(texts, type=pa.binary())
    pq.write_table(pa.table({"text": pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())}), path, **options)


PREPARE = ["prepare", "text", "--name", "mine", "--tokenizer", "char"]


# ---------------------------------------------------------------- corpora

def test_parquet_strings_that_are_not_utf8_are_one_line_or_replaced_when_asked(tmp_path, data_dir):
    path = tmp_path / "rows.parquet"
    write_parquet(path, [line.encode() for line in corpus_lines()] + [b"bad \xff\xfe bytes"])
    assert_clean_error(cli(*PREPARE, path), 2, "rows.parquet row 401", "not UTF-8", "--errors replace")
    assert not (data_dir / "mine").exists()
    status, _, err = cli(*PREPARE, path, "--errors", "replace")
    assert status == 0, err
    assert "\ufffd" in json.loads((data_dir / "mine" / "meta.json").read_text())["tokenizer"]["chars"]


@pytest.mark.parametrize("glob", ["**x", "/abs/*.txt", "a/**b"])
def test_a_glob_pathlib_refuses_is_one_line(tmp_path, data_dir, glob):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("\n".join(corpus_lines()))
    assert_clean_error(cli(*PREPARE, tmp_path / "corpus", "--glob", glob), 2, f"--glob {glob!r}", "relative pattern")


def test_a_gzipped_parquet_is_capped_by_what_it_inflates_to(tmp_path, data_dir, monkeypatch):
    from glassgpt.data import documents

    monkeypatch.setattr(documents, "MAX_INFLATED_BYTES", 64 << 10)
    path = tmp_path / "rows.parquet"
    write_parquet(path, [b"%05d" % i + b"a" * 1000 for i in range(500)], compression="none")  # 500 kB of text
    gz = tmp_path / "rows.parquet.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert_clean_error(cli(*PREPARE, gz), 2, "rows.parquet.gz inflates to more than 65,536 bytes", "gunzip")
    assert_clean_error(cli(*PREPARE, path), 2, "row group 0", "inflates to")  # its own pages inflate past the cap
    write_parquet(path, [line.encode() for line in corpus_lines()], row_group_size=100)
    status, _, err = cli(*PREPARE, path)  # small row groups are read one at a time
    assert status == 0, err


def test_a_json_line_that_inflates_past_its_bound_is_one_line_and_never_held_whole(tmp_path, data_dir, monkeypatch):
    from glassgpt.data import documents

    monkeypatch.setattr(documents, "MAX_LINE_BYTES", 1 << 16)
    gz = tmp_path / "docs.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"text": "' + b"a" * (10 << 20)))  # 10 MB on one line, 10 kB on disk
    reads = []
    read = gzip.GzipFile.readline
    monkeypatch.setattr(gzip.GzipFile, "readline", lambda self, size=-1: reads.append(size) or read(self, size))
    assert_clean_error(cli(*PREPARE, gz), 2, "docs.jsonl.gz line 1 is longer than 65,536 bytes")
    assert reads and max(reads) <= (1 << 16) + 1 and -1 not in reads  # read in bounded pieces


# ---------------------------------------------------------------- values drawn and written

@pytest.mark.parametrize("label", ["$$", "$\\frac{$", "$x$", "a$b"])
def test_a_dollar_in_a_token_label_is_drawn_as_itself(label):
    import io

    from glassgpt.analysis.plots import plot_attention

    fig = plot_attention(torch.rand(3, 3), [label, "b", "c"])
    fig.savefig(io.BytesIO(), format="png")  # a label read as maths fails here, or draws a formula
    assert fig.axes[0].get_xticklabels()[0].get_text() == label.replace("$", "\\$")


def metrics_at_the_edge_of_a_float(run_dir: Path, analysis: bool) -> None:
    rows = [{"kind": "train", "step": 1, "train_loss": HUGE, "elapsed_s": HUGE, "tokens_per_s": HUGE},
            {"kind": "train", "step": 10**99, "train_loss": -HUGE, "elapsed_s": -HUGE},
            {"kind": "eval", "step": 2, "val_loss": HUGE},
            {"kind": "final", "step": 10**99, "val_loss": -HUGE, "wall_seconds": HUGE, "bits_per_character": HUGE}]
    if analysis:
        rows += [{"kind": "analysis", "step": s, "icl_score": v, "entropy": [v, -v], "sink_share": [v, 0.5],
                  "first_position_share": [0.1, -v], "induction": [v, -v], "previous_token": [-v, v]}
                 for s, v in ((1, HUGE), (10**99, -HUGE))]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_compare_draws_and_tabulates_values_at_the_edge_of_a_float(run, tmp_path):
    metrics_at_the_edge_of_a_float(run, analysis=False)
    status, out, err = cli("compare", run, tiny_run_copy(run, tmp_path), "--out", tmp_path / "c.html")
    assert status == 0, err
    assert "-1.798e+308" in out  # not a column of 300 digits
    assert "<polyline" in (tmp_path / "c.html").read_text()


def tiny_run_copy(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "other")
    (tmp_path / "other" / "metrics.jsonl").unlink()
    return tmp_path / "other"


def test_the_curves_of_values_at_the_edge_of_a_float_are_drawn(run, tmp_path):
    """What `analyze` (dynamics.png) and training (loss.png, after a resume) draw from metrics.jsonl."""
    from glassgpt.analysis.dynamics import write_dynamics
    from glassgpt.training.log import plot_losses, read_metrics

    metrics_at_the_edge_of_a_float(run, analysis=True)
    rows = read_metrics(run)
    assert len(rows) == 6
    write_dynamics(rows, tmp_path / "dynamics.png", n_layer=2)
    plot_losses(rows, tmp_path / "loss.png")


def test_nan_weights_are_refused_by_analyze_in_one_line(tmp_path, data_dir):
    from glassgpt.checkpoint import load_run, save_run

    source = make_tiny_run(tmp_path / "good")
    model, tokenizer, run_config = load_run(source)
    with torch.no_grad():
        model.blocks[0].attn.c_attn.weight[0, 0] = math.nan
    save_run(tmp_path / "nan", model.float(), tokenizer, run_config)
    assert_clean_error(cli("analyze", tmp_path / "nan", "--prompt", "ROMEO: here."), 1, "1 NaN or infinite weight")


def test_a_measure_that_is_not_finite_is_written_as_null_and_the_json_stays_json(run, monkeypatch):
    from glassgpt.analysis import report

    real = report.analyze

    def with_a_nan(*args, **kwargs):
        results = real(*args, **kwargs)
        results["depth_scan"][0, 0] = math.nan  # what a float16 analysis can overflow to
        return results

    monkeypatch.setattr(report, "analyze", with_a_nan)
    status, _, err = cli("analyze", run, "--prompt", "ROMEO: here.")
    assert status == 0, err
    numbers = read_json(run / "analysis" / "analysis.json", 1 << 30)  # strict: NaN is not JSON
    assert numbers["depth_scan"][0][0] is None and numbers["depth_scan"][0][1] is not None
