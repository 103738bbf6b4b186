"""Standard errors of the measures: how far a score could move on other windows of the same text.

Every measure over validation windows is a ratio of sums, R = sum_w y_w / sum_w x_w: for window w,
y_w the summed statistic (attention on the previous token over the window's rows, a loss over its
positions) and x_w how many things it summed (1 for a per-window mean, the number of rows or
positions otherwise). Windows are the independent unit (positions inside one window are not), so
the standard error is taken over windows, by the ratio estimator's formula (Cochran 1977, 6.13):

    SE(R)^2 = n / (n - 1) * sum_w (y_w - R x_w)^2 / (sum_w x_w)^2

which is s / sqrt(n) when every x_w is 1. `Mean` keeps the five running sums that formula needs,
so a streamed measure holds no per-window values. Where no formula fits (a ratio of two
differences, such as the share of a loss gap closed), `bootstrap_se` resamples the windows.
With fewer than two windows there is no spread to measure: the error is NaN, and is shown as such.
"""

from __future__ import annotations

import math

import torch

TWO_SE = 2.0  # a score is named only when it clears its threshold by this many standard errors


def per_window_counts(counts: torch.Tensor, totals: torch.Tensor) -> torch.Tensor:
    """Counts (b,) as (b, 1, ...) to broadcast over totals (b, ...); counts with more dimensions
    (one count per window and statistic, such as rows per token class) are taken as they are."""
    return counts.view(-1, *([1] * (totals.dim() - 1))) if counts.dim() == 1 else counts


class Mean:
    """Per-window totals y_w and counts x_w, added up: `value` = sum y / sum x and `se` its standard
    error over the windows. `add(totals (b, ...), counts (b,) or a number per window)`; sums in float64."""

    def __init__(self, keep_windows: bool = False):
        self.n = 0
        self.sum_y = self.sum_x = self.sum_yy = self.sum_xy = self.sum_xx = 0.0
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] | None = [] if keep_windows else None  # for `bootstrap_se`

    def add(self, totals, counts) -> None:
        y = torch.as_tensor(totals).detach().double().cpu()  # (b, ...)
        x = torch.as_tensor(counts).detach().double().cpu()
        x = per_window_counts(x.expand(y.size(0)) if x.dim() == 0 else x, y)  # broadcasts against y
        self.n += y.size(0)
        self.sum_y = self.sum_y + y.sum(dim=0)
        self.sum_x = self.sum_x + x.sum(dim=0)
        self.sum_yy = self.sum_yy + (y * y).sum(dim=0)
        self.sum_xy = self.sum_xy + (x * y).sum(dim=0)
        self.sum_xx = self.sum_xx + (x * x).sum(dim=0)
        if self.kept is not None:
            self.kept.append((y, x))

    def windows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept per-window totals (n, ...) and counts (n, 1...) (made with `keep_windows=True`)."""
        if self.kept is None:
            raise ValueError("this Mean keeps no windows: make it with keep_windows=True")
        return torch.cat([y for y, _ in self.kept]), torch.cat([x for _, x in self.kept])

    @property
    def count(self) -> torch.Tensor:
        """The summed counts (sum x), shaped to broadcast against `value`."""
        return torch.as_tensor(self.sum_x).float()

    @property
    def value(self) -> torch.Tensor:
        return (torch.as_tensor(self.sum_y) / torch.as_tensor(self.sum_x).clamp(min=1.0)).float()

    @property
    def se(self) -> torch.Tensor:
        sum_x = torch.as_tensor(self.sum_x).clamp(min=1.0)
        r = torch.as_tensor(self.sum_y) / sum_x
        if self.n < 2:
            return torch.full_like(r, float("nan")).float()
        spread = (self.sum_yy - 2 * r * self.sum_xy + r * r * self.sum_xx).clamp(min=0.0)  # sum (y - R x)^2
        return (torch.sqrt(self.n / (self.n - 1) * spread) / sum_x).float()


def ratio_and_se(totals: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`Mean`'s value and standard error of per-window totals (n, ...) and counts (n,) held in memory."""
    mean = Mean()
    mean.add(totals, counts)
    return mean.value, mean.se


def difference_and_se(totals_a: torch.Tensor, counts_a: torch.Tensor, totals_b: torch.Tensor,
                      counts_b: torch.Tensor) -> tuple[float, float]:
    """R_a - R_b of two ratios over the same n windows (totals and counts (n,) each), and its standard
    error by linearisation: window w moves the difference by z_w = (y_aw - R_a x_aw) / mean x_a -
    (y_bw - R_b x_bw) / mean x_b, so SE^2 = sum z_w^2 / (n (n - 1)). The windows pair the two ratios
    (a window of hard text is hard early and late), which this keeps and two separate errors would not."""
    ya, xa, yb, xb = (t.double().flatten() for t in (totals_a, counts_a, totals_b, counts_b))
    n = ya.numel()
    ra, rb = ya.sum() / xa.sum().clamp(min=1), yb.sum() / xb.sum().clamp(min=1)
    if n < 2:
        return float(ra - rb), float("nan")
    z = (ya - ra * xa) / xa.mean().clamp(min=1e-12) - (yb - rb * xb) / xb.mean().clamp(min=1e-12)
    return float(ra - rb), float(torch.sqrt((z * z).sum() / (n * (n - 1))))


def paired_ratio_and_se(numerator: torch.Tensor, denominator: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mean(numerator) / mean(denominator) over the same n sequences (numerator (..., n), denominator
    (n,)), and its standard error by linearisation: z = (num - R den) / mean(den), SE^2 = sum z^2 /
    (n (n - 1)). NaN with one sequence, or where the denominator's mean is 0."""
    num, den = numerator.double(), denominator.double()
    n = den.numel()
    mean_den = den.mean()
    ratio = num.mean(dim=-1) / mean_den
    if n < 2:
        return ratio.float(), torch.full_like(ratio, float("nan")).float()
    z = (num - ratio[..., None] * den) / mean_den
    return ratio.float(), torch.sqrt((z * z).sum(dim=-1) / (n * (n - 1))).float()


def bootstrap_se(statistic, totals: torch.Tensor, counts: torch.Tensor, resamples: int = 200,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """The standard error of `statistic(value)` (any function of the ratio `sum y / sum x`), by
    resampling the n windows with replacement: totals (n, ...), counts (n,) -> the spread of the
    statistic over `resamples` draws. NaN with fewer than two windows."""
    n = totals.size(0)
    base = statistic(ratio_and_se(totals, counts)[0])
    if n < 2:
        return torch.full_like(torch.as_tensor(base).float(), float("nan"))
    draws = torch.randint(0, n, (resamples, n), generator=generator)  # (R, n) windows
    values = []
    for pick in draws:
        ratio = totals[pick].double().sum(dim=0) / per_window_counts(counts[pick].double(), totals).sum(dim=0).clamp(min=1)
        values.append(torch.as_tensor(statistic(ratio.float())).float())
    return torch.stack(values).std(dim=0)


def clears(value, se, threshold: float, above: bool = True) -> torch.Tensor:
    """Whether each value clears `threshold` by TWO_SE standard errors (from above, or below with
    `above=False`); a NaN error (one window) counts as zero: the point estimate decides."""
    value, se = torch.as_tensor(value).float(), torch.as_tensor(se).float()
    margin = TWO_SE * torch.nan_to_num(se, nan=0.0)
    return value - margin >= threshold if above else value + margin <= threshold


def plus_minus(value: float, se: float | None, fmt: str = ".2f", percent: bool = False) -> str:
    """'0.45 ± 0.02', or '61% ± 3%' with `percent`; the value alone when the error is unknown."""
    value = float(value)
    if percent:
        text = f"{value:.0%}"
        if se is None or math.isnan(float(se)):
            return text
        return f"{text} ± {float(se):.1%}" if float(se) < 0.01 else f"{text} ± {float(se):.0%}"
    text = format(value, fmt)
    if se is None or math.isnan(float(se)):
        return text
    return f"{text} ± {_error(float(se), fmt)}"


def _error(se: float, fmt: str) -> str:
    """An error in `fmt`'s decimals, or with more where those would show it as 0 (one significant digit)."""
    decimals = int(fmt.rstrip("f").split(".")[-1] or 0)
    if se > 0 and se < 10 ** -decimals:
        decimals = min(6, -math.floor(math.log10(se)))
    return format(se, f".{decimals}f")
