"""Every writer's failure (a full disk, a file-size limit) is one line naming the file, exit 1,
whichever library was writing (safetensors, json, matplotlib, numpy, DCP), and nothing is left
half written: the previous checkpoint or dataset stands, no temporary file stays."""

import contextlib
import errno
import resource
import signal
from pathlib import Path

import pytest
import safetensors
import safetensors.torch

from glassgpt import checkpoint as ckpt, tensor_tree
from glassgpt.training import log as train_log
from glassgpt.ownership import TEMP

from conftest import assert_clean_error, cli, shard_folder, snapshot

CHECKPOINT = (ckpt.CONFIG, ckpt.WEIGHTS, ckpt.TOKENIZER, ckpt.STATE)
NO_SPACE = "No space left on device"


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, NO_SPACE)


def full_disk_in_safetensors(*args, **kwargs):  # the Rust library's own error type and wording
    raise safetensors.SafetensorError(f"Error while serializing: I/O error: {NO_SPACE} (os error 28)")


class _FullFile:
    """A file whose every write fails as on a full disk."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def seek(self, *args):
        return 0

    def read(self, *args):
        return b""

    def write(self, data):
        raise OSError(errno.ENOSPC, NO_SPACE)


def _fail_text_writes_to(name: str, monkeypatch) -> None:
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name.startswith(name + "."):  # its temporary file
            raise OSError(errno.ENOSPC, NO_SPACE)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Path, "write_text", write_text)


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Every write in this process past `limit` bytes of a file fails in the OS (EFBIG, as a full
    disk fails it), whichever library makes it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the error, not the signal that kills
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if TEMP.fullmatch(p.name))


def files(folder: Path, names) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names}


@pytest.mark.parametrize("fails, file", [
    ("weights", ckpt.WEIGHTS), ("trainer state", ckpt.STATE), ("config", ckpt.CONFIG),
    ("commit record", ckpt.COMMIT), ("metrics", ckpt.METRICS), ("loss plot", ckpt.PLOT),
])
def test_a_full_disk_at_any_file_of_a_checkpoint_is_one_line_and_the_previous_checkpoint_stands(
        run_copy, monkeypatch, fails, file):
    # the plot is drawn once training ends, after its last checkpoint: the previous plot stands
    kept = (ckpt.PLOT,) if fails == "loss plot" else CHECKPOINT
    before = files(run_copy, kept)
    with monkeypatch.context() as patch:
        if fails == "weights":
            patch.setattr(ckpt, "save_model", full_disk_in_safetensors)
        elif fails == "trainer state":
            patch.setattr(tensor_tree, "save_file", full_disk_in_safetensors)
        elif fails in ("config", "commit record"):
            _fail_text_writes_to(file, patch)
        elif fails == "metrics":
            patch.setattr(train_log, "open", _FullFile, raising=False)
        else:
            patch.setattr(train_log, "plot_losses", full_disk)
        assert_clean_error(cli("train", "--out", run_copy, "--resume", "max_iters=3"), 1,
                       f"{run_copy / file}: {NO_SPACE}")
    assert files(run_copy, kept) == before and temps(run_copy) == []
    assert not (run_copy / ckpt.COMMIT).exists()
    status, _, err = cli("train", "--out", run_copy, "--resume", "max_iters=3")  # space again: it goes on
    assert status == 0, err


def test_a_file_size_limit_in_the_os_stops_a_checkpoint_in_one_line(run_copy):
    """The real thing, below every library: the OS refuses writes past a size."""
    before = files(run_copy, CHECKPOINT)
    limit = (run_copy / ckpt.WEIGHTS).stat().st_size // 2
    assert (run_copy / ckpt.METRICS).stat().st_size < limit
    with file_size_limit(limit):
        result = cli("train", "--out", run_copy, "--resume", "max_iters=3")
    assert_clean_error(result, 1, "File too large", str(run_copy))
    assert files(run_copy, CHECKPOINT) == before and temps(run_copy) == []


def test_a_file_size_limit_during_a_sharded_checkpoint_removes_the_new_shards(sharded_run):
    committed = shard_folder(sharded_run)
    before = snapshot(committed)
    with file_size_limit(4096):
        result = cli("train", "--out", sharded_run, "--resume", "max_iters=3")
    assert_clean_error(result, 1, "File too large", str(sharded_run))
    assert sorted(p.name for p in sharded_run.glob("shards-*")) == [committed.name]  # the new folder: gone
    assert snapshot(committed) == before and temps(sharded_run) == []


def test_a_file_size_limit_while_preparing_names_the_dataset_and_leaves_the_old_one(tmp_path, monkeypatch):
    data_dir, corpus = tmp_path / "data", tmp_path / "corpus.txt"
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(data_dir))
    corpus.write_text("a small corpus, prepared once\n" * 20)
    assert cli("prepare", "text", corpus, "--name", "mine", "--tokenizer", "char")[0] == 0
    before = snapshot(data_dir)
    corpus.write_text("a larger one, that does not fit\n" * 400)
    with file_size_limit(4096):
        result = cli("prepare", "text", corpus, "--name", "mine", "--tokenizer", "char", "--force")
    assert_clean_error(result, 1, f"{data_dir / 'mine'}: File too large")
    assert snapshot(data_dir) == before  # the old dataset, and no partial folder


def test_a_full_disk_while_saving_an_sae_is_one_line(run_copy, monkeypatch):
    args = ["sae", run_copy, "--hook", "blocks.0.resid_post", "--tokens", 512, "--batch-size", 256, "--width", 32,
            "--k", 4]
    monkeypatch.setattr(tensor_tree, "save_file", full_disk_in_safetensors)
    folder = run_copy / "sae" / "blocks.0.resid_post"
    assert_clean_error(cli(*args), 1, f"{folder / 'sae_state.safetensors'}: {NO_SPACE}")
    assert temps(folder) == [] and not (folder / ckpt.COMMIT).exists()
