import pytest

from glassgpt.config import GPTConfig, apply_overrides, load_run_config, parse_value, preset_names
from glassgpt.errors import UsageError


def test_presets_are_listed_and_load():
    assert {"gpt2", "gpt2-163m", "shakespeare-char", "cpu-baby"} <= set(preset_names())
    baby = load_run_config("cpu-baby")
    assert (baby.model.n_layer, baby.model.n_head, baby.model.n_embd, baby.model.block_size) == (4, 4, 128, 64)
    t = baby.train
    assert (t.batch_size, t.max_iters, t.learning_rate, t.min_lr, t.warmup_iters, t.beta2, t.eval_interval) == (
        12, 1600, 3e-3, 3e-4, 100, 0.99, 250)
    assert baby.model.dropout == 0.0 and baby.model.pos_encoding == "rope"


def test_overrides_reach_either_config_and_keep_types():
    rc = load_run_config("cpu-baby", ["n_layer=2", "learning_rate=3e-4", "compile=true", "dataset=shakespeare",
                                      "dropout=0"])
    assert rc.model.n_layer == 2 and rc.train.learning_rate == 3e-4 and rc.train.compile is True
    assert rc.train.dataset == "shakespeare" and rc.model.dropout == 0.0 and isinstance(rc.model.dropout, float)


@pytest.mark.parametrize("override,fragment", [
    ("n_layers=2", "did you mean 'n_layer'"),
    ("n_layer", "key=value"),
    ("n_layer=two", "whole number"),
    ("compile=1", "true or false"),
    ("learning_rate=-1", "learning_rate"),
    ("dtype=float8", "dtype"),
    ("min_lr=1", "min_lr"),
])
def test_bad_overrides_are_rejected_with_advice(override, fragment):
    rc = load_run_config("cpu-baby")
    with pytest.raises(UsageError, match=fragment):
        apply_overrides(rc, [override])


def test_toml_file_round_trip(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nn_layer = 3\nn_head = 2\nn_embd = 64\nblock_size = 32\nvocab_size = 65\n'
                    '[train]\nmax_iters = 7\n')
    rc = load_run_config(str(path), ["max_iters=9"])
    assert rc.model.n_layer == 3 and rc.train.max_iters == 9


def test_gpt_config_preset_and_parse_value():
    assert GPTConfig.preset("gpt2").n_layer == 12
    assert parse_value("3") == 3 and parse_value("1e-3") == 1e-3 and parse_value("true") is True
    assert parse_value("rope") == "rope" and parse_value('"x y"') == "x y"


# ---------------------------------------------------------------- each option declared once

def test_every_field_declares_its_resume_fine_tune_and_gpt2_rules_beside_its_default():
    import dataclasses

    from glassgpt.config import TrainConfig

    for cls in (GPTConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            assert {"resume", "finetune", "gpt2"} <= set(f.metadata), f"{cls.__name__}.{f.name} declares no rules"


def test_the_shape_fields_resume_refusals_and_export_refusals_are_read_from_the_declarations():
    from glassgpt.training import finetune
    from glassgpt.training import loop as train
    from glassgpt.config import TrainConfig, fixed_on, gpt2_refusals

    free = {"dropout", "norm", "attn_impl", "zero_init_proj"}
    every = [f.name for f in __import__("dataclasses").fields(GPTConfig)]
    assert finetune.SHAPE_FIELDS == tuple(k for k in every if k not in free) == train.RESUME_FIXED_MODEL
    assert fixed_on(TrainConfig, "resume") == ("optimizer", "bos", "parallel") and fixed_on(TrainConfig, "finetune") == ()
    assert gpt2_refusals(GPTConfig()) == [] and gpt2_refusals(GPTConfig(bias=False, n_layer=3)) == []
    assert gpt2_refusals(GPTConfig(pos_encoding="rope", logit_softcap=30.0)) == [
        "GPT-2 has learned positions only (this model has pos_encoding=rope)",
        "GPT-2 has no logit softcap (this model has logit_softcap=30.0)"]


def test_a_new_field_that_declares_nothing_may_not_change_and_gpt2_needs_its_default():
    import dataclasses

    from glassgpt.config import fixed_on, gpt2_refusals

    @dataclasses.dataclass
    class Grown(GPTConfig):
        n_experts: int = 1  # added without saying what may change

    assert fixed_on(Grown, "resume")[-1] == "n_experts" and fixed_on(Grown, "finetune")[-1] == "n_experts"
    assert gpt2_refusals(Grown()) == []
    assert gpt2_refusals(Grown(n_experts=4)) == ["GPT-2 needs n_experts=1 (this model has n_experts=4)"]


def test_resume_refuses_a_fixed_recipe_field_and_names_both_values(tmp_path):
    from glassgpt.config import TrainConfig
    from glassgpt.training.loop import check_same_recipe

    check_same_recipe(TrainConfig(), TrainConfig(max_iters=9, learning_rate=3e-4), tmp_path)  # free to change
    with pytest.raises(UsageError, match="trained with optimizer=adamw, with optimizer=muon"):
        check_same_recipe(TrainConfig(), TrainConfig(optimizer="muon"), tmp_path)
