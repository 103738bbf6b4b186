"""`glassgpt compare`: the runs' curves, their config differences and final figures, on one page and a table."""

import json
import re

import pytest

from conftest import assert_clean_error, make_tiny_run, run_cli

from glassgpt.compare import compare, differing, load


def write_metrics(run_dir, steps, val, final=True, speed=1000.0):
    rows = []
    for i, step in enumerate(steps):
        rows.append({"kind": "train", "step": step, "train_loss": 4.0 - 0.1 * i, "tokens_per_s": speed,
                     "elapsed_s": 2.0 * step})
        rows.append({"kind": "eval", "step": step, "val_loss": val[i], "bits_per_character": val[i] / 0.6931471805599453,
                     "elapsed_s": 2.0 * step + 1})
    if final:
        rows.append({"kind": "final", "step": steps[-1], "val_loss": val[-1],
                     "bits_per_character": val[-1] / 0.6931471805599453, "tokens_per_s": speed,
                     "train_seconds": 2.0 * steps[-1], "wall_seconds": 2.0 * steps[-1] + 5})
    rows.append("not a row")  # a torn or foreign line is skipped
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")


@pytest.fixture
def two_runs(tmp_path):
    rope = make_tiny_run(tmp_path / "rope", pos_encoding="rope")
    learned = make_tiny_run(tmp_path / "learned")
    write_metrics(rope, [10, 20, 30], [3.0, 2.5, 2.25], speed=1500.0)
    write_metrics(learned, [10, 20], [3.1, 2.7], final=False)
    return rope, learned


def test_compare_prints_the_table_and_writes_one_page(two_runs, tmp_path):
    rope, learned = two_runs
    out = tmp_path / "cmp" / "compare.html"
    r = run_cli("compare", str(rope), str(learned), "--out", str(out))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    row = next(line for line in lines if line.startswith("rope"))
    assert re.search(r"30\s+.*2\.2500\s+3\.2461\s+1,500", row), row  # steps, val loss, bits per character, tokens/s
    assert "11,520" in row  # 30 steps x batch_size 12 x block_size 32
    assert "(unfinished)" in next(line for line in lines if line.startswith("learned"))
    assert re.search(r"model\.pos_encoding\s+rope\s+learned", r.stdout)
    assert lines[-1] == f"comparison written to {out}"
    page = out.read_text(encoding="utf-8")
    assert page.count("<svg") == 3 and "against step" in page and "against tokens" in page and "against wall time" in page
    assert page.count("<polyline") == 3 * 4  # 2 runs x (train, val) in each chart
    assert "<code>model.pos_encoding</code>" in page and "<script" not in page
    assert not re.search(r"(src|href)=[\"']?https?:", page)
    r = run_cli("compare", str(rope), "--out", str(out))  # one run; replaces the page it wrote
    assert r.returncode == 0 and "learned" not in out.read_text(encoding="utf-8")


def test_config_differences_and_final_figures(two_runs):
    rope, learned = (load(p) for p in two_runs)
    assert rope["val_loss"] == 2.25 and rope["finished"] and rope["wall_s"] == 65.0
    assert learned["val_loss"] == 2.7 and not learned["finished"] and learned["tokens_per_s"] == 1000.0
    assert [k for k, _ in differing([rope, learned])] == ["model.pos_encoding"]
    assert differing([rope, rope]) == []
    assert len(rope["train"]) == 3 and len(rope["val"]) == 3


def test_compare_refuses_bad_input_in_one_line(two_runs, tmp_path):
    rope, _ = two_runs
    assert_clean_error(run_cli("compare", str(tmp_path / "missing")), 2, "does not exist")
    mine = tmp_path / "notes.html"
    mine.write_text("my own notes", encoding="utf-8")
    assert_clean_error(run_cli("compare", str(rope), "--out", str(mine)), 2, "not a page glassgpt compare wrote")
    assert mine.read_text(encoding="utf-8") == "my own notes"
    assert_clean_error(run_cli("compare"), 2, "RUN")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{", encoding="utf-8")
    r = run_cli("compare", str(tmp_path / "broken"), "--out", str(tmp_path / "x.html"))
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr and "config.json" in r.stderr


def test_compare_from_python(two_runs, tmp_path):
    out, table = compare(list(two_runs), tmp_path / "c.html")
    assert out.is_file() and "rope" in table and "learned" in table


def test_compare_shows_the_threads_load_and_machine_each_run_trained_under(two_runs, tmp_path):
    rope, learned = two_runs
    for run, threads, load, cpu in ((rope, [2, 2], [0.4, 0.6], "CPU A"), (learned, [2, 1], [3.0, 3.2], "CPU B")):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()[:-1]]
        trained = [r for r in rows if r["kind"] == "train"]
        for row, n, avg in zip(trained, threads, load):
            row.update(threads=n, load_average=avg)
        rows.append({"kind": "final", "step": trained[-1]["step"], "val_loss": 2.0, "cpu": cpu, "usable_cores": 2})
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = run_cli("compare", str(rope), str(learned), "--out", str(tmp_path / "c.html"))
    assert r.returncode == 0, r.stderr
    assert re.search(r"threads\s+load", r.stdout)
    assert re.search(r"^rope\s.*\s2\s+0\.5$", r.stdout, re.M) and re.search(r"^learned\s.*\s1-2\s+3\.1$", r.stdout, re.M)
    assert "machine: CPU A, 2 cores (rope)" in r.stdout and "machine: CPU B, 2 cores (learned)" in r.stdout
    page = (tmp_path / "c.html").read_text()
    assert "<th>threads</th>" in page and "CPU B, 2 cores" in page and "quiet machine" in page
