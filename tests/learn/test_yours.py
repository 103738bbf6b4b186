"""Your model, trained: a GPT built from a learner's pieces computes glassgpt's function on the same
weights (every hook point fires with the same value), a wrong piece is named by the first activation
that differs, and glassgpt's trainer trains it into an ordinary run directory."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli

from glassgpt import GPT, GPTConfig
from glassgpt.errors import RunError, UsageError
from glassgpt.learn import build_model, train_model, use_pieces
from glassgpt.learn.yours import load_pieces

ALL_PIECES = """\
from glassgpt.learn.exercises.layernorm import layernorm
from glassgpt.learn.exercises.attention import causal_attention
from glassgpt.learn.exercises.multihead import split_heads, merge_heads
from glassgpt.learn.exercises.rope import apply_rope
from glassgpt.learn.exercises.mlp import gelu
from glassgpt.learn.exercises.block import block
from glassgpt.learn.exercises.forward import gpt_forward
from glassgpt.learn.exercises.cross_entropy import cross_entropy
from glassgpt.learn.exercises.kv_cache import cached_attention
"""
UNBIASED_LAYERNORM = """\
import torch

def layernorm(x, weight, bias, eps=1e-5):
    x_hat = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps)
    return x_hat * weight + bias
"""


def pieces_file(tmp_path, text=ALL_PIECES, name="mine.py"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("pos_encoding", ["learned", "rope"])
def test_a_model_of_the_learners_pieces_fires_every_hook_with_glassgpts_values(tmp_path, pos_encoding):
    config = GPTConfig(vocab_size=37, block_size=24, n_layer=2, n_head=2, n_embd=16, pos_encoding=pos_encoding,
                       attn_impl="sdpa", norm="torch")
    mine = build_model(pieces_file(tmp_path), config)
    assert type(mine.blocks[0]).__name__ == "LearnerBlock" and type(mine.ln_f).__name__ == "LearnerNorm"
    theirs = GPT(config)
    theirs.load_state_dict(mine.state_dict())  # the same parameter names: a checkpoint of one loads into the other
    idx = torch.randint(0, 37, (2, 20))
    _, a = mine.run_with_cache(idx)
    _, b = theirs.run_with_cache(idx)
    assert list(a) == list(b) == theirs.hook_names()
    for name in b:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    _, loss = mine(idx, idx)
    loss.backward()
    assert mine.blocks[0].attn.c_attn.weight.grad.abs().sum() > 0
    from glassgpt.inference.generate import generate
    assert torch.equal(generate(mine, idx[:1, :4], 8, temperature=0), generate(theirs, idx[:1, :4], 8, temperature=0))


def test_a_wrong_piece_is_named_by_the_first_activation_that_differs(tmp_path):
    with pytest.raises(RunError, match=r"first activation that differs is blocks\.0\.ln_1\.out, computed by your "
                                       r"layernorm: glassgpt learn check layernorm FILE"):
        build_model(pieces_file(tmp_path, UNBIASED_LAYERNORM))


def test_a_file_without_pieces_or_a_model_they_cannot_build_is_refused(tmp_path):
    with pytest.raises(UsageError, match="defines none of the pieces"):
        load_pieces(pieces_file(tmp_path, "x = 1\n"))
    with pytest.raises(UsageError, match="qk_norm=True"):
        use_pieces(GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, qk_norm=True)),
                   load_pieces(pieces_file(tmp_path)))


def test_glassgpt_train_with_model_trains_the_learners_model_into_an_ordinary_run(tmp_path, small_data_env):
    out = tmp_path / "run"
    result = run_cli("train", "cpu-baby", f"model={pieces_file(tmp_path)}", "max_iters=4", "eval_interval=4",
                     "eval_iters=1", "log_interval=2", "analysis_interval=4", "n_layer=2", "n_embd=32",
                     "block_size=32", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "your model: mine.py's layernorm, split_heads" in result.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "analysis" and r["induction"] for r in rows)  # measured through the learner's patterns
    assert any(r["kind"] == "final" for r in rows)
    from glassgpt.checkpoint import load_run
    model, _, _ = load_run(out)
    assert isinstance(model, GPT)


def test_train_model_refuses_a_learners_model_whose_loss_is_not_glassgpts(tmp_path, small_data_env):
    with pytest.raises(RunError, match="computed by your layernorm"):
        train_model(pieces_file(tmp_path, UNBIASED_LAYERNORM), overrides=["max_iters=1", "n_layer=1"],
                    out=tmp_path / "run", log=lambda line: None)
