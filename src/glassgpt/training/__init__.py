"""Training: the loop over an explicit state (`train`), the optimizers (AdamW and Muon), fine-tuning
from a run or GPT-2, data parallelism (DDP, FSDP) and its sharded checkpoints, the memory planner,
the metrics log, and the processes of a `torchrun` job (ranks, RNG, stop signals).

    from glassgpt.training import train
    train(run_config, "runs/mine")
"""

from glassgpt.training.flops import mfu, peak_flops
from glassgpt.training.log import MetricsLog, read_metrics
from glassgpt.training.loop import TrainState, accumulate_gradients, apply_gradients, train
from glassgpt.training.muon import Muon, orthogonalise
from glassgpt.training.optim import Optimizers, configure_optimizer, lr_at
from glassgpt.training.plan import MemoryPlan, memory_plan

__all__ = ["MemoryPlan", "MetricsLog", "Muon", "Optimizers", "TrainState", "accumulate_gradients", "apply_gradients",
           "configure_optimizer", "lr_at", "memory_plan", "mfu", "orthogonalise", "peak_flops", "read_metrics", "train"]
