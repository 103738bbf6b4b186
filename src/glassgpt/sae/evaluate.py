"""How good an SAE is, on windows the training never saw (the validation split).

- L0: features active per token, on average.
- FVU: the fraction of the activation's variance the reconstruction leaves unexplained.
- CE loss recovered: the model's loss with the reconstruction spliced in where the
  activation was, against the loss with that activation zeroed and the clean loss:
  (zero - SAE) / (zero - clean). 1 is perfect, 0 no better than zero-ablation.
- Dead features (never active on these tokens) and dense ones (active on more than
  `DENSE` of them).
"""

from __future__ import annotations

import torch

from glassgpt.sae.activations import from_rows, to_rows
from glassgpt.sae.model import SAE
from glassgpt.sae.training import fraction_unexplained

DENSE = 0.1  # a feature active on more than a tenth of the tokens explains little on its own


def splice(sae: SAE, head: int | None = None):
    """A hook function that replaces the activation by the SAE's reconstruction of it."""
    def replace(act: torch.Tensor, hook) -> torch.Tensor:
        recon, _ = sae(to_rows(act, head).float())
        return from_rows(recon, act, head)
    return replace


def zero_ablate(head: int | None = None):
    def replace(act: torch.Tensor, hook) -> torch.Tensor:
        return from_rows(torch.zeros_like(to_rows(act, head)), act, head)
    return replace


@torch.no_grad()
def evaluate_sae(model, sae: SAE, hook: str, windows: torch.Tensor, targets: torch.Tensor,
                 head: int | None = None, batch_size: int = 16) -> dict:
    """The figures above for `sae` at `hook`, on windows (B, T) with their targets (B, T)."""
    sae.eval()
    totals = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    error = active = squares = 0.0
    total = torch.zeros(sae.config.d_in, dtype=torch.float64)
    fired = torch.zeros(sae.config.width)
    rows_seen = 0
    for i in range(0, windows.size(0), batch_size):
        x, y = windows[i: i + batch_size], targets[i: i + batch_size]
        _, cache = model.run_with_cache(x, names=[hook])
        rows = to_rows(cache[hook], head).float()  # (N, d)
        recon, f = sae(rows)
        error += float((rows - recon).pow(2).sum())
        squares += float(rows.double().pow(2).sum())
        total += rows.double().sum(dim=0).cpu()
        active += float((f > 0).sum())
        fired += (f > 0).sum(dim=0).float().cpu()
        rows_seen += rows.size(0)
        n = x.size(0)
        totals["clean"] += float(model(x, y)[1]) * n
        totals["sae"] += float(model.run_with_hooks(x, [(hook, splice(sae, head))], targets=y)[1]) * n
        totals["zero"] += float(model.run_with_hooks(x, [(hook, zero_ablate(head))], targets=y)[1]) * n
    losses = {k: v / windows.size(0) for k, v in totals.items()}
    density = fired / max(rows_seen, 1)
    variance = squares - float(total.pow(2).sum()) / max(rows_seen, 1)  # sum of |x - mean|^2 over all rows
    gap = losses["zero"] - losses["clean"]
    return {
        "tokens": rows_seen, "l0": active / max(rows_seen, 1), "fvu": error / max(variance, 1e-12),
        "ce_loss_clean": losses["clean"], "ce_loss_sae": losses["sae"], "ce_loss_zero": losses["zero"],
        "ce_loss_recovered": (losses["zero"] - losses["sae"]) / gap if gap > 0 else float("nan"),
        "dead_features": int((density == 0).sum()), "dense_features": int((density > DENSE).sum()),
        "width": sae.config.width,
    }


__all__ = ["evaluate_sae", "fraction_unexplained", "splice", "zero_ablate", "DENSE"]
