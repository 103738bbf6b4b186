"""Shared fixtures: tiny models, and a data dir with Tiny Shakespeare prepared once per session.

Tests never touch the network: Tiny Shakespeare comes from GLASSGPT_MIRROR
(the Makefile points it at ../shared/data) or from ../shared/data directly.
"""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from glassgpt.config import GPTConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(items):
    """The tests marked slow run first (in their order), the rest after: with `-n auto --dist
    worksteal` a worker that runs out steals from the end of another's queue, so the last tests
    to run are short ones and no worker waits on a long one at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


class LazyModule:
    """A module imported when a test first reads from it: transformers and transformer_lens take
    seconds each to import, every xdist worker collects every test file, and only a few tests
    need them. Not installed: that test is skipped (`pytest.importorskip`), with `reason`.
    `on_import(module)` runs once, after the import."""

    def __init__(self, name: str, reason: str | None = None, on_import=None):
        self._name, self._reason, self._on_import, self._module = name, reason, on_import, None

    def __getattr__(self, attr: str):
        if self._module is None:
            self._module = pytest.importorskip(self._name, reason=self._reason)
            if self._on_import:
                self._on_import(self._module)
        return getattr(self._module, attr)


def tiny_config(**overrides) -> GPTConfig:
    cfg = dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16)
    cfg.update(overrides)
    return GPTConfig(**cfg)


def twin_models(init=None, **cfg):
    """The same weights under attn_impl=manual and attn_impl=sdpa; `init(model)` may set
    weights first (in place, no grad)."""
    from glassgpt.model import GPT

    manual = GPT(tiny_config(attn_impl="manual", **cfg))
    if init is not None:
        with torch.no_grad():
            init(manual)
    sdpa = GPT(tiny_config(attn_impl="sdpa", **cfg))
    sdpa.load_state_dict(manual.state_dict())
    return manual, sdpa


def assert_same_outputs_and_gradients(a, b, atol: float = 1e-5) -> dict:
    """Run two models of the same weights on the same batch: logits, then every parameter's
    gradient, equal to `atol`. Returns a's named parameters (with their gradients)."""
    idx, targets = torch.randint(0, 50, (3, 16)), torch.randint(0, 50, (3, 16))
    (logits_a, loss_a), (logits_b, loss_b) = a(idx, targets), b(idx, targets)
    torch.testing.assert_close(logits_a, logits_b, atol=atol, rtol=atol)
    loss_a.backward()
    loss_b.backward()
    grads_b = dict(b.named_parameters())
    for name, p in a.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, grads_b[name].grad, atol=atol, rtol=atol, msg=name)
    return dict(a.named_parameters())


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


# One thread in every test process and what it starts: `threads=auto` would otherwise choose from the
# machine's load, which differs from one run of a test to the next (and with it the order of float sums).
# The tests of the choice itself remove it (tests/training/test_threads.py).
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine two threads
    spin and wait for each other (up to 60x slower). Subprocesses: see run_cli."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = Path(os.environ.get("GLASSGPT_MIRROR", SHARED_DATA))
    assert (path / "tinyshakespeare.txt").is_file(), (
        f"Tiny Shakespeare not found in {path}: set GLASSGPT_MIRROR to a folder holding tinyshakespeare.txt"
    )
    return path


@pytest.fixture(scope="session")
def prepared_data_dir(tmp_path_factory, mirror) -> Path:
    """A data dir with shakespeare-char prepared, shared by the whole session."""
    return prepare_into(tmp_path_factory.mktemp("glassgpt-data"), "shakespeare-char", mirror)


def prepare_into(data_dir: Path, name: str, mirror: Path | None = None) -> Path:
    """`prepare(name)` into `data_dir` (reading raw files from `mirror`), the environment put back after."""
    from glassgpt.data import prepare

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLASSGPT_DATA_DIR", str(data_dir))
        if mirror is not None:
            mp.setenv("GLASSGPT_MIRROR", str(mirror))
        prepare(name)
    return data_dir


@pytest.fixture(scope="session")
def small_prepared_data_dir(tmp_path_factory, prepared_data_dir) -> Path:
    """shakespeare-char cut to its first 20k train and 1,024 val tokens: for tests that train only
    to see a run go through (a whole-split eval reads 1,024 tokens, not 111k)."""
    return cut_dataset(prepared_data_dir, tmp_path_factory.mktemp("glassgpt-small-data"), train=20_000, val=1024)


def cut_dataset(data_dir: Path, into: Path, train: int, val: int, name: str = "shakespeare-char") -> Path:
    """A data dir (`into`) holding the first `train` and `val` tokens of `data_dir`'s prepared `name`."""
    src, dst = data_dir / name, into / name
    dst.mkdir(parents=True)
    meta = json.loads((src / "meta.json").read_text())
    meta["tokens"] = {"train": train, "val": val}
    (dst / "meta.json").write_text(json.dumps(meta))
    for split, n in meta["tokens"].items():
        np.fromfile(src / f"{split}.bin", dtype=meta["dtype"])[:n].tofile(dst / f"{split}.bin")
    return into


@pytest.fixture
def small_data_env(monkeypatch, small_prepared_data_dir, mirror) -> Path:
    """GLASSGPT_DATA_DIR (the cut dataset) and GLASSGPT_MIRROR set for this test and its subprocesses."""
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(small_prepared_data_dir))
    monkeypatch.setenv("GLASSGPT_MIRROR", str(mirror))
    return small_prepared_data_dir


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """An empty data dir and an empty mirror, for this test only."""
    data_dir, mirror = tmp_path / "data", tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("GLASSGPT_MIRROR", str(mirror))
    return data_dir, mirror


def make_enwik8_zip(path, payload: bytes, compression=zipfile.ZIP_DEFLATED):
    """A stand-in for enwik8.zip holding `payload` as its one member."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("enwik8", payload)
    return path


def pin_enwik8(monkeypatch, zip_path, payload: bytes):
    """Point the enwik8 checks at a small test zip (its SHA-256, size and payload hash)."""
    from glassgpt.data import RawFile
    from glassgpt.data import enwik8 as enwik8_module

    zip_sha = hashlib.sha256(zip_path.read_bytes()).hexdigest() if zip_path is not None else None
    monkeypatch.setattr(enwik8_module, "ENWIK8_ZIP", RawFile("enwik8.zip", "http://example.invalid/enwik8.zip", zip_sha))
    monkeypatch.setattr(enwik8_module, "ENWIK8_MEMBER",
                        enwik8_module.ZipMember("enwik8", len(payload), hashlib.sha256(payload).hexdigest()))


@pytest.fixture
def data_env(monkeypatch, prepared_data_dir, mirror) -> Path:
    """GLASSGPT_DATA_DIR and GLASSGPT_MIRROR set for this test (and its subprocesses)."""
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(prepared_data_dir))
    monkeypatch.setenv("GLASSGPT_MIRROR", str(mirror))
    return prepared_data_dir


def run_cli_process(*args: str, timeout: float = 300, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """`python -m glassgpt ARGS` in a fresh process, exactly as a user runs it: for what needs a
    process of its own (the real command line's bytes, signals, settings read at import time)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "glassgpt", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)


def run_cli(*args: str, timeout: float = 300, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """`glassgpt ARGS` run by `glassgpt.cli.main` in this process, with stdout, stderr, the
    environment, the working folder and torch's thread count as a fresh process would have them
    and put back afterwards: what the process adds is two seconds of imports. An exception that
    escapes `main` is what a user would see as a traceback: it comes back as exit 1 with the
    traceback on stderr, so the tests that forbid one still catch it. Warnings print as they
    would without pytest. `timeout` is kept for the call sites; nothing here runs that long."""
    import contextlib
    import io
    import traceback
    import warnings

    from glassgpt.cli import main

    if "GLASSGPT_TEST_KILL" in (env or {}):
        raise ValueError("GLASSGPT_TEST_KILL kills the process it runs in: use run_cli_process")
    out, err, code = io.StringIO(), io.StringIO(), 0
    saved_env, saved_cwd, saved_threads = dict(os.environ), os.getcwd(), torch.get_num_threads()
    os.environ.update({"OMP_NUM_THREADS": "1", **(env or {})})
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.resetwarnings()
            for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", quiet)  # what a fresh interpreter hides
            try:
                main([str(a) for a in args])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if isinstance(e.code, str):
                    err.write(e.code + "\n")
            except BaseException:  # noqa: BLE001  (a traceback, as the user would see it)
                err.write(traceback.format_exc())
                code = 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(saved_threads)
    return subprocess.CompletedProcess(["glassgpt", *map(str, args)], code, out.getvalue(), err.getvalue())


def assert_clean_error(result, code: int, *fragments: str) -> None:
    """The promise every bad input gets: the given exit status and one line on stderr,
    `glassgpt...: error: ...`, holding each fragment, and no traceback. `result` is a finished
    process (`run_cli`) or the (status, stdout, stderr) of `cli`."""
    status, err = (result.returncode, result.stderr) if hasattr(result, "returncode") else (result[0], result[2])
    assert status == code, (status, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("glassgpt") and ": error: " in lines[0], err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def cli(*argv) -> tuple[int, str, str]:
    """`glassgpt ARGV` in process: (exit status, stdout, stderr). Any exception other than
    SystemExit propagates, and fails the test: it would have been a traceback."""
    import contextlib
    import io

    from glassgpt.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, out.getvalue(), err.getvalue()


# The smallest training run the CLI accepts: seconds on a CPU.
TINY = ["n_layer=1", "n_head=2", "n_embd=16", "block_size=16", "batch_size=2", "max_iters=2", "eval_interval=1",
        "eval_iters=1", "log_interval=1", "warmup_iters=1", "device=cpu"]


def assert_consistent_checkpoint(run_dir: Path) -> int:
    """The run loads, its weights match its config's hash, and its trainer state
    belongs to the same checkpoint. Returns the checkpoint's step."""
    from glassgpt import checkpoint as ckpt

    ckpt.load_run(run_dir)  # repairs an interrupted write first, then checks the SHA-256
    assert not (run_dir / ckpt.COMMIT).exists() and not list(run_dir.glob("*.tmp"))
    state = ckpt.load_trainer_state(run_dir)
    assert state["weights_sha256"] == json.loads((run_dir / "config.json").read_text())["weights_sha256"]
    return int(state["step"])


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry below `folder` (links not followed) -> a digest of what it is."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[rel] = "dir"
    return found


def push_all(stop, pieces: list[str]) -> tuple[str, bool]:
    """Push `pieces` through a StopText: (what is shown, whether a stop string was hit)."""
    shown, hit = "", False
    for piece in pieces:
        text, hit = stop.push(piece)
        shown += text
        if hit:
            break
    return shown + ("" if hit else stop.flush()), hit


class Hung(BaseException):
    """Raised by `within` in a block that ran out of time: no `except Exception` (nor OSError,
    which TimeoutError is) in the code under test can take it for a failure it handles."""


@contextlib.contextmanager
def within(seconds: float):
    """Fail the test (instead of hanging the suite) if the block takes longer than `seconds`."""
    def expire(signum, frame):
        raise Hung(f"still running after {seconds} s: a read that blocks")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_pid() -> int:
    """The id of a process that has ended (a short-lived child, waited for): what a temporary
    file a killed writer left carries."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def make_tiny_run(run_dir: Path, text: str = "ROMEO: wherefore art thou?\nJULIET: here.\n", **cfg) -> Path:
    """A run directory holding a random tiny model with a char tokenizer fitted on `text`."""
    from glassgpt.checkpoint import save_run
    from glassgpt.config import RunConfig, TrainConfig
    from glassgpt.model import GPT
    from glassgpt.tokenizer import get_tokenizer

    tokenizer = get_tokenizer("char", text=text)
    model_cfg = tiny_config(vocab_size=tokenizer.vocab_size, block_size=32, **cfg)
    save_run(run_dir, GPT(model_cfg), tokenizer, RunConfig(model_cfg, TrainConfig()))
    return run_dir


# ---------------------------------------------------------------- a trained run, for hostile edits

def train_tiny(run_dir: Path, data_dir: Path, *overrides: str) -> Path:
    """cpu-baby at the TINY size, trained for two steps on the prepared data into `run_dir`."""
    from glassgpt.config import load_run_config
    from glassgpt.training import train

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLASSGPT_DATA_DIR", str(data_dir))
        train(load_run_config("cpu-baby", [*TINY, *overrides]), run_dir, log=lambda line: None)
    return run_dir


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, prepared_data_dir) -> Path:
    """A run trained for two steps on shakespeare-char: every file a run has."""
    return train_tiny(tmp_path_factory.mktemp("hostile") / "run", prepared_data_dir)


@pytest.fixture
def run_copy(trained_run, tmp_path, data_env) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir, symlinks=True)
    return run_dir


@pytest.fixture
def outside(tmp_path) -> Path:
    """Files of the user's, beside the run: no command may change them."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "victim").write_text("the user's own file\n")
    (folder / "victim.tmp").write_text("the user's draft\n")
    (folder / "analysis.json").write_text("{}")
    return folder


@pytest.fixture(scope="module")
def sharded_trained_run(tmp_path_factory, prepared_data_dir) -> Path:
    """A parallel=fsdp run of one process (one shard): its checkpoint is a shard folder."""
    return train_tiny(tmp_path_factory.mktemp("hostile-sharded") / "run", prepared_data_dir, "parallel=fsdp")


@pytest.fixture
def sharded_run(sharded_trained_run, tmp_path, data_env) -> Path:
    run_dir = tmp_path / "sharded"
    shutil.copytree(sharded_trained_run, run_dir, symlinks=True)
    return run_dir


def shard_folder(run_dir: Path) -> Path:
    """The shard folder the run's committed trainer state names (parallel=fsdp)."""
    from glassgpt import checkpoint as ckpt

    return run_dir / ckpt.load_trainer_state(run_dir)["sharded"]


# ---------------------------------------------------------------- pages in a real browser, offline

CHROMIUM = "/usr/bin/chromium"  # Debian's (Playwright cannot download its own browser here)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), "Debian's chromium is needed: make test installs it (apt-get install chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


class Opened:
    """A page with every request beyond its own origin refused and counted, and its console errors."""

    def __init__(self, browser, url: str, width: int = 1280):
        from urllib.parse import urlsplit

        own = urlsplit(url)
        self.foreign, self.errors = [], []
        self.context = browser.new_context(viewport={"width": width, "height": 900})

        def route(r):
            u = urlsplit(r.request.url)
            if (u.scheme, u.netloc) == (own.scheme, own.netloc) or u.scheme in ("data", "blob", "about"):
                r.continue_()
            else:
                self.foreign.append(r.request.url)
                r.abort()

        self.context.route("**/*", route)
        self.page = self.context.new_page()

        def request(req):
            u = urlsplit(req.url)
            if own.scheme == "file" and u.scheme not in ("file", "data", "blob", "about"):
                self.foreign.append(req.url)

        self.page.on("request", request)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)

    def close(self):
        self.context.close()
        assert self.errors == [], self.errors
        assert self.foreign == [], self.foreign


@pytest.fixture
def open_page(browser):
    opened = []

    def make(url, width=1280):
        o = Opened(browser, url, width)
        opened.append(o)
        return o

    yield make
    for o in opened:
        o.close()
