"""Suites about producing tokens and about the reference implementation:
kvcache (glassgpt.inference.generate with use_cache False vs True), transformers
(Hugging Face GPT-2 vs glassgpt, same shapes, same weights: a train step and
greedy generation) and inference (greedy decode with the weights in fp32,
bfloat16 and float16 against transformers in fp32, and how closely half
precision follows fp32).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from glassgpt.bench.report import Recorder, Settings
from glassgpt.bench.variants import TINY, TRAIN
from glassgpt.bench.workloads import build_model, make_train_step, model_config, random_batch
from glassgpt.inference import generate
from glassgpt.precision import prepare_for_inference

GREEDY = "greedy generation (temperature 0)"


def _prompt(vocab_size: int, length: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab_size, (1, length), generator=g).to(device)


def kvcache(rec: Recorder, s: Settings) -> None:
    """The whole context recomputed at every step (off) against the hand-written KV
    cache (on), which runs only the new token after the prompt. On CPU the gpt2-shape
    run makes fewer new tokens: without the cache each step costs a full forward."""
    cases = s.choose(
        quick=[("tiny", TINY, 8, 24, 3)],
        cpu=[("shakespeare-char", {}, 64, 256, 2), ("gpt2", {}, 64, 48, 2)],
        cuda=[("shakespeare-char", {}, 64, 256, 5), ("gpt2", {}, 64, 256, 5)],
    )
    for name, overrides, prompt_len, new, repeats in cases:
        cfg = model_config("cpu-baby" if name == "tiny" else name, **overrides)
        model = build_model(cfg, s.device).eval()
        idx = _prompt(cfg.vocab_size, prompt_len, s.device)
        outputs = {}

        def run(use_cache: bool, n: int = new):
            outputs[use_cache] = generate(model, idx, n, temperature=0, use_cache=use_cache)

        run(False, 2), run(True, 2)  # short warm-up instead of a full one
        shape = {"model": name, "prompt": prompt_len, "new": new, "block": cfg.block_size}
        rec.compare(f"{name} kv cache: generate", {"no_cache": lambda: run(False), "cache": lambda: run(True)},
                    workload=GREEDY, shape=shape, repeats=repeats, warmup=0, inner=1, tokens_per_call=new)
        same = bool(torch.equal(outputs[False], outputs[True]))  # the last timed calls' tokens
        rec.figure(f"{name} kv cache: same tokens with and without", same, "bool", **shape)


def _glassgpt_loss(model, x, y):
    return model(x, y)[1]


def _transformers_loss(model, x, y):
    """The same loss as glassgpt's: cross-entropy of every position against y, no internal shift."""
    logits = model(input_ids=x).logits  # (B, T, V)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-1)


def transformers(rec: Recorder, s: Settings) -> None:
    """Hugging Face `GPT2LMHeadModel` (sdpa attention) against glassgpt's fast path
    (sdpa, nn.LayerNorm) holding the same weights: a train step through the same
    optimizer code, and greedy generation with each library's own KV cache."""
    try:
        import transformers as hf_lib  # noqa: F401

        from glassgpt.hf import to_hf
    except ImportError:
        rec.skip("glassgpt vs transformers", "transformers is not installed: pip install 'glassgpt[bench]'")
        return
    cases = s.choose(
        quick=[("tiny", TINY, 2, 32, 8, 16, 3)],
        cpu=[("shakespeare-char", {}, 4, 256, 64, 192, 3), ("gpt2", {}, 1, 128, 64, 128, 3)],
        cuda=[("shakespeare-char", {}, 64, 256, 64, 192, 5), ("gpt2", {}, 8, 1024, 64, 256, 5)],
    )
    for name, overrides, batch, seq, prompt_len, new, repeats in cases:
        fast = dict(overrides, attn_impl="sdpa", norm="torch", pos_encoding="learned", bias=True)
        cfg = model_config("cpu-baby" if name == "tiny" else name, **fast)
        model = build_model(cfg, s.device)
        hf = to_hf(model).to(s.device)
        shape = {"model": name, "B": batch, "T": seq}

        idx = _prompt(cfg.vocab_size, prompt_len, s.device)
        with torch.no_grad():
            diff = (model.eval()(idx)[0] - hf(input_ids=idx).logits).abs().max().item()
        rec.figure(f"{name} vs transformers: max |logit difference|", diff, "logit", prompt=prompt_len)

        model.train(), hf.train()
        x, y = random_batch(cfg.vocab_size, batch, seq, s.device)
        step_hf = make_train_step(hf, s.device, loss_fn=_transformers_loss)
        step_gg = make_train_step(model, s.device, loss_fn=_glassgpt_loss)
        rec.compare(f"{name} vs transformers: train step",
                    {"transformers": lambda: step_hf(x, y), "glassgpt": lambda: step_gg(x, y)},
                    workload=TRAIN, shape=shape, repeats=repeats, tokens_per_call=batch * seq)

        model.eval(), hf.eval()
        hf.load_state_dict(to_hf(model).state_dict())  # same weights again after the train steps
        mask = torch.ones_like(idx)

        def run_hf(n=new):
            return hf.generate(idx, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                               use_cache=True, pad_token_id=0, eos_token_id=None)

        def run_gg(n=new):
            return generate(model, idx, n, temperature=0, use_cache=True)

        run_hf(2), run_gg(2)  # short warm-up
        gen_shape = {"model": name, "prompt": prompt_len, "new": new}
        rec.compare(f"{name} vs transformers: generate", {"transformers": run_hf, "glassgpt": run_gg},
                    workload=GREEDY + ", KV cache on", shape=gen_shape, repeats=repeats, warmup=0, inner=1,
                    tokens_per_call=new)
        agree = (run_hf()[0, prompt_len:] == run_gg()[0, prompt_len:]).float().mean().item()
        rec.figure(f"{name} vs transformers: greedy tokens that agree", agree, "fraction", **gen_shape)


# ---------------------------------------------------------------- inference precision

GPT2_6L_512 = dict(n_layer=6, n_head=8, n_embd=512)  # GPT-2's vocabulary and positions, a third of its layers
HALF = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@torch.no_grad()
def half_precision_agreement(model, windows: torch.Tensor, dtype: torch.dtype) -> dict:
    """Teacher-forced over `windows` (B, T): the fraction of positions whose most likely
    next token is the same with the weights in `dtype` as in fp32, and the largest
    |logit difference|."""
    ref = model.eval()(windows)[0]  # (B, T, V)
    half = prepare_for_inference(copy.deepcopy(model), dtype)
    logits = half(windows)[0]
    return {"top1_agreement": (logits.argmax(-1) == ref.argmax(-1)).float().mean().item(),
            "max_abs_logit_diff": (logits - ref).abs().max().item(),
            "max_abs_logit": ref.abs().max().item(), "positions": windows.numel()}


def _val_windows(dataset: str, block: int, count: int, vocab_size: int):
    """`count` windows of `block` tokens from a prepared validation split, or random tokens
    when it is not prepared here; with a sentence saying which."""
    from glassgpt.data import TokenDataset, eval_windows
    from glassgpt.errors import UsageError

    try:
        val = TokenDataset.load(dataset).split("val")
        windows = next(eval_windows(val, block, count, max_batches=1))[0]
        if int(windows.max()) < vocab_size:
            return windows, f"{dataset} validation split"
    except (UsageError, StopIteration):
        pass
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, vocab_size, (count, block), generator=g)
    return windows, f"random tokens ({dataset} not prepared, or another vocabulary)"


def _record_agreement(rec: Recorder, name: str, model, windows: torch.Tensor, source: str) -> None:
    for label, dtype in HALF.items():
        result = half_precision_agreement(model, windows, dtype)
        rec.figure(f"{name} {label}: top-1 agreement with fp32", result["top1_agreement"], "fraction",
                   windows=list(windows.shape), source=source, **result)
        rec.figure(f"{name} {label}: max |logit difference| vs fp32", result["max_abs_logit_diff"], "logit",
                   max_abs_logit=result["max_abs_logit"])


def _through_a_run(model, dtypes: dict[str, str], device) -> dict:
    """`model` saved as a run and loaded back with `load_run` once per dtype name: what
    `glassgpt sample`, the demo and a notebook get."""
    import tempfile

    from glassgpt.checkpoint import load_run, save_run
    from glassgpt.config import RunConfig
    from glassgpt.tokenizer import get_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        save_run(tmp, model, get_tokenizer("char", text="ab"), RunConfig(model=model.config))
        return {label: load_run(tmp, device, dtype=name)[0] for label, name in dtypes.items()}


def inference(rec: Recorder, s: Settings) -> None:
    """Greedy generation, batch 1, KV cache on, on the 6-layer 512-wide GPT-2 shape:
    transformers in fp32 against glassgpt in fp32 as built (the training layout), and as
    `load_run` gives it in fp32 (its inference layout), bfloat16 and float16, all timed in
    turns. Then accuracy: teacher-forced top-1 agreement of bf16 and fp16 with fp32, on a
    converted GPT-2 shape (random weights through transformers) and, with `--run`, a
    trained run."""
    try:
        import transformers as hf_lib

        from glassgpt.hf import from_hf, to_hf
    except ImportError:
        rec.skip("inference", "transformers is not installed: pip install 'glassgpt[bench]'")
        return
    name, base, overrides, prompt_len, new, repeats = s.choose(
        quick=("tiny", "cpu-baby", TINY, 8, 16, 2),
        cpu=("gpt2-6L-512", "gpt2", GPT2_6L_512, 64, 256, 3),
        cuda=("gpt2-6L-512", "gpt2", GPT2_6L_512, 64, 256, 5),
    )
    cfg = model_config(base, attn_impl="sdpa", norm="torch", pos_encoding="learned", bias=True, **overrides)
    model = build_model(cfg, s.device).eval()
    hf = to_hf(model).to(s.device).eval()
    as_built = copy.deepcopy(model)  # fp32, row-major: the layout training uses
    prepared = _through_a_run(model, {"fp32": "float32", **{label: label for label in HALF}}, s.device)
    idx = _prompt(cfg.vocab_size, prompt_len, s.device)
    outputs: dict[str, torch.Tensor] = {}

    def run_hf(n=new):
        outputs["transformers"] = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=n,
                                              min_new_tokens=n, do_sample=False, use_cache=True, pad_token_id=0,
                                              eos_token_id=None)

    def run_gg(label, m, n=new):
        def call(n=n):
            outputs[label] = generate(m, idx, n, temperature=0, use_cache=True)
        return call

    variants = {"transformers fp32": run_hf, "glassgpt fp32 as built": run_gg("fp32 as built", as_built)}
    variants.update({f"glassgpt {label}": run_gg(label, m) for label, m in prepared.items()})
    for fn in variants.values():
        fn(2)  # short warm-up
    shape = {"model": name, "prompt": prompt_len, "new": new, "batch": 1}
    rec.compare(f"{name} decode: transformers fp32 vs glassgpt", variants, workload=GREEDY + ", KV cache on",
                shape=shape, repeats=repeats, warmup=0, inner=1, tokens_per_call=new)
    for label in ["fp32 as built", *prepared]:
        same = (outputs[label][0, prompt_len:] == outputs["transformers"][0, prompt_len:]).float().mean().item()
        rec.figure(f"{name} decode {label}: greedy tokens that agree with transformers", same, "fraction", **shape)

    # a whole window at once (what analyze and a prefill do): matrix-matrix products, not matrix-vector
    window = _prompt(cfg.vocab_size, min(cfg.block_size, 2 * prompt_len), s.device)

    def forward(m):
        @torch.no_grad()
        def call():
            return m(window)[0]
        return call

    rec.compare(f"{name} forward over a window: fp32 vs half", {label: forward(m) for label, m in prepared.items()},
                workload="inference forward, logits for every position", shape={"model": name, "B": 1,
                                                                                 "T": window.size(1)},
                repeats=repeats, tokens_per_call=window.size(1))

    # accuracy: a converted GPT-2 shape (transformers' own random init, through from_hf)
    hf_cfg = hf_lib.GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
                               n_layer=cfg.n_layer, n_head=cfg.n_head)
    torch.manual_seed(0)
    converted = from_hf(hf_lib.GPT2LMHeadModel(hf_cfg)).to(s.device)
    block, count = s.choose(quick=(32, 2), cpu=(128, 8), cuda=(1024, 8))
    windows, source = _val_windows("shakespeare", block, count, cfg.vocab_size)
    _record_agreement(rec, f"{name} converted", converted, windows.to(s.device), source)
    if s.run_dir:
        from glassgpt.analysis.report import validation_windows
        from glassgpt.checkpoint import load_run

        trained, tokenizer, run_config = load_run(s.run_dir, s.device)
        found = validation_windows(run_config, tokenizer, 64)
        if found is None:
            rec.skip("trained run agreement", f"the dataset of {s.run_dir} is not prepared here")
        else:
            _record_agreement(rec, "trained run", trained, found[0].to(s.device), found[2])
