"""`compile=true` on a CPU: the compiled model computes eager's losses, and compiles
once: no second compile for a second call with the same shapes, nor when the trainer switches
to eval mode for its evaluations (a shorter last batch, no_grad) and back, and no graph break at
the idle hook points. One test function, one tiny model: compiling on a CPU is slow."""

import dataclasses

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from glassgpt.bench.workloads import build_model, make_train_step, random_batch, twin
from glassgpt.config import load_run_config
from glassgpt.training import train

# cpu-baby's choices (RoPE, SDPA, nn.LayerNorm, GELU), one small layer
TINY = ["n_layer=1", "n_head=2", "n_embd=16", "block_size=16", "batch_size=2", "device=cpu"]
# Inductor reorders and fuses fp32 sums; over three steps the loss agrees to this (measured ~1e-7)
LOSS_RTOL = 1e-5


def compiles() -> dict:
    """What dynamo did since counters were last cleared: frames compiled, graphs, graph breaks."""
    return {"frames": counters["frames"]["total"], "graphs": counters["stats"]["unique_graphs"],
            "graph_breaks": sum(counters["graph_break"].values())}


@pytest.mark.slow  # inductor compiles C++ kernels: 40 s at load 6 on the 2-core CPU, more cold
def test_compiled_cpu_training_matches_eager_and_compiles_once_through_evals(tmp_path, data_env):
    torch._dynamo.reset()
    counters.clear()
    rc = load_run_config("cpu-baby", [*TINY, "max_iters=4", "eval_interval=2", "eval_iters=1", "log_interval=2",
                                       "compile=true"])
    device = torch.device("cpu")
    eager = build_model(dataclasses.replace(rc.model, dropout=0.0), device)
    compiled = twin(eager)
    step_eager, step_compiled = make_train_step(eager, device), make_train_step(compiled, device, compile=True)
    for seed in range(3):  # three optimizer steps: the weights, and so the losses, must stay together
        x, y = random_batch(rc.model.vocab_size, 2, 16, device, seed=seed)
        a, b = step_eager(x, y).item(), step_compiled(x, y).item()
        assert abs(a - b) <= LOSS_RTOL * abs(a), (seed, a, b)
    assert compiles() == {"frames": 1, "graphs": 1, "graph_breaks": 0}, compiles()  # steps 2 and 3: no recompile

    torch._dynamo.reset()
    counters.clear()
    lines = []
    final = train(rc, tmp_path / "run", log=lines.append)  # evals at steps 0, 2 and 4, then the whole split
    assert final["step"] == 4
    assert compiles() == {"frames": 1, "graphs": 1, "graph_breaks": 0}, compiles()
    assert sum("compile=true on a CPU" in line for line in lines) == 1, lines
