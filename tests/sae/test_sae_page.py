"""The SAE feature page in a browser: no section drawn over another at any width, every live
feature reachable, found by number and by token; and the statistics behind it (distinct contexts,
many tokens read sparsely)."""

import random

import pytest
import torch

from glassgpt.model import GPT
from glassgpt.sae import SAE, SAEConfig, feature_stats, render_features_html
from glassgpt.sae.page import decode_page_data

from conftest import tiny_config
from conftest import Opened

LONG = ["\u2423" + "incomprehensibilities"[: 4 + k % 18] for k in range(40)]  # BPE-like long tokens


def synthetic_features(count: int = 230, seed: int = 0) -> list[dict]:
    """feature_stats' output for `count` features (a fifth of them dead), with long tokens and
    long contexts, so a careless layout overflows."""
    rng = random.Random(seed)
    features = []
    for f in range(count):
        dead = f % 5 == 4
        contexts = [] if dead else [
            {"activation": round(3 - 0.1 * c, 4), "at": 12, "tokens": [rng.choice(LONG) for _ in range(15)],
             "activations": [round(rng.random() * 3, 4) for _ in range(15)]} for c in range(8)]
        features.append({"feature": f, "density": 0.0 if dead else rng.uniform(0.001, 0.2),
                         "max": 0.0 if dead else 3.0, "contexts": contexts,
                         "histogram": [] if dead else {"log10_min": -1.2, "log10_max": 0.48,
                                                       "counts": [rng.randrange(0, 9000) for _ in range(20)]},
                         "promotes": [rng.choice(LONG) for _ in range(8)],
                         "suppresses": [rng.choice(LONG) for _ in range(8)]})
    return features


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    features = synthetic_features()
    text = LONG * 2
    fired = [[(i % 230, 1.5)] if i % 5 != 4 else [] for i in range(len(text))]
    path = tmp_path_factory.mktemp("sae-page") / "features.html"
    path.write_text(render_features_html("SAE features of a run at blocks.0.resid_post", {"l0": 8.0, "fvu": 0.1},
                                         features, token_view=(text, fired), tokens_read=65_536), encoding="utf-8")
    return path, features


OVERLAPS = """() => {
  const boxes = [...document.querySelectorAll('section.feature')];
  const out = [];
  boxes.forEach((box, n) => {
    const r = box.getBoundingClientRect();
    const next = boxes[n + 1] && boxes[n + 1].getBoundingClientRect();
    if (next && r.bottom > next.top + 0.5) out.push(`feature ${box.dataset.feature} overlaps the next`);
    for (const inner of box.querySelectorAll('*')) {
      const q = inner.getBoundingClientRect();
      if (q.width === 0 && q.height === 0) continue;
      if (q.left < r.left - 0.5 || q.right > r.right + 0.5 || q.top < r.top - 0.5 || q.bottom > r.bottom + 0.5
          || (next && q.bottom > next.top + 0.5)) {
        out.push(`feature ${box.dataset.feature}: a ${inner.tagName} outside its box`);
        break;
      }
    }
  });
  return out;
}"""


def show_all(p) -> None:
    while p.is_visible("#more"):
        p.click("#more")


@pytest.mark.parametrize("width", [1280, 800])
def test_no_feature_is_drawn_over_another_at_any_width(browser, page, width):
    path, features = page
    opened = Opened(browser, path.as_uri(), width)
    try:
        p = opened.page
        p.wait_for_selector("body[data-state=ready]")
        show_all(p)
        live = [f for f in features if f["density"] > 0]
        assert p.locator("section.feature").count() == len(live)  # every live feature, none dead
        assert p.evaluate(OVERLAPS) == []
        text = p.locator("#text").bounding_box()
        first = p.locator("section.feature").first.bounding_box()
        assert text["y"] + text["height"] <= first["y"]
        assert p.evaluate("document.documentElement.scrollWidth") <= width  # nothing runs off the side
    finally:
        opened.close()


def test_features_are_found_by_number_and_by_token_and_a_dead_one_is_said_to_be(browser, page):
    path, features = page
    opened = Opened(browser, path.as_uri())
    try:
        p = opened.page
        p.wait_for_selector("body[data-state=ready]")
        assert p.locator("section.feature").count() == 100 and "of 184 live features" in p.inner_text("#shown")
        p.fill("#search", "17")
        assert [int(x) for x in p.locator("section.feature").evaluate_all("s => s.map(e => e.dataset.feature)")] == [17]
        p.fill("#search", "19")  # 19 % 5 == 4: dead
        assert p.locator("section.feature").count() == 0 and "never fired" in p.inner_text("#features")
        peak = features[3]["contexts"][0]["tokens"][12]  # a token feature 3 peaks on
        p.fill("#search", peak.replace("\u2423", " "))  # typed with a plain space
        show_all(p)
        found = [int(x) for x in p.locator("section.feature").evaluate_all("s => s.map(e => e.dataset.feature)")]
        want = {f["feature"] for f in features if f["density"] > 0 and (
            any(c["tokens"][c["at"]] == peak for c in f["contexts"]) or peak in f["promotes"])}
        assert 3 in found and set(found) == want
        inside = features[5]["contexts"][0]["tokens"][12].replace("\u2423", "")[1:4]  # part of a peak token
        p.fill("#search", inside)
        show_all(p)
        assert "features peaking inside" in p.inner_text("#shown") and p.locator("section.feature").count() >= 1
        p.fill("#search", "")
        p.click("#text-tokens a.fires >> nth=2")  # a token of the text shows the feature firing on it
        assert p.locator("section.feature").count() == 1
    finally:
        opened.close()


def test_the_page_data_is_escaped_and_holds_every_live_feature():
    features = synthetic_features(20)
    features[0]["contexts"][0]["tokens"][0] = "</script><script>alert(1)</script>"
    page = render_features_html("<b>title</b>", {"hook": "<i>"}, features)
    assert "<script>alert(1)" not in page and "<b>title</b>" not in page and "<i>" not in page
    data = decode_page_data(page)
    assert sorted(f["i"] for f in data["features"]) == [f["feature"] for f in features if f["density"] > 0]
    assert "</script><script>alert(1)</script>" in data["vocab"]


def test_top_contexts_are_distinct_and_many_tokens_are_read_sparsely():
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=8, block_size=16)).eval()
    sae = SAE(SAEConfig(d_in=16, width=64, k=4))
    repeated = torch.tensor([[1, 2, 3, 4] * 4] * 6)  # six identical windows: the same contexts again and again
    fresh = torch.randint(0, 8, (40, 16), generator=torch.Generator().manual_seed(1))
    windows = torch.cat([repeated, fresh])
    features = feature_stats(model, sae, "blocks.0.resid_post", windows, lambda ids: [str(i) for i in ids], top=8)
    dense = sae.encode(model.run_with_cache(windows, names=["blocks.0.resid_post"])[1]["blocks.0.resid_post"]
                       .reshape(-1, 16)).detach()  # (B*T, width)
    for f in features:
        column = dense[:, f["feature"]]
        assert f["density"] == pytest.approx(float((column > 0).float().mean()))
        assert f["max"] == pytest.approx(float(column.max()), abs=1e-5)
        if f["density"] == 0:
            continue
        shown = [tuple(c["tokens"]) for c in f["contexts"]]
        assert len(shown) == len(set(shown))  # no context twice
        assert f["contexts"][0]["activation"] == pytest.approx(float(column.max()), abs=1e-4)
        assert sum(f["histogram"]["counts"]) == int((column > 0).sum())
