"""A 2-layer attention-only GPT with an induction circuit built by hand, so that the tests know
the answer: head L0.H0 attends to the previous token and writes its identity; head L1.H0 is an
induction head (its key reads what L0.H0 wrote: K-composition) and copies the token it finds
into the logits. The other heads are zero, plus `noise` (every weight), which gives every edge
of the graph some small effect."""

import torch

from glassgpt.config import GPTConfig
from glassgpt.model import GPT


def handmade_induction_model(vocab_size: int = 12, block_size: int = 16, n_head: int = 4, noise: float = 0.02,
                             seed: int = 0, **config) -> GPT:
    V, T = vocab_size, block_size
    # the residual stream: TOK (V) | POS (T) | PREV (V) | COPY (V), each written as +x and -x (mean 0,
    # so the LayerNorms only scale)
    width = V + T + 2 * V
    C = 2 * width
    hs = C // n_head
    assert C % n_head == 0 and hs >= max(V, T), "the heads must be wide enough for one-hot tokens and positions"
    cfg = GPTConfig(vocab_size=V, block_size=T, n_layer=2, n_head=n_head, n_embd=C, attn_only=True, bias=True,
                    pos_encoding="learned", tie_weights=False, dropout=0.0, **config)
    model = GPT(cfg)
    TOK, POS, PREV, COPY = 0, V, V + T, 2 * V + T
    generator = torch.Generator().manual_seed(seed)

    def write(matrix, row: int, value: float, *index):  # +value into dimension `row`, -value into its mirror
        matrix[(row, *index)] += value
        matrix[(width + row, *index)] -= value

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_f.weight")):
                p.fill_(1.0)
            else:
                p.copy_(noise * torch.randn(p.shape, generator=generator) if p.dim() > 1 else torch.zeros_like(p))
        for t in range(V):
            write(model.wte.weight.T, TOK + t, 1.0, t)
        for i in range(T):
            write(model.wpe.weight.T, POS + i, 1.0, i)
        q0, k0, v0 = (w.view(n_head, hs, C) for w in model.blocks[0].attn.c_attn.weight.split(C))
        q1, k1, v1 = (w.view(n_head, hs, C) for w in model.blocks[1].attn.c_attn.weight.split(C))
        for i in range(T):  # L0.H0: the query at position i matches the key at position i - 1
            q0[0, i, POS + i] += 2.0
            if i + 1 < T:
                k0[0, i + 1, POS + i] += 2.0
        for t in range(V):
            v0[0, t, TOK + t] += 1.0  # L0.H0 moves the token ...
            write(model.blocks[0].attn.c_proj.weight.view(C, n_head, hs), PREV + t, 0.2, 0, t)  # ... into PREV
            q1[0, t, TOK + t] += 2.0  # L1.H0: the current token ...
            k1[0, t, PREV + t] += 2.0  # ... against each key's previous token
            v1[0, t, TOK + t] += 1.0  # copies the key's token ...
            write(model.blocks[1].attn.c_proj.weight.view(C, n_head, hs), COPY + t, 0.2, 0, t)  # ... into COPY
            model.lm_head.weight[t, COPY + t] += 3.0  # which the unembedding reads
    return model.eval()


def make_induction_run(run_dir, **model_options):
    """A run directory holding the hand-made induction model, with a char tokenizer of its 12 letters."""
    from glassgpt.checkpoint import save_run
    from glassgpt.config import RunConfig, TrainConfig
    from glassgpt.tokenizer import get_tokenizer

    tokenizer = get_tokenizer("char", text="abcdefghijkl")
    model = handmade_induction_model(vocab_size=tokenizer.vocab_size, block_size=24, seed=1, **model_options)
    save_run(run_dir, model, tokenizer, RunConfig(model.config, TrainConfig()))
    return run_dir
