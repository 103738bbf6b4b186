"""What the report needs to know about how a run was trained, to say why a measure found nothing.

`training_facts` reads the run's config and metrics rows: its batch and context (induction heads
are expected after a number of tokens that grows with both), how many tokens it saw, how fast it
trained here, and from that speed how long the recipes that grow the missing phenomena
(`glassgpt.analysis.summary.INDUCTION_RECIPE`, `SINK_RECIPE`) would take on this machine.
"""

from __future__ import annotations

import torch

from glassgpt.analysis.summary import INDUCTION_RECIPE, SINK_RECIPE
from glassgpt.tokenizer import tokenizer_spec


def tokens_seen(train_config, block_size: int, rows: list[dict]) -> int:
    """Tokens the run trained on: its last step times the tokens of a step (one process), or what its
    final row's speed and time add up to (which counts every process), whichever is more."""
    steps = max((int(r["step"]) for r in rows if r.get("kind") in ("train", "final") and "step" in r), default=0)
    per_step = train_config.batch_size * train_config.grad_accum_steps * block_size
    final = next((r for r in reversed(rows) if r.get("kind") == "final"), {})
    timed = float(final.get("tokens_per_s") or 0.0) * float(final.get("train_seconds") or 0.0)
    return int(max(steps * per_step, timed))


def training_speed(rows: list[dict]) -> float | None:
    """The run's training tokens per second (its final row, else its last train row), or None."""
    for row in reversed(rows):
        if row.get("kind") in ("final", "train") and row.get("tokens_per_s"):
            return float(row["tokens_per_s"])
    return None


def flops_per_token(model_config) -> float:
    """Training FLOPs per token of a model config (`GPT.estimate_flops_per_token`), on no device."""
    from glassgpt.model import GPT

    with torch.device("meta"):
        return GPT(model_config).estimate_flops_per_token()


def recipe_minutes(recipe: str, run_config, speed: float | None) -> float | None:
    """How long the preset `recipe` would train on this machine, from this run's speed scaled by the
    two models' FLOPs per token, and at most its `max_minutes` (a timed preset ends then, its schedule
    fitted to the time); None when the preset is not installed or the speed is unknown."""
    import dataclasses

    from glassgpt.config import preset_names, preset_run_config

    if speed is None or recipe not in preset_names():
        return None
    preset = preset_run_config(recipe)
    model = dataclasses.replace(preset.model, vocab_size=run_config.model.vocab_size)  # the run's data
    tc = preset.train
    tokens = tc.max_iters * tc.batch_size * tc.grad_accum_steps * model.block_size
    flops_per_second = speed * flops_per_token(run_config.model)
    minutes = tokens * flops_per_token(model) / flops_per_second / 60
    return min(minutes, tc.max_minutes) if tc.max_minutes else minutes


def training_facts(run_config, rows: list[dict], tokenizer=None) -> dict:
    """`dataset`, `tokenizer` (its `tokenizer_spec`, None when not given), `batch_size`, `block_size`,
    `tokens_seen`, `tokens_per_s` and `recipe_minutes` ({recipe: minutes or None}) of a run, for `summarize`."""
    tc, block = run_config.train, run_config.model.block_size
    speed = training_speed(rows)
    return {"dataset": tc.dataset, "tokenizer": None if tokenizer is None else tokenizer_spec(tokenizer),
            "batch_size": tc.batch_size * tc.grad_accum_steps, "block_size": block,
            "tokens_seen": tokens_seen(tc, block, rows), "tokens_per_s": speed,
            "recipe_minutes": {recipe: recipe_minutes(recipe, run_config, speed) for recipe in (INDUCTION_RECIPE, SINK_RECIPE)}}
