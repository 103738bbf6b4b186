"""parallel=fsdp on two CPU gloo ranks: the same numbers as one process and as DDP, accumulation,
global gradient clipping, sharded checkpoints that reshard (2 -> 1 -> 2 ranks, the last over a
two-"node" c10d rendezvous), a SIGKILL during a sharded save, and the memory planner against
what each rank holds.

torchrun is started three times in all (it costs seconds each): one launch trains every run the
comparisons need and measures a step (tests/training/fsdp_worker.py), one resumes over two nodes, one
dies mid-save. The models are tiny (2 layers, 32 wide, 16 positions) and the validation split
256 tokens, so the whole module takes a few tens of seconds on 2 cores.

Tolerances: runs that differ only in how the same global batch is split over ranks, micro-steps
or shards sum the same numbers in another order, so they agree to float32 rounding; over 6 steps
that stays under 1e-5 (measured: a few 1e-7). FSDP and DDP reduce gradients in the same order and
are held to 1e-6.
"""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import cut_dataset, run_cli_process

from glassgpt import checkpoint as ckpt
from glassgpt.training import parallel
from glassgpt.checkpoint import load_run
from glassgpt.cli import main
from glassgpt.config import load_run_config
from glassgpt.model import GPT
from glassgpt.training.optim import configure_optimizer
from glassgpt.training.plan import memory_plan
from glassgpt.training.loop import accumulate_gradients, apply_gradients, train

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
TINY = ["n_layer=2", "n_head=2", "n_embd=32", "block_size=16", "eval_iters=1", "log_interval=1", "warmup_iters=2",
        "learning_rate=3e-3", "min_lr=3e-4", "device=cpu", "eval_interval=2", "lr_decay_iters=6"]
# Two ranks of batch 2 with 2 micro-steps: a global batch of 8 windows per step.
RECIPE = [*TINY, "max_iters=6", "batch_size=2", "grad_accum_steps=2"]
FSDP = [*RECIPE, "parallel=fsdp"]
DROPOUT = [*FSDP, "dropout=0.2"]
DDP_DROPOUT = [*RECIPE, "dropout=0.2"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def quiet(_line: str) -> None:
    pass


def read_rows(run_dir: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_run(run_dir)[0].state_dict()


def shard_folders(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name.startswith("shards-"))


def assert_same_run(a: Path, b: Path, tol: float, evals: bool = True) -> None:
    """Train losses, gradient norms, eval losses (`evals`: a periodic eval reads eval_iters batches of the
    batch_size, so runs of other batch sizes read other windows) and the final weights."""
    for kind, key in (("train", "train_loss"), ("train", "grad_norm"), ("final", "val_loss"),
                      *([("eval", "val_loss")] if evals else [])):
        ra, rb = read_rows(a, kind), read_rows(b, kind)
        assert [r["step"] for r in ra] == [r["step"] for r in rb], kind
        for x, y in zip(ra, rb):
            assert math.isclose(x[key], y[key], rel_tol=tol, abs_tol=tol), (key, x, y)
    wb = weights(b)
    for name, value in weights(a).items():
        torch.testing.assert_close(wb[name], value, atol=tol, rtol=tol, msg=name)


@pytest.fixture(scope="module")
def data_env(tmp_path_factory, prepared_data_dir, mirror):
    """shakespeare-char cut to 20k train and 256 val tokens: a whole-split eval of one batch that leaves
    rank 1 no rows (it must still run the model, or rank 0 waits for it for ever)."""
    data_dir = cut_dataset(prepared_data_dir, tmp_path_factory.mktemp("fsdp-data"), train=20_000, val=256)
    env = {"GLASSGPT_DATA_DIR": str(data_dir), "GLASSGPT_MIRROR": str(mirror), "OMP_NUM_THREADS": "1"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield env


def torchrun(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(*args: str) -> None:
    """`torchrun --nnodes 2 --nproc-per-node 1` twice, meeting through a c10d rendezvous on
    127.0.0.1, as two machines would (docs/howto/ddp.md)."""
    rdzv = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "glassgpt-test"]
    procs = [subprocess.Popen([*TORCHRUN, *rdzv, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
             for _ in range(2)]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
    finally:  # a hung launch must not outlive the test (it holds the runs' locks)
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers: their own session
                proc.wait()


def jobs_file(path: Path, runs: list[dict], measure: dict | None = None) -> str:
    path.write_text(json.dumps({"runs": runs, **({"measure": measure} if measure else {})}))
    return str(path)


@pytest.fixture(scope="module")
def runs(data_env, tmp_path_factory) -> dict[str, Path]:
    """Every run the comparisons read: one launch of two nodes of one rank each (a c10d rendezvous,
    as on two machines), and one process."""
    root = tmp_path_factory.mktemp("fsdp-runs")
    out = {name: root / name for name in ("fsdp", "ddp", "bf16", "split", "dropout", "dropout-split", "ddp-dropout",
                                          "ddp-dropout-split", "single", "big", "held.json")}
    two_nodes(str(TESTS / "fsdp_worker.py"), jobs_file(root / "jobs.json", [
        {"out": str(out["fsdp"]), "args": FSDP},
        {"out": str(out["ddp"]), "args": RECIPE},
        {"out": str(out["bf16"]), "args": [*FSDP, "max_iters=3", "dtype=bfloat16", "activation_checkpointing=true"]},
        {"out": str(out["split"]), "args": [*FSDP, "max_iters=2"]},
        {"out": str(out["dropout"]), "args": DROPOUT},
        {"out": str(out["dropout-split"]), "args": [*DROPOUT, "max_iters=3"]},
        {"out": str(out["ddp-dropout"]), "args": DDP_DROPOUT},
        {"out": str(out["ddp-dropout-split"]), "args": [*DDP_DROPOUT, "max_iters=3"]}],
        measure={"out": str(out["held.json"]), "args": [*TINY, "parallel=fsdp", "batch_size=2"]}))
    # one process with the same global batch: 4 windows x 2 micro-steps, and 8 windows at once
    train(load_run_config("cpu-baby", [*RECIPE, "batch_size=4"]), out["single"], log=quiet)
    train(load_run_config("cpu-baby", [*RECIPE, "batch_size=8", "grad_accum_steps=1"]), out["big"], log=quiet)
    return out


@pytest.fixture(scope="module")
def second_launch(runs, data_env, tmp_path_factory) -> dict:
    """The split run resumed in one process (steps 3-4), then one launch of two ranks that resumes it
    (steps 5-6) and then trains a run whose rank 0 dies after every rank wrote its shards of step 4,
    before the commit (GLASSGPT_TEST_KILL)."""
    root = tmp_path_factory.mktemp("fsdp-resume")
    split, killed, dropout, ddp_dropout = root / "split", root / "killed", root / "dropout", root / "ddp-dropout"
    shutil.copytree(runs["split"], split)
    shutil.copytree(runs["dropout-split"], dropout)
    shutil.copytree(runs["ddp-dropout-split"], ddp_dropout)
    said: list[str] = []
    train(load_run_config("cpu-baby", [*FSDP, "max_iters=4"]), split, resume=True, log=said.append)
    result = torchrun("--standalone", "--nproc_per_node=2", str(TESTS / "fsdp_worker.py"), jobs_file(root / "jobs.json", [
        {"out": str(split), "args": FSDP, "resume": True},
        {"out": str(dropout), "args": DROPOUT, "resume": True},
        {"out": str(ddp_dropout), "args": DDP_DROPOUT, "resume": True},
        {"out": str(killed), "args": FSDP, "env": {"GLASSGPT_TEST_KILL": "shards:4"}}]))
    return {"split": split, "killed": killed, "dropout": dropout, "ddp-dropout": ddp_dropout, "said": said,
            "result": result}


# ---------------------------------------------------------------- the same numbers

def test_two_fsdp_ranks_follow_the_one_process_curve_with_the_global_gradient_norm(runs):
    """Losses, the logged (pre-clip) gradient norm and the final weights; grad_clip=1.0 clips every
    step here (norms ~3), so a norm over one rank's shards alone would change the updates."""
    assert read_rows(runs["single"], "train")[0]["grad_norm"] > 1.0
    assert_same_run(runs["fsdp"], runs["single"], tol=1e-5)


def test_fsdp_equals_ddp_for_the_same_seed(runs):
    assert_same_run(runs["fsdp"], runs["ddp"], tol=1e-6)
    assert (runs["fsdp"] / ckpt.WEIGHTS).stat().st_size == (runs["ddp"] / ckpt.WEIGHTS).stat().st_size


def test_fsdp_accumulation_equals_the_larger_batch_and_syncs_only_on_the_last_micro_step(runs):
    assert_same_run(runs["fsdp"], runs["big"], tol=1e-5, evals=False)
    held = json.loads(runs["held.json"].read_text())
    assert all(rank["waited_for_the_last_micro_step"] for rank in held)  # no reduce-scatter before it


def test_fsdp_in_bfloat16_with_activation_checkpointing_tracks_float32(runs):
    bf16, fp32 = read_rows(runs["bf16"], "train"), read_rows(runs["fsdp"], "train")
    assert [r["train_loss"] for r in bf16] != [r["train_loss"] for r in fp32]  # bf16 compute really ran
    for a, b in zip(bf16, fp32):
        assert abs(a["train_loss"] - b["train_loss"]) < 0.02, (a, b)


def test_activation_checkpointing_computes_the_same_gradients(data_env, tmp_path):
    """One process: recomputing each block in the backward pass changes memory, not numbers."""
    train(load_run_config("cpu-baby", [*TINY, "max_iters=3", "batch_size=2"]), tmp_path / "plain", log=quiet)
    train(load_run_config("cpu-baby", [*TINY, "max_iters=3", "batch_size=2", "activation_checkpointing=true"]),
          tmp_path / "ac", log=quiet)
    assert_same_run(tmp_path / "plain", tmp_path / "ac", tol=1e-6)


# ---------------------------------------------------------------- memory: measured against the planner

def test_each_rank_holds_half_the_weights_and_optimizer_state_as_the_planner_says(runs):
    held = json.loads(runs["held.json"].read_text())
    rc = load_run_config("cpu-baby", [*TINY, "parallel=fsdp", "batch_size=2"])
    plan, whole = memory_plan(rc, gpus=2), memory_plan(rc, gpus=1)
    model = GPT(rc.model)  # one process: what all of it holds after a step
    optimizer = configure_optimizer(model, rc.train, torch.device("cpu"))
    x = torch.randint(0, rc.model.vocab_size, (2, rc.model.block_size))
    accumulate_gradients(model, [(x, x)], torch.device("cpu"))
    one = parallel.local_bytes(model, optimizer)
    apply_gradients(model, optimizer, torch.tensor(1.0), 1.0)
    one["optimizer"] = parallel.local_bytes(model, optimizer)["optimizer"]
    assert (whole.weights, whole.gradients, whole.optimizer) == (one["parameters"], one["gradients"], one["optimizer"])
    for rank in held:
        for key, planned in (("parameters", plan.weights), ("gradients", plan.gradients),
                             ("optimizer", plan.optimizer)):
            assert abs(rank[key] - planned) <= 0.10 * planned, (key, rank[key], planned)
            assert abs(rank[key] - one[key] / 2) <= 0.10 * one[key] / 2, (key, rank[key], one[key])


def test_the_plan_command_prints_the_per_gpu_bytes_and_the_gpus_it_fits(capsys):
    main(["plan", "gpt2", "--gpus", "8", "--parallel", "fsdp", "--activation-checkpointing"])
    out = capsys.readouterr().out
    assert "124,439,808 parameters on 8 GPU(s), parallel=fsdp, activation checkpointing" in out
    for label in ("weights", "gradients", "optimizer state", "activations", "fits on GPUs of: 16 GB"):
        assert label in out
    with pytest.raises(SystemExit) as exit_:
        main(["plan", "gpt2", "parallel=tp"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().endswith("parallel must be one of ddp, fsdp, got 'tp'")


# ---------------------------------------------------------------- sharded checkpoints: resharding, kills

def test_resume_on_two_then_one_then_two_ranks_continues_the_run(second_launch, runs):
    """2 ranks (steps 1-2, over two nodes), one process (3-4), 2 ranks (5-6): the same run as 2 ranks
    throughout, to float32 rounding. With dropout=0 nothing per-rank is left: the data position is
    the one global generator, the batch_size is rescaled to keep the global batch."""
    said, run_dir = second_launch["said"], second_launch["split"]
    assert any("resuming a run of 2 process(es) on 1: batch_size=4" in line for line in said), said
    assert [r["step"] for r in read_rows(run_dir, "train")] == list(range(1, 7))
    assert_same_run(run_dir, runs["fsdp"], tol=1e-5, evals=False)
    assert len(shard_folders(run_dir)) == 1  # each checkpoint's shards replace the last's


@pytest.mark.parametrize("mode", ["fsdp", "ddp"])
def test_with_dropout_resumed_on_the_same_ranks_is_bit_exact(second_launch, runs, mode):
    """Each rank's dropout RNG is saved and restored as its own: 3 + 3 steps on two ranks equal 6,
    sharded (fsdp) or replicated (ddp), each resumed in a new launch after another run's steps."""
    name, plain = ("dropout", "fsdp") if mode == "fsdp" else ("ddp-dropout", "ddp")
    whole, split = read_rows(runs[name], "train"), read_rows(second_launch[name], "train")
    assert [r["step"] for r in split] == list(range(1, 7))
    assert [r["train_loss"] for r in whole] == [r["train_loss"] for r in split]
    assert [r["train_loss"] for r in whole] != [r["train_loss"] for r in read_rows(runs[plain], "train")]
    for key, value in weights(runs[name]).items():
        assert torch.equal(weights(second_launch[name])[key], value), key


def test_sigkill_during_a_sharded_save_leaves_the_last_good_checkpoint_and_resumes(second_launch, runs):
    """Step 4's shards are all on the disk, its commit never came: step 2 stands; resuming (in one
    process) drops the orphan shards and ends where the unbroken run ends."""
    run_dir = second_launch["killed"]
    assert second_launch["result"].returncode != 0
    assert len(shard_folders(run_dir)) == 2  # the committed one and the orphan
    load_run(run_dir)
    state = ckpt.load_trainer_state(run_dir)
    assert state["step"] == 2 and (run_dir / state["sharded"] / ".metadata.json").is_file()

    train(load_run_config("cpu-baby", FSDP), run_dir, resume=True, log=quiet)
    assert shard_folders(run_dir) == [ckpt.load_trainer_state(run_dir)["sharded"]]
    assert_same_run(run_dir, runs["fsdp"], tol=1e-5, evals=False)


def test_a_kill_after_the_commit_record_of_a_sharded_checkpoint_is_finished_on_resume(data_env, tmp_path):
    """One process with parallel=fsdp (no torchrun: one shard) writes a normal resumable run."""
    run_dir = tmp_path / "run"
    recipe = [*TINY, "batch_size=2", "parallel=fsdp"]
    train(load_run_config("cpu-baby", [*recipe, "max_iters=2"]), run_dir, log=quiet)
    died = run_cli_process("train", "--out", str(run_dir), "--resume", "max_iters=4", env={"GLASSGPT_TEST_KILL": "commit"})
    assert died.returncode == -9, died.stderr
    assert (run_dir / ckpt.COMMIT).exists() and len(shard_folders(run_dir)) == 2
    load_run(run_dir)  # a reader finishes the renames
    assert ckpt.load_trainer_state(run_dir)["step"] == 4
    train(load_run_config("cpu-baby", [*recipe, "max_iters=6"]), run_dir, resume=True, log=quiet)
    assert [r["step"] for r in read_rows(run_dir, "train")] == list(range(1, 7))
    assert len(shard_folders(run_dir)) == 1


def test_resume_batch_size_keeps_the_global_batch_or_refuses():
    assert parallel.resume_batch_size(2, 2, 2, 1) == 4  # 2 ranks of 2 -> one process of 4
    assert parallel.resume_batch_size(4, 1, 4, 2) == 2
    assert parallel.resume_batch_size(2, 2, 3, 1) == 3  # batch_size given anew: the user's choice
    with pytest.raises(Exception, match="cannot be split evenly over 2 processes"):
        parallel.resume_batch_size(3, 1, 3, 2)
