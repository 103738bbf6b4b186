"""Training at scale: gradient accumulation, exact resume, kills at any moment,
SIGINT, DDP, bf16, skipped non-finite steps, TensorBoard and MFU.

Every run here trains a tiny model on a cut-down Tiny Shakespeare (the first
40k characters for training, 2k for validation), so a whole-split eval is cheap.
"""

import copy
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_clean_error, assert_consistent_checkpoint, dead_pid, run_cli, tiny_config

from glassgpt import checkpoint as ckpt
from glassgpt.checkpoint import load_run
from glassgpt.config import load_run_config
from glassgpt.errors import RunError, UsageError
from glassgpt.model import GPT
from glassgpt.atomic import TMP_SUFFIX
from glassgpt.ownership import temp_name_of
from glassgpt.tensor_tree import save_tree
from glassgpt.training.loop import accumulate_gradients, apply_gradients, train
from glassgpt.training.flops import peak_flops
from glassgpt.training.log import MetricsLog

TINY = ["n_layer=2", "n_head=2", "n_embd=32", "block_size=32", "eval_iters=2", "log_interval=1",
        "warmup_iters=5", "learning_rate=3e-3", "min_lr=3e-4", "device=cpu"]


def tiny_args(*extra: str) -> list[str]:
    return [*TINY, *extra]


def tiny_run_config(*extra: str):
    return load_run_config("cpu-baby", tiny_args(*extra))


def quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def small_data_dir(tmp_path_factory, prepared_data_dir) -> Path:
    """shakespeare-char cut down to 40k train and 3k val tokens."""
    src = prepared_data_dir / "shakespeare-char"
    data_dir = tmp_path_factory.mktemp("small-data")
    dst = data_dir / "shakespeare-char"
    dst.mkdir()
    meta = json.loads((src / "meta.json").read_text())
    meta["tokens"] = {"train": 40_000, "val": 2_000}  # the loader checks the files against these counts
    (dst / "meta.json").write_text(json.dumps(meta))
    for split, n in meta["tokens"].items():
        np.fromfile(src / f"{split}.bin", dtype=np.uint8)[:n].tofile(dst / f"{split}.bin")
    return data_dir


@pytest.fixture
def small_data(monkeypatch, small_data_dir, mirror) -> Path:
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(small_data_dir))
    monkeypatch.setenv("GLASSGPT_MIRROR", str(mirror))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # subprocesses: share the cores politely
    return small_data_dir


def read_rows(run_dir: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_run(run_dir)[0].state_dict()


# ---------------------------------------------------------------- gradient accumulation

def test_accumulating_four_micro_batches_of_two_gives_the_gradients_of_one_batch_of_eight():
    model = GPT(tiny_config(dropout=0.0))
    twin = copy.deepcopy(model)
    x = torch.randint(0, 50, (8, 16))
    y = torch.randint(0, 50, (8, 16))
    device = torch.device("cpu")

    loss_micro = accumulate_gradients(model, [(x[i:i + 2], y[i:i + 2]) for i in range(0, 8, 2)], device)
    loss_whole = accumulate_gradients(twin, [(x, y)], device)

    torch.testing.assert_close(loss_micro, loss_whole, atol=1e-6, rtol=0)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_training_with_accumulation_follows_the_same_curve_as_the_big_batch(small_data, tmp_path):
    train(tiny_run_config("max_iters=6", "batch_size=2", "grad_accum_steps=4"), tmp_path / "accum", log=quiet)
    train(tiny_run_config("max_iters=6", "batch_size=8"), tmp_path / "big", log=quiet)
    accum, big = read_rows(tmp_path / "accum", "train"), read_rows(tmp_path / "big", "train")
    assert [r["step"] for r in accum] == list(range(1, 7))
    for a, b in zip(accum, big):
        assert math.isclose(a["train_loss"], b["train_loss"], abs_tol=1e-5), (a, b)


# ---------------------------------------------------------------- a skipped step

def test_a_non_finite_gradient_leaves_the_weights_and_optimizer_untouched():
    model = GPT(tiny_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 50, (2, 16))
    accumulate_gradients(model, [(x, x)], torch.device("cpu"))
    apply_gradients(model, optimizer, torch.tensor(1.0), grad_clip=1.0)  # one good step fills the moments
    before = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())

    loss = accumulate_gradients(model, [(x, x)], torch.device("cpu"))
    model.lm_head.weight.grad[0, 0] = float("nan")
    grad_norm, stepped = apply_gradients(model, optimizer, loss, grad_clip=1.0)

    assert not stepped and not torch.isfinite(grad_norm)
    assert all(p.grad is None for p in model.parameters())
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[0][name]), name
    for key, state in optimizer.state_dict()["state"].items():
        assert torch.equal(state["exp_avg"], before[1]["state"][key]["exp_avg"])


def test_with_a_grad_scaler_an_overflow_step_is_skipped_and_the_scale_backs_off():
    model = GPT(tiny_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)  # fp16's mechanism, exercised on the CPU
    x = torch.randint(0, 50, (2, 16))
    before = copy.deepcopy(model.state_dict())

    loss = accumulate_gradients(model, [(x, x)], torch.device("cpu"), scaler=scaler)
    model.wte.weight.grad[0, 0] = float("inf")
    _, stepped = apply_gradients(model, optimizer, loss, grad_clip=1.0, scaler=scaler)
    assert not stepped and scaler.get_scale() == 2.0**9
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

    loss = accumulate_gradients(model, [(x, x)], torch.device("cpu"), scaler=scaler)
    _, stepped = apply_gradients(model, optimizer, loss, grad_clip=1.0, scaler=scaler)
    assert stepped and not torch.equal(model.wte.weight, before["wte.weight"])


def nan_on_training_calls(calls: set[int]):
    """An `on_model` callback: a hook on ln_f.out that returns NaN on the chosen
    training forward passes (counted from 1; eval passes are not counted)."""
    seen = {"n": 0}

    def hook(x, _hook):
        if not torch.is_grad_enabled():
            return None
        seen["n"] += 1
        return torch.full_like(x, float("nan")) if seen["n"] in calls else None

    return lambda model: model.add_hook("ln_f.out", hook)


def test_nan_steps_are_skipped_counted_and_training_goes_on(small_data, tmp_path):
    lines: list[str] = []
    run_dir = tmp_path / "run"
    final = train(tiny_run_config("max_iters=12", "batch_size=4"), run_dir, log=lines.append,
                  on_model=nan_on_training_calls({4, 5, 6}))
    rows = {r["step"]: r for r in read_rows(run_dir, "train")}
    assert [rows[s]["train_loss"] for s in (4, 5, 6)] == [None, None, None]  # NaN is written as null
    assert rows[3]["skipped_steps"] == 0 and rows[6]["skipped_steps"] == 3 and rows[12]["skipped_steps"] == 3
    assert final["skipped_steps"] == 3 and math.isfinite(final["val_loss"])
    assert sum("step skipped" in line for line in lines) == 3
    assert all(torch.isfinite(w).all() for w in weights(run_dir).values())


def test_too_many_nan_steps_in_a_row_stop_training_with_a_clear_error(small_data, tmp_path):
    with pytest.raises(RunError, match="3 non-finite steps in a row up to step 5"):
        train(tiny_run_config("max_iters=20", "batch_size=4", "max_bad_steps=3"), tmp_path / "run", log=quiet,
              on_model=nan_on_training_calls({3, 4, 5, 6, 7}))


# ---------------------------------------------------------------- exact resume

def test_twenty_steps_then_resume_for_twenty_more_equals_forty_in_one_go(small_data, tmp_path):
    recipe = ["batch_size=4", "dropout=0.1", "lr_decay_iters=40", "eval_interval=10"]
    train(tiny_run_config(*recipe, "max_iters=40"), tmp_path / "whole", log=quiet)
    train(tiny_run_config(*recipe, "max_iters=20"), tmp_path / "split", log=quiet)
    final = train(tiny_run_config(*recipe, "max_iters=40"), tmp_path / "split", resume=True, log=quiet)

    whole_w, split_w = weights(tmp_path / "whole"), weights(tmp_path / "split")
    for name in whole_w:
        assert torch.equal(whole_w[name], split_w[name]), name
    whole, split = read_rows(tmp_path / "whole", "train"), read_rows(tmp_path / "split", "train")
    assert [r["step"] for r in split] == list(range(1, 41))  # nothing lost, nothing twice
    assert [r["train_loss"] for r in whole] == [r["train_loss"] for r in split]
    assert final["val_loss"] == read_rows(tmp_path / "whole", "final")[0]["val_loss"]


def test_resuming_with_another_model_shape_is_refused_and_says_what_differs(small_data, tmp_path):
    train(tiny_run_config("max_iters=2", "batch_size=2"), tmp_path / "run", log=quiet)
    with pytest.raises(UsageError, match=r"n_layer 2 -> 3, n_embd 32 -> 48"):
        train(tiny_run_config("max_iters=4", "batch_size=2", "n_layer=3", "n_embd=48"), tmp_path / "run",
              resume=True, log=quiet)
    result = run_cli("train", "cpu-baby", *tiny_args("n_layer=3"), "--out", str(tmp_path / "run"), "--resume")
    assert_clean_error(result, 2, "n_layer 2 -> 3")


def test_resuming_a_finished_run_does_nothing_and_a_longer_one_extends_it(small_data, tmp_path):
    run_dir = tmp_path / "run"
    recipe = ["batch_size=2", "eval_interval=2", "lr_decay_iters=8"]
    first = train(tiny_run_config(*recipe, "max_iters=4"), run_dir, log=quiet)
    before = {name: (run_dir / name).read_bytes() for name in (ckpt.METRICS, ckpt.WEIGHTS, ckpt.STATE)}
    said = []
    again = train(tiny_run_config(*recipe, "max_iters=4"), run_dir, resume=True, log=said.append)
    assert again == first
    assert any("is complete" in line and "nothing to do" in line for line in said), said
    assert {name: (run_dir / name).read_bytes() for name in before} == before, "a finished run was rewritten"
    result = run_cli("train", "--out", str(run_dir), "--resume")
    assert result.returncode == 0 and "is complete" in result.stdout + result.stderr, result.stderr

    train(tiny_run_config(*recipe, "max_iters=8"), run_dir, resume=True, log=quiet)  # max_iters grew: go on
    evals = [r["step"] for r in read_rows(run_dir, "eval")]
    assert evals == [0, 2, 4, 6, 8], "one eval row per step, none twice"
    assert [r["step"] for r in read_rows(run_dir, "train")] == list(range(1, 9))
    assert [r["step"] for r in read_rows(run_dir, "final")] == [8]


def test_resuming_with_another_number_of_processes_keeps_the_global_batch(small_data, tmp_path):
    """A run of 2 ranks holds 2 RNG states and a global batch of 2 x batch_size, drawn from one
    generator: resumed in one process, batch_size doubles so the data goes on exactly (the 2 -> 1 -> 2
    runs themselves are in tests/training/test_fsdp.py)."""
    run_dir = tmp_path / "run"
    train(tiny_run_config("max_iters=2", "batch_size=2"), run_dir, log=quiet)
    state = ckpt.load_trainer_state(run_dir)
    state["rng"] = state["rng"] * 2  # as a 2-rank run saves it
    save_tree(run_dir / ckpt.STATE, state)
    said = []
    train(tiny_run_config("max_iters=4", "batch_size=2"), run_dir, resume=True, log=said.append)
    assert any("resuming a run of 2 process(es) on 1: batch_size=4 per process keeps the global batch of 4"
               in line for line in said), said
    assert json.loads((run_dir / "config.json").read_text())["train"]["batch_size"] == 4


def test_train_without_a_preset_is_a_usage_error_unless_resuming(small_data, tmp_path):
    assert_clean_error(run_cli("train", "max_iters=3"), 2, "train needs a preset or TOML file")
    assert_clean_error(run_cli("train", "--out", str(tmp_path / "none"), "--resume"), 2, "does not exist")


def test_a_second_trainer_on_the_same_run_is_refused(small_data, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config("max_iters=2", "batch_size=2"), run_dir, log=quiet)
    with ckpt.writer_lock(run_dir):  # as if another process were training into it
        with pytest.raises(UsageError, match="another process is training into"):
            train(tiny_run_config("max_iters=4", "batch_size=2"), run_dir, resume=True, log=quiet)
        load_run(run_dir)  # readers are still welcome


# ---------------------------------------------------------------- killed, interrupted

def start_training(args: list[str], log_path: Path) -> subprocess.Popen:
    """`python -m glassgpt ARGS` in the background, its output going to a file."""
    out = open(log_path, "a")
    return subprocess.Popen([sys.executable, "-m", "glassgpt", *args], stdout=out, stderr=subprocess.STDOUT)


def wait_for(condition, timeout: float = 120.0, what: str = "the condition") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


CHECKPOINT_FILES = (ckpt.WEIGHTS, ckpt.CONFIG, ckpt.TOKENIZER, ckpt.STATE)


def checkpoint_write_in_progress(run_dir: Path) -> bool:
    return (run_dir / ckpt.COMMIT).exists() or any(temp_name_of(p.name) in CHECKPOINT_FILES
                                                   for p in run_dir.glob("*" + TMP_SUFFIX))


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_a_run_that_resumes_and_finishes(small_data, tmp_path):
    run_dir, log_path = tmp_path / "run", tmp_path / "log.txt"
    STEPS = 64  # enough that no run finishes before its kill, however fast the machine
    # A checkpoint every step. Kills come at random moments, or the moment a checkpoint write is seen.
    args = ["train", "cpu-baby", *tiny_args("batch_size=2", f"max_iters={STEPS}", "eval_interval=1", "eval_iters=1"),
            "--out", str(run_dir)]
    rng = random.Random(1234)
    steps, mid_write = [], 0
    moments = ["random", "write", "random"]
    while moments:
        moment = moments.pop(0)
        logged = len(read_rows(run_dir, "train")) if steps else 0
        proc = start_training(args + (["--resume"] if steps else []), log_path)
        wait_for(lambda: proc.poll() is not None or (run_dir / "metrics.jsonl").exists()
                 and len(read_rows(run_dir, "train")) > logged, what="a trained step")
        if moment == "random":
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            wait_for(lambda: proc.poll() is not None or checkpoint_write_in_progress(run_dir), timeout=30,
                     what="a checkpoint write")
        proc.kill()
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, log_path.read_text()[-2000:]
        mid_write += checkpoint_write_in_progress(run_dir)
        steps.append(assert_consistent_checkpoint(run_dir))
        if not moments and not mid_write and len(steps) < 8:
            moments.append("write")  # the machine was too slow to catch one: try again
    assert mid_write >= 1, "no kill landed inside a checkpoint write"
    assert steps == sorted(steps) and steps[-1] < STEPS, steps

    result = run_cli("train", "--out", str(run_dir), "--resume")
    assert result.returncode == 0, result.stderr
    train_steps = [r["step"] for r in read_rows(run_dir, "train")]
    assert train_steps == list(range(1, STEPS + 1)), train_steps  # each step logged once, none lost
    assert read_rows(run_dir, "final")[0]["step"] == STEPS
    assert assert_consistent_checkpoint(run_dir) == STEPS
    print(f"checkpoint steps after each kill: {steps}; kills that landed inside a checkpoint write: {mid_write}")


def simulate_crash(run_dir: Path, newer_run: Path, with_record: bool, renamed: tuple[str, ...] = ()) -> None:
    """Leave `run_dir` as a kill during a checkpoint write would: the newer
    checkpoint's files under temporary names, the commit record written or not,
    and (with the record) some files already renamed into place."""
    dead = dead_pid()
    temps = {name: f"{name}.{dead}-0123abcd{TMP_SUFFIX}" for name in CHECKPOINT_FILES}  # a killed writer's
    for name, tmp in temps.items():
        shutil.copy(newer_run / name, run_dir / tmp)
    if with_record:
        (run_dir / ckpt.COMMIT).write_text(json.dumps(temps))
        for name in renamed:
            os.replace(run_dir / temps[name], run_dir / name)


@pytest.mark.parametrize("with_record, renamed, expect", [
    (False, (), "older"),  # killed while writing the files: the old checkpoint stands
    (True, (), "newer"),  # killed right after the commit record: the renames are finished
    (True, (ckpt.WEIGHTS, ckpt.CONFIG), "newer"),  # killed halfway through the renames
])
def test_recover_finishes_or_undoes_an_interrupted_checkpoint(small_data, tmp_path, with_record, renamed, expect):
    older, newer = tmp_path / "older", tmp_path / "newer"
    train(tiny_run_config("max_iters=2", "batch_size=2"), older, log=quiet)
    shutil.copytree(older, newer)
    train(tiny_run_config("max_iters=4", "batch_size=2"), newer, resume=True, log=quiet)
    run_dir = tmp_path / "crashed"
    shutil.copytree(older, run_dir)
    simulate_crash(run_dir, newer, with_record, renamed)

    step = assert_consistent_checkpoint(run_dir)

    want = older if expect == "older" else newer
    assert step == (2 if expect == "older" else 4)
    for name, value in weights(run_dir).items():
        assert torch.equal(value, weights(want)[name]), name


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_exits_130_and_the_run_resumes_from_it(small_data, tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "cpu-baby", *tiny_args("batch_size=2", "max_iters=100000", "eval_interval=100000"),
            "--out", str(run_dir)]
    proc = subprocess.Popen([sys.executable, "-m", "glassgpt", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: proc.poll() is not None or (run_dir / "metrics.jsonl").exists()
             and len(read_rows(run_dir, "train")) >= 3, what="three logged steps")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    assert_clean_error(result, 130, "stopped by SIGINT at step", f"glassgpt train --out {run_dir} --resume")
    step = int(stderr.split("at step ")[1].split()[0])
    assert assert_consistent_checkpoint(run_dir) == step >= 3

    resumed = run_cli("train", "--out", str(run_dir), "--resume", f"max_iters={step + 3}")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["step"] for r in read_rows(run_dir, "train")] == list(range(1, step + 4))


# ---------------------------------------------------------------- DDP

@pytest.mark.slow
def test_ddp_two_ranks_follow_the_loss_curve_of_one_process_with_the_global_batch(small_data, tmp_path):
    """With gradient accumulation, so the micro-steps that skip the all-reduce (no_sync) are in play."""
    recipe = tiny_args("max_iters=6", "eval_interval=3", "eval_iters=2", "grad_accum_steps=2")
    single = run_cli("train", "cpu-baby", *recipe, "batch_size=8", "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    ddp = subprocess.run([*torchrun, "-m", "glassgpt", "train", "cpu-baby", *recipe, "batch_size=4",
                          "--out", str(tmp_path / "ddp")], capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    for kind, key in (("train", "train_loss"), ("eval", "val_loss")):
        one, two = read_rows(tmp_path / "single", kind), read_rows(tmp_path / "ddp", kind)
        assert [r["step"] for r in one] == [r["step"] for r in two]  # only rank 0 wrote: no row twice
        for a, b in zip(one, two):
            assert math.isclose(a[key], b[key], abs_tol=1e-5), (kind, a, b)
    for name, value in weights(tmp_path / "single").items():
        torch.testing.assert_close(weights(tmp_path / "ddp")[name], value, atol=1e-5, rtol=1e-4)
    assert "2 process(es)" in ddp.stdout


# ---------------------------------------------------------------- precision, logging, MFU

def test_bfloat16_autocast_on_cpu_trains_and_tracks_float32(small_data, tmp_path):
    train(tiny_run_config("max_iters=30", "batch_size=4"), tmp_path / "fp32", log=quiet)
    train(tiny_run_config("max_iters=30", "batch_size=4", "dtype=bfloat16"), tmp_path / "bf16", log=quiet)
    fp32, bf16 = read_rows(tmp_path / "fp32", "train"), read_rows(tmp_path / "bf16", "train")
    assert bf16[-1]["train_loss"] < bf16[0]["train_loss"] - 0.5  # it learns
    late = slice(20, 30)
    mean_fp32 = np.mean([r["train_loss"] for r in fp32[late]])
    mean_bf16 = np.mean([r["train_loss"] for r in bf16[late]])
    assert abs(mean_fp32 - mean_bf16) < 0.05, (mean_fp32, mean_bf16)
    assert bf16[0]["train_loss"] != fp32[0]["train_loss"]  # autocast really ran in bf16


def test_float16_on_cpu_is_a_clear_usage_error(small_data, tmp_path):
    result = run_cli("train", "cpu-baby", *tiny_args("dtype=float16"), "--out", str(tmp_path / "run"))
    assert_clean_error(result, 2, "dtype=float16 needs a CUDA GPU")
    assert not (tmp_path / "run").exists()  # nothing half-made


def test_tensorboard_logging_writes_the_scalars(small_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    train(tiny_run_config("max_iters=4", "batch_size=2", "eval_interval=2", "tensorboard=true"), run_dir, log=quiet)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    losses = events.Scalars("train/train_loss")
    assert [e.step for e in losses] == [1, 2, 3, 4]
    assert [e.value for e in losses] == pytest.approx([r["train_loss"] for r in read_rows(run_dir, "train")])
    assert [e.step for e in events.Scalars("eval/val_loss")] == [0, 2, 4]


def test_tensorboard_asked_for_but_missing_is_a_usage_error(small_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(UsageError, match="tensorboard=true needs the tensorboard package"):
        train(tiny_run_config("max_iters=2", "batch_size=2", "tensorboard=true"), tmp_path / "run", log=quiet)
    train(tiny_run_config("max_iters=2", "batch_size=2"), tmp_path / "run", log=quiet)  # not asked: fine


def test_mfu_uses_the_peak_flops_override(small_data, tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSGPT_PEAK_FLOPS", "1e12")
    run_dir = tmp_path / "run"
    train(tiny_run_config("max_iters=3", "batch_size=2"), run_dir, log=quiet)
    flops_per_token = load_run(run_dir)[0].estimate_flops_per_token()
    for row in read_rows(run_dir, "train"):
        assert row["mfu"] == pytest.approx(flops_per_token * row["tokens_per_s"] / 1e12)
    monkeypatch.delenv("GLASSGPT_PEAK_FLOPS")
    assert peak_flops(torch.device("cpu"), "float32") is None  # unknown on a CPU: no made-up figure
    result = run_cli("train", "cpu-baby", *tiny_args(), "--out", str(tmp_path / "bad"),
                     env={"GLASSGPT_PEAK_FLOPS": "fast"})
    assert_clean_error(result, 2, "GLASSGPT_PEAK_FLOPS must be a positive number")


def test_drawing_plots_leaves_the_users_matplotlib_backend_alone(tmp_path):
    """Library code draws with the Figure API: a notebook's backend is not switched to Agg."""
    import matplotlib

    from glassgpt.bench.scaling import plot_scaling
    from glassgpt.training.log import plot_losses

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # what a user might have chosen
    try:
        plot_losses([{"kind": "train", "step": 1, "train_loss": 2.0}, {"kind": "eval", "step": 1, "val_loss": 2.1}],
                    tmp_path / "loss.png")
        points = [{"axis": axis, "impl": impl, "value": v, "time_s": 1e-3 * v, "memory_bytes": 1e3 * v}
                  for axis in ("T", "width") for impl in ("manual", "sdpa") for v in (16, 32)]
        plot_scaling(points, "saved activations", tmp_path / "scaling.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"


def test_metrics_log_drops_rows_after_the_checkpoint_and_a_torn_last_line(tmp_path):
    rows = [{"kind": "train", "step": s, "train_loss": 1.0} for s in range(1, 6)]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "train", "st'
    (tmp_path / "metrics.jsonl").write_text(text)
    log = MetricsLog(tmp_path, enabled=True)
    log.load(up_to_step=3)
    assert [r["step"] for r in log.rows] == [1, 2, 3]
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
