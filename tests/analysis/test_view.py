"""The offline views (glassgpt.analysis.view) in a real browser: Debian's Chromium through
Playwright (`open_page`, in conftest), every network request refused and counted, any console error a
failure."""

import json
import re

import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_run, run_cli

from glassgpt.analysis import view
from glassgpt.analysis.view import PRECISION, decode_view_data, render
from glassgpt.checkpoint import load_run
from glassgpt.errors import UsageError

TEXT = "ROMEO: art thou?\nJULIET: here."  # 30 tokens of a 32-token context
SLACK = PRECISION + 0.0005 + 1e-6  # 8 bits, then printed to 3 decimals


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("view") / "run", n_layer=3, n_head=2)


@pytest.fixture(scope="module")
def model_and_tokenizer(run):
    model, tokenizer, _ = load_run(run)
    return model.eval(), tokenizer


def ready(frame, selector=".gg-view"):
    frame.wait_for_selector(f"{selector}[data-state=ready]", timeout=20_000)


def weights(frame) -> dict[int, float]:
    """{key position: data-weight} of the attention strip's tokens."""
    pairs = frame.eval_on_selector_all(".gg-attention [data-pos]", "els => els.map(e => [+e.dataset.pos, "
                                                                   "e.getAttribute('data-weight')])")
    return {pos: float(w) for pos, w in pairs if w is not None}


def choose(frame, layer: int, head: int) -> None:
    frame.select_option(".gg-attention select.gg-layer", str(layer))
    frame.select_option(".gg-attention select.gg-head", str(head))
    assert frame.get_attribute(".gg-attention", "data-layer") == str(layer)
    assert frame.get_attribute(".gg-attention", "data-head") == str(head)


def check_selected_weights(frame, pattern_of, T: int, positions) -> None:
    """Select each query (hover, and keyboard focus), read every key's data-weight, compare with the model."""
    for layer, head in [(0, 0), (1, 1), (2, 0)]:
        choose(frame, layer, head)
        for i in positions:
            frame.hover(f".gg-attention [data-pos='{i}']")
            assert frame.get_attribute(".gg-attention", "data-selected") == str(i)
            shown = weights(frame)
            assert sorted(shown) == list(range(i + 1)), "every visible key token, and only those, has a weight"
            expected = pattern_of(layer)[head, i]
            for j, w in shown.items():
                assert abs(w - float(expected[j])) <= SLACK, (layer, head, i, j, w, float(expected[j]))
            assert re.fullmatch(r"\d\.\d{3}", frame.get_attribute(f".gg-attention [data-pos='{i}']", "data-weight"))


# ---------------------------------------------------------------- the Jupyter object and the data it holds

def test_view_weights_are_the_models_own_patterns(model_and_tokenizer, tmp_path, open_page):
    model, tokenizer = model_and_tokenizer
    ids = tokenizer.encode(TEXT)
    v = view(model, TEXT, tokenizer=tokenizer)
    assert "gg-view" in v._repr_html_() and "<script>" in v._repr_html_()
    path = v.save(tmp_path / "view.html")
    _, cache = model.run_with_cache(torch.tensor([ids]))
    o = open_page(path.as_uri())
    ready(o.page)
    check_selected_weights(o.page, lambda layer: cache[f"blocks.{layer}.attn.pattern"][0], len(ids),
                           [0, 1, 7, len(ids) - 1])
    # switched: what looks at token i (query j >= i, weight pattern[j, i])
    choose(o.page, 1, 0)
    o.page.check(".gg-attention input.gg-mode[value=to]")
    o.page.hover(".gg-attention [data-pos='3']")
    shown = weights(o.page)
    assert sorted(shown) == list(range(3, len(ids)))
    pattern = cache["blocks.1.attn.pattern"][0, 0]
    assert all(abs(w - float(pattern[j, 3])) <= SLACK for j, w in shown.items())


def test_embedded_data_decodes_back_to_the_tensors(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids = tokenizer.encode(TEXT)
    data = decode_view_data(view(model, TEXT, tokenizer=tokenizer).html())
    logits, cache = model.run_with_cache(torch.tensor([ids]))
    patterns = torch.stack([cache[f"blocks.{i}.attn.pattern"][0] for i in range(3)])
    assert data["patterns"].shape == patterns.shape
    assert (data["patterns"] - patterns).abs().max() <= PRECISION + 1e-6
    assert data["patterns"].triu(1).abs().max() == 0  # only the causal half is stored
    loss = F.cross_entropy(logits[0, :-1], torch.tensor(ids[1:]), reduction="none")
    assert data["loss"][0] is None
    torch.testing.assert_close(torch.tensor(data["loss"][1:]), loss, atol=1e-3, rtol=0)
    lens, T, K = data["lens"], len(ids), data["lens"]["k"]
    last = logits[0].softmax(-1)  # the lens after the last block is the model itself
    top_p, top_i = last.topk(K, dim=-1)
    assert lens["top_ids"][-T * K:] == top_i.flatten().tolist()
    torch.testing.assert_close(torch.tensor(lens["top_p"][-T * K:]), top_p.flatten(), atol=1e-3, rtol=0)
    true_p = last[torch.arange(T - 1), ids[1:]]
    ranks = (last[:-1] > true_p[:, None]).sum(-1) + 1
    assert lens["rank"][-T:-1] == ranks.tolist() and lens["rank"][-1] == 0
    assert [s["key"] for s in data["scores"]][:2] == ["previous_token", "prefix_matching"]
    prev = next(s for s in data["scores"] if s["key"] == "previous_token")["values"]
    torch.testing.assert_close(torch.tensor(prev), patterns.diagonal(-1, -2, -1).mean(-1), atol=1e-4, rtol=0)


def test_bad_input_is_one_sentence(model_and_tokenizer, run):
    model, tokenizer = model_and_tokenizer
    for text, fragment in [("", "empty"), ("R", "1 token"), ("ROMEO " * 10, "longer than the model's context of 32")]:
        with pytest.raises(UsageError, match=fragment) as e:
            view(model, text, tokenizer=tokenizer)
        assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="layer must be in 0..2 and head in 0..1"):
        view(run, TEXT, layer=3)
    with pytest.raises(UsageError, match="no tokenizer"):
        view(model, TEXT)


def test_a_page_asked_for_a_head_it_lacks_or_with_broken_data_says_so(model_and_tokenizer, tmp_path, open_page):
    model, tokenizer = model_and_tokenizer
    path = view(model, TEXT, tokenizer=tokenizer).save(tmp_path / "view.html")
    o = open_page(path.as_uri() + "#layer=7&head=0")
    ready(o.page)
    message = o.page.text_content(".gg-attention .gg-msg")
    assert "There is no layer 7, head 0 in this model: layers are 0..2 and heads 0..1" in message
    assert o.page.get_attribute(".gg-attention", "data-layer") == "0"
    page = path.read_text(encoding="utf-8")
    broken = re.sub(r'("patterns":")[^"]{8}', r"\1!!!!!!!!", page)
    assert broken != page
    (tmp_path / "broken.html").write_text(broken, encoding="utf-8")
    o = open_page((tmp_path / "broken.html").as_uri())
    o.page.wait_for_selector(".gg-view[data-state=error]")
    assert o.page.text_content(".gg-error").startswith("The view could not be drawn:")
    (tmp_path / "error.html").write_text(render(None, error="The text is empty."), encoding="utf-8")
    o = open_page((tmp_path / "error.html").as_uri())
    assert o.page.text_content(".gg-error") == "The text is empty."


def test_keyboard_focus_reaches_every_token_and_selects_it(model_and_tokenizer, tmp_path, open_page):
    model, tokenizer = model_and_tokenizer
    T = len(tokenizer.encode(TEXT))
    o = open_page(view(model, TEXT, tokenizer=tokenizer).save(tmp_path / "view.html").as_uri())
    ready(o.page)
    o.page.focus(".gg-attention [data-pos='0']")
    reached = []
    for _ in range(T):
        reached.append(o.page.evaluate("document.activeElement.dataset.pos"))
        assert o.page.get_attribute(".gg-attention", "data-selected") == reached[-1]
        o.page.keyboard.press("Tab")
    assert reached == [str(i) for i in range(T)]
    o.page.keyboard.press("Shift+Tab")
    o.page.keyboard.press("ArrowLeft")
    assert o.page.evaluate("document.activeElement.dataset.pos") == str(T - 2)


def test_hovering_tokens_of_a_quickstart_sized_model_moves_the_selection(tmp_path, open_page):
    """What each hover does; how fast it does it is benchmarks/view_hover.py's to measure."""
    from glassgpt.config import GPTConfig
    from glassgpt.model import GPT

    model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)).eval()
    ids = torch.randint(0, 65, (64,), generator=torch.Generator().manual_seed(0))
    o = open_page(view(model, ids).save(tmp_path / "view.html").as_uri())
    ready(o.page)
    for i in (5, 40, 63, 0, 31):
        o.page.dispatch_event(f".gg-attention [data-pos='{i}']", "mouseover")
        assert o.page.get_attribute(".gg-attention", "data-selected") == str(i)


# ---------------------------------------------------------------- the report

@pytest.fixture(scope="module")
def report(run, tmp_path_factory):
    """`glassgpt analyze` twice on the same run (the prompt itself: no dataset prepared)."""
    outs = []
    for name in ("a", "b"):
        out = tmp_path_factory.mktemp("report") / name
        r = run_cli("analyze", str(run), "--prompt", TEXT, "--out", str(out))
        assert r.returncode == 0, r.stderr
        outs.append((out, r.stdout))
    return outs


def test_analyze_prints_its_summary_sentences(report):
    out, stdout = report[0]
    summary = json.loads((out / "analysis.json").read_text(encoding="utf-8"))["summary"]
    first_sentence = summary.split("\n\n")[0].split(". ")[0]
    assert " ".join(first_sentence.split()) in " ".join(stdout.split())
    assert stdout.rstrip().splitlines()[-1].startswith("analysis written to")
    assert stdout.index(first_sentence.split()[0]) < stdout.index("analysis written to")


def test_two_analyses_of_a_run_give_the_same_page_and_it_holds_the_view_first(report):
    (a, _), (b, _) = report
    page = (a / "report.html").read_bytes()
    assert page == (b / "report.html").read_bytes()
    text = page.decode("utf-8")
    assert text.index("gg-view") < text.index("id='attention-maps'") < text.index("data:image/png")
    assert len(page) < 1_500_000
    assert not re.search(r"(src|href)=[\"']?https?:", text), "nothing is loaded from the network"


def test_report_in_the_browser(report, run, open_page, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    out, _ = report[0]
    numbers = json.loads((out / "analysis.json").read_text(encoding="utf-8"))
    ids = numbers["prompt_ids"]
    o = open_page((out / "report.html").as_uri())
    ready(o.page)
    patterns = numbers["prompt_patterns"]
    check_selected_weights(o.page, lambda layer: torch.tensor(patterns[layer]), len(ids), [2, len(ids) - 1])
    # per-head scores: the values are the report's, and a click opens the head
    o.page.click(".gg-tabs [data-tab=scores]")
    cell = o.page.locator(".gg-score[data-score=ablation] .gg-cell[data-layer='2'][data-head='1']")
    assert abs(float(cell.get_attribute("data-value")) - numbers["ablation"][2][1]) < 1e-4
    sentence = next(h["description"] for h in numbers["heads"] if (h["layer"], h["head"]) == (2, 1))
    assert o.page.text_content(".gg-heads tr[data-layer='2'][data-head='1']").endswith(sentence)
    cell.click()
    assert o.page.get_attribute(".gg-view", "data-tab") == "attention"
    assert (o.page.get_attribute(".gg-attention", "data-layer"), o.page.get_attribute(".gg-attention", "data-head")) == ("2", "1")
    assert o.page.text_content(".gg-about").endswith(sentence), "the open head's sentence"
    # per-token loss and the logit lens
    o.page.click(".gg-tabs [data-tab=loss]")
    losses = o.page.eval_on_selector_all(".gg-panel-loss [data-pos]", "els => els.map(e => e.getAttribute('data-loss'))")
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    expected = F.cross_entropy(logits[0, :-1], torch.tensor(ids[1:]), reduction="none")
    assert losses[0] is None and all(abs(float(x) - float(y)) <= 1e-3 for x, y in zip(losses[1:], expected))
    o.page.click(".gg-tabs [data-tab=lens]")
    o.page.hover(".gg-panel-lens th[data-pos='4']")
    assert "true next token" in o.page.text_content(".gg-lensdetail")
    assert o.page.locator(".gg-panel-lens table.gg-lens td[data-rank]").count() == (model.config.n_layer + 1) * (len(ids) - 1)


# ---------------------------------------------------------------- the demo's Inside tab

@pytest.fixture(scope="module")
def demo_server(run):
    pytest.importorskip("gradio", reason="the demo tests need the demo extra (make test installs it)")
    from conftest import free_port
    from glassgpt.demo import Demo, Limits, build_app

    model, tokenizer, _ = load_run(run)
    demo = Demo(model, tokenizer, Limits(max_prompt_chars=100, max_new_tokens=40))
    app = build_app(demo, title="glassgpt view test")
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", demo
    app.close()


def test_the_demo_inside_tab_shows_the_view_offline(demo_server, open_page, model_and_tokenizer):
    url, demo = demo_server
    model, tokenizer = model_and_tokenizer
    o = open_page(url)
    o.page.locator("#prompt textarea").fill(TEXT)
    o.page.get_by_role("tab", name="Inside").click()
    o.page.locator("#show-attention").click()
    o.page.wait_for_selector("#inside-view iframe", timeout=30_000)
    frame = o.page.frame_locator("#inside-view iframe").locator(".gg-view[data-state=ready]")
    frame.wait_for(timeout=30_000)
    inner = next(f for f in o.page.frames if f != o.page.main_frame)
    ids = tokenizer.encode(TEXT)
    _, cache = model.run_with_cache(torch.tensor([ids]))
    check_selected_weights(inner, lambda layer: cache[f"blocks.{layer}.attn.pattern"][0], len(ids), [3, len(ids) - 1])
    about = inner.text_content(".gg-about")  # the open head's sentence, measured on this text
    assert about.startswith("Layer 2, head 0") and (" on " in about or "diffuse" in about), about  # the last one opened


def test_the_demo_inside_tab_refuses_bad_input_in_one_sentence(demo_server):
    from gradio_client import Client

    url, demo = demo_server
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="the prompt is empty"):
        client.predict(text="", prompt="", api_name="/inside")
    with pytest.raises(UsageError, match="layer must be in 0..2 and head in 0..1"):
        demo.inside_view(TEXT, 0, 2)
    with pytest.raises(UsageError, match="1 token long"):
        demo.inside_view("R")
    html_text, rows = client.predict(text="", prompt=TEXT, api_name="/inside")  # the view picks layer and head
    assert 'data-initial-layer=&quot;0&quot;' in html_text and "srcdoc" in html_text
    assert 'data-initial-layer=&quot;1&quot;' in demo.inside_view(TEXT, 1, 1)[0]
