"""The exercise track: every reference passes its own check and agrees with glassgpt's code, every
catalogued mistake (a mutation of the reference) gets its own diagnosis, two mistakes in one file
are both named, and a learner's file that does not import, hangs, allocates without bound or raises
gets one clear message naming their line. The learner's files run in a child process; most tests
here call the check in this process, and a few go through the sandbox and the command line."""

from __future__ import annotations

import inspect
import json
import textwrap
import time

import pytest
import torch
from conftest import run_cli

from glassgpt.errors import RunError, UsageError
from glassgpt.learn import NAMES, all_exercises, check, exercise, load_progress, record_progress, stub_text
from glassgpt.learn.core import CheckResult, LearnerError, run_check
from glassgpt.learn.sandbox import check_file
from glassgpt.learn.stubs import load_functions

CATALOGUE = [(ex.name, m.name) for ex in all_exercises() for m in ex.mistakes]


def mutated(name: str, mistake: str) -> dict:
    ex = exercise(name)
    m = next(m for m in ex.mistakes if m.name == mistake)
    return {**ex.reference, **m.mutant}


# ---------------------------------------------------------------- the references

@pytest.mark.parametrize("name", NAMES)
def test_every_reference_passes_every_check_including_glassgpts_own_outputs(name):
    ex = exercise(name)
    started = time.perf_counter()
    result = run_check(ex, ex.reference)
    assert result.passed, str(result)
    assert result.cases >= 3
    assert any("glassgpt" in case.label for case in ex.cases()), "no case compares with glassgpt's own code"
    assert time.perf_counter() - started < 5  # the in-process part of a check: cases and comparisons


def test_the_track_is_in_build_order_and_the_three_fixed_signatures_hold():
    assert NAMES == ("layernorm", "attention", "multihead", "rope", "mlp", "block", "forward", "cross_entropy",
                     "adamw", "kv_cache", "sampling", "top_p", "measures")
    signature = lambda name, fn: str(inspect.signature(exercise(name).reference[fn]))  # noqa: E731
    assert signature("layernorm", "layernorm") == "(x, weight, bias, eps=1e-05)"
    assert signature("attention", "causal_attention") == "(q, k, v)"
    assert signature("top_p", "top_p_filter") == "(logits, p)"


def test_the_adamw_reference_agrees_with_glassgpts_optimizer_over_three_steps():
    from glassgpt.config import TrainConfig
    from glassgpt.training.optim import adamw_for

    tc = TrainConfig(learning_rate=0.01, weight_decay=0.1, beta1=0.9, beta2=0.95)
    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = adamw_for([p], tc, torch.device("cpu"))
    mine = (p.detach().clone(), torch.zeros(4, 3), torch.zeros(4, 3))
    step = exercise("adamw").reference["adamw_step"]
    for i in range(1, 4):
        grad = torch.randn(4, 3)
        p.grad = grad.clone()
        opt.step()
        mine = step(*mine[:1], grad, *mine[1:], i, 0.01, 0.9, 0.95, 1e-8, 0.1)
    assert torch.allclose(mine[0], p.detach(), atol=1e-6)
    assert torch.allclose(mine[1], opt.state[p]["exp_avg"]) and torch.allclose(mine[2], opt.state[p]["exp_avg_sq"])


def test_the_temperature_reference_is_what_glassgpt_samples_from():
    from glassgpt.inference.generate import sampling_probs

    logits = torch.randn(3, 11)
    ref = exercise("sampling").reference
    mine = torch.softmax(ref["top_k_filter"](ref["apply_temperature"](logits, 0.7), 4), dim=-1)
    assert torch.allclose(mine, sampling_probs(logits, 0.7, top_k=4), atol=1e-6)


# ---------------------------------------------------------------- the catalogue

def test_the_catalogue_holds_over_thirty_mistakes_across_every_exercise():
    assert len(CATALOGUE) >= 30
    assert len(set(CATALOGUE)) == len(CATALOGUE)
    assert {name for name, _ in CATALOGUE} == set(NAMES)
    assert len({mistake for _, mistake in CATALOGUE}) == len(CATALOGUE)  # names unique across exercises


@pytest.mark.parametrize("name,mistake", CATALOGUE, ids=[f"{n}:{m}" for n, m in CATALOGUE])
def test_every_catalogued_mistake_gets_its_own_diagnosis(name, mistake):
    result = run_check(exercise(name), mutated(name, mistake))
    assert result.status == "wrong", str(result)
    assert [d.mistake for d in result.diagnoses] == [mistake], str(result)
    assert result.message and "expected" in result.message  # the first element that differs, too


def attention_unmasked_unscaled(q, k, v):
    pattern = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
    return pattern @ v, pattern


def attention_zero_masked_transposed(q, k, v):
    T = q.size(1)
    scores = (q @ k.transpose(-2, -1) / q.size(-1) ** 0.5).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), 0.0)
    pattern = torch.softmax(scores, dim=-1)
    return pattern.transpose(-2, -1) @ v, pattern


def layernorm_unbiased_without_affine(x, weight, bias, eps=1e-5):
    return ((x - x.mean(-1, keepdim=True)) / torch.sqrt(x.float().var(-1, keepdim=True) + eps)).to(x.dtype)


def block_post_ln_without_residual(x, ln_1, attn, ln_2, mlp):
    x = ln_1(attn(x))
    return ln_2(mlp(x))


# Two mistakes in one function, written out; or one mistake in each of two functions.
PAIRS = [("attention", "no-mask", "no-scale", attention_unmasked_unscaled),
         ("attention", "masked-to-zero", "transposed-pattern", attention_zero_masked_transposed),
         ("layernorm", "unbiased-variance", "no-affine", layernorm_unbiased_without_affine),
         ("block", "post-ln", "no-residual", block_post_ln_without_residual),
         ("multihead", "split-hs-nh", "merge-interleaved", None),
         ("mlp", "exact-gelu", "activation-after-projection", None)]


def two_mistakes(name, first, second, both) -> dict:
    if both is not None:
        return {exercise(name).functions[0]: both}
    return {**mutated(name, first), **{k: v for k, v in mutated(name, second).items()
                                       if v is not exercise(name).reference[k]}}


@pytest.mark.parametrize("name,first,second,both", PAIRS, ids=[f"{n}:{a}+{b}" for n, a, b, _ in PAIRS])
def test_a_file_with_two_mistakes_gets_both_named(name, first, second, both):
    result = run_check(exercise(name), two_mistakes(name, first, second, both))
    assert {first, second} <= {d.mistake for d in result.diagnoses}, str(result)


def test_a_wrong_answer_no_detector_knows_still_gets_its_first_difference():
    ref = exercise("layernorm").reference["layernorm"]
    result = run_check(exercise("layernorm"), {"layernorm": lambda x, w, b, eps=1e-5: ref(x, w, b, eps) + 0.01})
    assert result.status == "wrong" and result.diagnoses == []
    assert result.message.startswith("random input (2, 5, 8): layernorm -> output[0, 0, 0] is ")
    assert "no mistake of the catalogue matches" in str(result)


def test_a_result_survives_its_trip_through_json():
    result = run_check(exercise("attention"), mutated("attention", "no-mask"))
    again = CheckResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert str(again) == str(result) and again.diagnoses == result.diagnoses


# ---------------------------------------------------------------- stubs and the learner's file

@pytest.mark.parametrize("name", NAMES)
def test_every_stub_parses_with_the_references_signatures_and_is_not_written_yet(name, tmp_path):
    ex = exercise(name)
    path = tmp_path / f"{name}.py"
    path.write_text(stub_text(ex, path.name))
    functions = load_functions(path)
    for fn in ex.functions:
        assert inspect.signature(functions[fn]) == inspect.signature(ex.reference[fn])
        assert inspect.getdoc(functions[fn]) == inspect.getdoc(ex.reference[fn])
    assert f"glassgpt learn check {name} {name}.py" in path.read_text()
    result = run_check(ex, functions, source=str(path))
    assert result.status == "error" and "is not written yet" in result.message and f"{name}.py:" in result.message


def learner_file(tmp_path, text: str, name: str = "mine.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("text,expected", [
    ("def layernorm(x, weight, bias, eps=1e-5)\n    return x\n", "mine.py does not parse: expected ':' at mine.py:1"),
    ("import torch\nfrom nowhere import thing\n", "importing mine.py raised ModuleNotFoundError"),
    ("def layer_norm(x, weight, bias, eps=1e-5):\n    return x\n", "has no layernorm: the layernorm exercise needs "
                                                                   "layernorm(x, weight, bias, eps=1e-05)"),
    ("def layernorm(x, weight):\n    return x\n", "layernorm(x, weight) in mine.py cannot be called as "
                                                  "layernorm(x, weight, bias, eps=1e-05)"),
    ("layernorm = 3\n", "layernorm in mine.py is a int, not a function"),
    ("def layernorm(x, weight, bias, eps=1e-5):\n    h = x * weight\n    return h / undefined\n",
     "layernorm raised NameError: name 'undefined' is not defined at mine.py:3 in layernorm: `return h / undefined`"),
])
def test_a_file_that_cannot_be_checked_gets_one_message_naming_the_learners_line(tmp_path, text, expected):
    path = learner_file(tmp_path, text)
    try:
        result = run_check(exercise("layernorm"), load_functions(path), source=str(path), where_from=path.name)
        message = result.message
    except LearnerError as e:
        message = str(e)
    assert expected in message
    assert "glassgpt/" not in message and "Traceback" not in message


def test_an_exception_raised_deep_in_torch_names_the_learners_line_not_torchs(tmp_path):
    path = learner_file(tmp_path, """\
        import torch

        def causal_attention(q, k, v):
            scores = torch.einsum("ij,jk->ik", q, k)  # (B, T, hs): three dimensions, not two
            return scores, scores
        """)
    result = run_check(exercise("attention"), load_functions(path), source=str(path))
    assert result.status == "error"
    assert "causal_attention raised RuntimeError: einsum()" in result.message
    assert "at mine.py:4 in causal_attention: `scores = torch.einsum(" in result.message


def einsum_attention(q, k, v):
    scores = torch.einsum("ij,jk->ik", q, k)  # (B, T, hs): three dimensions, not two
    return scores, scores


def test_a_notebooks_function_that_raises_is_named_by_its_own_line_not_torchs():
    result = check("attention", {"causal_attention": einsum_attention})
    line = inspect.getsourcelines(einsum_attention)[1] + 1
    assert f"at test_learn.py:{line} in einsum_attention: `scores = torch.einsum(" in result.message
    assert "functional.py" not in result.message


# ---------------------------------------------------------------- the sandbox and the command line

def test_a_hang_ends_at_the_time_limit_naming_the_line_it_was_running(tmp_path):
    path = learner_file(tmp_path, "def top_p_filter(logits, p):\n    while True: p = p + 1\n")  # one line: it is there
    result = check_file("top_p", path, time_limit=2.0)
    assert result.status == "error"
    assert "did not finish within 2 s; it was running mine.py:2 in top_p_filter: `while True: p = p + 1`" in result.message


def test_an_allocation_without_bound_stops_at_the_memory_limit(tmp_path):
    path = learner_file(tmp_path, """\
        import torch

        def top_p_filter(logits, p):
            kept = []
            while True:
                kept.append(torch.empty(2**28))  # 1 GiB each, never touched
        """)
    result = check_file("top_p", path, time_limit=20.0, memory_limit=2**30)
    assert result.status == "error"
    assert "asked for more memory than the check allows (1.0 GiB) at mine.py:6 in top_p_filter" in result.message


def test_what_the_learners_code_prints_comes_back_with_the_result(tmp_path):
    path = learner_file(tmp_path, """\
        import math
        import torch

        def top_p_filter(logits, p):
            print("shape", tuple(logits.shape))
            return logits
        """)
    result = check_file("top_p", path)
    assert result.status == "wrong" and "shape (2, 11)" in result.output and "your code printed" in str(result)


REFERENCE_ATTENTION = """\
    import math
    import torch

    def causal_attention(q, k, v):
        T = q.size(-2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        pattern = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        return pattern @ v, pattern
    """


@pytest.mark.slow  # three checks, each a child process that imports torch: about 10 s on an idle core
def test_stub_then_check_through_the_command_line_exits_0_1_and_2(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSGPT_LEARN_DIR", str(tmp_path / "progress"))
    stub = tmp_path / "attention.py"
    assert run_cli("learn", "stub", "attention", "--out", str(stub)).returncode == 0
    again = run_cli("learn", "stub", "attention", "--out", str(stub))
    assert again.returncode == 2 and "already exists" in again.stderr and again.stderr.count("\n") == 1
    first = run_cli("learn", "check", "attention", str(stub))
    assert first.returncode == 1 and "not written yet" in first.stdout

    stub.write_text(textwrap.dedent(REFERENCE_ATTENTION))
    right = run_cli("learn", "check", "attention", str(stub))
    assert right.returncode == 0, right.stdout + right.stderr
    assert "attention: right" in right.stdout

    wrong = learner_file(tmp_path, REFERENCE_ATTENTION.replace(" / math.sqrt(q.size(-1))", "").replace(
        'masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))', "float()"), "two.py")
    both = run_cli("learn", "check", "attention", str(wrong))
    assert both.returncode == 1
    assert "[no-mask]" in both.stdout and "[no-scale]" in both.stdout and "query 0 can see key 2" in both.stdout

    listed = run_cli("learn")
    assert listed.returncode == 0
    assert "attention      wrong (right before)" in listed.stdout and "0 of 13 right" in listed.stdout
    for argv in (("learn", "check", "attenshun", str(stub)), ("learn", "check", "attention", str(tmp_path / "no.py")),
                 ("learn", "check", "attention"), ("learn", "stub"), ("learn", "grade")):
        usage = run_cli(*argv)
        assert usage.returncode == 2 and usage.stderr.count("\n") == 1 and "Traceback" not in usage.stderr, argv


# ---------------------------------------------------------------- progress

def test_progress_is_kept_per_exercise_and_a_damaged_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSGPT_LEARN_DIR", str(tmp_path))
    assert load_progress() == {}
    record_progress(CheckResult("layernorm", "passed", cases=9), "mine.py")
    record_progress(CheckResult("layernorm", "wrong", "x", cases=9, failed=1), "mine.py")
    progress = load_progress()
    assert progress["layernorm"]["status"] == "wrong" and progress["layernorm"]["passed_at"]
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "progress.json").write_text("{not json")
    with pytest.raises(RunError, match="progress.json cannot be read .* delete it"):
        load_progress()


def test_check_refuses_what_is_not_an_exercise_or_a_file(tmp_path):
    with pytest.raises(UsageError, match="did you mean 'top_p'"):
        check("top-p", tmp_path / "x.py")
    with pytest.raises(UsageError, match="does not exist"):
        check("top_p", tmp_path / "x.py")


def test_check_takes_a_notebooks_functions_in_this_process():
    ref = exercise("top_p").reference
    assert check("top_p", {"top_p_filter": ref["top_p_filter"]}).passed
    unsorted = mutated("top_p", "top-p-unsorted")["top_p_filter"]
    result = check("top_p", type("Mine", (), {"top_p_filter": staticmethod(unsorted)})())  # an object with the function
    assert [d.mistake for d in result.diagnoses] == ["top-p-unsorted"]
