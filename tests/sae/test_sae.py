"""Sparse autoencoders: a known dictionary recovered, the sparsity rules, exact splicing,
exact resume, the command and its refusals."""

import json
import shutil

import pytest
import torch

from glassgpt import checkpoint as ckpt
from glassgpt.config import load_run_config
from glassgpt.model import GPT
from glassgpt.sae import (SAE, SAEConfig, SAETrainConfig, evaluate_sae, load_sae, run_sae, splice, to_rows,
                          train_sae)
from glassgpt.data import TokenDataset
from glassgpt.sae import activation_rows, fraction_unexplained
from glassgpt.training import train

from conftest import tiny_config
from conftest import TINY, assert_clean_error, cli, snapshot


def sparse_mixes(truth: torch.Tensor, active: int, rows: int, generator: torch.Generator):
    """Endless batches: each row a non-negative mix of `active` of the true directions."""
    while True:
        idx = torch.randint(truth.size(0), (rows, active), generator=generator)
        coef = torch.zeros(rows, truth.size(0)).scatter(1, idx, torch.rand(rows, active, generator=generator) + 0.5)
        yield coef @ truth


@pytest.mark.slow
def test_a_known_sparse_dictionary_is_recovered():
    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(256, 64, generator=generator)  # 256 unit directions in 64 dimensions
    truth /= truth.norm(dim=1, keepdim=True)
    sae = SAE(SAEConfig(d_in=64, width=512, k=4, dead_tokens=50_000), generator=torch.Generator().manual_seed(1))
    train_sae(sparse_mixes(truth, 4, 512, generator), sae, SAETrainConfig(steps=600, lr=3e-3))
    best_cosine = (truth @ sae.W_dec.detach().t()).max(dim=1).values  # per true direction, its closest feature
    assert float(best_cosine.mean()) >= 0.9
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(512))  # unit decoder rows


def test_topk_keeps_exactly_k_per_token_and_batch_topk_k_on_average():
    sae = SAE(SAEConfig(d_in=16, width=64, k=5))
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive: TopK has k to keep
    x = torch.randn(32, 16)
    assert ((sae.encode(x) > 0).sum(dim=1) == 5).all()
    with torch.no_grad():
        sae.b_enc.fill_(-10.0)  # none positive: nothing is kept, never a negative feature
    assert int((sae.encode(x) != 0).sum()) == 0
    batch = SAE(SAEConfig(d_in=16, width=64, k=5, batch_topk=True))
    with torch.no_grad():
        batch.b_enc.fill_(10.0)
    f = batch.train().encode(x)
    assert int((f > 0).sum()) == 5 * 32 and (f > 0).sum(dim=1).float().std() > 0  # per batch, not per token
    assert float(batch.threshold) > 0  # learned for inference
    assert (batch.eval().encode(x) > 0).any()


@pytest.mark.parametrize("attn_impl", ["manual", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_identity_dictionary_splices_in_exactly_and_recovers_all_of_the_loss(attn_impl, dtype):
    model = GPT(tiny_config(attn_impl=attn_impl)).eval()
    for p in model.parameters():
        p.data = p.data.to(dtype)
    idx = torch.randint(0, 50, (4, 16))
    hook = "blocks.1.resid_mid"
    sae = SAE.identity(16)
    clean, _ = model(idx)
    targets = clean.argmax(dim=-1)  # what the model predicts: zeroing the stream loses it
    spliced, _ = model.run_with_hooks(idx, [(hook, splice(sae))])
    torch.testing.assert_close(spliced, clean, atol=1e-4 if dtype == torch.float32 else 5e-2, rtol=1e-3)
    result = evaluate_sae(model, sae, hook, idx, targets)
    assert result["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-4 if dtype == torch.float32 else 2e-2)
    assert result["fvu"] < 1e-6 and result["l0"] == 16


def test_per_head_hooks_round_trip_one_head_or_all():
    model = GPT(tiny_config()).eval()
    idx = torch.randint(0, 50, (2, 8))
    _, cache = model.run_with_cache(idx, names=["blocks.0.attn.z"])
    z = cache["blocks.0.attn.z"]  # (B, nh, T, hs)
    from glassgpt.sae import from_rows

    assert to_rows(z).shape == (16, 16) and to_rows(z, head=1).shape == (16, 8)
    torch.testing.assert_close(from_rows(to_rows(z), z), z)
    torch.testing.assert_close(from_rows(to_rows(z, 1), z, 1), z)


# ---------------------------------------------------------------- the command

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, prepared_data_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLASSGPT_DATA_DIR", str(prepared_data_dir))
        run_dir = tmp_path_factory.mktemp("sae") / "run"
        train(load_run_config("cpu-baby", [*TINY, "max_iters=30", "n_embd=32"]), run_dir, log=lambda line: None)
    return run_dir


@pytest.fixture
def run_dir(tiny_run, tmp_path, data_env):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


SMALL = ["--tokens", "12800", "--batch-size", "256", "--width", "128", "--k", "8"]


def test_the_command_trains_evaluates_and_writes_a_feature_page(run_dir):
    status, out, err = cli("sae", run_dir, "--hook", "blocks.0.resid_post", *SMALL)
    assert status == 0, err
    assert "CE loss recovered" in out
    folder = run_dir / "sae" / "blocks.0.resid_post"
    evaluation = json.loads((folder / "evaluation.json").read_text())
    assert evaluation["l0"] <= 8 and evaluation["tokens"] > 0
    # the FVU it reports is the one its weights give, and training lowered it well below a fresh SAE's
    sae, identity = load_sae(folder)
    model, _, _ = ckpt.load_run(run_dir)
    val = TokenDataset.load("shakespeare-char").split("val")
    idx = torch.from_numpy(val[: 8 * 16].astype("int64")).view(8, 16)  # (B, T) validation windows
    rows = activation_rows(model, "blocks.0.resid_post", idx)  # (B*T, C)
    with torch.no_grad():
        trained = fraction_unexplained(rows, sae(rows)[0]).item()
        fresh = fraction_unexplained(rows, SAE(SAEConfig(**identity["sae"]))(rows)[0]).item()
    assert trained == pytest.approx(evaluation["fvu"], abs=0.15) and trained < 0.7 * fresh, (trained, fresh)
    features = json.loads((folder / "features.json").read_text())
    assert len(features) == 128
    alive = [f for f in features if f["density"] > 0]
    assert alive and all(len(f["promotes"]) == 8 and f["contexts"] for f in alive)
    from glassgpt.sae.page import decode_page_data

    data = decode_page_data((folder / "features.html").read_text())
    assert sorted(f["i"] for f in data["features"]) == [f["feature"] for f in alive]  # every live feature
    assert all("p" in f for f in data["features"]) and data["tokens_read"] > 2048
    sae, identity = load_sae(folder)
    assert identity["hook"] == "blocks.0.resid_post" and sae.config.width == 128


def test_a_resumed_sae_equals_one_trained_in_one_go(run_dir, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    run_sae(run_dir, "blocks.0.resid_post", width=128, k=8, tokens=12800, batch_tokens=256, out=whole, log=str)

    def stop_at_20(done, total):
        if done == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sae(run_dir, "blocks.0.resid_post", width=128, k=8, tokens=12800, batch_tokens=256, out=split,
                checkpoint_every=20, progress=stop_at_20)
    assert json.loads((split / "sae.json").read_text())["hook"] == "blocks.0.resid_post"
    run_sae(run_dir, "blocks.0.resid_post", width=128, k=8, tokens=12800, batch_tokens=256, out=split, resume=True)
    a, b = load_sae(whole)[0], load_sae(split)[0]
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, atol=0, rtol=0, msg=name)
    assert (whole / "metrics.jsonl").read_text() == (split / "metrics.jsonl").read_text()


@pytest.mark.parametrize("args, fragment", [
    (["--hook", "blocks.0.resid_pots"], "did you mean 'blocks.0.resid_post'"),
    (["--hook", "blocks.0.attn.pattern"], "(B, nh, T, T)"),
    (["--hook", "blocks.0.resid_post", "--k", "200", "--width", "128"], "must not exceed the width"),
    (["--hook", "blocks.0.resid_post", "--tokens", "100"], "less than one batch"),
    (["--hook", "blocks.0.resid_post", "--head", "0"], "per-head"),
    (["--hook", "blocks.0.attn.z", "--head", "9"], "--head must be in 0..1"),
])
def test_bad_sae_requests_are_one_line_and_write_nothing(run_dir, args, fragment):
    before = snapshot(run_dir)
    assert_clean_error(cli("sae", run_dir, *args), 2, fragment)
    assert snapshot(run_dir) == before


def test_an_sae_on_a_run_without_its_data_is_one_line(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(tmp_path / "no-data"))
    assert_clean_error(cli("sae", run_dir, "--hook", "blocks.0.resid_post", *SMALL), 2, "not ready", "prepare")
    assert not (run_dir / "sae").exists()


def test_an_existing_sae_folder_needs_resume_and_resume_needs_the_same_settings(run_dir):
    assert cli("sae", run_dir, "--hook", "blocks.0.resid_post", *SMALL)[0] == 0
    assert_clean_error(cli("sae", run_dir, "--hook", "blocks.0.resid_post", *SMALL), 2, "--resume")
    assert_clean_error(cli("sae", run_dir, "--hook", "blocks.0.resid_post", *SMALL[:-1], "4", "--resume"), 2,
                   "other settings", "sae")


def test_the_demo_shows_features_per_token_and_steering_changes_the_text(run_dir):
    pytest.importorskip("gradio")
    from glassgpt.demo import Demo, SAEDemo, build_app
    from glassgpt.errors import UsageError
    from glassgpt.sae import discover_saes

    assert cli("sae", run_dir, "--hook", "blocks.0.resid_post", *SMALL)[0] == 0
    (run_dir / "sae" / "broken").mkdir()
    (run_dir / "sae" / "broken" / "sae.json").write_text("{")
    saes = discover_saes(run_dir)
    assert list(saes) == ["blocks.0.resid_post"]  # the unreadable folder is left out
    model, tokenizer, _ = ckpt.load_run(run_dir)
    demo = Demo(model, tokenizer, saes=saes)
    build_app(demo)  # the Features tab builds
    features = SAEDemo(demo)
    rows = features.features("ROMEO: and", "blocks.0.resid_post")
    assert [r[1] for r in rows][:3] == ["R", "O", "M"] and any(r[2] for r in rows)
    plain = features.steer("ROMEO:", "blocks.0.resid_post", 0, 0.0, 30, 1)
    pushed = features.steer("ROMEO:", "blocks.0.resid_post", 0, 20.0, 30, 1)
    assert plain.startswith("ROMEO:") and pushed.startswith("ROMEO:") and plain != pushed
    for bad in ((1000, 5.0), (0, 1e9), ("x", 1.0)):
        with pytest.raises(UsageError):
            features.steer("ROMEO:", "blocks.0.resid_post", bad[0], bad[1], 10, 1)
    with pytest.raises(UsageError, match="no SAE named"):
        features.features("ROMEO:", "nope")
    from glassgpt.sae.page import decode_page_data

    page = (run_dir / "sae" / "blocks.0.resid_post" / "features.html").read_text()
    text = decode_page_data(page)["text"]  # the window's tokens, each with the features firing on it
    assert "Which features fire where" in page and len(text) == 16 and any(fired for _, fired in text)


def test_the_report_lists_the_runs_saes(run_dir):
    assert cli("sae", run_dir, "--hook", "blocks.0.resid_post", *SMALL)[0] == 0
    assert cli("analyze", run_dir, "--windows", 1)[0] == 0
    report = (run_dir / "analysis" / "report.html").read_text()
    assert "Sparse autoencoders" in report and "blocks.0.resid_post" in report and "CE loss recovered" in report


def test_the_sae_benchmark_runs_at_a_tiny_size(run_dir, tmp_path):
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("bench_sae", REPO / "benchmarks" / "bench_sae.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = bench.main(["--run", str(run_dir), "--hook", "blocks.0.resid_post", "--tokens", "2048",
                       "--batch-size", "256", "--width", "64", "--k", "4", "--eval-windows", "4",
                       "--out", str(tmp_path)])
    record = json.loads(path.read_text())
    glassgpt = record["results"]["glassgpt"]
    assert record["machine"]["cpu_count"] and glassgpt["train_seconds"] > 0
    assert glassgpt["tokens_per_s"] == pytest.approx(2048 / glassgpt["train_seconds"], rel=0.01)


@pytest.mark.parametrize("name", ["sae_state.safetensors", "sae.safetensors"])
def test_a_corrupt_sae_folder_is_one_line_on_resume(run_dir, name):
    assert cli("sae", run_dir, "--hook", "blocks.0.resid_post", *SMALL)[0] == 0
    path = run_dir / "sae" / "blocks.0.resid_post" / name
    path.write_bytes(path.read_bytes()[:100])
    assert_clean_error(cli("sae", run_dir, "--hook", "blocks.0.resid_post", *SMALL, "--resume"), 1, "corrupt")
