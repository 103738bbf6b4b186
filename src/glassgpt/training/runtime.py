"""The processes of a training run: where each sits in a `torchrun` job, their
RNG states (saved per rank for an exact resume), and SIGINT/SIGTERM turned into
a flag that every rank agrees on, so the loop can save a checkpoint before it stops.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist

from glassgpt.errors import GlassGPTError


@dataclass
class Dist:
    """Where this process sits in a `torchrun` job (rank 0 of 1 without one)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))


def rng_state(device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def gather_rng_states(device: torch.device, dist_info: Dist) -> list[dict]:
    """Every rank's RNG state (dropout masks differ by rank), in rank order."""
    mine = rng_state(device)
    if dist_info.world_size == 1:
        return [mine]
    states: list = [None] * dist_info.world_size
    dist.all_gather_object(states, mine)
    return states


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps, so it can save first."""

    def __init__(self):
        self.signal: int | None = None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._set) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _set(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def stop_requested(stop: StopFlag, dist_info: Dist, device: torch.device) -> bool:
    """Whether to stop now; under DDP every rank stops if any rank got the signal."""
    if dist_info.world_size == 1:
        return stop.signal is not None
    flag = torch.tensor([0 if stop.signal is None else 1], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class Interrupted(GlassGPTError):
    """Training stopped by a signal after saving a checkpoint."""

    exit_code = 130
    leave_now = True  # the command line ends the process at once (glassgpt.cli.main): all is saved
