"""Multi-head split and merge: glassgpt.model.CausalSelfAttention.split_heads and merge_heads."""

from __future__ import annotations

import torch

from glassgpt.learn.core import Case, Exercise, catalogue
from glassgpt.learn.exercises import TITLES
from glassgpt.learn.probing import close, randn, small_model, small_run


def split_heads(x, n_head):
    """Split the features into heads.

    x: (B, T, C); n_head divides C; hs = C // n_head.
    Returns (B, n_head, T, hs): head h holds features h * hs .. (h + 1) * hs - 1 of every position.
    """
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, T, nh, hs) -> (B, nh, T, hs)


def merge_heads(y):
    """Put the heads back side by side: the inverse of split_heads.

    y: (B, nh, T, hs). Returns (B, T, nh * hs): features h * hs .. (h + 1) * hs - 1 of position t
    are head h's at position t.
    """
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).contiguous().view(B, T, nh * hs)  # (B, T, nh, hs) -> (B, T, C)


# ---------------------------------------------------------------- the catalogue's mutations

def split_hs_nh(x, n_head):
    B, T, C = x.shape
    return x.view(B, T, C // n_head, n_head).permute(0, 3, 1, 2)


def split_without_transpose(x, n_head):
    B, T, C = x.shape
    return x.reshape(B, n_head, T, C // n_head)


def split_keeps_positions_first(x, n_head):
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head)


def merge_without_transpose(y):
    B, nh, T, hs = y.shape
    return y.reshape(B, T, nh * hs)


def merge_interleaved(y):
    B, nh, T, hs = y.shape
    return y.permute(0, 2, 3, 1).reshape(B, T, nh * hs)


# ---------------------------------------------------------------- the detectors

T, NH, HS = 3, 2, 4
C = NH * HS


def labelled_split(learner):
    """The learner's split of features labelled 1000 * position + feature, decoded: (positions,
    features) of shape (nh, T, hs), or None when it did not return (1, nh, T, hs)."""
    t = torch.arange(T).view(1, T, 1).float()
    x = 1000 * t + torch.arange(C).float().view(1, 1, C)  # (1, T, C)
    out = learner("split_heads", x, NH)
    if not isinstance(out, torch.Tensor):
        return None, x
    return out, x


def decoded(out):
    return (out // 1000).long(), (out % 1000).long()


def detect_split_hs_nh(learner):
    out, _ = labelled_split(learner)
    if out is None or out.shape != (1, NH, T, HS):
        return None
    positions, features = decoded(out[0])
    if bool((positions == torch.arange(T).view(1, T, 1)).all()) and features[0, 0].tolist() == list(range(0, C, NH)):
        shown = ", ".join(map(str, features[0, 0].tolist()))
        return (f"head 0 received features {shown} of each position: you reshaped to (B, T, hs, nh) instead of "
                "(B, T, nh, hs), so the heads are interleaved; each head owns a contiguous block of hs features")


def detect_split_without_transpose(learner):
    out, _ = labelled_split(learner)
    if out is None or out.shape != (1, NH, T, HS):
        return None
    positions, features = decoded(out[0])
    if int(positions[0, 1, 0]) != 1:
        return (f"head 0's position 1 holds features {features[0, 1, 0]}..{features[0, 1, -1]} of position "
                f"{int(positions[0, 1, 0])}: you viewed (B, T, C) as (B, nh, T, hs) directly, mixing positions; "
                "view it as (B, T, nh, hs), then transpose(1, 2)")


def detect_split_positions_first(learner):
    out, x = labelled_split(learner)
    if out is not None and close(out, x.view(1, T, NH, HS)):
        return ("you return (B, T, nh, hs): the heads are split but the positions still come first; "
                "transpose(1, 2) to (B, nh, T, hs), so that each head attends over its own (T, hs)")


def labelled_merge(learner):
    """The learner's merge of head outputs labelled 1000 * position + 100 * head + feature."""
    y = (1000 * torch.arange(T).view(1, 1, T, 1) + 100 * torch.arange(NH).view(1, NH, 1, 1)
         + torch.arange(HS).view(1, 1, 1, HS)).float()  # (1, nh, T, hs)
    out = learner("merge_heads", y)
    return out if isinstance(out, torch.Tensor) and out.shape == (1, T, C) else None


def detect_merge_without_transpose(learner):
    out = labelled_merge(learner)
    if out is None:
        return None
    positions = (out[0] // 1000).long()  # (T, C)
    if not bool((positions == torch.arange(T).view(T, 1)).all()):
        mixed = sorted(set(positions[0].tolist()))
        return (f"merged position 0 holds head outputs of positions {', '.join(map(str, mixed))}: you viewed "
                "(B, nh, T, hs) as (B, T, C) without moving the heads; transpose(1, 2) to (B, T, nh, hs), "
                ".contiguous(), then view")


def detect_merge_interleaved(learner):
    out = labelled_merge(learner)
    if out is None:
        return None
    heads = ((out[0] % 1000) // 100).long()  # (T, C)
    if heads[0, :NH].tolist() == list(range(NH)):
        return (f"merged features 0..{NH - 1} come from heads 0..{NH - 1}: your merge interleaves the heads feature "
                "by feature; head h's hs features go side by side, at h * hs .. (h + 1) * hs - 1")


MISTAKES = catalogue(
    "split_heads",
    ("split-hs-nh", "reshaped to (B, T, hs, nh)", split_hs_nh, detect_split_hs_nh),
    ("split-without-transpose", "viewed (B, T, C) as (B, nh, T, hs)", split_without_transpose,
     detect_split_without_transpose),
    ("split-positions-first", "returns (B, T, nh, hs)", split_keeps_positions_first, detect_split_positions_first),
) + catalogue(
    "merge_heads",
    ("merge-without-transpose", "viewed (B, nh, T, hs) as (B, T, C)", merge_without_transpose,
     detect_merge_without_transpose),
    ("merge-interleaved", "heads interleaved feature by feature", merge_interleaved, detect_merge_interleaved),
)


# ---------------------------------------------------------------- the cases

def cases() -> list[Case]:
    def split(label, x, n_head):
        return Case(label, "split_heads", (x, n_head), split_heads(x, n_head))

    def merge(label, y):
        return Case(label, "merge_heads", (y,), merge_heads(y))

    model = small_model()
    _, _, cache = small_run()
    attn = model.blocks[0].attn
    with torch.no_grad():
        q_flat = attn.c_attn(cache["blocks.0.ln_1.out"])[..., :attn.n_embd]  # (B, T, C) before the split
    return [
        split("random input (2, 5, 12), 3 heads", randn(2, 5, 12, seed=1), 3),
        split("length 1 (1, 1, 8), 2 heads", randn(1, 1, 8, seed=2), 2),
        split("one head (2, 4, 6)", randn(2, 4, 6, seed=3), 1),
        merge("random input (2, 3, 5, 4)", randn(2, 3, 5, 4, seed=4)),
        merge("length 1 (1, 2, 1, 4)", randn(1, 2, 1, 4, seed=5)),
        Case("a glassgpt model's queries (blocks.0.attn.q of a small GPT)", "split_heads",
             (q_flat, attn.n_head), cache["blocks.0.attn.q"]),
        Case("a glassgpt model's head outputs (blocks.0.attn.z, merged by glassgpt)", "merge_heads",
             (cache["blocks.0.attn.z"],), attn.merge_heads(cache["blocks.0.attn.z"])),
    ]


EXERCISE = Exercise(
    name="multihead", title=TITLES["multihead"],
    reference={"split_heads": split_heads, "merge_heads": merge_heads},
    outputs={"split_heads": ("heads",), "merge_heads": ("merged",)}, cases=cases, mistakes=MISTAKES,
    glassgpt_code="glassgpt.model.CausalSelfAttention.split_heads")
