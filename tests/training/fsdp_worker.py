"""Run under `torchrun` by tests/training/test_fsdp.py: several training runs in one launch (starting
torchrun costs seconds, so the tests start it as few times as they can), then what each rank
holds of one sharded step.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/training/fsdp_worker.py JOBS.json

JOBS.json: {"runs": [{"out": DIR, "args": [key=value ...], "resume": false, "env": {NAME: VALUE}}, ...],
            "measure": {"out": FILE.json, "args": [key=value ...]}}
Every rank runs every job in order through glassgpt's public API (glassgpt.training.loop.train, and for
the measurement glassgpt.training.parallel, glassgpt.training.optim and glassgpt.training.loop's parts); one process group
serves them all.
"""

import json
import os
import sys

import torch
import torch.distributed as dist

from glassgpt.training import parallel
from glassgpt.config import load_run_config
from glassgpt.model import GPT
from glassgpt.training.optim import configure_optimizer
from glassgpt.training.runtime import Dist
from glassgpt.training.loop import accumulate_gradients, apply_gradients, train


def measure(spec: dict, dist_info: Dist) -> None:
    """Bytes this rank holds of one sharded step, and whether the gradients waited for the last
    micro-step (no reduce-scatter, so no sharded gradient, before it)."""
    rc = load_run_config("cpu-baby", spec["args"])
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = GPT(rc.model)
    wrapped = parallel.wrap(model, rc.train, device, dist_info)
    optimizer = configure_optimizer(model, rc.train, device)
    x = torch.randint(0, rc.model.vocab_size, (rc.train.batch_size, rc.model.block_size))
    with parallel.gradient_sync(wrapped, sync=False):  # an early micro-step
        wrapped(x, x)[1].backward()
    waited = all(p.grad is None for p in model.parameters())
    loss = accumulate_gradients(wrapped, [(x, x)], device)  # the last micro-step: synced
    after_backward = parallel.local_bytes(model, optimizer)
    apply_gradients(model, optimizer, loss, rc.train.grad_clip)
    after_step = parallel.local_bytes(model, optimizer)
    held = {"parameters": after_step["parameters"], "gradients": after_backward["gradients"],
            "optimizer": after_step["optimizer"], "waited_for_the_last_micro_step": waited}
    rows: list = [None] * dist_info.world_size
    dist.all_gather_object(rows, held)
    if dist_info.is_main:
        with open(spec["out"], "w") as f:
            json.dump(rows, f)


def main() -> None:
    jobs = json.loads(open(sys.argv[1]).read())
    dist.init_process_group("gloo")  # train() leaves a group it did not start alone
    dist_info = Dist.from_env()
    try:
        for run in jobs.get("runs", []):
            os.environ.update(run.get("env", {}))  # e.g. GLASSGPT_TEST_KILL, for the last run
            train(load_run_config("cpu-baby", run["args"]), run["out"], resume=run.get("resume", False),
                  log=lambda line: None)
        if "measure" in jobs:
            measure(jobs["measure"], dist_info)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
