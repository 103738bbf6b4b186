"""Growing an induction head on a CPU: the attention-only model option (`attn_only`), the
repeated-random dataset it trains on, and the probe lengths. The recipe itself is asserted by
the executed tutorial (see the end of this file)."""

import json

import numpy as np
import pytest
import torch

from conftest import tiny_config

from glassgpt.analysis.measures import default_induction_seq_len, induction_probe_length
from glassgpt.errors import UsageError
from glassgpt.model import GPT


# ---------------------------------------------------------------- attn_only

def test_an_attention_only_model_has_no_mlp_weights_and_its_residual_skips_them():
    full, bare = GPT(tiny_config()), GPT(tiny_config(attn_only=True))
    assert not any(".mlp." in n or ".ln_2." in n for n, _ in bare.named_parameters())
    assert not any(".mlp." in n for n in bare.hook_names())
    per_block_mlp = sum(p.numel() for n, p in full.named_parameters() if n.startswith("blocks.0.") and
                        (".mlp." in n or ".ln_2." in n))
    assert full.num_params() - bare.num_params() == 2 * per_block_mlp
    idx = torch.randint(0, 50, (2, 16))
    _, cache = bare.run_with_cache(idx, names=["blocks.0.resid_mid", "blocks.0.resid_post"])
    torch.testing.assert_close(cache["blocks.0.resid_post"], cache["blocks.0.resid_mid"])  # nothing added after attention


def test_the_standard_probe_is_a_quarter_of_the_context_within_bounds():
    assert induction_probe_length(32, 64) == 8
    assert induction_probe_length(1024, 50257) == 64  # GPT-2: capped at 64
    assert induction_probe_length(64, 10) == 10  # distinct tokens: at most the vocabulary
    assert induction_probe_length(4, 64) == 2  # the shortest probe there is
    assert default_induction_seq_len(tiny_config(block_size=64), vocab_size=65) == 16


# ---------------------------------------------------------------- the repeated-random dataset

def test_repeated_random_is_64_characters_with_each_segment_followed_by_its_copy(tmp_path, monkeypatch):
    from glassgpt.data import TokenDataset, prepare
    from glassgpt.data.synthetic import SEGMENT_LENGTHS, SPLIT_TOKENS, repeated_segments

    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(tmp_path))
    prepare("repeated-random")
    dataset = TokenDataset.load("repeated-random")
    assert dataset.tokenizer.name == "char" and dataset.tokenizer.vocab_size == 64
    assert dataset.tokenizer.decode(dataset.tokenizer.encode("Ab9+/")) == "Ab9+/"
    train_split = np.asarray(dataset.split("train"))
    assert len(train_split) == SPLIT_TOKENS["train"] and train_split.max() < 64
    assert (train_split == repeated_segments(SPLIT_TOKENS["train"], seed=1)).all()  # the fixed seed
    # walk the stream with the generator's own lengths: every segment is followed by its copy
    rng, pos = np.random.default_rng(1), 0
    while pos < 5_000:
        n = int(rng.integers(SEGMENT_LENGTHS[0], SEGMENT_LENGTHS[1] + 1))
        rng.integers(0, 64, size=n)
        assert (train_split[pos: pos + n] == train_split[pos + n: pos + 2 * n]).all()
        pos += 2 * n


def test_an_older_preparation_is_refused_for_training_and_made_again_by_prepare(tmp_path, monkeypatch):
    from glassgpt.data import TokenDataset, prepare

    monkeypatch.setenv("GLASSGPT_DATA_DIR", str(tmp_path))
    path = prepare("repeated-random")
    meta = json.loads((path / "meta.json").read_text())
    meta.pop("version")  # as glassgpt wrote it before versions: byte tokens, segments of 8-32
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="prepared by an older glassgpt: run `glassgpt prepare repeated-random`"):
        TokenDataset.load("repeated-random")
    prepare("repeated-random")
    assert TokenDataset.load("repeated-random").meta["version"] == 2


# The whole `induction` recipe (2,000 steps, its phase change, the report's words for the
# circuit) is trained and asserted once, by the executed tutorial docs/tutorials/induction.md,
# which `make test` builds with warnings as errors: a failing assert there fails the build.
