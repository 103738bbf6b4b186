"""The web demo: generate text, then look inside the model that wrote it.

`glassgpt demo RUN_DIR` serves it; `app.py` at the repository root serves the
run named by `GLASSGPT_RUN` the way a Hugging Face Space would. Needs the
`demo` extra (`pip install glassgpt[demo]`): the core package does not import Gradio.

A public demo must stay up: prompts and new tokens are bounded, requests wait
in a bounded queue and run a few at a time, nothing a user sends is read as a
path or as code, and an error in one request is shown in the page.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from dataclasses import dataclass

import torch

from glassgpt.errors import GlassGPTError, UsageError
from glassgpt.inference.text import MAX_STOP_CHARS, last_window, prompt_as_trained

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a demo


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 1000
    max_new_tokens: int = 500
    concurrency: int = 2  # requests computed at once
    queue_size: int = 16  # requests waiting; more are turned away


def a_number(value, what: str) -> float:
    """A number from the page (a request may send anything), or one sentence saying it is not one."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = float("nan")
    if number != number:
        raise UsageError(f"{what} must be a number, got {str(value)[:40]!r}")
    return number


def whole_number(value, what: str) -> int:
    """A whole number from the page, or one sentence saying it is not one."""
    number = a_number(value, what)
    if not number.is_integer():
        raise UsageError(f"{what} must be a whole number, got {number}")
    return int(number)


class Demo:
    """The model and tokenizer behind the page, and the two things the page asks of them."""

    def __init__(self, model, tokenizer, limits: Limits = Limits(), metrics_rows: list[dict] | None = None,
                 saes: dict | None = None, prompt: str = "ROMEO:", threads=None, bos: bool = False):
        self.model, self.tokenizer, self.limits = model.eval(), tokenizer, limits
        self.bos = bos  # the run trained with bos=true: every prompt starts with its BOS, as its windows did
        self.prompt = prompt  # the page's first prompt (launch: the start of the run's own validation text)
        self.threads = threads  # a glassgpt.threads.ThreadChooser: each request's torch threads, or None
        self.busy = 0  # requests being computed now (they share the free cores)
        self.busy_lock = threading.Lock()
        self.saes = saes or {}  # name -> (SAE, its sae.json): the run's sparse autoencoders (glassgpt sae)
        # The Inside tab reads a prompt plus its generation: up to max_new_tokens tokens,
        # each at most as long as the longest text one token decodes to.
        longest_token = max(len(tokenizer.decode([i])) for i in range(tokenizer.vocab_size))
        self.max_inside_chars = limits.max_prompt_chars + limits.max_new_tokens * longest_token
        self.metrics_rows = metrics_rows or []  # the run's metrics.jsonl, for the curves of its analysis rows

    def fit_threads(self) -> None:
        """In the thread about to compute a request: torch's threads for it (glassgpt.threads)."""
        if self.threads is not None:
            self.threads.for_request(sharing=self.busy)

    def dynamics(self):
        """The figure of the run's analysis rows (dynamics.png), or None when it was trained without them."""
        from glassgpt.analysis.dynamics import analysis_rows, plot_dynamics

        n_layer = self.model.config.n_layer
        return plot_dynamics(self.metrics_rows, n_layer) if analysis_rows(self.metrics_rows, n_layer) else None

    def encode_prompt(self, prompt: str, max_chars: int | None = None) -> list[int]:
        max_chars = max_chars or self.limits.max_prompt_chars
        if not isinstance(prompt, str) or not prompt:
            raise UsageError("the prompt is empty: type some text to continue")
        if len(prompt) > max_chars:
            raise UsageError(f"the prompt is {len(prompt)} characters; the limit is {max_chars}")
        return prompt_as_trained(self.tokenizer.encode(prompt), self.tokenizer, self.bos)

    def window(self, text: str, max_chars: int | None = None) -> list[int]:
        """The last block_size tokens of `text` as the model read its training windows (the BOS first)."""
        return last_window(self.encode_prompt(text, max_chars), self.model.config.block_size, keep_first=self.bos)

    def generate(self, prompt: str, max_new_tokens: int, temperature: float, top_k: int, top_p: float, seed: int,
                 stop: str = ""):
        """Yield `(text so far, stats line)` as tokens are made. Generation stops at the
        tokenizer's end-of-text token and at `stop` (when not empty, and not shown)."""
        from glassgpt.inference.generate import check_sampling_args, stream
        from glassgpt.inference.text import StoppingDecoder

        max_new_tokens, top_k, seed = (whole_number(v, name) for v, name in
                                       ((max_new_tokens, "max new tokens"), (top_k, "top-k"), (seed, "the seed")))
        if not 0 <= seed < 2**63:
            raise UsageError(f"the seed must be between 0 and 2**63 - 1, got {seed}")
        if not isinstance(stop, str) or len(stop) > MAX_STOP_CHARS:
            raise UsageError(f"the stop text is capped at {MAX_STOP_CHARS} characters")
        temperature, top_p = a_number(temperature, "the temperature"), a_number(top_p, "top-p")
        if not 1 <= max_new_tokens <= self.limits.max_new_tokens:
            raise UsageError(f"max new tokens must be between 1 and {self.limits.max_new_tokens}")
        top_k_or_none = top_k if top_k > 0 else None  # 0 switches top-k off
        top_p_or_none = top_p if top_p < 1 else None
        check_sampling_args(temperature, top_k_or_none, top_p_or_none, max_new_tokens)
        ids = self.encode_prompt(prompt)
        generator = torch.Generator().manual_seed(seed)
        idx = torch.tensor([ids], dtype=torch.long)
        eot = self.tokenizer.eot_token
        row = StoppingDecoder(self.tokenizer, [stop] if stop else [], eot)  # decodes each token once
        count, speed = 0, ""
        start = time.perf_counter()
        for next_ids in stream(self.model, idx, max_new_tokens, temperature=temperature, top_k=top_k_or_none,
                               top_p=top_p_or_none, generator=generator, stop_ids=[] if eot is None else [eot],
                               vocab_size=self.tokenizer.vocab_size):
            row.push(next_ids[0, 0].item())
            count += 1
            speed = f"{count} tokens · {count / max(time.perf_counter() - start, 1e-9):,.0f} tokens/s"
            if row.reason:
                break
            yield prompt + row.text, speed
        row.finish()
        yield prompt + row.text, f"{speed} · stopped: {row.reason} · {self.dtype_name()}"

    def dtype_name(self) -> str:
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")

    def inside(self, text: str, layer: int, head: int):
        """Attention pattern of one head, the depth scan and the sink heads for `text`
        (the last block_size tokens of it). Safe beside a generation running on the same model
        in another thread: the hooks it attaches belong to this call."""
        from glassgpt import analysis

        ids = self.window(text, self.max_inside_chars)
        cfg = self.model.config
        layer, head = whole_number(layer, "the layer"), whole_number(head, "the head")
        if not (0 <= layer < cfg.n_layer and 0 <= head < cfg.n_head):
            raise UsageError(f"layer must be in 0..{cfg.n_layer - 1} and head in 0..{cfg.n_head - 1}")
        idx = torch.tensor([ids], dtype=torch.long)
        labels = analysis.token_labels(self.tokenizer, ids)
        patterns = analysis.attention_patterns(self.model, idx)  # (L, H, T, T)
        attention_fig = analysis.plot_attention(patterns[layer, head], labels, title=f"layer {layer}, head {head}")
        depth_fig = analysis.plot_head_heatmap(analysis.normalized_entropy(patterns), "depth scan",  # = depth_scan(idx)
                                               "entropy / uniform", vmin=0.0, vmax=1.0)
        sinks = analysis.find_sinks(analysis.sink_scores(patterns), tokens=labels)
        rows = [[s["layer"], s["head"], round(float(s["share"]), 3), s["token"]] for s in sinks]
        return attention_fig, depth_fig, rows

    def inside_view(self, text: str, layer: int = 0, head: int = 0) -> tuple[str, list[list]]:
        """The interactive view (glassgpt.analysis.view) of `text`, its last block_size tokens, opened
        at `layer`, `head`, as an iframe for the page (with one sentence per head, measured on the text);
        and the sink heads' rows."""
        from glassgpt import analysis
        from glassgpt.analysis.view import View, page, srcdoc_iframe, view_data

        ids = self.window(text, self.max_inside_chars)
        cfg = self.model.config
        layer, head = whole_number(layer, "the layer"), whole_number(head, "the head")
        if not (0 <= layer < cfg.n_layer and 0 <= head < cfg.n_head):
            raise UsageError(f"layer must be in 0..{cfg.n_layer - 1} and head in 0..{cfg.n_head - 1}")
        if len(ids) < 2:
            raise UsageError("the text is 1 token long: attention needs at least 2 tokens (a past to look at)")
        labels = analysis.token_labels(self.tokenizer, ids)
        patterns = analysis.attention_patterns(self.model, torch.tensor([ids]))  # (L, H, T, T)
        data = view_data(self.model, ids, labels, lambda i: analysis.token_labels(self.tokenizer, [i])[0],
                         patterns=patterns, title=f"The last {len(ids)} tokens of the text (context {cfg.block_size}).",
                         notes={"scores": "Measured on this one text: no standard errors (glassgpt analyze gives them)."},
                         tokenizer=self.tokenizer)
        sinks = analysis.find_sinks(analysis.sink_scores(patterns), tokens=labels)
        rows = [[s["layer"], s["head"], round(float(s["share"]), 3), s["token"]] for s in sinks]
        return srcdoc_iframe(page(View(data, layer, head).fragment), height=1150), rows


class SAEDemo:
    """The Features tab: which SAE features fire on a text, and generation with one pushed on."""

    def __init__(self, demo: "Demo"):
        self.demo = demo

    def _sae(self, name: str):
        if name not in self.demo.saes:
            raise UsageError(f"no SAE named {str(name)[:60]!r}; this run has {', '.join(self.demo.saes) or 'none'}")
        return self.demo.saes[name]

    def features(self, text: str, name: str) -> list[list]:
        """One row per token: position, token, its most active features."""
        from glassgpt import analysis
        from glassgpt.sae import features_per_token

        sae, identity = self._sae(name)
        ids = self.demo.window(text)
        fired = features_per_token(self.demo.model, sae, identity["hook"], ids, identity.get("head"))
        labels = analysis.token_labels(self.demo.tokenizer, ids)
        return [[i, token, ", ".join(f"{f} ({v:.2f})" for f, v in row)] for i, (token, row) in
                enumerate(zip(labels, fired))]

    def steer(self, prompt: str, name: str, feature, strength, max_new_tokens, seed) -> str:
        """The prompt continued (sampled at temperature 0.8) with `strength` times the feature's direction
        added to the hook's activation at every position."""
        from glassgpt.inference.generate import generate, without_stopped
        from glassgpt.sae import steering_hook

        sae, identity = self._sae(name)
        feature, seed = whole_number(feature, "the feature"), whole_number(seed, "the seed")
        max_new_tokens = whole_number(max_new_tokens, "max new tokens")
        strength = a_number(strength, "the strength")
        if not 0 <= feature < sae.config.width:
            raise UsageError(f"the feature must be in 0..{sae.config.width - 1}, got {feature}")
        if not 1 <= max_new_tokens <= self.demo.limits.max_new_tokens or abs(strength) > 100 or not 0 <= seed < 2**63:
            raise UsageError(f"max new tokens must be 1..{self.demo.limits.max_new_tokens}, the strength within "
                             "±100 and the seed 0..2**63 - 1")
        ids = self.demo.encode_prompt(prompt)
        with self.demo.model.hooks([(identity["hook"], steering_hook(sae, feature, strength, identity.get("head")))]):
            out = generate(self.demo.model, torch.tensor([ids]), max_new_tokens, temperature=0.8,
                           generator=torch.Generator().manual_seed(seed), vocab_size=self.demo.tokenizer.vocab_size)
        return prompt + self.demo.tokenizer.decode(without_stopped(out[0])[len(ids):])


def build_app(demo: Demo, title: str = "glassgpt"):
    import gradio as gr

    cfg, limits = demo.model.config, demo.limits

    def on_error(fn):
        """Turn our errors into a message in the page; the server keeps running. Each piece of the
        work runs with the threads the machine has free (Demo.fit_threads, in the thread doing it)."""
        @functools.wraps(fn)  # keeps the parameter names, which name the API's arguments
        def wrapped(*args):
            with demo.busy_lock:
                demo.busy += 1
            try:
                demo.fit_threads()
                result = fn(*args)
                if hasattr(result, "__next__"):
                    while True:
                        demo.fit_threads()  # a generator's next step may run in another worker thread
                        try:
                            item = next(result)
                        except StopIteration:
                            break
                        yield item
                else:
                    yield result
            except GlassGPTError as e:
                raise gr.Error(str(e)) from None
            finally:
                with demo.busy_lock:
                    demo.busy -= 1
        return wrapped

    with gr.Blocks(title=title) as app:
        gr.Markdown(f"# {title}\n{demo.model.num_params():,} parameters · {cfg.n_layer} layers × "
                    f"{cfg.n_head} heads · context {cfg.block_size} · tokenizer `{demo.tokenizer.name}`")
        with gr.Tab("Generate"):
            prompt = gr.Textbox(label="Prompt", value=demo.prompt, lines=3, max_length=limits.max_prompt_chars,
                                elem_id="prompt")
            with gr.Row():
                max_new = gr.Slider(1, limits.max_new_tokens, value=min(200, limits.max_new_tokens), step=1,
                                    label="Max new tokens")
                temperature = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="Temperature (0 = greedy)")
            with gr.Row():
                top_k = gr.Slider(0, 200, value=0, step=1, label="Top-k (0 = off)")
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p (1 = off)")
                seed = gr.Number(value=1337, precision=0, label="Seed")
                stop = gr.Textbox(value="", label="Stop at (optional text, not shown)", max_lines=1,
                                  max_length=MAX_STOP_CHARS)
            generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
            output = gr.Textbox(label="Text", lines=12, elem_id="output", interactive=False)
            stats = gr.Markdown(elem_id="stats")
        with gr.Tab("Inside", elem_id="inside-tab"):
            gr.Markdown("Every head and every token of the generated text (before a generation, the prompt; the "
                        f"last {cfg.block_size} tokens): pick a layer and head in the view, hover a token to see "
                        "where it looks. Works offline.")
            inside_btn = gr.Button("Look inside the latest text", elem_id="show-attention")
            inside_view = gr.HTML(elem_id="inside-view")
            sinks_table = gr.Dataframe(headers=["layer", "head", "share", "sinks onto"], label="Sink heads")
            dynamics_fig = demo.dynamics()
            if dynamics_fig is not None:  # trained with analysis_interval: how these heads formed
                gr.Plot(value=dynamics_fig, label="During training: loss, in-context learning, induction, sinks",
                        elem_id="dynamics-plot")

        def inside(text: str, prompt: str):
            return demo.inside_view(text or prompt)

        if demo.saes:
            features_tab(gr, SAEDemo(demo), on_error, limits)

        generate_btn.click(on_error(demo.generate), [prompt, max_new, temperature, top_k, top_p, seed, stop],
                           [output, stats], api_name="generate")
        inside_btn.click(on_error(inside), [output, prompt], [inside_view, sinks_table], api_name="inside")
        app.load(on_error(inside), [output, prompt], [inside_view, sinks_table])  # the view filled on load
    app.queue(default_concurrency_limit=limits.concurrency, max_size=limits.queue_size)
    return app


def features_tab(gr, sae_demo: SAEDemo, on_error, limits: Limits) -> None:
    names = list(sae_demo.demo.saes)
    with gr.Tab("Features", elem_id="features-tab"):
        gr.Markdown("Sparse autoencoder features (`glassgpt sae`): which fire on each token of a text, and a "
                    "generation with one feature's direction added at its hook point.")
        which = gr.Dropdown(names, value=names[0], label="SAE")
        text = gr.Textbox(label="Text", value=sae_demo.demo.prompt, lines=2, max_length=limits.max_prompt_chars)
        show = gr.Button("Show features", elem_id="show-features")
        table = gr.Dataframe(headers=["position", "token", "most active features"], label="Features per token")
        with gr.Row():
            feature = gr.Number(value=0, precision=0, label="Feature")
            strength = gr.Slider(-20.0, 20.0, value=5.0, step=0.5, label="Strength")
            steer_seed = gr.Number(value=1337, precision=0, label="Seed")
            steer_new = gr.Slider(1, limits.max_new_tokens, value=min(100, limits.max_new_tokens), step=1,
                                  label="Max new tokens")
        steer = gr.Button("Generate, steered", elem_id="steer")
        steered = gr.Textbox(label="Steered text", lines=6, interactive=False, elem_id="steered")
        show.click(on_error(sae_demo.features), [text, which], [table], api_name="features")
        steer.click(on_error(sae_demo.steer), [text, which, feature, strength, steer_new, steer_seed], [steered],
                    api_name="steer")


def validation_start(run_config, tokenizer, tokens: int) -> str:
    """The first `tokens` tokens of the run's validation split as text, or "" when its dataset is not
    prepared here with the run's tokenizer. End-of-text tokens become line breaks."""
    from glassgpt.data import TokenDataset

    try:
        dataset = TokenDataset.load(run_config.train.dataset)
        if dataset.tokenizer.to_dict() != tokenizer.to_dict():
            return ""
        ids = [int(i) for i in dataset.split("val")[:tokens]]
    except (GlassGPTError, OSError, ValueError):
        return ""
    eot = tokenizer.eot_token
    return "\n".join(tokenizer.decode(part) for part in _split_at(ids, eot)) if eot is not None else tokenizer.decode(ids)


def _split_at(ids: list[int], separator: int) -> list[list[int]]:
    parts: list[list[int]] = [[]]
    for i in ids:
        if i == separator:
            parts.append([])
        else:
            parts[-1].append(i)
    return parts


def readable(tokenizer, text: str) -> bool:
    """Whether the tokenizer encodes `text` (a char tokenizer knows only its own characters)."""
    try:
        return bool(text) and bool(tokenizer.encode(text))
    except (GlassGPTError, ValueError, KeyError):
        return False


def default_prompt(run_config, tokenizer, max_chars: int = 120) -> str:
    """The page's first prompt: the first two whole lines of the run's own validation text (up to
    `max_chars`), or, without it, a word the tokenizer can read."""
    lines = [line for line in validation_start(run_config, tokenizer, 4 * max_chars).split("\n")[1:] if line.strip()]
    prompt = ""
    for line in lines[:2]:  # the first line of the split may start mid-line: it is skipped
        if prompt and len(prompt) + 1 + len(line) > max_chars:
            break
        prompt = f"{prompt}\n{line}" if prompt else line[:max_chars]
    return next((p for p in (prompt, "ROMEO:", "The", tokenizer.decode([0])) if readable(tokenizer, p)), "\n")


def demo_of_run(run_dir: str, limits: Limits = Limits(), dtype: str = "auto", threads=0) -> Demo:
    """The Demo of a run: its model (in `dtype`), tokenizer, curves, SAEs, first prompt and BOS;
    `threads` is torch's CPU threads per request (0: the free cores, glassgpt.threads; a number fixes them)."""
    from glassgpt.checkpoint import load_run
    from glassgpt.sae import discover_saes
    from glassgpt.threads import ThreadChooser
    from glassgpt.training.log import read_metrics

    model, tokenizer, run_config = load_run(run_dir, dtype=dtype)  # generation and the Inside tab: this dtype
    chooser = ThreadChooser(threads)
    chooser.start()  # says "threads: ..." for the first request; each request measures again when stale
    return Demo(model, tokenizer, limits, read_metrics(run_dir), discover_saes(run_dir),
                prompt=default_prompt(run_config, tokenizer), threads=chooser, bos=run_config.train.bos)


def launch(run_dir: str, host: str = "127.0.0.1", port: int = 7860, limits: Limits = Limits(), block: bool = True,
           dtype: str = "auto", threads=0):
    """Serve the demo of a run (`demo_of_run`)."""
    demo = demo_of_run(run_dir, limits, dtype, threads)
    app = build_app(demo, title=f"glassgpt · {os.path.basename(os.path.normpath(run_dir))}")
    # quiet: Gradio's own lines include a share=True hint a command-line user cannot act on
    app.launch(server_name=host, server_port=port, prevent_thread_lock=True, show_error=True, quiet=True)
    print(f"demo of {run_dir} at {app.local_url} (Ctrl+C stops it)", flush=True)
    if block:
        app.block_thread()
    return app
