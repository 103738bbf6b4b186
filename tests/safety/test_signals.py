"""Stop requests and time: SIGINT/SIGTERM end an evaluation, SAE training or an analysis
within one batch (the checkpoint whole, a resume finishing the job); a tokenizer whose
pipeline could take unbounded time or memory is refused when it is loaded; torchrun
variables are checked before any rendezvous.

The signals are real (`os.kill` of this process) and sent from inside the job, at a chosen
forward pass, so each test knows exactly how much work followed the request."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from glassgpt.config import load_run_config
from glassgpt.model import GPT
from glassgpt.stop import Interrupted, StopFlag, StopRequested, check_stop
from glassgpt.training.runtime import Dist
from glassgpt.training import train

from conftest import TINY, assert_clean_error, assert_consistent_checkpoint, cli, snapshot


def signal_on_forward(monkeypatch, at: int, when=lambda model: True) -> dict:
    """Count GPT forward passes (those `when(model)` accepts); on pass number `at`, send this
    process SIGTERM. Returns the count, {"n": ...}."""
    seen = {"n": 0}
    forward = GPT.forward

    def counting(self, *args, **kwargs):
        if when(self):
            seen["n"] += 1
            if seen["n"] == at:
                os.kill(os.getpid(), signal.SIGTERM)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(GPT, "forward", counting)
    return seen


def test_outside_a_stop_flag_check_stop_does_nothing_and_inside_it_raises_once_asked():
    check_stop()  # a notebook, a demo thread: no flag, nothing to do
    before = signal.getsignal(signal.SIGINT)  # Python's default, or what a test runner's worker set
    with StopFlag():
        check_stop()
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(StopRequested, match="stopped by SIGINT") as caught:
            check_stop()
        assert caught.value.exit_code == 130
        assert signal.getsignal(signal.SIGINT) is not before  # its own handler while it stands
    assert signal.getsignal(signal.SIGINT) is before  # put back


def test_a_stop_request_ends_glassgpt_eval_within_a_batch_and_appends_nothing(run_copy, monkeypatch):
    metrics = (run_copy / "metrics.jsonl").read_bytes()
    seen = signal_on_forward(monkeypatch, at=2)
    assert_clean_error(cli("eval", run_copy, "--batch-size", "1", "--device", "cpu", "--append-metrics"), 130,
                   "stopped by SIGTERM")
    assert seen["n"] == 2  # of thousands of windows: the request was seen before the third
    assert (run_copy / "metrics.jsonl").read_bytes() == metrics


def test_a_stop_request_during_trainings_periodic_eval_saves_the_step_and_the_run_resumes(
        tmp_path, small_data_env, monkeypatch):
    run_dir = tmp_path / "run"
    config = load_run_config("cpu-baby", [*TINY, "max_iters=4", "eval_interval=2", "eval_iters=20"])
    with monkeypatch.context() as patch, \
            pytest.raises(Interrupted, match="stopped by SIGTERM at step 2 with a checkpoint saved"):
        seen = signal_on_forward(patch, at=22, when=lambda model: not model.training)  # the eval at step 2's 2nd
        train(config, run_dir, log=lambda line: None)
    assert seen["n"] == 22  # the eval at step 2 stopped after 2 of its 20 batches
    assert assert_consistent_checkpoint(run_dir) == 2
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [0]  # the interrupted eval left no row

    train(config, run_dir, resume=True, log=lambda line: None)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [0, 2, 4] and rows[-1]["kind"] == "final"


def test_a_stop_request_during_the_final_eval_leaves_the_last_checkpoint_to_finish_from(
        tmp_path, small_data_env, monkeypatch):
    run_dir = tmp_path / "run"
    config = load_run_config("cpu-baby", [*TINY, "max_iters=2", "eval_interval=100"])
    with monkeypatch.context() as patch, pytest.raises(Interrupted, match="at step 2 with a checkpoint saved"):
        seen = signal_on_forward(patch, at=3, when=lambda model: not model.training)  # the eval at step 0 is one
        train(config, run_dir, log=lambda line: None)  # batch: the 3rd is the final eval's 2nd
    assert seen["n"] == 3  # of the final eval's 4 batches, 2 ran
    assert assert_consistent_checkpoint(run_dir) == 2
    final = train(config, run_dir, resume=True, log=lambda line: None)
    assert final["kind"] == "final" and final["step"] == 2


def test_a_stop_request_ends_an_analysis_within_a_forward_pass_and_keeps_the_earlier_report(run_copy, monkeypatch):
    before = snapshot(run_copy)
    seen = signal_on_forward(monkeypatch, at=2)
    assert_clean_error(cli("analyze", run_copy, "--windows", "16"), 130, "stopped by SIGTERM")
    assert seen["n"] <= 3  # of dozens: the prompt's pass, a window, then the request is seen
    assert snapshot(run_copy) == before  # nothing written: no report, no temporary folder


def test_a_stop_request_saves_the_sae_at_its_step_and_a_resume_ends_where_one_run_ends(run_copy, tmp_path, monkeypatch):
    from glassgpt.sae import SAETrainer, load_sae

    small = ["--hook", "blocks.0.resid_post", "--tokens", "4096", "--batch-size", "128", "--width", "32", "--k", "4"]
    assert cli("sae", run_copy, *small, "--out", tmp_path / "whole")[0] == 0
    step = SAETrainer.train_step

    def stop_after_five(self, x):
        metrics = step(self, x)
        if self.step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return metrics

    with monkeypatch.context() as patch:
        patch.setattr(SAETrainer, "train_step", stop_after_five)
        assert_clean_error(cli("sae", run_copy, *small, "--out", tmp_path / "split"), 130,
                       "stopped by SIGTERM at SAE step 5 with a checkpoint saved", "--resume")
    assert cli("sae", run_copy, *small, "--out", tmp_path / "split", "--resume")[0] == 0
    whole, split = load_sae(tmp_path / "whole")[0], load_sae(tmp_path / "split")[0]
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(value, split.state_dict()[name], atol=0, rtol=0, msg=name)


# ---------------------------------------------------------------- tokenizers: refused before they run

def bpe_run(tmp_path: Path, edit) -> Path:
    """A tiny run with a bpe tokenizer whose tokenizers JSON `edit(spec)` has changed."""
    from glassgpt.checkpoint import save_run
    from glassgpt.config import RunConfig, TrainConfig
    from glassgpt.tokenizer import BPETokenizer

    from conftest import tiny_config

    tokenizer = BPETokenizer.train(["the cat sat on the mat, the cat ran"] * 20, 262)
    cfg = tiny_config(vocab_size=262, block_size=32)
    save_run(tmp_path / "run", GPT(cfg), tokenizer, RunConfig(cfg, TrainConfig()))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    spec = json.loads(config["tokenizer"]["tokenizers_json"])
    edit(spec)
    config["tokenizer"]["tokenizers_json"] = json.dumps(spec)
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    return tmp_path / "run"


BACKTRACKING = {"type": "Replace", "pattern": {"Regex": "(a+)+$"}, "content": "x"}
MULTIPLYING = {"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"String": "a"},
                                                    "content": "a" * 64}] * 4}


@pytest.mark.parametrize("edit, fragment", [
    (lambda s: s.update(normalizer=BACKTRACKING), "normalizer is 'Replace'"),
    (lambda s: s.update(normalizer=MULTIPLYING), "normalizer is 'Sequence'"),
    (lambda s: s.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": "(a|aa)+$"}, "behavior": "Isolated",
                                       "invert": False}), "pre_tokenizer is 'Split'"),
    (lambda s: s.update(padding={"strategy": {"Fixed": 10**9}, "direction": "Right", "pad_to_multiple_of": None,
                                 "pad_id": 0, "pad_type_id": 0, "pad_token": "a"}), "padding is"),
    (lambda s: s["pre_tokenizer"].update(use_regex=False), "GPT-2's pattern"),
    (lambda s: s["model"].update(dropout=0.5), "dropout"),
])
def test_a_tokenizer_that_could_run_without_end_is_refused_when_the_run_loads(tmp_path, edit, fragment):
    run_dir = bpe_run(tmp_path, edit)
    assert_clean_error(cli("sample", run_dir, "--prompt", "aaaaaaaaaaaaaaaaaaaaaaaaaaaa!"), 1, "tokenizer", fragment)


def test_a_glassgpt_bpe_run_still_samples(tmp_path):
    status, _, err = cli("sample", bpe_run(tmp_path, lambda s: None), "--prompt", "the cat", "--max-new-tokens", "3")
    assert status == 0, err


# ---------------------------------------------------------------- torchrun variables

@pytest.mark.parametrize("env, fragment", [
    ({"WORLD_SIZE": "2", "RANK": "x", "LOCAL_RANK": "0"}, "RANK='x' is not a whole number"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two'"),
    ({"WORLD_SIZE": "2", "RANK": "5", "LOCAL_RANK": "0"}, "RANK=5 is outside the world of WORLD_SIZE=2"),
    ({"WORLD_SIZE": "2", "RANK": "-1", "LOCAL_RANK": "0"}, "RANK=-1 is outside"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "3"}, "LOCAL_RANK=3 is outside"),
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK is not"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, "MASTER_ADDR and MASTER_PORT"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "99999"},
     "MASTER_PORT"),
])
def test_malformed_torchrun_variables_are_one_line_before_any_rendezvous(tmp_path, small_data_env, monkeypatch,
                                                                        env, fragment):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda *a, **k: pytest.fail("a rendezvous began"))
    assert_clean_error(cli("train", "cpu-baby", *TINY, "--out", tmp_path / "run"), 2, fragment)
    assert not (tmp_path / "run").exists()


def test_a_rank_whose_peers_never_come_gives_up_after_the_rendezvous_timeout(monkeypatch):
    from glassgpt.training import runtime

    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29533"}.items():
        monkeypatch.setenv(name, value)
    asked = {}

    def never_meets(backend, timeout):
        asked["timeout"] = timeout
        raise torch.distributed.DistStoreError("Timed out after 600 seconds waiting for clients. 1/2 clients joined.")

    monkeypatch.setattr(torch.distributed, "init_process_group", never_meets)
    assert Dist.from_env() == Dist(1, 1, 2)
    with pytest.raises(runtime.RunError, match="did not meet .*Timed out"):
        runtime.init_process_group("gloo")
    assert asked["timeout"] == runtime.RENDEZVOUS_TIMEOUT
