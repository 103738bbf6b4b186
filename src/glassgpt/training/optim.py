"""The optimizers and the schedule: AdamW, the Muon split, warmup + cosine decay.

`configure_optimizer(model, train_config, device)` is what the training loop steps:
AdamW with weight decay on the 2-D weights, or (`optimizer=muon`) Muon (`glassgpt.training.muon`)
on the blocks' 2-D weights and AdamW on the rest, stepped as one (`Optimizers`). `lr_at(step)`
is the learning rate of a step; one schedule drives both optimizers.
"""

from __future__ import annotations

import math

import torch

from glassgpt.config import TrainConfig
from glassgpt.training.muon import Muon


class Optimizers:
    """Several optimizers stepped as one, each over its own parameters: what the loop
    (param_groups, step, zero_grad) and the checkpoint (state_dict) ask of one."""

    def __init__(self, **optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [group for opt in self.optimizers.values() for group in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


def muon_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The blocks' 2-D weights (attention and MLP matmuls): what Muon orthogonalises.
    Embeddings, the head, norms and biases are left to AdamW."""
    return [p for name, p in model.named_parameters()
            if p.requires_grad and p.dim() == 2 and name.startswith("blocks.")]


def configure_optimizer(model: torch.nn.Module, tc: TrainConfig, device: torch.device):
    """AdamW with weight decay on 2-D weights (matmuls, embeddings) only; fused on CUDA and CPU.
    `optimizer=muon`: Muon for the blocks' 2-D weights (its learning rate scaled to match
    AdamW's update size, so one schedule drives both), AdamW for the rest."""
    if tc.optimizer == "muon":
        hidden = muon_params(model)
        hidden_ids = {id(p) for p in hidden}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in hidden_ids]
        muon = Muon(hidden, lr=tc.learning_rate, weight_decay=tc.weight_decay, adjust_lr_fn="match_rms_adamw")
        return Optimizers(adamw=adamw_for(rest, tc, device), muon=muon)
    return adamw_for([p for p in model.parameters() if p.requires_grad], tc, device)


def adamw_for(params: list[torch.nn.Parameter], tc: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for every parameter's update. On a CPU torch's default is a Python loop of about
    # ten ops per parameter, 3.5-3.9x slower on cpu-baby (benchmarks/bench_compile.py); the same update
    # to fp32 rounding.
    return torch.optim.AdamW(groups, lr=tc.learning_rate, betas=(tc.beta1, tc.beta2),
                             fused=device.type in ("cuda", "cpu"))


def lr_at(step: int, tc: TrainConfig) -> float:
    """Linear warmup to learning_rate, then cosine decay to min_lr at decay_iters."""
    if step < tc.warmup_iters:
        return tc.learning_rate * (step + 1) / (tc.warmup_iters + 1)
    if step >= tc.decay_iters:
        return tc.min_lr
    progress = (step - tc.warmup_iters) / max(1, tc.decay_iters - tc.warmup_iters)
    return tc.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (tc.learning_rate - tc.min_lr)
