"""Time: max_minutes ends a run on time (final evaluation and checkpoint included) with the schedule
compressed into it; every log line has an ETA; a training process stopped by a signal leaves at once."""

import os
import subprocess
import sys
import time

import pytest

from glassgpt import checkpoint as ckpt
from glassgpt.config import load_run_config
from glassgpt.progress import Progress, duration, eta_seconds
from glassgpt.training.budget import FINISH_S, RESERVE_STRETCH, RunClock
from glassgpt.training.log import read_metrics
from glassgpt.training.loop import train
from glassgpt.training.optim import lr_at

from conftest import TINY


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_clock_keeps_back_the_final_evaluation_and_compresses_the_schedule():
    clock = Clock()
    run = RunClock.start(1.0, final_eval_tokens=10_000, step_tokens=500, clock=clock)  # 60 s
    run.add_checkpoint(2.0)
    run.add_eval(1_000, 0.5)  # 0.5 ms a token: the final evaluation takes 5 s
    reserve = RESERVE_STRETCH * 5.0 + 2.0 + FINISH_S
    assert run.reserve_s() == pytest.approx(reserve)
    assert run.position(0, 0.0, 1000, 0.0) == 0  # nothing elapsed yet
    clock.now += (60 - reserve) / 2  # half of the training time
    assert run.fraction() == pytest.approx(0.5)
    assert run.position(10, 0.0, 1000, 0.0) == pytest.approx(500)  # the schedule half done at step 10
    assert run.position(700, 0.0, 1000, 0.0) == 700  # steps ahead of the time: the step
    assert run.position(10, 200.0, 1000, 0.0) == pytest.approx(600)  # resumed at position 200
    assert run.has_time_for(1.0) and not run.has_time_for((60 - reserve) / 2 + 0.1)
    clock.now += (60 - reserve) / 2
    tc = load_run_config("cpu-baby", ["max_iters=1000"]).train
    assert run.position(11, 0.0, 1000, 0.0) == 1000 and lr_at(1000, tc) == pytest.approx(tc.min_lr)
    no_limit = RunClock.start(0, final_eval_tokens=10_000, step_tokens=500, clock=clock)
    assert no_limit.position(37, 0.0, 1000, 0.0) == 37 and no_limit.fraction() == 0.0


def test_the_eta_counts_the_steps_evaluations_checkpoints_and_the_final_evaluation():
    clock = Clock()
    run = RunClock.start(0, final_eval_tokens=4_000, step_tokens=500, clock=clock)
    assert run.eta_s(100, 1, 2, 1_000) is None  # no step measured yet
    run.add_steps(10, 1.0)
    assert run.eval_s(3_000) == pytest.approx(3_000 * 0.1 / 500 / 3)  # before an evaluation: a third of a step
    run.add_eval(1_000, 0.2)
    run.add_checkpoint(0.5)
    assert run.eta_s(100, 1, 2, 1_000) == pytest.approx(100 * 0.1 + 0.2 + 2 * 0.5 + 0.8 + FINISH_S)
    limited = RunClock.start(0.1, final_eval_tokens=4_000, step_tokens=500, clock=clock)  # 6 s
    limited.add_steps(10, 1.0)
    clock.now += 2.0
    assert limited.eta_s(10_000, 0, 0, 1_000) == pytest.approx(4.0)  # at most what is left of the time


@pytest.mark.slow
def test_max_minutes_ends_on_time_with_the_final_evaluation_a_checkpoint_and_a_compressed_schedule(
        tmp_path, small_data_env):
    train(load_run_config("cpu-baby", TINY), tmp_path / "warm-up", log=lambda line: None)  # a process's first run
    lines = []  # pays for lazy imports and first calls: seconds on a busy machine, before any budget could start
    budget = 3.0  # max_minutes=0.05
    rc = load_run_config("cpu-baby", [*TINY, "max_iters=1000000", "max_minutes=0.05", "eval_interval=100",
                                      "log_interval=1", "warmup_iters=100000", "learning_rate=1e-3", "min_lr=1e-4"])
    started = time.monotonic()
    final = train(rc, tmp_path / "run", log=lines.append)
    wall = time.monotonic() - started
    assert budget * 0.6 < wall <= budget + 1.5, (wall, lines[-3:])  # used the time, and ended on it
    assert final["kind"] == "final" and final["stopped_by"] == "max_minutes" and 10 < final["step"] < 1_000_000
    assert ckpt.load_trainer_state(tmp_path / "run")["step"] == final["step"]  # the last step's checkpoint
    rows = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "train"]
    peak = max(r["lr"] for r in rows)
    assert peak > 5e-4 and rows[-1]["lr"] == pytest.approx(1e-4, rel=0.05), [r["lr"] for r in rows]  # up, down
    assert "stopped by max_minutes=0.05" in lines[-1]
    assert all("| ETA " in line for line in lines if "| loss " in line)
    assert all(isinstance(r["eta_s"], float) for r in rows)
    again = []
    assert train(rc, tmp_path / "run", resume=True, log=again.append) == final  # complete: nothing to do
    assert "is complete: its time ended its schedule" in again[-1]


def test_plain_progress_lines_come_off_a_terminal_with_an_eta(capsys):
    clock = Clock()
    shown = Progress("SAE steps", 200, "step", terminal=False, every_s=20.0, clock=clock)
    shown.update(1)
    assert capsys.readouterr().out == ""  # nothing before the first few seconds
    clock.now += 10.0
    shown.update(50)
    assert capsys.readouterr().out == "SAE steps: 50/200 step (25%) | 10 s elapsed | ETA 30 s\n"
    clock.now += 10.0
    shown.update(100)
    assert capsys.readouterr().out == ""  # the next one comes every_s later
    clock.now += 10.0
    shown.write("a log line")  # a log line counts as one
    clock.now += 15.0
    shown.update(150)
    assert capsys.readouterr() == ("a log line\n", "")  # stdout only: stderr is for an error's one line
    clock.now += 5.0
    shown.update(200)
    shown.close()
    assert "200/200 step (100%) | 50 s elapsed | ETA 0 s" in capsys.readouterr().out
    assert duration(3725) == "1 h 02 min" and duration(185) == "3 min 05 s" and duration(None) == "?"
    assert eta_seconds(0, 10, 5.0) is None and eta_seconds(5, 10, 5.0) == 5.0


@pytest.mark.slow
def test_a_training_process_stopped_by_sigterm_leaves_within_seconds_of_its_checkpoint(tmp_path, small_data_env):
    """A thread that would keep the interpreter alive for two minutes stands for what a torch process
    can be held by at exit (compile workers, a slow teardown): the process leaves all the same."""
    code = ("import sys, threading, time; threading.Thread(target=time.sleep, args=(120,)).start(); "
            "from glassgpt.cli import main; main()")
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", code, "train", "cpu-baby", *TINY, "max_iters=1000000",
                                "eval_interval=1000", "log_interval=5", "--out", str(run)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        for line in process.stdout:
            if "| loss " in line:  # training is under way
                break
        process.send_signal(15)
        error = next(line for line in process.stderr if line.startswith("glassgpt: error"))  # after progress lines
        said = time.monotonic()
        process.wait(timeout=60)
        left = time.monotonic() - said
    finally:
        process.kill()
    assert "stopped by SIGTERM" in error and "checkpoint saved" in error
    assert process.returncode == 130 and left < 5.0, left
    assert ckpt.load_trainer_state(run)["step"] > 0
