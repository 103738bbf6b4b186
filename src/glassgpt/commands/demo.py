"""`glassgpt demo RUN_DIR`: the web demo (Gradio) of a run: generate, and look inside."""

from __future__ import annotations

from glassgpt.commands.options import add_dtype, add_run_dir, add_threads, port_number

HELP = "serve the web demo (needs glassgpt[demo])"


def add_arguments(parser) -> None:
    add_run_dir(parser)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    parser.add_argument("--port", type=port_number, default=7860, help="the port to serve on")
    add_dtype(parser)
    add_threads(parser)


def run(args) -> None:
    from glassgpt.errors import UsageError

    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError("the demo needs Gradio: pip install 'glassgpt[demo]'") from None
    from glassgpt.checkpoint import check_run_dir
    from glassgpt.demo import launch

    check_run_dir(args.run_dir)
    launch(str(args.run_dir), host=args.host, port=args.port, dtype=args.dtype, threads=args.threads)
