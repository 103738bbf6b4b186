"""A sentence for every head: on models whose heads are wired (through hooks on `attn.pattern`) to
attend to the previous token, the first position, the most recent newline, the previous copy of
their own token, or evenly, each head is described as what it is, with its share; the token classes
come from the tokenizer's strings, whatever the tokenizer; a tokenizer without readable strings and
a prompt too short to measure are refused in one line."""

import functools

import pytest
import torch

from glassgpt.analysis import analyze
from glassgpt.analysis.heads import CLASSES, described_count, token_classes
from glassgpt.model import GPT
from glassgpt.tokenizer import ByteTokenizer, CharTokenizer, get_tokenizer

from conftest import assert_clean_error, make_tiny_run, run_cli, tiny_config

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n")


def wired(T: int, idx: torch.Tensor, rule: str) -> torch.Tensor:
    """(b, T, T) one-hot patterns: each query's one key by `rule`, or itself where the rule has none."""
    rows, cols = torch.arange(T)[:, None], torch.arange(T)[None, :]
    if rule == "previous":
        keys = (rows[:, 0] - 1).clamp(min=0).expand(idx.size(0), T)
    elif rule == "first":
        keys = torch.zeros_like(idx)
    else:  # the latest earlier key that is a newline, or a copy of the query's token
        hits = (idx[:, None, :] == (NEWLINE if rule == "newline" else idx[:, :, None])) & (cols < rows)  # (b, T, T)
        latest = (hits * (cols + 1)).amax(dim=-1) - 1  # (b, T); -1: none
        keys = torch.where(latest >= 0, latest, rows[:, 0])
    return torch.nn.functional.one_hot(keys, T).float()


TOKENIZER = CharTokenizer(TEXT)
NEWLINE = TOKENIZER.encode("\n")[0]
RULES = {(0, 0): "previous", (0, 1): "first", (1, 0): "newline", (1, 1): "copy"}


@pytest.fixture(scope="module")
def described():
    """`analyze` of a model of 2 layers of 3 heads, on windows of TEXT: four heads wired by RULES,
    layer 1 head 2 attending evenly to every key it can see, layer 0 head 2 left as it is."""
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=TOKENIZER.vocab_size, block_size=32, n_head=3, n_embd=24)).eval()
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))

    def hook_for(layer):
        def hook(pattern, _hook):
            idx, T = seen[-1], pattern.size(-1)
            pattern = pattern.clone()
            for (l, h), rule in RULES.items():
                if l == layer:
                    pattern[:, h] = wired(T, idx, rule)
            if layer == 1:
                uniform = torch.ones(T, T).tril()
                pattern[:, 2] = uniform / uniform.sum(-1, keepdim=True)
            return pattern
        return hook

    for layer in range(2):
        model.add_hook(f"blocks.{layer}.attn.pattern", hook_for(layer))
    ids = torch.tensor(TOKENIZER.encode(TEXT))
    windows = torch.stack([ids[s: s + 32] for s in range(0, ids.numel() - 33, 6)])  # (B, 32)
    targets = torch.stack([ids[s + 1: s + 33] for s in range(0, ids.numel() - 33, 6)])
    results = analyze(model, windows[0], windows, targets, tokenizer=TOKENIZER, vocab_size=TOKENIZER.vocab_size,
                      generator=torch.Generator().manual_seed(0))
    model.remove_hooks()
    return {(h["layer"], h["head"]): h for h in results["heads"]}, results


@pytest.mark.parametrize("where, words", [
    ((0, 0), "on the previous token"),
    ((0, 1), "on the first position"),
    ((1, 0), "on the most recent newline"),
    ((1, 1), "on the previous copy of its own token"),
])
def test_a_wired_head_is_described_as_what_it_does_with_its_share(described, where, words):
    heads, _ = described
    head = heads[where]
    assert head["description"].startswith(f"100% ± 0.0% {words} (uniform attention: "), head["description"]
    assert head["share"] == pytest.approx(1.0, abs=1e-5) and head["share_se"] == pytest.approx(0.0, abs=1e-5)


def test_an_even_head_is_called_diffuse_with_its_entropy(described):
    heads, _ = described
    head = heads[(1, 2)]
    assert head["description"].startswith("diffuse: normalised entropy 1.00 ± 0.0"), head["description"]
    assert head["share"] is None and head["share_se"] is None and head["entropy"] == pytest.approx(1.0, abs=1e-5)


def test_the_heads_list_holds_the_contract_fields_and_the_offset_profile(described):
    heads, results = described
    assert len(heads) == 6 and described_count(list(heads.values())) >= 5
    for head in heads.values():
        assert {"layer", "head", "description", "share", "share_se", "entropy", "kind"} <= head.keys()
        assert len(head["offsets"]) == 8 and len(head["promotes"]) == 3
    assert heads[(0, 0)]["offsets"][1] == pytest.approx(1.0) and heads[(0, 0)]["kind"] == "previous-token"
    assert heads[(0, 0)]["description"].endswith("; writes " + ", ".join(repr(t) for t in heads[(0, 0)]["promotes"]))
    assert heads[(0, 1)]["kind"] == "sink"  # key 0 takes all of its attention
    for name in ("depth_scan", "previous_token", "prefix_matching", "attention_distance", "induction", "ablation"):
        assert results[f"{name}_se"].shape == results[name].shape, name
    assert {"icl_score", "icl_score_se", "loss_early_se", "loss_late_se"} <= results.keys()


def test_what_a_head_writes_is_its_ov_circuit_through_the_unembedding():
    """A head whose value and output weights copy the embedding promotes the token it attends to."""
    from glassgpt.analysis.heads import ov_promotions

    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=20, block_size=16, n_head=1, n_embd=16, n_layer=1, bias=False)).eval()
    with torch.no_grad():
        model.wte.weight.copy_(torch.eye(20, 16) * 4)  # token t (t < 16) along axis t
        model.blocks[0].attn.c_attn.weight[32:].copy_(torch.eye(16))  # value = the normalised input
        model.blocks[0].attn.c_proj.weight.copy_(torch.eye(16))
        model.blocks[0].ln_1.weight.fill_(1.0)
    received = torch.zeros(1, 1, 3)
    received[0, 0] = torch.tensor([0.1, 0.7, 0.2])  # mostly on token 5
    ov = ov_promotions(model, received, torch.tensor([2, 5, 9]))
    assert ov[0][0]["promotes"][0] == 5 and ov[0][0]["copying"] == pytest.approx(1.0)


@functools.cache
def tokenizer_and_classes(name: str):
    tokenizer = {"char": lambda: CharTokenizer("ab\n (A.1)'"), "byte": ByteTokenizer,
                 "gpt2": lambda: get_tokenizer("gpt2")}[name]()
    return tokenizer, token_classes(tokenizer)[0]


@pytest.mark.parametrize("name, token, classes", [
    ("char", "\n", {"newline"}),
    ("char", " ", {"space"}),
    ("char", "A", {"capital"}),
    ("char", "(", {"punctuation", "opener"}),
    ("char", ")", {"punctuation", "closer"}),
    ("char", "'", {"punctuation", "quote"}),
    ("char", "1", {"digit"}),
    ("byte", "\n", {"newline"}),
    ("byte", ".", {"punctuation"}),
    ("gpt2", " The", {"space", "capital"}),
    ("gpt2", " (", {"space", "punctuation", "opener"}),
    ("gpt2", "\n\n", {"newline"}),
    ("gpt2", " 42", {"space", "digit"}),
])
def test_token_classes_come_from_the_tokenizers_strings(name, token, classes):
    tokenizer, masks = tokenizer_and_classes(name)
    (i,) = tokenizer.encode(token)
    assert {name for k, name in enumerate(CLASSES) if masks[k, i]} == classes


def test_a_trained_bpe_names_its_space_class_for_what_it_holds():
    from glassgpt.tokenizer import BPETokenizer

    bpe = BPETokenizer.train([TEXT * 20], 300)
    masks, words = token_classes(bpe)
    assert words["space"][0] == "tokens that start with a space"
    assert words["newline"] == ("newlines", "the most recent newline")
    assert masks[0, bpe.encode("\n")[0]] and masks[1, bpe.encode(" speak")[0]]
    char_words = token_classes(TOKENIZER)[1]
    assert char_words["space"][0] == "spaces", "a char tokenizer's space class is just spaces"


def test_a_tokenizer_without_readable_strings_is_refused_in_one_line(tmp_path):
    run = make_tiny_run(tmp_path / "run", text="\x00\x01\x02\x03\x04\x05\x06\x07\x08" * 4)
    out = tmp_path / "report"
    prompt = "\x01\x02\x03\x04" * 5
    assert_clean_error(run_cli("analyze", str(run), "--prompt", prompt, "--out", str(out),
                               env={"GLASSGPT_DATA_DIR": str(tmp_path / "none")}), 2, "no token with a readable character")
    assert not out.exists()


def test_a_prompt_too_short_to_measure_alone_is_refused_in_one_line(tmp_path):
    run = make_tiny_run(tmp_path / "run")
    out = tmp_path / "report"
    r = run_cli("analyze", str(run), "--prompt", "ROMEO:", "--out", str(out),
                env={"GLASSGPT_DATA_DIR": str(tmp_path / "none")})
    assert_clean_error(r, 2, "the prompt is 6 tokens", "at least 8 tokens", "give a longer --prompt")
    assert not out.exists()


def test_a_share_is_named_only_at_40_percent_and_well_above_what_uniform_attention_gives():
    from glassgpt.analysis.heads import describable

    share, baseline = torch.tensor([0.71, 0.45, 0.39, 0.60]), torch.tensor([0.71, 0.06, 0.06, 0.30])
    counts = torch.tensor([100.0, 100.0, 100.0, 5.0])  # the last: measured on too few rows
    assert describable(share, baseline, counts).tolist() == [False, True, False, False]
    heads = [{"share": 0.41, "described": True}, {"share": None, "described": False},
             {"share": 0.71, "described": False}]
    assert described_count(heads) == 2, "a described head and a diffuse one; not one at what uniform attention gives"


def test_on_a_short_text_an_untrained_head_is_not_described_by_what_uniform_attention_gives():
    from glassgpt.analysis import view

    model = GPT(tiny_config()).eval()
    sentences = [h["description"] for h in view(model, list(range(10))).data["heads"]]
    assert all(s.startswith(("diffuse", "no one behaviour")) for s in sentences), sentences
