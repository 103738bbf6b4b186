"""Training at scale: gradient accumulation, exact resume, kills at any moment,
SIGINT, DDP, bf16, skipped non-finite steps, TensorBoard and MFU.

Every run here trains a tiny model on a cut-down Tiny Shakespeare (the first
40k characters for training, 3k for validation), so a whole-split eval is cheap.
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
from conftest import assert_clean_error, run_cli, tiny_config

from glassgpt import checkpoint as ckpt
from glassgpt.checkpoint import load_run
from glassgpt.config import load_run_config
from glassgpt.errors import RunError, UsageError
from glassgpt.model import GPT
from glassgpt.train import accumulate_gradients, apply_gradients, train
from glassgpt.train_log import MetricsLog, peak_flops

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
    shutil.copy(src / "meta.json", dst / "meta.json")
    for split, n in (("train", 40_000), ("val", 3_000)):
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


def test_a_second_trainer_on_the_same_run_is_refused(small_data, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config("max_iters=2", "batch_size=2"), run_dir, log=quiet)
    with ckpt.writer_lock(run_dir):  # as if another process were training into it
        with pytest.raises(UsageError, match="another process is training into"):
            train(tiny_run_config("max_iters=4", "batch_size=2"), run_dir, resume=True, log=quiet)
        load_run(run_dir)  # readers are still welcome
