"""How many threads torch uses for its CPU work: as many as there are cores free of other work.

Torch's default is one thread per core. Its threads wait for each other at the end of every
operation, so when another program holds one of the cores, every step runs at the pace of the
thread that shares its core: on 2 cores with a second training job running, two threads train
about six times slower than one. So the choice is made from what the machine is doing:

- usable cores: the CPUs this process may run on (`os.sched_getaffinity`), capped by the
  cgroup's CPU quota (`cpu.max`, or cgroup v1's `cpu.cfs_quota_us`) when a container has one;
- busy with other work: the CPU time spent on those cores, less this process's own, over a
  sample (`/proc/stat`); where there is no `/proc/stat`, the 1-minute load average less this
  process's own use;
- threads: the usable cores that are at least half free, and never fewer than one:
  `floor(usable - busy + 0.5)`.

`ThreadChooser` makes the choice, says why in one line ("threads: 1 (2 cores, 1.1 busy with
other work)"), and re-measures every `every_s` seconds while a job runs (`recheck`, called
between steps; torch takes a new thread count at run time). A number (the `threads=` config
key, `--threads`) or `OMP_NUM_THREADS` in the environment fixes the count instead. `fitted_threads`
is the whole thing as a context manager that puts torch's count back at the end.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from glassgpt.errors import UsageError

SPARE = 0.5  # a core counts as free when at most this share of it is busy with other work
RECHECK_S = 10.0  # seconds between two measurements while a job runs
MIN_SAMPLE_S = 0.1  # the first measurement covers at least this long (10 ticks of /proc/stat per core)
MAX_THREADS = 1024
CGROUP = Path("/sys/fs/cgroup")


# ---------------------------------------------------------------- the setting

def parse_threads(value) -> int:
    """A thread setting as a number: 0 is automatic (from 0, "auto" or None), else 1..MAX_THREADS."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("auto", "")):
        return 0
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) > MAX_THREADS:
        raise UsageError(f"threads must be auto (or 0) or a whole number of threads from 1 to {MAX_THREADS}, "
                         f"got {text[:40]!r}")
    return int(text)


def choose_threads(usable: int, busy_elsewhere: float) -> int:
    """The usable cores that are at least half free of other work, at least 1."""
    return max(1, min(usable, math.floor(usable - max(busy_elsewhere, 0.0) + SPARE)))


# ---------------------------------------------------------------- what the machine has

def affinity_cores() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cgroup_quota(root: Path = CGROUP, cgroup_file: Path = Path("/proc/self/cgroup")) -> float | None:
    """The container's CPU quota in CPUs (e.g. 2.0 for "200000 100000"), or None when it has none."""
    try:
        lines = cgroup_file.read_text().splitlines()
    except OSError:
        lines = []
    paths = {}
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path.lstrip("/")
    candidates = []
    if "" in paths:  # cgroup v2: one hierarchy, cpu.max = "QUOTA PERIOD" or "max PERIOD"
        candidates += [(root / paths[""] / "cpu.max", None), (root / "cpu.max", None)]
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):  # cgroup v1
        sub = paths.get("cpu", "")
        candidates += [(root / folder / sub / "cpu.cfs_quota_us", root / folder / sub / "cpu.cfs_period_us")]
    for quota_file, period_file in candidates:
        try:
            if period_file is None:
                quota, period = quota_file.read_text().split()[:2]
            else:
                quota, period = quota_file.read_text().strip(), period_file.read_text().strip()
        except (OSError, ValueError):
            continue
        if quota in ("max", "-1"):
            return None
        try:
            cpus = int(quota) / int(period)
        except (ValueError, ZeroDivisionError):
            continue
        return cpus if cpus > 0 else None
    return None


def usable_cores() -> tuple[int, float | None]:
    """(the cores this process may use, the cgroup quota in CPUs or None)."""
    cores, quota = affinity_cores(), cgroup_quota()
    if quota is not None:
        cores = max(1, min(cores, math.ceil(quota - 1e-9)))
    return cores, quota


def machine_summary() -> dict:
    """What a run records of the machine it trained on: the CPU, its cores, the quota."""
    cores, quota = usable_cores()
    from glassgpt.cpu import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": cores, "cpu_quota": quota}


# ---------------------------------------------------------------- how busy it is

@dataclass(frozen=True)
class CpuSample:
    """A reading of the clocks: busy and total CPU ticks of the usable cores (None without
    /proc/stat), this process's CPU seconds, and the wall clock."""

    busy_ticks: int | None
    total_ticks: int | None
    own_seconds: float
    wall: float


def read_sample(stat: Path = Path("/proc/stat")) -> CpuSample:
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    busy = total = None
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        if cores is not None and int(name[3:]) not in cores:
            continue
        ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
        busy = (busy or 0) + sum(ticks) - ticks[3] - ticks[4]
        total = (total or 0) + sum(ticks)
    times = os.times()
    return CpuSample(busy, total, times.user + times.system, time.monotonic())


def busy_elsewhere(before: CpuSample, after: CpuSample, cores: int) -> float:
    """Cores busy with other work between two samples: all busy time on the usable cores, less
    this process's own. Without /proc/stat: the 1-minute load average less this process's use."""
    wall = max(after.wall - before.wall, 1e-9)
    own = max(after.own_seconds - before.own_seconds, 0.0) / wall  # cores this process used
    if before.total_ticks is not None and after.total_ticks is not None and after.total_ticks > before.total_ticks:
        share = (after.busy_ticks - before.busy_ticks) / (after.total_ticks - before.total_ticks)
        return max(0.0, share * cores - own)
    if hasattr(os, "getloadavg"):
        return max(0.0, os.getloadavg()[0] - own)
    return 0.0


# ---------------------------------------------------------------- the choice

@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str  # why, in a few words: "2 cores, 1.1 busy with other work"
    busy: float | None = None  # cores busy with other work, when measured

    def line(self) -> str:
        return f"threads: {self.threads} ({self.reason})"


class ThreadChooser:
    """The thread count for this process's CPU work, from a setting (0: automatic).

    Construct it when a job starts (the first sample runs while the job sets itself up),
    `start()` before the first step, `recheck()` between steps, `close()` at the end."""

    def __init__(self, setting=0, log: Callable[[str], None] = print, every_s: float | None = None,
                 sample: Callable[[], CpuSample] | None = None, environ=None):
        self.setting, self.log = parse_threads(setting), log
        self.every_s = RECHECK_S if every_s is None else every_s
        self.sample = sample or read_sample
        environ = os.environ if environ is None else environ
        import torch  # here, not at import: the command line parses --threads without torch

        self.env_value = environ.get("OMP_NUM_THREADS", "").strip()
        self.before = torch.get_num_threads()
        self.cores, self.quota = usable_cores()
        self.affinity = affinity_cores()
        self.last = self.sample()
        self.choice: ThreadChoice | None = None
        self.said = False  # whether the first choice has been said
        self.lock = threading.Lock()  # a server's requests measure one at a time

    @property
    def automatic(self) -> bool:
        return self.setting == 0 and not self._env_threads()

    def _env_threads(self) -> int | None:
        try:
            value = int(self.env_value)
        except ValueError:
            return None
        return value if value >= 1 else None

    def _where(self) -> str:
        where = f"{self.cores} core{'s' if self.cores != 1 else ''}"
        return where + (f", a cgroup quota of {self.quota:g} CPUs" if self.quota is not None else "")

    def measure(self) -> ThreadChoice:
        """A new measurement since the last one, and the count it gives (nothing is changed)."""
        if self.setting:
            return ThreadChoice(self.setting, "threads=" + str(self.setting) + " was asked for")
        env = self._env_threads()
        if env is not None:
            return ThreadChoice(env, f"OMP_NUM_THREADS={env} in the environment")
        if self.cores == 1:
            return ThreadChoice(1, "1 core usable")
        wait = MIN_SAMPLE_S - (time.monotonic() - self.last.wall)
        if wait > 0:
            time.sleep(wait)
        now = self.sample()
        # busy over the CPUs this process may run on; under a quota smaller than them, the share of it
        busy = busy_elsewhere(self.last, now, self.affinity) * self.cores / self.affinity
        self.last = now
        what = f"{busy:.1f} busy with other work" if busy >= 0.05 else "idle"
        return ThreadChoice(choose_threads(self.cores, busy), f"{self._where()}, {what}", busy)

    def apply(self, choice: ThreadChoice) -> None:
        import torch

        self.choice = choice
        torch.set_num_threads(choice.threads)

    def start(self, say: bool = True) -> ThreadChoice:
        """Measure, set torch's thread count and say so in the log (with `say=False`, at the first
        `recheck`: a command whose input may still be refused keeps its error the only line)."""
        choice = self.measure()
        self.apply(choice)
        if say:
            self._say()
        return choice

    def _say(self) -> None:
        if not self.said and self.choice is not None:
            self.said = True
            self.log(self.choice.line())

    def recheck(self) -> ThreadChoice | None:
        """Every `every_s` seconds (automatic only): measure again; a new count is set and said
        ("threads: 1 -> 2 (...)"). Returns the new choice, or None when nothing changed."""
        self._say()
        if not self.automatic or self.choice is None or time.monotonic() - self.last.wall < self.every_s:
            return None
        choice = self.measure()
        if choice.threads == self.choice.threads:
            self.choice = choice  # the latest reading, for the metrics
            return None
        self.log(f"threads: {self.choice.threads} -> {choice.threads} ({choice.reason})")
        self.apply(choice)
        return choice

    def for_request(self, sharing: int = 1) -> int:
        """In the thread that computes a server's request: measure again when the last reading is
        older than `every_s`, and set this thread's count (torch keeps one per thread): the free
        cores shared among the `sharing` requests computed at once. Returns the count."""
        import torch

        with self.lock:
            if self.choice is None or (self.automatic and time.monotonic() - self.last.wall >= self.every_s):
                self.choice = self.measure()
            threads = max(1, self.choice.threads // max(1, sharing))
        torch.set_num_threads(threads)
        return threads

    def close(self) -> None:
        import torch

        torch.set_num_threads(self.before)


@contextlib.contextmanager
def fitted_threads(setting=0, log: Callable[[str], None] = print, say: bool = True, **kw):
    """`with fitted_threads(args.threads) as chooser:` a job's torch threads, chosen and said
    (ThreadChooser; `say=False`: at the first `recheck`), and torch's count as it was afterwards."""
    chooser = ThreadChooser(setting, log, **kw)
    try:
        chooser.start(say)
        yield chooser
    finally:
        chooser.close()
