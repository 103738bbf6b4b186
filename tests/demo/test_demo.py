"""The web demo, through its real server: gradio_client calls, and a real browser."""

import importlib.util
import re
from pathlib import Path

import pytest

from conftest import assert_clean_error, free_port, make_tiny_run, run_cli

if importlib.util.find_spec("gradio") is None:  # found, not imported: gradio's import takes seconds
    pytest.skip("the demo tests need the demo extra (make test installs it)", allow_module_level=True)
from gradio_client import Client  # noqa: E402

from glassgpt.demo import Demo, Limits, build_app  # noqa: E402
from glassgpt.checkpoint import load_run  # noqa: E402

LIMITS = Limits(max_prompt_chars=100, max_new_tokens=40)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run_dir = make_tiny_run(tmp_path_factory.mktemp("demo") / "run")
    model, tokenizer, _ = load_run(run_dir)
    app = build_app(Demo(model, tokenizer, LIMITS), title="glassgpt test")
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    yield url
    app.close()


def test_generation_comes_back_and_respects_the_seed(server):
    client = Client(server, verbose=False)
    args = dict(prompt="ROMEO:", max_new_tokens=20, temperature=1.0, top_k=0, top_p=1.0)
    text_a, stats_a = client.predict(**args, seed=3, api_name="/generate")
    text_b, _ = client.predict(**args, seed=3, api_name="/generate")
    text_c, _ = client.predict(**args, seed=4, api_name="/generate")
    assert text_a.startswith("ROMEO:") and len(text_a) == len("ROMEO:") + 20
    assert text_a == text_b and text_a != text_c
    assert "tokens/s" in stats_a


@pytest.mark.parametrize("bad,fragment", [
    (dict(max_new_tokens=41), "40"),  # Gradio's slider check or ours: either way refused
    (dict(prompt="x" * 101), "100"),
    (dict(prompt="ROMEO§"), "'§'"),
    (dict(prompt=""), "empty"),
])
def test_limits_and_bad_input_are_reported_and_the_server_survives(server, bad, fragment):
    client = Client(server, verbose=False)
    args = dict(prompt="ROMEO:", max_new_tokens=5, temperature=1.0, top_k=0, top_p=1.0, seed=1)
    args.update(bad)
    with pytest.raises(Exception, match=fragment):
        client.predict(**args, api_name="/generate")
    text, _ = client.predict(prompt="JULIET:", max_new_tokens=5, temperature=0.0, top_k=0, top_p=1.0, seed=1,
                             api_name="/generate")
    assert text.startswith("JULIET:")


def test_demo_command_without_a_run(tmp_path):
    assert_clean_error(run_cli("demo", str(tmp_path / "missing")), 2, "does not exist")


def test_demo_command_rejects_a_bad_port(tmp_path):
    assert_clean_error(run_cli("demo", str(tmp_path), "--port", "70000"), 2, "port")


def test_the_default_prompt_is_the_start_of_the_runs_own_validation_text(tmp_path, small_data_env):
    from glassgpt.config import RunConfig, TrainConfig
    from glassgpt.data import TokenDataset
    from glassgpt.demo import default_prompt

    dataset = TokenDataset.load("shakespeare-char")
    val = dataset.tokenizer.decode([int(i) for i in dataset.split("val")[:400]])
    prompt = default_prompt(RunConfig(train=TrainConfig(dataset="shakespeare-char")), dataset.tokenizer)
    assert prompt and prompt != "ROMEO:" and "\n" + prompt + "\n" in val  # whole lines of the split
    other = make_tiny_run(tmp_path / "run", text="xyz abc\n")  # its dataset is not here: a word it can read
    model, tokenizer, run_config = load_run(other)
    assert default_prompt(run_config, tokenizer) == tokenizer.decode([0])


@pytest.mark.slow
def test_the_demo_command_says_where_it_serves_and_gives_no_share_hint(tmp_path, small_data_env):
    import subprocess
    import sys
    import time

    run = make_tiny_run(tmp_path / "run")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "glassgpt", "demo", str(run), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("demo of"):
                break
        assert any(line.startswith("demo of") and f":{port}" in line for line in lines), lines
        assert any(line.startswith("threads: 1 (OMP_NUM_THREADS=1") for line in lines), lines
    finally:
        process.terminate()
        rest, _ = process.communicate(timeout=60)
    assert "share=True" not in "".join(lines) + rest


CHROMIUM = "/usr/bin/chromium"


def test_in_a_real_browser_generate_then_look_inside(server, tmp_path):
    """Headless Chromium types a prompt, clicks Generate, waits for text, opens the
    Inside tab and checks the interactive view renders; it leaves a screenshot."""
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).is_file(), "Debian's chromium is needed: make test installs it (apt-get install chromium)"
    shots = Path(__file__).resolve().parents[2] / "tests" / "artifacts"
    shots.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1400})
            page.goto(server)
            page.get_by_role("tab", name="Inside").click()  # filled on load, before any click, with the prompt
            on_load = page.frame_locator("#inside-view iframe").locator(".gg-view[data-state=ready] .gg-attention")
            expect(on_load).to_be_visible(timeout=30_000)
            assert page.locator("#inside-tab input[type=range], #inside-tab input[type=number]").count() == 0  # one set
            page.get_by_role("tab", name="Generate").click()
            prompt = page.locator("#prompt textarea")
            prompt.fill("JULIET:")
            page.locator("#generate").click()
            output = page.locator("#output textarea")
            expect(output).to_have_value(re.compile(r"^JULIET:.{10,}", re.S), timeout=30_000)
            page.get_by_role("tab", name="Inside").click()
            page.locator("#show-attention").click()
            view = page.frame_locator("#inside-view iframe").locator(".gg-view[data-state=ready] .gg-attention")
            expect(view.locator("[data-pos]").nth(10)).to_be_attached(timeout=30_000)  # the generated text now
            page.screenshot(path=str(shots / "demo-inside.png"), full_page=True)
        finally:
            browser.close()


def test_inside_works_after_the_longest_generation_the_page_allows(tmp_path):
    """A prompt at the limit plus the new tokens the page allows is more text than the
    prompt limit: the Inside tab takes it (its last block_size tokens), in the run's dtype."""
    run_dir = make_tiny_run(tmp_path / "run")
    model, tokenizer, _ = load_run(run_dir, dtype="float16")
    limits = Limits(max_prompt_chars=900, max_new_tokens=200)
    demo = Demo(model, tokenizer, limits)
    prompt = ("ROMEO: wherefore art thou?\n" * 40)[:900]
    *_, (text, stats) = demo.generate(prompt, 200, 1.0, 0, 1.0, 0)
    assert len(text) == 1100 and "stopped: length" in stats and "float16" in stats
    attention_fig, depth_fig, sinks = demo.inside(text, 1, 1)
    assert attention_fig is not None and depth_fig is not None
    with pytest.raises(Exception, match="limit"):
        demo.inside(text + "x" * 10_000, 0, 0)


def test_demo_generation_stops_at_a_stop_string_and_says_so(tmp_path):
    run_dir = make_tiny_run(tmp_path / "run")
    model, tokenizer, _ = load_run(run_dir)
    demo = Demo(model, tokenizer, LIMITS)
    *_, (free, stats) = demo.generate("ROMEO:", 30, 0.0, 0, 1.0, 0)
    assert "stopped: length" in stats
    new = free[len("ROMEO:"):]
    stop = new[8:11]
    *_, (text, stats) = demo.generate("ROMEO:", 30, 0.0, 0, 1.0, 0, stop)
    assert text == "ROMEO:" + new[:new.index(stop)] and "stopped: stop string" in stats
