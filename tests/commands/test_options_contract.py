"""One contract, every model option: each setting of each GPTConfig option (and a few combinations)
crossed with every promise the code makes about a model.

Contracts: both attention paths compute the same function (outputs and gradients); no position
sees a later one; cached
generation equals uncached; direct logit attribution's terms add up to the logit it says it
splits; the logit lens's last point is the model's own loss; `hook_names()` lists the hook
points in the order a forward pass fires them; Hugging Face export round-trips or refuses in one
sentence naming what GPT-2 lacks; resuming refuses exactly the changes after which the saved
weights would not compute the same function; `glassgpt analyze` runs.

A new option goes into SETTINGS (one value per line, plus any combination worth it) and gets
every contract at once. The models are tiny (2 layers, 16 wide, 16 positions) with every weight
randomised, so a term a path forgets shows.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from glassgpt.analysis import direct_logit_attribution, logit_lens, window_statistics
from glassgpt.config import ANY, GPTConfig, RunConfig, TrainConfig, fixed_on, gpt2_refusals
from glassgpt.errors import UsageError
from glassgpt.inference.generate import generate, stream_logits
from glassgpt.model import GPT

from conftest import assert_same_outputs_and_gradients, make_tiny_run, tiny_config

SPEEDRUN = dict(pos_encoding="rope", qk_norm=True, mlp_act="relu2", logit_softcap=2.0, zero_init_proj=True)
SETTINGS = {  # every value of every option (attn_impl: both, in each contract that runs the model)
    "default": {},  # pos_encoding=learned, norm=scratch, mlp_act=gelu, attn_sink=none ...
    "rope": dict(pos_encoding="rope"),
    "norm=torch": dict(norm="torch"),
    "qk_norm": dict(qk_norm=True),
    "relu2": dict(mlp_act="relu2"),
    "softcap": dict(logit_softcap=2.0),
    "zero_init_proj": dict(zero_init_proj=True),
    "sink=learned": dict(attn_sink="learned"),
    "sink=gate": dict(attn_sink="gate"),
    "attn_only": dict(attn_only=True),
    "untied,no-bias": dict(tie_weights=False, bias=False),
    "speedrun": SPEEDRUN,  # the cpu-speedrun preset's options together
    "rope,sink=learned,attn_only": dict(pos_encoding="rope", attn_sink="learned", attn_only=True),
    "torch,gate,softcap,qk_norm": dict(norm="torch", attn_sink="gate", logit_softcap=2.0, qk_norm=True),
}
IDS = list(SETTINGS)
ATTN_IMPLS = ["manual", "sdpa"]


def randomise(model: GPT) -> GPT:
    """Every weight moved off its initial value: norms' scales and shifts, biases, sink logits and
    zero-initialised projections all matter, so a path that drops one gives other numbers."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("sink_logit"):
                p.copy_(noise * 2)
            elif ".ln" in name or name.startswith("ln_f"):
                p.copy_(noise * 0.3 + (1.0 if name.endswith("weight") else 0.0))
            else:
                p.add_(noise * 0.05)
    return model


def build(setting: str, attn_impl: str = "manual", **cfg) -> GPT:
    return randomise(GPT(tiny_config(attn_impl=attn_impl, **SETTINGS[setting], **cfg)))


# ---------------------------------------------------------------- the two attention paths

@pytest.mark.parametrize("setting", IDS)
def test_both_attention_paths_compute_the_same_outputs_and_gradients(setting):
    manual, sdpa = build(setting, "manual"), build(setting, "sdpa")
    sdpa.load_state_dict(manual.state_dict())
    assert_same_outputs_and_gradients(manual, sdpa)


@pytest.mark.parametrize("attn_impl", ATTN_IMPLS)
@pytest.mark.parametrize("setting", IDS)
def test_changing_token_t_changes_no_logit_before_t(setting, attn_impl):
    model = build(setting, attn_impl).eval()
    idx = torch.randint(0, 50, (1, 16))
    with torch.no_grad():
        base, _ = model(idx)
        for t in (0, 5, 15):
            changed = idx.clone()
            changed[0, t] = (changed[0, t] + 1) % 50
            logits, _ = model(changed)
            torch.testing.assert_close(logits[:, :t], base[:, :t], atol=1e-6, rtol=0)
            assert not torch.allclose(logits[:, t], base[:, t]), "the changed position itself must change"


# ---------------------------------------------------------------- generation

@pytest.mark.parametrize("attn_impl", ATTN_IMPLS)
@pytest.mark.parametrize("setting", IDS)
def test_cached_generation_equals_uncached(setting, attn_impl):
    """Greedy tokens and logits, past block_size (the cache refills), and seeded samples."""
    model = build(setting, attn_impl).eval()
    prompt = torch.randint(0, 50, (2, 5))
    steps = {use: list(stream_logits(model, prompt, 20, temperature=0, use_cache=use)) for use in (True, False)}
    for (ids_c, logits_c), (ids_u, logits_u) in zip(steps[True], steps[False]):
        assert torch.equal(ids_c, ids_u)
        torch.testing.assert_close(logits_c, logits_u, atol=1e-4, rtol=1e-4)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(generate(model, prompt, 8, generator=g1), generate(model, prompt, 8, use_cache=False, generator=g2))


@pytest.mark.parametrize("setting", IDS)
def test_compiles_without_a_graph_break_and_computes_the_same(setting):
    """`compile=true` with every option: one graph (the idle hook points cost no break), the
    same logits, and hooks attached for a call still run in the compiled model."""
    model = build(setting, "sdpa").eval()
    idx = torch.randint(0, 50, (2, 16))
    graphs = []

    def counting_backend(graph, example_inputs):  # what dynamo captured, run as it is
        graphs.append(graph)
        return graph.forward

    torch._dynamo.reset()  # GPT.forward's cache would hold the other settings' entries
    compiled = torch.compile(model, backend=counting_backend)
    with torch.no_grad():
        torch.testing.assert_close(compiled(idx)[0], model(idx)[0], atol=1e-5, rtol=1e-5)
        if len(graphs) != 1:  # say why: explain traces again and names each break
            torch._dynamo.reset()
            reasons = [r.reason for r in torch._dynamo.explain(model)(idx).break_reasons][:2]
            pytest.fail(f"{len(graphs)} graphs, not 1: {reasons}")
        with model.hooks([("blocks.0.attn.out", lambda x, hook: torch.zeros_like(x))]):
            ablated = compiled(idx)[0]
        assert not torch.allclose(ablated, model(idx)[0])


# ---------------------------------------------------------------- the analysis identities

@pytest.mark.parametrize("setting", IDS)
def test_dla_terms_add_up_to_the_logit_they_say_they_split(setting):
    """The terms sum to `logit`; `model_logit` is forward's; with a softcap `logit` is the logit
    before the cap (`attributed` says so) and the model's is the cap of it."""
    model = build(setting, "sdpa").eval()
    idx = torch.randint(0, 50, (10,))
    dla = direct_logit_attribution(model, idx, token=17, position=6)
    assert float(dla["heads"].sum() + dla["mlp"].sum()) + dla["rest"] == pytest.approx(dla["logit"], abs=1e-4)
    with torch.no_grad():
        assert dla["model_logit"] == pytest.approx(float(model(idx[None])[0][0, 6, 17]), abs=1e-5)
    cap = model.config.logit_softcap
    if cap:
        assert dla["attributed"] == "logit before the softcap"
        assert dla["model_logit"] == pytest.approx(cap * math.tanh(dla["logit"] / cap), abs=1e-5)
    else:
        assert dla["attributed"] == "logit" and dla["model_logit"] == pytest.approx(dla["logit"], abs=1e-5)
    if model.config.attn_only:
        assert not dla["mlp"].any()


@pytest.mark.parametrize("setting", IDS)
def test_the_logit_lens_last_point_is_the_models_loss(setting):
    """The same unembed of the same stream, to float rounding: the held lens adds its losses up per
    window (for their standard error), the streamed one per position on the manual attention path."""
    model = build(setting, "sdpa").eval()
    idx, targets = torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16))
    targets[0, :3] = -1
    with torch.no_grad():
        _, loss = model(idx, targets)
    assert float(logit_lens(model, idx, targets)["loss"][-1]) == pytest.approx(float(loss), abs=1e-6)
    streamed = window_statistics(model, idx, targets, batch_size=2)["logit_lens"]["loss"][-1]
    assert float(streamed) == pytest.approx(float(loss), abs=1e-5)


@pytest.mark.parametrize("setting", IDS)
def test_hook_names_list_the_hook_points_in_the_order_a_forward_pass_fires_them(setting):
    model = build(setting, "sdpa")
    fired = []
    with model.hooks([(lambda name: True, lambda x, hook: fired.append(hook.name))]):
        model(torch.randint(0, 50, (1, 6)))
    assert fired == model.hook_names()


# ---------------------------------------------------------------- Hugging Face export

@pytest.mark.parametrize("setting", IDS)
def test_hf_export_round_trips_or_refuses_in_one_sentence(setting):
    pytest.importorskip("transformers")
    from glassgpt.hf import from_hf, to_hf

    model = build(setting, "sdpa").eval()
    idx = torch.randint(0, 50, (2, 16))
    refusals = gpt2_refusals(model.config)
    if refusals:
        with pytest.raises(UsageError) as refused:
            to_hf(model)
        message = str(refused.value)
        assert "\n" not in message and message.endswith(": this model cannot be exported to transformers")
        constrained = [f.name for f in dataclasses.fields(GPTConfig)
                       if f.name in SETTINGS[setting] and f.metadata["gpt2"] != ANY]
        assert constrained and all(f"{k}=" in message for k in constrained), message
        return
    assert not any(f.metadata["gpt2"] != ANY for f in dataclasses.fields(GPTConfig) if f.name in SETTINGS[setting])
    hf = to_hf(model)
    with torch.no_grad():
        ours = model(idx)[0]
        torch.testing.assert_close(hf(idx).logits, ours, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(from_hf(hf)(idx)[0], ours, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- resume

@pytest.fixture(scope="module")
def base_run(tmp_path_factory, prepared_data_dir, mirror):
    """A finished 2-step run of the default tiny model on shakespeare-char."""
    from glassgpt.training import train

    run = tmp_path_factory.mktemp("contract") / "run"
    with pytest.MonkeyPatch.context() as m:
        m.setenv("GLASSGPT_DATA_DIR", str(prepared_data_dir))
        m.setenv("GLASSGPT_MIRROR", str(mirror))
        train(resume_config({}), run, log=lambda s: None)
    return run


def resume_config(options: dict) -> RunConfig:
    train_config = TrainConfig(max_iters=2, eval_interval=2, eval_iters=1, batch_size=2, device="cpu")
    return RunConfig(tiny_config(vocab_size=65, **options), train_config)


def same_function(options: dict) -> bool:
    """Whether a model with `options` takes the default model's weights as they are and computes
    the same logits with them: what makes a change harmless on resume."""
    base = randomise(GPT(tiny_config(vocab_size=65))).eval()
    other = GPT(tiny_config(vocab_size=65, **options)).eval()
    try:
        other.load_state_dict(base.state_dict())
    except RuntimeError:  # other weights, or other shapes
        return False
    idx = torch.randint(0, 65, (2, 16))
    with torch.no_grad():
        return torch.allclose(base(idx)[0], other(idx)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("setting", IDS + ["attn_impl=sdpa"])
def test_resume_refuses_exactly_the_changes_that_alter_the_model(setting, base_run, data_env):
    """Against a run of the default model, resuming with the setting is refused, naming each field
    declared fixed that it changes, if and only if the saved weights would not give the same
    function (a change of free fields only, norm, attn_impl, zero_init_proj, resumes: here the
    run is complete, nothing to do)."""
    from glassgpt.training import train

    options = SETTINGS.get(setting, {"attn_impl": "sdpa"})
    fixed = [k for k in options if k in fixed_on(GPTConfig, "resume")]
    try:
        result = train(resume_config(options), base_run, resume=True, log=lambda s: None)
    except UsageError as refused:
        assert "cannot resume" in str(refused) and fixed and all(f"{k} " in str(refused) for k in fixed)
        assert not same_function(options), f"{setting} computes the same with the saved weights, yet is refused"
    else:
        assert result["kind"] == "final" and not fixed
        assert same_function(options), f"{setting} changes the model, yet resumes"


# ---------------------------------------------------------------- glassgpt analyze

@pytest.mark.parametrize("setting", IDS)
def test_glassgpt_analyze_runs(setting, tmp_path, capsys):
    import json

    from glassgpt.cli import main

    run = make_tiny_run(tmp_path / "run", **SETTINGS[setting])
    main(["analyze", str(run), "--windows", "2", "--prompt", "ROMEO: here"])
    assert "analysis written to" in capsys.readouterr().out
    numbers = json.loads((run / "analysis" / "analysis.json").read_text())
    assert numbers["model"] == dataclasses.asdict(GPT(tiny_config(vocab_size=numbers["model"]["vocab_size"],
                                                                  block_size=32, **SETTINGS[setting])).config)
    assert (run / "analysis" / "report.html").is_file()
