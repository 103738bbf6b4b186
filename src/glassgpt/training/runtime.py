"""The processes of a training run: where each sits in a `torchrun` job (its variables
checked before any rendezvous, which has a timeout), and their RNG states (saved per rank
for an exact resume). Stop requests, which every rank agrees on: `glassgpt.stop`.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from glassgpt.errors import RunError, UsageError, first_line

# How long a rank waits for the others to join (and, after, for any one collective): a
# rank whose peers never come gives up with one line instead of waiting forever.
RENDEZVOUS_TIMEOUT = datetime.timedelta(minutes=10)


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
        """This process's place, from the variables `torchrun` sets (none: one process). Each is
        checked to be a whole number, the ranks inside the world: a UsageError naming the variable."""
        world = _env_int("WORLD_SIZE", "1")
        if world < 1:
            raise UsageError(f"WORLD_SIZE={world} is not a number of processes: start the job with torchrun")
        if world == 1:
            return cls()
        rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
        local_world = _env_int("LOCAL_WORLD_SIZE", str(world))
        if not 0 <= rank < world:
            raise UsageError(f"RANK={rank} is outside the world of WORLD_SIZE={world} processes (0..{world - 1}): "
                             "start the job with torchrun")
        if not 0 <= local_rank < min(local_world, world):
            raise UsageError(f"LOCAL_RANK={local_rank} is outside the {min(local_world, world)} processes of this "
                             "machine: start the job with torchrun")
        return cls(rank, local_rank, world)


def _env_int(name: str, default: str | None = None) -> int:
    text = os.environ.get(name, default)
    if text is None:
        raise UsageError(f"WORLD_SIZE is set but {name} is not: start the job with torchrun, or unset WORLD_SIZE")
    try:
        return int(text.strip())
    except ValueError:
        raise UsageError(f"{name}={text[:40]!r} is not a whole number: start the job with torchrun") from None


def init_process_group(backend: str) -> None:
    """Join the job's process group (the `env://` rendezvous torchrun sets up), refusing in one
    line what cannot meet: no MASTER_ADDR/MASTER_PORT, or peers that do not come within
    RENDEZVOUS_TIMEOUT. Call after `Dist.from_env`, which has checked the ranks."""
    port = os.environ.get("MASTER_PORT", "")
    if not os.environ.get("MASTER_ADDR") or not port.strip().isdigit() or not 0 < int(port) < 65536:
        raise UsageError("MASTER_ADDR and MASTER_PORT (a port from 1 to 65535) must name the rendezvous: "
                         "start the job with torchrun")
    try:
        dist.init_process_group(backend=backend, timeout=RENDEZVOUS_TIMEOUT)
    except (RuntimeError, ValueError) as e:  # DistStoreError and the like: a timeout, an unreachable address
        raise RunError(f"the processes of this job did not meet ({first_line(e)[:200]}): check that every rank "
                       "was started, with the same MASTER_ADDR and MASTER_PORT") from None


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
