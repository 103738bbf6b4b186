"""RoPE's rotation alone, forward + backward on cpu-baby's q and k (B 12, 4 heads, T 64, hs 32),
in five forms timed in turns: none (the floor), glassgpt's (`apply_rotary` on q and on k:
x * cos + partner * signed sin, three passes), q and k stacked into one tensor first, the
half-table form (x1 cos - x2 sin, x2 cos + x1 sin: five passes), and a custom
autograd.Function whose backward rotates the gradient by minus the angle. Prints
microseconds per layer and the largest difference from glassgpt's form. The rotation's
share of a whole train step is in benchmarks/bench_compile.py ("rope / learned").

    python benchmarks/rope_variants.py [--repeats 30] [--inner 20]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from glassgpt.bench.timing import measure
from glassgpt.model import RotaryEmbedding, apply_rotary


class Rot(torch.autograd.Function):
    """The rotation with a hand-written backward: the gradient rotated by minus the angle."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return apply_rotary(x, cos, sin)

    @staticmethod
    def backward(ctx, g):
        cos, sin = ctx.saved_tensors
        return apply_rotary(g, cos, -sin), None, None


def variants(cos: torch.Tensor, sin: torch.Tensor) -> dict:
    half = cos.size(-1) // 2
    cos_h, sin_h = cos[..., :half], sin[..., half:]  # the half tables: cos and (unsigned) sin

    def halves(x):
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos_h - x2 * sin_h, x1 * sin_h + x2 * cos_h], dim=-1)

    return {
        "none": lambda q, k: (q, k),
        "glassgpt": lambda q, k: (apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)),
        "stacked": lambda q, k: apply_rotary(torch.cat([q, k], dim=1), cos, sin).chunk(2, dim=1),
        "halves": lambda q, k: (halves(q), halves(k)),
        "func": lambda q, k: (Rot.apply(q, cos, sin), Rot.apply(k, cos, sin)),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30, help="timed rounds, the variants in turns")
    p.add_argument("--inner", type=int, default=20, help="calls per timed sample")
    p.add_argument("--batch", type=int, default=12)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    B, nh, T, hs = args.batch, 4, 64, 32
    cos, sin = RotaryEmbedding(hs, max_positions=T)(0, T)
    forms = variants(cos, sin)
    qkv = torch.randn(B, T, 3 * nh * hs, requires_grad=True)

    def step(f):
        q, k, _ = qkv.split(nh * hs, dim=2)
        q, k = q.view(B, T, nh, hs).transpose(1, 2), k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        q, k = f(q, k)
        (q.sum() + k.sum() * 2).backward()

    times = measure({n: (lambda f=f: step(f)) for n, f in forms.items()}, torch.device("cpu"),
                    repeats=args.repeats, warmup=3, inner=args.inner)
    med = {n: statistics.median(t) * 1e6 for n, t in times.items()}
    for n in med:
        print(f"{n:10s} {med[n]:8.1f} us  (+{med[n] - med['none']:.1f} over none)")
    q = torch.randn(B, nh, T, hs, requires_grad=True)
    k = torch.randn(B, nh, T, hs, requires_grad=True)
    differences = {}
    for n in ("stacked", "halves", "func"):  # correctness against glassgpt's form
        a, b = forms["glassgpt"](q, k), forms[n](q, k)
        differences[n] = max((x - y).abs().max().item() for x, y in zip(a, b))
        print(n, differences[n])
    return {"median_us": med, "max_difference": differences}


if __name__ == "__main__":
    main()
