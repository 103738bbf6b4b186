"""The speedrun options (qk_norm, mlp_act=relu2, logit_softcap, zero_init_proj,
optimizer=muon), RoPE angles precomputed and sliced, the cpu-speedrun preset,
and the lean training loop (eval and checkpoint time kept apart from tokens/s, the
plot drawn once).

Training runs use a tiny model on a cut-down Tiny Shakespeare (40k / 2k tokens)."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_clean_error, run_cli, tiny_config

import glassgpt.training.loop as train_module
from glassgpt.checkpoint import load_run
from glassgpt.config import load_run_config
from glassgpt.errors import UsageError
from glassgpt.model import GPT
from glassgpt.training import train
from glassgpt.training.muon import Muon
from glassgpt.training.optim import Optimizers, configure_optimizer
from glassgpt.training.log import MetricsLog

TINY = ["n_layer=2", "n_head=2", "n_embd=32", "block_size=32", "batch_size=4", "eval_iters=2", "log_interval=1",
        "warmup_iters=5", "learning_rate=3e-3", "min_lr=3e-4", "device=cpu"]


def quiet(_line: str) -> None:
    pass


def tiny_run_config(*extra: str):
    return load_run_config("cpu-baby", [*TINY, *extra])


def read_rows(run_dir: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


@pytest.fixture(scope="module")
def small_data_dir(tmp_path_factory, prepared_data_dir) -> Path:
    src = prepared_data_dir / "shakespeare-char"
    dst = tmp_path_factory.mktemp("small-data") / "shakespeare-char"
    dst.mkdir()
    meta = json.loads((src / "meta.json").read_text())
    meta["tokens"] = {"train": 40_000, "val": 2_000}
    (dst / "meta.json").write_text(json.dumps(meta))
    for split, n in meta["tokens"].items():
        np.fromfile(src / f"{split}.bin", dtype=np.uint8)[:n].tofile(dst / f"{split}.bin")
    return dst.parent


@pytest.fixture
def small_data(monkeypatch, small_data_dir, mirror) -> Path:
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(small_data_dir))
    monkeypatch.setenv("GLASSGPT_MIRROR", str(mirror))
    return small_data_dir


# ---------------------------------------------------------------- RoPE once per forward

def test_rope_angles_are_precomputed_once_and_sliced_by_position():
    model = GPT(tiny_config(pos_encoding="rope", n_layer=3))
    calls = []
    model.rotary.register_forward_hook(lambda module, args, out: calls.append(out))
    idx = torch.randint(0, 50, (2, 16))
    model(idx)
    assert len(calls) == 1  # one per forward pass, not one per layer
    cos, sin = calls[0]
    assert cos.data_ptr() == model.rotary.cos.data_ptr() and sin.data_ptr() == model.rotary.sin.data_ptr()
    fresh_cos, fresh_sin = model.rotary.angles(torch.arange(16))
    assert torch.equal(cos, fresh_cos) and torch.equal(sin, fresh_sin)  # the same numbers as computed per call
    cos, sin = model.rotary(5, 3)  # positions 5, 6, 7 (a KV-cache step): rows 5..7 of the table
    assert torch.equal(cos, model.rotary.cos[5:8]) and torch.equal(sin, model.rotary.sin[5:8])
    assert "rotary.cos" not in model.state_dict()  # not weights: not saved
    cos, _ = model.rotary(14, 4)  # past the table: computed
    assert torch.equal(cos, model.rotary.angles(torch.arange(14, 18))[0])


def test_rope_angles_made_under_inference_mode_do_not_leak_into_a_training_step():
    model = GPT(tiny_config(pos_encoding="rope"))
    idx = torch.randint(0, 50, (2, 16))
    first = model(idx)[0]
    with torch.inference_mode():
        model(idx)
    second, loss = model(idx, idx)
    loss.backward()  # fails if an inference tensor were saved for backward
    torch.testing.assert_close(first, second)


# ---------------------------------------------------------------- model options

@pytest.mark.parametrize("attn_impl", ["manual", "sdpa"])
def test_qk_norm_makes_attention_blind_to_the_scale_of_q_and_k(attn_impl):
    model = GPT(tiny_config(attn_impl=attn_impl, qk_norm=True, pos_encoding="rope"))
    plain = GPT(tiny_config(attn_impl=attn_impl, pos_encoding="rope"))
    plain.load_state_dict(model.state_dict())
    idx = torch.randint(0, 50, (2, 16))
    before, plain_before = model(idx)[0], plain(idx)[0]
    C = model.config.n_embd
    with torch.no_grad():
        for m in (model, plain):
            for block in m.blocks:
                block.attn.c_attn.weight[: 2 * C] *= 7.0  # q and k rows, not v
                block.attn.c_attn.bias[: 2 * C] *= 7.0
    torch.testing.assert_close(model(idx)[0], before, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(plain(idx)[0], plain_before, atol=1e-3)  # without it, the scale matters


def test_relu2_mlp_squares_the_relu():
    model = GPT(tiny_config(mlp_act="relu2"))
    _, cache = model.run_with_cache(torch.randint(0, 50, (2, 16)), names=["blocks.0.ln_2.out", "blocks.0.mlp.hidden"])
    expected = F.relu(model.blocks[0].mlp.c_fc(cache["blocks.0.ln_2.out"])).square()
    torch.testing.assert_close(cache["blocks.0.mlp.hidden"], expected)


def test_logit_softcap_squashes_the_logits_smoothly():
    capped = GPT(tiny_config(logit_softcap=0.5))
    plain = GPT(tiny_config())
    plain.load_state_dict(capped.state_dict())
    idx = torch.randint(0, 50, (2, 16))
    logits = capped(idx)[0]
    torch.testing.assert_close(logits, 0.5 * torch.tanh(plain(idx)[0] / 0.5))
    assert logits.abs().max() < 0.5


def test_zero_init_proj_starts_every_output_projection_at_zero():
    model = GPT(tiny_config(zero_init_proj=True))
    projections = [p for name, p in model.named_parameters() if name.endswith("c_proj.weight")]
    assert len(projections) == 2 * model.config.n_layer
    assert all(torch.count_nonzero(p) == 0 for p in projections)
    assert all(torch.count_nonzero(p) > 0 for p in (GPT(tiny_config()).blocks[0].attn.c_proj.weight,))


@pytest.mark.parametrize("bad,fragment", [("mlp_act=swish", "mlp_act"), ("logit_softcap=-1", "logit_softcap"),
                                          ("optimizer=sgd", "optimizer"), ("qk_norm=1", "qk_norm")])
def test_bad_option_values_are_one_line_usage_errors(bad, fragment, tmp_path):
    with pytest.raises(UsageError, match=fragment):
        load_run_config("cpu-baby", [bad])
    assert_clean_error(run_cli("train", "cpu-baby", bad, "--out", str(tmp_path / "run")), 2, fragment)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- Muon

def test_muon_needs_nothing_from_torch_optim(monkeypatch, small_data, tmp_path):
    """pyproject allows torch>=2.4; torch.optim.Muon came with 2.9: glassgpt's own Muon runs without it."""
    monkeypatch.delattr(torch.optim, "Muon", raising=False)
    rc = tiny_run_config("optimizer=muon", "max_iters=2", "eval_interval=2")
    assert isinstance(configure_optimizer(GPT(rc.model), rc.train, torch.device("cpu")).optimizers["muon"], Muon)
    assert train(rc, tmp_path / "run", log=quiet)["step"] == 2


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    rc = tiny_run_config("optimizer=muon", "tie_weights=false")
    model = GPT(rc.model)
    opt = configure_optimizer(model, rc.train, torch.device("cpu"))
    assert isinstance(opt, Optimizers)
    muon = {id(p) for g in opt.optimizers["muon"].param_groups for p in g["params"]}
    adamw = {id(p) for g in opt.optimizers["adamw"].param_groups for p in g["params"]}
    names = {id(p): name for name, p in model.named_parameters()}
    assert isinstance(opt.optimizers["muon"], Muon)
    assert sorted(names[i] for i in muon) == sorted(n for n, p in model.named_parameters()
                                                    if n.startswith("blocks.") and p.dim() == 2)
    assert {names[i] for i in adamw} >= {"wte.weight", "lm_head.weight", "ln_f.weight", "blocks.0.attn.c_attn.bias"}
    assert not muon & adamw and len(muon | adamw) == len(list(model.parameters()))


def test_muon_run_learns_and_resumes_exactly(small_data, tmp_path):
    recipe = ["optimizer=muon", "qk_norm=true", "mlp_act=relu2", "lr_decay_iters=20", "eval_interval=10"]
    whole = train(tiny_run_config(*recipe, "max_iters=20"), tmp_path / "whole", log=quiet)
    train(tiny_run_config(*recipe, "max_iters=10"), tmp_path / "split", log=quiet)
    split = train(tiny_run_config(*recipe, "max_iters=20"), tmp_path / "split", resume=True, log=quiet)
    assert split["val_loss"] == whole["val_loss"]
    first_eval = read_rows(tmp_path / "whole", "eval")[0]["val_loss"]
    assert whole["val_loss"] < first_eval - 0.3
    model, _, rc = load_run(tmp_path / "split")
    assert (rc.train.optimizer, rc.model.qk_norm, rc.model.mlp_act) == ("muon", True, "relu2")  # in config.json
    assert model.config.qk_norm


def test_resuming_with_another_optimizer_is_refused_in_one_line(small_data, tmp_path):
    train(tiny_run_config("max_iters=2"), tmp_path / "run", log=quiet)
    result = run_cli("train", "cpu-baby", *TINY, "max_iters=4", "optimizer=muon", "--out", str(tmp_path / "run"),
                     "--resume")
    assert_clean_error(result, 2, "optimizer=adamw", "optimizer=muon")


def test_muon_with_the_float16_scaler_is_refused(tmp_path):
    with pytest.raises(UsageError, match="optimizer=muon cannot run with the float16"):
        load_run_config("cpu-baby", ["optimizer=muon", "dtype=float16"])
    result = run_cli("train", "cpu-baby", "optimizer=muon", "dtype=float16", "--out", str(tmp_path / "run"))
    assert_clean_error(result, 2, "optimizer=muon cannot run with the float16")


# ---------------------------------------------------------------- presets

def test_cpu_baby_trains_on_the_fast_path_and_cpu_speedrun_loads():
    baby = load_run_config("cpu-baby")
    assert (baby.model.norm, baby.model.attn_impl) == ("torch", "sdpa")
    speedrun = load_run_config("cpu-speedrun")
    assert speedrun.train.dataset == baby.train.dataset == "shakespeare-char"
    assert speedrun.train.device == "cpu"
    GPT(speedrun.model)


# ---------------------------------------------------------------- the lean loop

def test_tokens_per_second_leaves_out_eval_time_and_the_plot_is_drawn_once(small_data, tmp_path, monkeypatch):
    real_evaluate = train_module.evaluate

    def slow_evaluate(*args, **kwargs):
        time.sleep(0.4)
        return real_evaluate(*args, **kwargs)

    plots = []
    real_plot = MetricsLog.plot
    monkeypatch.setattr(train_module, "evaluate", slow_evaluate)
    monkeypatch.setattr(MetricsLog, "plot", lambda self: (plots.append(1), real_plot(self)))
    final = train(tiny_run_config("max_iters=12", "eval_interval=3", "log_interval=3"), tmp_path / "run", log=quiet)
    tokens_per_step = 4 * 32
    for row in read_rows(tmp_path / "run", "train"):  # every 3-step window held an eval of 0.4 s or more
        assert row["tokens_per_s"] > 3 * tokens_per_step / 0.4, row
    assert final["eval_seconds"] >= 5 * 0.4  # steps 0, 3, 6, 9 and the whole split
    assert final["train_seconds"] + final["eval_seconds"] + final["checkpoint_seconds"] == pytest.approx(
        final["wall_seconds"])
    assert final["tokens_per_s"] == pytest.approx(12 * tokens_per_step / final["train_seconds"])
    assert len(plots) == 1 and (tmp_path / "run" / "loss.png").is_file()
    assert all("elapsed_s" in r for r in read_rows(tmp_path / "run", "eval"))
