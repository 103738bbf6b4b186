"""RoPE's rotation alone, forward + backward on cpu-baby's q and k (B 12, 4 heads, T 64, hs 32),
in five forms timed in turns: none (the floor), glassgpt's (q and k stacked, one call),
q and k apart, a roll + addcmul form with signed sin, and a custom autograd.Function whose
backward rotates the gradient by minus the angle. Prints microseconds per layer and the
largest difference from glassgpt's form.

    python benchmarks/rope_variants.py
"""
import sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from glassgpt.model import RotaryEmbedding, apply_rotary
torch.manual_seed(0)
B, nh, T, hs = 12, 4, 64, 32
cos, sin = RotaryEmbedding(hs)(0, T)
cosf, sinf = torch.cat([cos, cos], -1), torch.cat([-sin, sin], -1)
def current(q, k):
    return apply_rotary(torch.cat([q, k], dim=1), cos, sin).chunk(2, dim=1)
def separate(q, k):
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
def rollf(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.addcmul(x * cosf, torch.cat([x2, x1], -1), sinf)
def roll(q, k):
    return rollf(q), rollf(k)
class Rot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return apply_rotary(x, cos, sin)
    @staticmethod
    def backward(ctx, g):
        cos, sin = ctx.saved_tensors
        return apply_rotary(g, cos, -sin), None, None
def func(q, k):
    return Rot.apply(q, cos, sin), Rot.apply(k, cos, sin)
def none(q, k):
    return q, k
variants = dict(none=none, current=current, separate=separate, roll=roll, func=func)
qkv = torch.randn(B, T, 3 * nh * hs, requires_grad=True)
def step(f):
    q, k, v = qkv.split(nh * hs, dim=2)
    q = q.view(B, T, nh, hs).transpose(1, 2); k = k.view(B, T, nh, hs).transpose(1, 2)
    q, k = f(q, k)
    (q.sum() + k.sum() * 2).backward()
times = {n: [] for n in variants}
for _ in range(3):
    for n, f in variants.items(): step(f)
for r in range(30):
    for n, f in variants.items():
        t = time.perf_counter()
        for _ in range(20): step(f)
        times[n].append((time.perf_counter() - t) / 20)
med = {n: sorted(t)[len(t)//2] * 1e6 for n, t in times.items()}
for n in med: print(f"{n:10s} {med[n]:8.1f} us  (+{med[n]-med['none']:.1f} over none)")
# correctness
q = torch.randn(B, nh, T, hs, requires_grad=True); k = torch.randn(B, nh, T, hs, requires_grad=True)
for n in ("roll", "func", "separate"):
    a = current(q, k); b = variants[n](q, k)
    print(n, max((x - y).abs().max().item() for x, y in zip(a, b)))
