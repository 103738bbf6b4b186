"""The command line as a user meets it: bad input gets one clear line and a non-zero exit."""

import pytest

from conftest import assert_clean_error, run_cli


def test_unknown_preset(data_env):
    assert_clean_error(run_cli("train", "cpu-bab"), 2, "unknown preset", "cpu-baby")


def test_unknown_config_key_suggests_the_right_one(data_env, tmp_path):
    r = run_cli("train", "cpu-baby", "n_layers=2", "--out", str(tmp_path / "r"))
    assert_clean_error(r, 2, "unknown config key 'n_layers'", "n_layer")
    assert not (tmp_path / "r").exists(), "nothing written for a rejected command"


def test_n_embd_not_divisible_by_n_head(data_env, tmp_path):
    assert_clean_error(run_cli("train", "cpu-baby", "n_embd=130", "--out", str(tmp_path / "r")), 2, "divisible")


def test_wrong_type_for_a_key(data_env, tmp_path):
    assert_clean_error(run_cli("train", "cpu-baby", "max_iters=lots", "--out", str(tmp_path / "r")), 2, "max_iters")


def test_unknown_key_in_a_toml_file(data_env, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[model]\nn_layer = 2\nn_head = 2\nn_embd = 32\nblock_size = 32\nvocab_size = 65\n'
                      '[train]\nlearning_rat = 1e-3\n')
    assert_clean_error(run_cli("train", str(config), "--out", str(tmp_path / "r")), 2, "learning_rat", "learning_rate")


def test_missing_run_directory(tmp_path):
    assert_clean_error(run_cli("sample", str(tmp_path / "nope")), 2, "does not exist")


def test_a_directory_that_is_not_a_run(tmp_path):
    assert_clean_error(run_cli("sample", str(tmp_path)), 2, "not a run directory")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, prepared_data_dir, mirror):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    env = {"GLASSGPT_DATA_DIR": str(prepared_data_dir), "GLASSGPT_MIRROR": str(mirror)}
    r = run_cli("train", "cpu-baby", "n_layer=1", "n_embd=32", "max_iters=20", "eval_interval=10",
                "--out", str(run_dir), env=env)
    assert r.returncode == 0, r.stderr
    assert "val loss" in r.stdout and "tok/s" in r.stdout
    return run_dir


def test_prompt_outside_the_char_vocabulary(trained_run):
    assert_clean_error(run_cli("sample", str(trained_run), "--prompt", "héllo"), 2, "'é'", "vocabulary")


def test_sample_prints_text_and_is_reproducible_with_a_seed(trained_run):
    a = run_cli("sample", str(trained_run), "--prompt", "ROMEO:", "--max-new-tokens", "40", "--seed", "7")
    b = run_cli("sample", str(trained_run), "--prompt", "ROMEO:", "--max-new-tokens", "40", "--seed", "7")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("ROMEO:")
    assert len(a.stdout.rstrip("\n")) == len("ROMEO:") + 40
    assert "tokens/s" in a.stderr


def test_training_into_an_existing_run_is_refused(trained_run):
    assert_clean_error(run_cli("train", "cpu-baby", "--out", str(trained_run)), 2, "already holds a run", "--resume")


@pytest.mark.parametrize("args,fragment", [
    (["--temperature", "-1"], "temperature"),
    (["--top-k", "0"], "top-k"),
    (["--top-p", "1.5"], "top_p"),
    (["--max-new-tokens", "many"], "max-new-tokens"),
])
def test_sampling_arguments_out_of_range(trained_run, args, fragment):
    assert_clean_error(run_cli("sample", str(trained_run), *args), 2, fragment)


def test_unknown_dataset():
    assert_clean_error(run_cli("prepare", "shakespear-char"), 2, "unknown dataset", "shakespeare-char")


def test_prepare_says_nothing_to_do_only_when_the_dataset_was_current(tmp_path, monkeypatch, capsys):
    """An outdated preparation is made again, and the message says so (it once asked whether a
    meta.json existed while prepare() asked whether it was current)."""
    import json

    from glassgpt.cli import main

    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(tmp_path))
    main(["prepare", "repeated-random"])
    assert "already" not in capsys.readouterr().out
    meta_path = tmp_path / "repeated-random" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "version": meta["version"] - 1}))  # prepared by an older version
    main(["prepare", "repeated-random"])
    assert "already" not in capsys.readouterr().out
    assert json.loads(meta_path.read_text())["version"] == meta["version"]  # made again
    main(["prepare", "repeated-random"])
    assert "already prepared: nothing to do" in capsys.readouterr().out
