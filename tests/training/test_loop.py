import json
import math

import torch

from glassgpt import checkpoint as ckpt
from glassgpt.checkpoint import load_run
from glassgpt.config import load_run_config
from glassgpt.training.optim import lr_at

TINY = ["n_layer=2", "n_head=2", "n_embd=32", "block_size=32", "batch_size=8", "eval_iters=4",
        "log_interval=5", "warmup_iters=5", "learning_rate=3e-3", "min_lr=3e-4"]


def tiny_run_config(*extra):
    return load_run_config("cpu-baby", [*TINY, *extra])


def test_training_lowers_the_loss_and_writes_a_complete_run(data_env, tmp_path):
    from glassgpt.training import train

    run_dir = tmp_path / "run"
    final = train(tiny_run_config("max_iters=60", "eval_interval=30"), run_dir, log=lambda s: None)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 60
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5, evals
    assert final["val_loss"] == evals[-1]["val_loss"]
    assert math.isclose(final["bits_per_character"], final["val_loss"] / math.log(2))
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert {"step", "train_loss", "lr", "grad_norm", "tokens_per_s"} <= set(train_rows[0])
    for name in ("config.json", "model.safetensors", "tokenizer.json", ckpt.STATE, "metrics.jsonl", "loss.png"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(run_dir.glob("*.tmp"))


def test_a_saved_run_loads_back_with_the_same_logits(data_env, tmp_path):
    """The loaded model equals the one that finished training in memory (not just another load)."""
    from glassgpt.model import GPT
    from glassgpt.training import train

    run_dir = tmp_path / "run"
    trained = []
    train(tiny_run_config("max_iters=10", "eval_interval=10"), run_dir, log=lambda s: None,
          on_model=trained.append)
    model, tokenizer, rc = load_run(run_dir)
    in_memory = trained[0].eval()
    idx = torch.tensor([tokenizer.encode("ROMEO: wherefore")])
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], in_memory(idx)[0], atol=0, rtol=0)
        fresh = GPT(rc.model).eval()  # an untrained model of the same shape differs: the test can fail
        assert not torch.allclose(fresh(idx)[0], in_memory(idx)[0])
    assert rc.model.n_embd == 32 and tokenizer.vocab_size == 65
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["max_iters"] == 10 and len(config["weights_sha256"]) == 64


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    tc = tiny_run_config("max_iters=100", "warmup_iters=10").train  # learning_rate 3e-3, min_lr 3e-4
    lrs = [lr_at(s, tc) for s in range(151)]
    assert lrs[0] < lrs[5] < lrs[9] <= tc.learning_rate
    assert max(lrs) <= tc.learning_rate
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])), "monotone decay after warmup"
    # exact values, computed by hand: linear warmup (step + 1) / 11, then cosine from step 10 to 100
    assert math.isclose(lrs[0], 3e-3 / 11)
    assert math.isclose(lrs[9], 3e-3 * 10 / 11)  # the last warmup step
    assert math.isclose(lrs[10], 3e-3)  # the peak, where the cosine starts
    assert math.isclose(lrs[55], 3e-4 + 0.5 * (3e-3 - 3e-4))  # the cosine's midpoint: halfway down
    assert math.isclose(lrs[40], 3e-4 + 0.5 * (1 + math.cos(math.pi / 3)) * 2.7e-3)  # a third of the way
    assert math.isclose(lrs[100], 3e-4) and math.isclose(lrs[150], 3e-4)  # after the decay: min_lr


def test_eval_over_the_whole_split_counts_every_target_once():
    from glassgpt.data import eval_windows

    data = torch.arange(100).numpy()
    targets = [y[y != -1] for _, y in eval_windows(data, block_size=16, batch_size=3)]
    flat = torch.cat([t.flatten() for t in targets])
    assert torch.equal(flat, torch.arange(1, 100))


def test_every_rank_runs_the_model_as_often_in_the_whole_split_eval(monkeypatch):
    """Under FSDP each forward gathers the weights from every rank, so a rank that skipped the
    last, short batch (no rows left for it) would leave the others waiting for ever. The rank with
    no rows runs the model on a row without targets, which adds nothing to the loss."""
    from glassgpt.training import loop as train_module
    from glassgpt.model import GPT, GPTConfig
    from glassgpt.training.runtime import Dist

    monkeypatch.setattr(train_module.dist, "all_reduce", lambda tensor: None)  # each rank's own sum
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
    data = (torch.arange(8 * 33 + 1) % 11).numpy()  # 33 windows: the global batch of 2 x 16 rows leaves rank 1 none
    calls = {0: 0, 1: 0}
    losses = {}
    for rank in (0, 1):
        hook = model.register_forward_pre_hook(lambda module, args, rank=rank: calls.__setitem__(rank, calls[rank] + 1))
        losses[rank] = train_module.evaluate(model, data, 8, 2, torch.device("cpu"),
                                             dist_info=Dist(rank=rank, world_size=2, local_rank=rank))
        hook.remove()
    assert calls[0] == calls[1] == 2
    assert all(math.isfinite(v) for v in losses.values())  # the row without targets added nothing, not nan
