"""Random bytes and random JSON in every file a run directory holds, then every command that
reads that file (hypothesis, in process through `glassgpt.cli.main`): each ends in success
or in exit 1 or 2 with one line on stderr naming the file (or its folder) -- never a
traceback, never a hang -- and where the content matters (the weights, the config, the
tokenizer, a saved state) garbage is refused, never used.

The examples are derandomized (the same on every run) and few per pair, so the whole
file takes seconds; the reader's own properties are in test_bounded_read.py."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import cli, train_tiny
from test_bounded_read import JSON_VALUES, json_ish

HOOK = "blocks.0.resid_post"
SAE = ["--hook", HOOK, "--tokens", "1024", "--batch-size", "128", "--width", "32", "--k", "4"]
SAE_DIR = f"sae/{HOOK}"
SAMPLE = ["sample", "{run}", "--max-new-tokens", "2"]
EVAL = ["eval", "{run}", "--device", "cpu", "--max-tokens", "64", "--append-metrics"]
ANALYZE = ["analyze", "{run}", "--windows", "1", "--out", "{run}/analysis"]
COMPARE = ["compare", "{run}", "--out", "{run}/../compare.html"]
RESUME = ["train", "--out", "{run}", "--resume"]
SAE_RESUME = ["sae", "{run}", *SAE, "--resume"]

# (file, command, garbage must be refused, examples): every file of a run, with each command that reads it.
CASES = [
    ("config.json", SAMPLE, True, 8), ("config.json", EVAL, True, 3), ("config.json", COMPARE, True, 6),
    ("tokenizer.json", SAMPLE, True, 8),
    ("model.safetensors", SAMPLE, True, 8), ("model.safetensors", EVAL, True, 3),
    ("metrics.jsonl", COMPARE, False, 8), ("metrics.jsonl", EVAL, False, 4), ("metrics.jsonl", ANALYZE, False, 2),
    ("trainer_state.safetensors", RESUME, True, 6),
    (f"{SAE_DIR}/sae.json", SAE_RESUME, True, 3), (f"{SAE_DIR}/sae.safetensors", SAE_RESUME, True, 3),
    (f"{SAE_DIR}/sae_state.safetensors", SAE_RESUME, True, 3), (f"{SAE_DIR}/metrics.jsonl", SAE_RESUME, False, 2),
    (f"{SAE_DIR}/evaluation.json", ANALYZE, False, 1), ("analysis/analysis.json", ANALYZE, False, 1),
]
CONTENTS = st.one_of(st.binary(max_size=3000), JSON_VALUES.map(lambda v: json.dumps(v).encode()),
                     json_ish().map(lambda t: t.encode("utf-8", "surrogatepass")))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, small_prepared_data_dir) -> Path:
    """A run holding every file a run can: trained (two steps), with an SAE and a report."""
    run = train_tiny(tmp_path_factory.mktemp("fuzz") / "run", small_prepared_data_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLASSGPT_DATA_DIR", str(small_prepared_data_dir))
        for command in (["sae", run, *SAE], ["analyze", run, "--windows", "1"]):
            status, _, err = cli(*command)
            assert status == 0, err
    return run


@pytest.mark.parametrize("name, command, matters, examples", CASES,
                         ids=[f"{name}-{command[0]}" for name, command, _, _ in CASES])
def test_random_content_in_a_run_file_is_used_only_when_it_reads_and_refused_in_one_line(
        full_run, small_data_env, name, command, matters, examples):
    if name == "tokenizer.json":  # read only when config.json has no copy of the tokenizer
        base = Path(tempfile.mkdtemp(prefix="fuzz-base-"))
        shutil.copytree(full_run, base / "run")
        config = json.loads((base / "run" / "config.json").read_text())
        del config["tokenizer"]
        (base / "run" / "config.json").write_text(json.dumps(config))
        full_run = base / "run"

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(CONTENTS)
    def fuzz(content: bytes):
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            shutil.copytree(full_run, run)
            (run / name).write_bytes(content)
            status, _, err = cli(*[part.format(run=run) for part in command])
            lines = [line for line in err.splitlines() if line.strip() and not line.startswith("glassgpt: note:")]
            if status == 0:
                assert not matters, f"{name} holding {content[:60]!r} was used by {command[0]}"
                return
            assert status in (1, 2), err
            assert len(lines) == 1 and lines[0].startswith("glassgpt: error: "), err
            named = [Path(name).name] + ([str((run / name).parent)] if "/" in name else [])  # or an SAE's folder
            assert any(n in lines[0] for n in named), lines[0]

    fuzz()
