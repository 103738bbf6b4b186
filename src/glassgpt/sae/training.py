"""Training a sparse autoencoder on batches of activations.

The loss is the reconstruction error as a fraction of the batch's variance (the batch's
fraction of variance unexplained), plus the auxiliary loss of Gao et al. for dead
features: a feature that has not fired for `dead_tokens` tokens is dead, and the
`aux_k` largest pre-activations among the dead ones are asked to reconstruct what the
live features missed (scaled by `aux_coef`). It gives the dead a gradient, and revives
most of them. After each step the decoder's rows are put back to unit norm.

`train_sae(batches, sae)` is the whole loop for a notebook; `SAETrainer` is its state
(the optimizer, each feature's tokens since it last fired, the step), saved and loaded
for an exact resume.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch

from glassgpt.errors import RunError, UsageError
from glassgpt.stop import check_stop
from glassgpt.sae.model import SAE


@dataclass
class SAETrainConfig:
    steps: int
    lr: float = 1e-3
    warmup_steps: int = 50
    decay_fraction: float = 0.2  # the learning rate falls linearly to 0 over the last fifth
    grad_clip: float = 1.0

    def __post_init__(self):
        if self.steps < 1:
            raise UsageError(f"the token budget gives {self.steps} steps: ask for more --tokens")
        if not self.lr > 0:
            raise UsageError(f"--lr must be positive, got {self.lr}")

    def lr_at(self, step: int) -> float:
        warm = min(1.0, (step + 1) / max(self.warmup_steps, 1))
        decay_start = self.steps * (1 - self.decay_fraction)
        decay = 1.0 if step < decay_start else max(0.0, (self.steps - step) / max(self.steps - decay_start, 1))
        return self.lr * warm * decay

    def to_dict(self) -> dict:
        return asdict(self)


def fraction_unexplained(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """FVU: the squared error over the squared distance from the batch's mean."""
    return (x - recon).pow(2).sum() / (x - x.mean(dim=0)).pow(2).sum().clamp_min(1e-12)


class SAETrainer:
    def __init__(self, sae: SAE, config: SAETrainConfig):
        self.sae, self.config = sae, config
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=config.lr, betas=(0.9, 0.999), eps=6.25e-10)
        self.tokens_since_fired = torch.zeros(sae.config.width, dtype=torch.long)
        self.step = 0

    def dead(self) -> torch.Tensor:
        """(width,) True for the features that have not fired for `dead_tokens` tokens."""
        return self.tokens_since_fired > self.sae.config.dead_tokens

    def aux_loss(self, pre: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
        """The dead features' largest pre-activations asked to reconstruct the live features' error."""
        dead = self.dead().to(pre.device)
        n_dead = int(dead.sum())
        if n_dead == 0:
            return pre.new_zeros(())
        k = min(self.sae.config.aux_features, n_dead)
        top = (pre * dead).topk(k, dim=-1)  # (N, k): only dead features are non-zero
        aux_f = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
        return fraction_unexplained(error, aux_f @ self.sae.W_dec)

    def train_step(self, x: torch.Tensor) -> dict:
        sae, cfg = self.sae, self.config
        sae.train()
        if self.step == 0:
            with torch.no_grad():
                sae.b_dec.copy_(x.mean(dim=0))  # start from the data's centre
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr_at(self.step)
        pre = sae.pre_activations(x)  # (N, width)
        f = sae.sparsify(pre)
        recon = sae.decode(f)
        fvu = fraction_unexplained(x, recon)
        aux = self.aux_loss(pre, (x - recon).detach())
        loss = fvu + sae.config.aux_coef * aux
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_gradient()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
        self.optimizer.step()
        sae.normalize_decoder()
        fired = (f > 0).any(dim=0).cpu()
        self.tokens_since_fired += x.size(0)
        self.tokens_since_fired[fired] = 0
        self.step += 1
        return {"step": self.step, "fvu": float(fvu.detach()), "aux_loss": float(aux.detach()), "l0": float((f > 0).sum(1).float().mean()),
                "dead": int(self.dead().sum()), "lr": cfg.lr_at(self.step - 1)}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "tokens_since_fired": self.tokens_since_fired,
                "step": self.step, "threshold": self.sae.threshold.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved state, checked first against this trainer: a step outside
        0..steps (a negative one would train for as many steps again), or tensors of another
        width, are a ValueError naming the field; nothing is changed then."""
        step, fired, threshold = state["step"], state["tokens_since_fired"], state["threshold"]
        if type(step) is not int or not 0 <= step <= self.config.steps:
            raise ValueError(f"its step {str(step)[:30]} is not one of 0..{self.config.steps}")
        width = self.sae.config.width
        if not isinstance(fired, torch.Tensor) or fired.shape != (width,) or fired.dtype != torch.long:
            raise ValueError(f"its tokens_since_fired is not {width} whole numbers, one per feature")
        if not isinstance(threshold, torch.Tensor) or threshold.numel() != 1 or not torch.isfinite(threshold).all():
            raise ValueError("its threshold is not one finite number")
        self.optimizer.load_state_dict(state["optimizer"])
        self.tokens_since_fired = fired.clone()
        self.step = step
        self.sae.threshold.copy_(threshold.reshape(()))


def train_sae(batches: Iterable[torch.Tensor], sae: SAE, config: SAETrainConfig,
              on_step: Callable[[dict], None] | None = None, trainer: SAETrainer | None = None) -> SAETrainer:
    """Train `sae` on batches of activations (N, d_in) until `config.steps` (or the batches run
    out); `on_step(metrics)` hears each step. Returns the trainer (its state, for a resume)."""
    trainer = trainer or SAETrainer(sae, config)
    for x in batches:
        if trainer.step >= config.steps:
            break
        check_stop()  # a stop request ends training between two steps
        metrics = trainer.train_step(x)
        if not math.isfinite(metrics["fvu"]):
            raise RunError("the SAE's loss is not finite: lower --lr")
        if on_step is not None:
            on_step(metrics)
    return trainer
