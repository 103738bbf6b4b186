"""Threads that fit the machine: the count from the free cores (affinity, cgroup quota, what else
is busy), said in the log, checked again while training, fixed by a setting or OMP_NUM_THREADS."""

import time

import pytest
import torch

from glassgpt import threads as th
from glassgpt.config import TrainConfig, load_run_config
from glassgpt.errors import UsageError
from glassgpt.training.log import read_metrics
from glassgpt.training.loop import train

from conftest import TINY, run_cli


@pytest.mark.parametrize("usable, busy, expected", [
    (2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.1, 1), (2, 2.0, 1), (2, 5.0, 1), (1, 0.0, 1), (16, 3.2, 13),
    (4, -0.1, 4),
])
def test_the_count_is_the_usable_cores_at_least_half_free(usable, busy, expected):
    assert th.choose_threads(usable, busy) == expected


def test_the_cgroup_quota_is_read_from_cgroup_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    (v2 / "job").mkdir(parents=True)
    (v2 / "job" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "cg2").write_text("0::/job\n")
    assert th.cgroup_quota(v2, tmp_path / "cg2") == 1.5
    (v2 / "job" / "cpu.max").write_text("max 100000\n")
    assert th.cgroup_quota(v2, tmp_path / "cg2") is None
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct" / "box").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "box" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu,cpuacct" / "box" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cg1").write_text("4:memory:/x\n3:cpu,cpuacct:/box\n")
    assert th.cgroup_quota(v1, tmp_path / "cg1") == 2.0
    (v1 / "cpu,cpuacct" / "box" / "cpu.cfs_quota_us").write_text("-1\n")
    assert th.cgroup_quota(v1, tmp_path / "cg1") is None
    assert th.cgroup_quota(tmp_path / "nothing", tmp_path / "missing") is None


def test_busy_elsewhere_is_all_busy_time_less_this_process_own(tmp_path):
    before = th.CpuSample(busy_ticks=1000, total_ticks=2000, own_seconds=5.0, wall=10.0)
    after = th.CpuSample(busy_ticks=1150, total_ticks=2200, own_seconds=5.4, wall=11.0)  # 75% of 2 cores busy
    assert th.busy_elsewhere(before, after, 2) == pytest.approx(2 * 0.75 - 0.4)
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 10 0 5 80 5 0 0 0 0 0\ncpu1 20 0 0 80 0 0 0 0 0 0\nintr 1\n")
    sample = th.read_sample(stat)
    allowed = th.os.sched_getaffinity(0) if hasattr(th.os, "sched_getaffinity") else {0, 1}
    assert sample.total_ticks == sum(t for c, t in ((0, 100), (1, 100)) if c in allowed)
    assert sample.busy_ticks == sum(b for c, b in ((0, 15), (1, 20)) if c in allowed)


class Machine:
    """Scripted readings of /proc/stat: `busy[k]` cores of 2 busy with other work at the k-th reading."""

    def __init__(self, busy: list[float]):
        self.busy, self.calls, self.ticks, self.total = busy, 0, 0, 0

    def __call__(self) -> th.CpuSample:
        cores = self.busy[min(self.calls, len(self.busy) - 1)]
        self.calls += 1
        self.ticks += round(100 * cores)
        self.total += 200
        return th.CpuSample(self.ticks, self.total, 0.0, time.monotonic())


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(th, "usable_cores", lambda: (2, None))
    monkeypatch.setattr(th, "affinity_cores", lambda: 2)
    monkeypatch.setattr(th, "MIN_SAMPLE_S", 0.0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_the_chooser_says_why_rechecks_and_puts_torch_back(two_cores):
    said = []
    before = torch.get_num_threads()
    chooser = th.ThreadChooser("auto", said.append, every_s=0.0, sample=Machine([0, 1.1, 0.0]))
    assert chooser.start().threads == 1 and torch.get_num_threads() == 1
    assert said == ["threads: 1 (2 cores, 1.1 busy with other work)"]
    assert chooser.recheck().threads == 2 and torch.get_num_threads() == 2
    assert said[-1] == "threads: 1 -> 2 (2 cores, idle)"
    chooser.close()
    assert torch.get_num_threads() == before


def test_a_number_or_omp_num_threads_fixes_the_count(two_cores):
    said = []
    fixed = th.ThreadChooser(3, said.append, every_s=0.0, sample=Machine([0, 2.0]))
    assert fixed.start().threads == 3 and fixed.recheck() is None
    env = th.ThreadChooser(0, said.append, every_s=0.0, sample=Machine([0, 2.0]), environ={"OMP_NUM_THREADS": "2"})
    assert env.start().threads == 2
    assert said == ["threads: 3 (threads=3 was asked for)", "threads: 2 (OMP_NUM_THREADS=2 in the environment)"]
    fixed.close()
    env.close()


@pytest.mark.parametrize("value, fragment", [("-1", "auto"), ("abc", "auto"), ("2000", "1024"), ("1.5", "whole")])
def test_a_bad_thread_setting_is_one_sentence(value, fragment):
    with pytest.raises(UsageError, match=fragment):
        th.parse_threads(value)
    result = run_cli("eval", "nowhere", "--threads", value)
    assert result.returncode == 2 and "--threads" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_config_key_takes_auto_or_a_number():
    assert TrainConfig(threads="auto").threads == 0 and TrainConfig(threads=2).threads == 2
    assert load_run_config("cpu-baby", ["threads=auto"]).train.threads == 0
    with pytest.raises(UsageError, match="threads"):
        TrainConfig(threads=-1)
    with pytest.raises(UsageError, match="threads"):
        TrainConfig(threads="many")


def test_training_chooses_says_rechecks_records_and_puts_torch_back(two_cores, monkeypatch, tmp_path, small_data_env):
    machine = Machine([0.0, 1.4, 1.4, 0.0])  # busy when training starts, then the other job ends
    monkeypatch.setattr(th, "read_sample", machine)
    monkeypatch.setattr(th, "RECHECK_S", 0.0)
    before = torch.get_num_threads()
    lines = []
    rc = load_run_config("cpu-baby", [*TINY, "max_iters=6", "log_interval=1", "eval_interval=100"])
    train(rc, tmp_path / "run", log=lines.append)
    assert "threads: 1 (2 cores, 1.4 busy with other work)" in lines
    assert "threads: 1 -> 2 (2 cores, idle)" in lines
    rows = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "train"]
    assert rows[0]["threads"] == 1 and rows[-1]["threads"] == 2 and rows[-1]["load_average"] is not None
    final = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "final"][0]
    assert final["threads"] == 2 and final["usable_cores"] == 2 and final["cpu"]
    assert torch.get_num_threads() == before
