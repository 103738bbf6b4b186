"""The search behind the README's induction findings ("Watching it form"): a 2x4x64 RoPE model
trained on fresh batches of repeated random segments, printing the standard induction score
(`induction_scores`) at two sequence lengths every 50 steps, so a fixed-offset copy head (high at
one length only) is told apart from an induction head (high at both).

Run: OMP_NUM_THREADS=1 python benchmarks/induction_search.py NAME MODE LR POS STEPS [VOCAB]
MODE: "aligned" (windows of 32 random tokens and their repeat), "LOxHIxCOPIES" (a stream of segments
of LO..HI tokens, each COPIES times, windows anywhere: "8x32x2" is the repeated-random dataset),
or "markov" (segments of 8-32 drawn from a second-order Markov chain, two copies). POS: rope or learned.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from glassgpt.analysis import induction_scores
from glassgpt.bench.timing import stopwatch
from glassgpt.config import GPTConfig
from glassgpt.model import GPT

T, K = 64, 4  # the context, and the successors of each Markov state


def segments(rng, lo: int, hi: int, reps: int, V: int, draw) -> np.ndarray:
    """T + 1 tokens from a stream of segments of lo..hi tokens (`draw(length)`), each repeated `reps`
    times, starting at a random offset."""
    pieces, n = [], 0
    while n < T + 1 + 40:
        s = draw(int(rng.integers(lo, hi + 1)))
        pieces += [s] * reps
        n += len(s) * reps
    seq, off = np.concatenate(pieces), int(rng.integers(0, 40))
    return seq[off:off + T + 1]


def make_batches(mode: str, V: int, B: int):
    rng = np.random.default_rng(0)
    successors = np.random.default_rng(1).integers(0, V, size=(V, V, K))

    def markov(length: int) -> np.ndarray:
        s = [int(rng.integers(V)), int(rng.integers(V))]
        while len(s) < length:
            s.append(int(successors[s[-2], s[-1], rng.integers(K)]))
        return np.array(s)

    def one() -> np.ndarray:
        if mode.startswith("markov"):
            return segments(rng, 8, 32, 2, V, markov)
        if mode == "aligned":
            s = rng.integers(0, V, 32)
            return np.concatenate([s, s, s[:1]])
        lo, hi, reps = map(int, mode.split("x"))
        return segments(rng, lo, hi, reps, V, lambda length: rng.integers(0, V, length))

    def batch():
        xy = torch.tensor(np.stack([one() for _ in range(B)])).long()  # (B, T + 1)
        return xy[:, :-1], xy[:, 1:]
    return batch


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    p.add_argument("mode")
    p.add_argument("lr", type=float)
    p.add_argument("pos", choices=("rope", "learned"))
    p.add_argument("steps", type=int)
    p.add_argument("vocab", type=int, nargs="?", default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--every", type=int, default=50, help="steps between induction checks")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    batch = make_batches(args.mode, args.vocab, args.batch)
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=args.vocab, block_size=T, n_layer=2, n_head=4, n_embd=64, attn_impl="sdpa",
                      pos_encoding=args.pos))
    opt = torch.optim.AdamW(m.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.99))
    elapsed, loss, checks = stopwatch(), None, []
    for step in range(args.steps + 1):
        if step % args.every == 0:
            scores = {n: float(induction_scores(m, seq_len=n, generator=torch.Generator().manual_seed(0)).max())
                      for n in (32, 20)}
            checks.append({"step": step, "loss": loss.item() if loss is not None else None, **scores})
            print(args.name, step, f"loss {loss.item() if loss is not None else 0:.3f} ind32 {scores[32]:.2f} "
                  f"ind20 {scores[20]:.2f} t {elapsed():.0f}", flush=True)
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1, (step + 1) / 50)
        x, y = batch()
        _, loss = m(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    return checks


if __name__ == "__main__":
    main()
