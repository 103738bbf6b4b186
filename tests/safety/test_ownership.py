"""The ownership rule: glassgpt deletes, replaces or renames only what it can prove it wrote (its
marker, a temporary name it made, its file names inside a folder it marked), never writes
through a link inside a run or a dataset, and reads a corpus or a dataset folder only inside
itself unless told to follow links."""

import json
import os
from pathlib import Path

import pytest

from glassgpt import checkpoint as ckpt
from glassgpt.atomic import atomic_write_text
from glassgpt.data.hub import check_local_folder
from glassgpt.errors import UsageError
from glassgpt.ownership import MARKERS, DATASET

from conftest import assert_clean_error, cli, dead_pid, snapshot


@pytest.fixture
def data_dir(tmp_path, monkeypatch, mirror) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(folder))
    monkeypatch.setenv("GLASSGPT_MIRROR", str(mirror))
    return folder


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    (folder / "sub" / "b.txt").write_text("pack my box with five dozen liquor jugs\n" * 20)
    return folder


PREPARE = {"built-in": ("shakespeare-char", ["prepare", "shakespeare-char", "--force"]),
           "your own": ("mine", ["prepare", "text", "CORPUS", "--name", "mine", "--tokenizer", "char", "--force"])}


def _args(command: str, corpus: Path) -> list:
    return [corpus if a == "CORPUS" else a for a in PREPARE[command][1]]


def _plant(kind: str, target: Path, outside: Path) -> None:
    if kind == "a folder of notes":
        target.mkdir()
        (target / "notes.md").write_text("years of work\n")
        (target / "meta.json").write_text('{"mine": true}')
    elif kind == "a file":
        target.write_text("the user's file of that name\n")
    elif kind == "a link to a folder":
        target.symlink_to(outside, target_is_directory=True)


# ---------------------------------------------------------------- datasets

@pytest.mark.parametrize("command", list(PREPARE))
@pytest.mark.parametrize("kind", ["a folder of notes", "a file", "a link to a folder"])
def test_prepare_refuses_what_glassgpt_did_not_write_at_a_datasets_name(data_dir, corpus, outside, command, kind):
    target = data_dir / PREPARE[command][0]
    _plant(kind, target, outside)
    before, outside_before = snapshot(data_dir), snapshot(outside)
    assert_clean_error(cli(*_args(command, corpus)), 2, str(target), "glassgpt did not")
    assert snapshot(data_dir) == before and snapshot(outside) == outside_before


@pytest.mark.parametrize("command", list(PREPARE))
def test_a_prepared_dataset_holding_a_users_file_is_not_replaced(data_dir, corpus, command):
    name = PREPARE[command][0]
    assert cli(*_args(command, corpus))[0] == 0
    (data_dir / name / "notes.txt").write_text("put here by the user\n")
    before = snapshot(data_dir)
    assert_clean_error(cli(*_args(command, corpus)), 2, "notes.txt", "move it out")
    assert snapshot(data_dir) == before
    (data_dir / name / "notes.txt").unlink()
    status, _, err = cli(*_args(command, corpus))  # its own files only: replaced
    assert status == 0, err
    assert (data_dir / name / MARKERS[DATASET]).is_file()


def test_a_dataset_prepared_before_markers_is_replaced_and_a_look_alike_is_not(data_dir, corpus):
    args = _args("your own", corpus)
    assert cli(*args)[0] == 0
    folder = data_dir / "mine"
    (folder / MARKERS[DATASET]).unlink()  # as an older glassgpt left it: meta.json naming it, its files only
    status, _, err = cli(*args)
    assert status == 0, err
    assert (folder / MARKERS[DATASET]).is_file()
    (folder / MARKERS[DATASET]).unlink()
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "mine": "a key glassgpt never writes"}))
    before = snapshot(data_dir)
    assert_clean_error(cli(*args), 2, str(folder), "did not prepare")
    assert snapshot(data_dir) == before


def test_abandoned_work_of_a_dead_preparation_goes_but_a_users_file_and_a_live_ones_stay(data_dir, corpus):
    dead, live = dead_pid(), os.getpid()
    gone = data_dir / f".mine.partial-{dead}-abc"
    mixed = data_dir / f".mine.partial-{dead}-def"
    running = data_dir / f".mine.partial-{live}-ghi"
    for folder in (gone, mixed, running):
        folder.mkdir()
        (folder / MARKERS[DATASET]).write_text('{"glassgpt": "dataset"}')
        (folder / "train.bin").write_bytes(b"\0" * 8)
    (mixed / "notes.txt").write_text("the user's\n")
    running_before = snapshot(running)
    assert cli(*_args("your own", corpus))[0] == 0
    assert not gone.exists()
    assert sorted(p.name for p in mixed.iterdir()) == ["notes.txt"]  # glassgpt's files went, the user's stayed
    assert snapshot(running) == running_before  # another preparation, still running


# ---------------------------------------------------------------- temporary names

def test_a_users_tmp_file_beside_an_out_path_is_untouched(run_copy, tmp_path):
    page = tmp_path / "report.html"
    (tmp_path / "report.html.tmp").write_text("the user's draft\n")
    before = (tmp_path / "report.html.tmp").read_bytes()
    status, _, err = cli("compare", run_copy, run_copy, "--out", page)
    assert status == 0, err
    assert page.is_file() and (tmp_path / "report.html.tmp").read_bytes() == before
    atomic_write_text(page, "again")
    assert (tmp_path / "report.html.tmp").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("report")) == ["report.html",
                                                                                      "report.html.tmp"]


def test_a_runs_tmp_files_of_the_users_stay_and_those_of_a_dead_writer_go(run_copy):
    users = [run_copy / (name + ".tmp") for name in (ckpt.CONFIG, ckpt.WEIGHTS, ckpt.STATE)]
    for path in users:
        path.write_text("the user's\n")
    dead = run_copy / f"{ckpt.CONFIG}.{dead_pid()}-0123abcd.tmp"
    live = run_copy / f"{ckpt.CONFIG}.{os.getpid()}-0123abcd.tmp"  # a writer still running
    foreign = run_copy / f"notes.txt.{dead_pid()}-0123abcd.tmp"  # a dead writer's, but not of a run's file
    for path in (dead, live, foreign):
        path.write_text("partial")
    status, _, err = cli("train", "--out", run_copy, "--resume", "max_iters=3")
    assert status == 0, err
    assert all(p.read_text() == "the user's\n" for p in users)
    assert not dead.exists() and live.exists() and foreign.exists()


# ---------------------------------------------------------------- links

def test_a_link_in_a_corpus_folder_that_leads_out_is_skipped_with_a_notice(data_dir, corpus, outside):
    (outside / "secret.txt").write_text("§ private ¶\n" * 50)
    (corpus / "out.txt").symlink_to(outside / "secret.txt")
    (corpus / "in.txt").symlink_to(corpus / "sub" / "b.txt")  # inside the folder: read (once)
    status, _, err = cli("prepare", "text", corpus, "--name", "mine", "--tokenizer", "char")
    assert status == 0, err
    assert f"glassgpt: note: skipped {corpus / 'out.txt'}: a link to {outside / 'secret.txt'}" in err
    meta = json.loads((data_dir / "mine" / "meta.json").read_text())
    assert "§" not in meta["tokenizer"]["chars"]
    assert sorted(Path(s["path"]).name for s in meta["sources"]) == ["a.txt", "b.txt"]

    status, _, err = cli("prepare", "text", corpus, "--name", "followed", "--tokenizer", "char", "--follow-links")
    assert status == 0, err
    assert "§" in json.loads((data_dir / "followed" / "meta.json").read_text())["tokenizer"]["chars"]


def _hf_folder(tmp_path: Path, data_files) -> Path:
    folder = tmp_path / "hf"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    card = {"configs": [{"config_name": "default", "data_files": data_files}]}
    (folder / "README.md").write_text("---\n" + json.dumps(card) + "\n---\n# a dataset\n")  # JSON is YAML
    return folder


@pytest.mark.parametrize("data_files", ["../outside/*.jsonl", "/etc/passwd", "https://example.invalid/x.jsonl",
                                        [{"split": "train", "path": "../x.jsonl"}],
                                        {"train": ["data/train.jsonl", "data/../../x.jsonl"]}])
def test_a_hf_folder_whose_card_points_outside_is_refused(data_dir, tmp_path, data_files):
    folder = _hf_folder(tmp_path, data_files)
    assert_clean_error(cli("prepare", "hf", folder, "--name", "mine", "--max-tokens", 100), 2,
                   str(folder / "README.md"), "outside")
    assert list(data_dir.iterdir()) == []


def test_a_hf_folder_is_read_only_inside_itself_unless_links_are_followed(data_dir, tmp_path, outside):
    folder = _hf_folder(tmp_path, [{"split": "train", "path": "data/*.jsonl"}])
    check_local_folder(folder)  # its card names its own files: accepted
    (folder / "data" / "more.jsonl").symlink_to(outside / "victim")
    assert_clean_error(cli("prepare", "hf", folder, "--name", "mine", "--max-tokens", 100), 2,
                   str(folder / "data" / "more.jsonl"), "--follow-links")
    check_local_folder(folder, follow_links=True)
    with pytest.raises(UsageError, match="data_dir|outside"):
        (folder / "README.md").write_text('---\n{"configs": [{"config_name": "x", "data_dir": "../.."}]}\n---\n')
        check_local_folder(folder, follow_links=True)


def test_a_runs_tensorboard_folder_that_is_a_link_is_refused(run_copy, outside):
    (run_copy / "tensorboard").symlink_to(outside, target_is_directory=True)
    outside_before = snapshot(outside)
    assert_clean_error(cli("train", "--out", run_copy, "--resume", "max_iters=3", "tensorboard=true"), 1,
                   str(run_copy / "tensorboard"), "symbolic link")
    assert snapshot(outside) == outside_before


@pytest.mark.parametrize("link", ["sae", "sae/blocks.0.resid_post"])
def test_a_runs_sae_folder_that_is_a_link_is_refused(run_copy, outside, link):
    (run_copy / link).parent.mkdir(parents=True, exist_ok=True)
    (run_copy / link).symlink_to(outside, target_is_directory=True)
    outside_before = snapshot(outside)
    assert_clean_error(cli("sae", run_copy, "--hook", "blocks.0.resid_post", "--tokens", 512, "--batch-size", 256,
                       "--width", 32, "--k", 4), 1, str(run_copy / link), "symbolic link")
    assert snapshot(outside) == outside_before
