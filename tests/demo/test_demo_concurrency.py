"""The demo serves requests a few at a time on one model (gradio runs each in a worker thread).
Generation and the Inside tab running at once must each get their own, correct result."""

import threading

import numpy as np
import torch

from glassgpt.demo import Demo, Limits
from glassgpt.checkpoint import load_run

from conftest import make_tiny_run

TEXTS = ["ROMEO: wherefore", "JULIET: here art thou", "ROMEO: here?"]


def inside_arrays(demo: Demo, text: str, layer: int, head: int):
    """What the Inside tab shows, as numbers: the attention heatmap, the depth scan, the sink rows."""
    attention_fig, depth_fig, rows = demo.inside(text, layer, head)
    return (np.asarray(attention_fig.axes[0].images[0].get_array()), np.asarray(depth_fig.axes[0].images[0].get_array()),
            rows)


def generated(demo: Demo, prompt: str, seed: int) -> str:
    return list(demo.generate(prompt, 30, 0.9, 0, 1.0, seed))[-1][0]


def test_concurrent_generate_and_inside_requests_each_get_their_single_threaded_result(tmp_path):
    torch.set_num_threads(1)
    model, tokenizer, _ = load_run(make_tiny_run(tmp_path / "run", attn_impl="sdpa"))
    demo = Demo(model, tokenizer, Limits(max_new_tokens=40))
    jobs = [("inside", text, i % 2, (i + 1) % 2) for i, text in enumerate(TEXTS)] + \
           [("generate", text, seed, None) for seed, text in enumerate(TEXTS)]

    def run(job):
        kind, text, a, b = job
        return inside_arrays(demo, text, a, b) if kind == "inside" else generated(demo, text, a)

    expected = [run(job) for job in jobs]  # one at a time
    failures = []

    def worker(i: int):
        try:
            for _ in range(4):
                got = run(jobs[i])
                if jobs[i][0] == "generate":
                    same = got == expected[i]
                else:
                    same = (np.array_equal(got[0], expected[i][0]) and np.array_equal(got[1], expected[i][1])
                            and got[2] == expected[i][2])
                if not same:
                    failures.append((jobs[i][0], jobs[i][1], "different result"))
        except Exception as e:  # noqa: BLE001 - collected and reported below
            failures.append((jobs[i][0], jobs[i][1], repr(e)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
