"""Which parts of the model make a prediction: activation patching and direct logit attribution.

Activation patching (Meng et al. 2022; Wang et al. 2022) runs a corrupted prompt with one
activation taken from a clean run of the same length, and asks how much of the clean
answer comes back. Direct logit attribution splits the final logit of a token into what
each head, each MLP and the embedding write into the residual stream, read through the
final LayerNorm with its scale frozen, so that the terms add up to the logit exactly.
"""

from __future__ import annotations

import torch

from glassgpt.analysis.measures import as_batch, device_of
from glassgpt.analysis.uncertainty import paired_ratio_and_se, ratio_and_se
from glassgpt.inference.mode import inference
from glassgpt.model import GPT

PATCH_SITES = ("resid_pre", "resid_mid", "resid_post", "attn.out", "mlp.out")


def check_token(model: GPT, token: int, argument: str) -> int:
    V = model.config.vocab_size
    if not isinstance(token, int) or isinstance(token, bool) or not 0 <= token < V:
        raise ValueError(f"{argument} must be a token id in 0..{V - 1}, got {token!r}")
    return token


def check_pair(clean: torch.Tensor, corrupted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    clean, corrupted = as_batch(clean), as_batch(corrupted)
    if clean.shape != corrupted.shape:
        raise ValueError(f"clean and corrupted prompts must have the same shape (the same number of tokens), "
                         f"got {tuple(clean.shape)} and {tuple(corrupted.shape)}")
    return clean, corrupted


def logit_difference(logits: torch.Tensor, answer: int, wrong: int) -> torch.Tensor:
    """logit(answer) - logit(wrong) at the last position, averaged over the batch: (B, T, V) -> ()."""
    return logit_differences(logits, answer, wrong).mean()


def logit_differences(logits: torch.Tensor, answer: int, wrong: int) -> torch.Tensor:
    """logit(answer) - logit(wrong) at the last position of each sequence: (B, T, V) -> (B,)."""
    last = logits[:, -1].float()  # (B, V)
    return (last[:, answer] - last[:, wrong]).cpu()


def replace_at(clean: torch.Tensor, position: int | None = None, head: int | None = None):
    """A hook that puts the clean activation in place: all of it, one position of (B, T, ...) or
    one head of (B, nh, T, hs) (at one position when both are given)."""
    def hook(x: torch.Tensor, _hook) -> torch.Tensor:
        if position is None and head is None:
            return clean.to(x.dtype)
        x = x.clone()
        if head is None:
            x[:, position] = clean[:, position]
        elif position is None:
            x[:, head] = clean[:, head]
        else:
            x[:, head, position] = clean[:, head, position]
        return x
    return hook


def patched_logits(model: GPT, corrupted: torch.Tensor, clean_cache: dict[str, torch.Tensor], name: str,
                   position: int | None = None, head: int | None = None) -> torch.Tensor:
    """Logits of the corrupted prompt with hook point `name` taken from `clean_cache` (all of it,
    one position, or one head): -> (B, T, V). Patching a whole residual stream restores the
    clean logits exactly."""
    with inference(model):
        logits, _ = model.run_with_hooks(as_batch(corrupted).to(device_of(model)),
                                         fwd_hooks=[(name, replace_at(clean_cache[name], position, head))])
    return logits


def activation_patching(model: GPT, clean: torch.Tensor, corrupted: torch.Tensor, answer: int, wrong: int,
                        site: str = "resid_pre", over: str = "positions") -> dict:
    """Patch each layer's `site` from the clean run into the corrupted one, at one position at a
    time (`over="positions"`: -> (L, T)) or one head at a time (`over="heads"`, the heads' outputs
    `attn.z` at every position: -> (L, H)), and measure the logit difference answer - wrong at
    the last position. Returns `restored` (the patched logit differences), `clean` and
    `corrupted` (the two without patching) and `fraction` ((restored - corrupted) / (clean - corrupted)):
    1 where the patch brings the clean answer all the way back; each with its standard error over the
    B prompt pairs (`restored_se`, `clean_se`, `corrupted_se`, `fraction_se`; NaN for one pair)."""
    clean, corrupted = check_pair(clean, corrupted)
    answer, wrong = check_token(model, answer, "answer"), check_token(model, wrong, "wrong")
    if over not in ("positions", "heads"):
        raise ValueError(f"over must be 'positions' or 'heads', got {over!r}")
    if over == "positions" and site not in PATCH_SITES:
        raise ValueError(f"site must be one of {PATCH_SITES}, got {site!r}")
    device = device_of(model)
    L, H, T = model.config.n_layer, model.config.n_head, clean.size(1)
    suffix = "attn.z" if over == "heads" else site
    names = [f"blocks.{layer}.{suffix}" for layer in range(L)]
    with inference(model):
        clean_logits, cache = model.run_with_cache(clean.to(device), names=names)
        corrupted_logits, _ = model(corrupted.to(device))
    per_pair = torch.zeros(L, H if over == "heads" else T, clean.size(0))  # (L, N, B)
    for layer, name in enumerate(names):
        for i in range(per_pair.size(1)):
            where = {"head": i} if over == "heads" else {"position": i}
            per_pair[layer, i] = logit_differences(patched_logits(model, corrupted, cache, name, **where), answer, wrong)
    clean_pairs = logit_differences(clean_logits, answer, wrong)  # (B,)
    corrupted_pairs = logit_differences(corrupted_logits, answer, wrong)  # (B,)
    restored, restored_se = ratio_and_se(per_pair.permute(2, 0, 1), torch.ones(clean.size(0)))  # (L, N) each
    clean_diff, clean_se = ratio_and_se(clean_pairs, torch.ones(clean.size(0)))
    corrupted_diff, corrupted_se = ratio_and_se(corrupted_pairs, torch.ones(clean.size(0)))
    if float(clean_diff) != float(corrupted_diff):
        fraction, fraction_se = paired_ratio_and_se(per_pair - corrupted_pairs, clean_pairs - corrupted_pairs)
    else:
        fraction = fraction_se = torch.full_like(restored, float("nan"))
    return {"restored": restored, "clean": float(clean_diff), "corrupted": float(corrupted_diff), "fraction": fraction,
            "restored_se": restored_se, "clean_se": float(clean_se), "corrupted_se": float(corrupted_se),
            "fraction_se": fraction_se}


def direct_logit_attribution(model: GPT, idx: torch.Tensor, token: int, position: int = -1) -> dict:
    """What each head and each MLP writes directly into the logit of `token` at `position` of
    one sequence idx (T,) or (1, T), read through the final LayerNorm with its scale frozen at the
    value the whole residual stream gives it:
    `heads` (L, H) and `mlp` (L,): each component's direct contribution;
    `rest`: the embedding, the attention output biases and ln_f's bias;
    `logit`: the logit the terms split, equal to heads.sum() + mlp.sum() + rest;
    `attributed`: which logit that is, "logit" or, for a model with `logit_softcap`, "logit before
    the softcap" (the cap is not additive, so it is the logit `model.unembed(x, softcap=False)` gives);
    `model_logit`: the model's own output logit (after the cap, when there is one).
    What a head writes reaches the logit through later layers too; this counts the direct path only."""
    idx = as_batch(idx).to(device_of(model))
    if idx.size(0) != 1:
        raise ValueError(f"direct_logit_attribution takes one sequence, got a batch of {idx.size(0)}")
    token = check_token(model, token, "token")
    T = idx.size(1)
    if not -T <= position < T:
        raise ValueError(f"position must be in {-T}..{T - 1}, got {position}")
    L = model.config.n_layer
    sites = ("attn.z",) if model.config.attn_only else ("attn.z", "mlp.out")
    names = ["embed", f"blocks.{L - 1}.resid_post"] + [f"blocks.{i}.{s}" for i in range(L) for s in sites]
    with inference(model):
        logits, cache = model.run_with_cache(idx, names=names)
        return attribute_from_cache(model, cache, logits, token, position)


def attribute_from_cache(model: GPT, cache: dict, logits: torch.Tensor, token: int, position: int) -> dict:
    """The sums of `direct_logit_attribution`, in float64, from its cache."""
    L, H, hs = model.config.n_layer, model.config.n_head, model.config.head_size
    at = lambda name: cache[name][0, position].double() if cache[name].dim() == 3 else cache[name][0, :, position].double()  # noqa: E731
    ln_f = model.ln_f
    final = at(f"blocks.{L - 1}.resid_post")  # (C,)
    scale = torch.sqrt(final.var(unbiased=False) + ln_f.eps)  # the LayerNorm's divisor, frozen
    gamma = ln_f.weight.double() if ln_f.weight is not None else torch.ones_like(final)
    unembed = model.lm_head.weight[token].double()  # (C,)

    def read(vector: torch.Tensor) -> torch.Tensor:  # (..., C) written into the stream -> its logit share
        centred = vector - vector.mean(dim=-1, keepdim=True)
        return (centred / scale * gamma) @ unembed

    heads = torch.zeros(L, H, dtype=torch.float64)
    mlp = torch.zeros(L, dtype=torch.float64)
    rest = read(at("embed"))
    for i, block in enumerate(model.blocks):
        z = at(f"blocks.{i}.attn.z")  # (nh, hs)
        w_o = block.attn.c_proj.weight.double().view(-1, H, hs)  # (C, nh, hs): each head's slice of the projection
        heads[i] = read(torch.einsum("hd,chd->hc", z, w_o))  # (nh, C) -> (nh,)
        if block.attn.c_proj.bias is not None:
            rest = rest + read(block.attn.c_proj.bias.double())
        if block.mlp is not None:  # an attention-only model has none
            mlp[i] = read(at(f"blocks.{i}.mlp.out"))
    if ln_f.bias is not None:
        rest = rest + ln_f.bias.double() @ unembed
    capped = bool(model.config.logit_softcap)
    logit = model.unembed(cache[f"blocks.{L - 1}.resid_post"][0, position], softcap=False)[token]  # (C,) -> ()
    return {"heads": heads.float(), "mlp": mlp.float(), "rest": float(rest), "logit": float(logit),
            "attributed": "logit before the softcap" if capped else "logit",
            "model_logit": float(logits[0, position, token])}
