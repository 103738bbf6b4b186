"""What the natural-text recipes promise (glassgpt.analysis.phenomena): repeated spans, the induction
circuit's scores and ablation against independent computations, the depth scan's figures, the checks."""

import math
import statistics

import pytest
import torch

from glassgpt.analysis import head_ablation, induction_scores, prefix_matching
from glassgpt.analysis.dynamics import AnalysisProbe, analysis_row
from glassgpt.analysis.measures import attention_distance, batch_patterns, repeated_random_tokens
from glassgpt.analysis.phenomena import (
    depth_scan_check, depth_scan_scores, induction_circuit, induction_text_check, kept, repeated_spans,
    span_ablation, spans_mean,
)
from glassgpt.model import GPT

from conftest import tiny_config


def ids(text: str) -> torch.Tensor:
    return torch.tensor([[ord(c) for c in text]])


def marked(text: str, span: int = 3) -> str:
    return "".join("^" if m else "." for m in repeated_spans(ids(text), span)[0].tolist())


def test_a_repeated_span_is_where_the_last_tokens_occurred_together_before():
    text = "abcXabc the cat and the dog"
    assert marked(text) == "......^..............^^^..."  # 'abc' again; ' th', 'the', 'he ' again
    assert marked(text, span=1)[:7] == "....^^^"  # one token: any token seen before
    assert marked("aaaa", span=2) == "..^^"  # 'aa' ends at 1 first; at 2 and 3 it is seen before
    assert not repeated_spans(ids("abcdefg")).any()  # nothing repeats


def test_a_repeated_span_is_found_in_each_window_apart():
    windows = torch.tensor([[1, 2, 3, 1, 2, 3], [1, 2, 3, 4, 5, 6]])
    assert repeated_spans(windows, span=2).tolist() == [[False] * 4 + [True, True], [False] * 6]


def test_a_mean_over_spans_is_the_pooled_mean_with_the_windows_error_and_none_from_one_window():
    torch.manual_seed(0)
    values = torch.randn(10, 7)
    mean, se, n = spans_mean(values, torch.ones(10, 7, dtype=torch.bool))
    window_means = values.mean(dim=1).tolist()
    assert n == 70 and mean == pytest.approx(values.mean().item(), abs=1e-6)
    assert se == pytest.approx(statistics.stdev(window_means) / math.sqrt(10), rel=1e-5)
    mask = torch.zeros(10, 7, dtype=torch.bool)
    mask[:, :3] = True
    assert spans_mean(values, mask)[0] == pytest.approx(values[:, :3].mean().item(), abs=1e-6)
    assert math.isnan(spans_mean(values, torch.zeros_like(mask))[0])
    one = torch.zeros_like(mask)
    one[2, :4] = True  # one window holds every position: its spread is unknown, not zero
    mean, se, n = spans_mean(values, one)
    assert n == 4 and mean == pytest.approx(values[2, :4].mean().item(), abs=1e-6) and math.isnan(se)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    return GPT(tiny_config(vocab_size=20, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()


def text_windows(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows over 6 tokens, so that spans repeat often, and their next tokens."""
    tokens = torch.randint(0, 6, (4, 33), generator=torch.Generator().manual_seed(seed))
    return tokens[:, :-1], tokens[:, 1:]


def test_ablation_on_repeated_spans_and_elsewhere_adds_up_to_the_mean_ablation_of_the_whole_text(model):
    windows, targets = text_windows()
    found = span_ablation(model, windows, targets, layer=1, head=0)
    repeated = int(repeated_spans(windows).sum())
    assert found["repeated_positions"] == repeated and 0 < repeated < windows.numel()
    whole = head_ablation(model, windows, targets, mode="mean")[1, 0].item()  # the loss rise over every position
    pooled = (found["ablation_repeated"] * repeated + found["ablation_other"] * (windows.numel() - repeated)) / windows.numel()
    assert pooled == pytest.approx(whole, abs=1e-5)
    assert found["ablation_repeated_se"] > 0 and found["ablation_other_se"] > 0


def test_the_induction_circuit_is_the_head_best_at_both_scores(model):
    windows, targets = text_windows()
    induction = torch.tensor([[0.9, 0.1], [0.5, 0.6]])  # layer 0 head 0 fails prefix matching
    prefix = torch.tensor([[0.0, 0.9], [0.4, 0.3]])  # the smaller of the two is largest at layer 1 head 0
    found = induction_circuit(model, windows, targets, induction, induction / 10, prefix, prefix / 10)
    assert (found["layer"], found["head"]) == (1, 0)
    assert (found["induction"], found["induction_se"]) == pytest.approx((0.5, 0.05))
    assert (found["prefix_matching"], found["prefix_matching_se"]) == pytest.approx((0.4, 0.04))
    assert found["ablation_repeated"] == span_ablation(model, windows, targets, 1, 0)["ablation_repeated"]


def test_the_depth_scan_figures_are_rounded_per_layer_with_a_missing_error_as_none():
    found = depth_scan_scores(torch.tensor([2.0, 15.0]), torch.tensor([0.1, float("nan")]), torch.tensor([0.0, 0.75]))
    assert found == {"attention_distance": [2.0, 15.0], "attention_distance_se": [0.1, None], "sink_rate": [0.0, 0.75]}


def test_the_analysis_row_carries_the_recipes_figures(model):
    windows, targets = text_windows()
    probe = AnalysisProbe(windows, targets, repeated_random_tokens(20, 8, 4, torch.Generator().manual_seed(1)), 8)
    row = analysis_row(model, probe, step=0)
    patterns = batch_patterns(model, windows)  # (L, B, H, T, T)
    distance = attention_distance(patterns).mean(dim=(1, 2))  # (L,): over windows and heads
    assert row["attention_distance"] == pytest.approx(distance.tolist(), abs=1e-3)
    assert len(row["sink_rate"]) == 2 and all(0 <= r <= 1 for r in row["sink_rate"])
    circuit = row["induction_circuit"]
    # the head's own scores are the report's measures of it: the probe's induction stripe, prefix matching on text
    layer, head = circuit["layer"], circuit["head"]
    assert circuit["prefix_matching"] == pytest.approx(prefix_matching(patterns, windows)[layer, head].item(), abs=1e-5)
    assert circuit["induction"] == pytest.approx(induction_scores(model, seq_len=8, batch=4, generator=torch.Generator()
                                                                  .manual_seed(1))[layer, head].item(), abs=1e-5)
    assert {"layer", "head", "induction", "induction_se", "prefix_matching", "prefix_matching_se",
            "ablation_repeated", "ablation_repeated_se", "repeated_positions"} <= set(circuit)


def circuit_row(induction=0.5, prefix=0.4, rise=0.1, se=0.02) -> dict:
    return {"induction_circuit": {"layer": 1, "head": 2, "induction": induction, "induction_se": 0.01,
                                  "prefix_matching": prefix, "prefix_matching_se": 0.01,
                                  "ablation_repeated": rise, "ablation_repeated_se": se}}


@pytest.mark.parametrize("row,failing", [
    (circuit_row(), None), (circuit_row(se=None), None),  # no error (one window): the value decides
    (circuit_row(induction=0.31), 0),  # above 0.3, but not by two standard errors
    (circuit_row(prefix=0.2), 1),
    (circuit_row(rise=0.03), 2),  # a rise within two standard errors is not measurable
    (circuit_row(rise=-0.5), 2), (circuit_row(rise=0.0, se=None), 2),
])
def test_the_induction_text_check_names_the_clause_that_failed(row, failing):
    clauses = induction_text_check(row)
    assert [i for i, (_, ok) in enumerate(clauses) if not ok] == ([] if failing is None else [failing])
    assert "layer 1 head 2" in clauses[0][0]
    assert not kept(induction_text_check({"induction": [0.1]}))  # no circuit measured: not kept


@pytest.mark.parametrize("distance0,rates,failing", [
    (2.5, [0, 0, 0.25, 0, 0.25, 0.5], None),
    (3.5, [0, 0, 0, 0, 0, 0.5], [1]),  # layer 0 not local
    (2.0, [0, 0, 0, 0, 0, 0.25], [2]),  # the last layer does not sink
    (2.0, [0.25, 0, 0, 0, 0, 1.0], [3]),  # an eighth of layers 0-1 sink: more than a tenth
    (2.0, [0, 0, 0, 1.0], [0]),  # four layers
    (2.9, [0, 0, 0, 0, 0, 0.5], [1]),  # under 3, but not by two standard errors (0.1 each)
])
def test_the_depth_scan_check_names_the_clause_that_failed(distance0, rates, failing):
    row = {"attention_distance": [distance0] + [9.0] * (len(rates) - 1), "sink_rate": rates,
           "attention_distance_se": [0.1] * len(rates)}
    assert [i for i, (_, ok) in enumerate(depth_scan_check(row)) if not ok] == (failing or [])
