import pytest

from glassgpt.config import GPTConfig, apply_overrides, load_run_config, parse_value, preset_names
from glassgpt.errors import UsageError


def test_presets_are_listed_and_load():
    assert {"gpt2", "gpt2-163m", "shakespeare-char", "cpu-baby"} <= set(preset_names())
    baby = load_run_config("cpu-baby")
    assert (baby.model.n_layer, baby.model.n_head, baby.model.n_embd, baby.model.block_size) == (4, 4, 128, 64)
    t = baby.train
    assert (t.batch_size, t.max_iters, t.learning_rate, t.min_lr, t.warmup_iters, t.beta2, t.eval_interval) == (
        12, 2000, 1e-3, 1e-4, 100, 0.99, 250)
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
