"""The search behind the README's induction findings ("Watching it form"): a 2x4x64 RoPE model
trained on fresh batches of repeated random segments, printing the standard induction score
(`induction_scores`) at two sequence lengths every 50 steps, so a fixed-offset copy head (high at
one length only) is told apart from an induction head (high at both).

Run: PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/induction_search.py NAME MODE LR POS STEPS [VOCAB]
MODE: "aligned" (windows of 32 random tokens and their repeat), "LOxHIxCOPIES" (a stream of segments
of LO..HI tokens, each COPIES times, windows anywhere: "8x32x2" is the repeated-random dataset),
or "markov" (segments of 8-32 drawn from a second-order Markov chain, two copies). POS: rope or learned.
"""
import sys, time, torch, numpy as np
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from glassgpt.config import GPTConfig
from glassgpt.model import GPT
from glassgpt.analysis.measures import induction_scores
torch.set_num_threads(1)
name = sys.argv[1]; mode = sys.argv[2]; lr = float(sys.argv[3]); pos = sys.argv[4]; steps = int(sys.argv[5])
V, T, B = int(sys.argv[6]) if len(sys.argv) > 6 else 256, 64, 32
rng = np.random.default_rng(0)
K = 4
SUCC = np.random.default_rng(1).integers(0, V, size=(V, V, K))
def batch():
    xs = []
    for _ in range(B):
        if mode.startswith("markov"):
            lo, hi, reps = 8, 32, 2
            pieces = []; n = 0
            while n < T + 1 + 40:
                L = rng.integers(lo, hi + 1); s = [int(rng.integers(V)), int(rng.integers(V))]
                while len(s) < L: s.append(int(SUCC[s[-2], s[-1], rng.integers(K)]))
                s = np.array(s); pieces += [s] * reps; n += len(s) * reps
            seq = np.concatenate(pieces); off = rng.integers(0, 40); seq = seq[off:off + T + 1]
        elif mode == "aligned":
            s = rng.integers(0, V, 32); seq = np.concatenate([s, s, s[:1]])
        else:
            lo, hi, reps = map(int, mode.split("x"))
            pieces = []; n = 0
            while n < T + 1 + 40:
                s = rng.integers(0, V, rng.integers(lo, hi + 1)); pieces += [s] * reps; n += len(s) * reps
            seq = np.concatenate(pieces); off = rng.integers(0, 40); seq = seq[off:off + T + 1]
        xs.append(seq)
    xy = torch.tensor(np.stack(xs)).long()
    return xy[:, :-1], xy[:, 1:]
torch.manual_seed(0)
m = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=2, n_head=4, n_embd=64, attn_impl="sdpa", pos_encoding=pos))
opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.99))
t0 = time.time()
for step in range(steps + 1):
    if step % 50 == 0:
        sc = induction_scores(m, seq_len=32, generator=torch.Generator().manual_seed(0))
        sc20 = induction_scores(m, seq_len=20, generator=torch.Generator().manual_seed(0))
        print(name, step, f"loss {loss.item() if step else 0:.3f} ind32 {sc.max():.2f} ind20 {sc20.max():.2f} t {time.time()-t0:.0f}", flush=True)
    for g in opt.param_groups: g["lr"] = lr * min(1, (step + 1) / 50)
    x, y = batch(); _, loss = m(x, y); loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); opt.zero_grad()
