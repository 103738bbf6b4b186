"""`glassgpt <command>`: the edge where arguments become calls and errors become one line.

The commands themselves are in `glassgpt.commands`, one module each (arguments, help and handler
together). Every user error ends in one line on stderr and exit status 2 (usage) or 1 (runtime);
a traceback means a bug in glassgpt.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from glassgpt.commands import COMMANDS
from glassgpt.errors import GlassGPTError


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help line ends with its default, `(default: cpu)`, unless it has none."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = action.default not in (None, False, "", [], argparse.SUPPRESS) and action.option_strings
        if shown and "default" not in text and not isinstance(action, argparse._StoreConstAction):
            text += " (default: %(default)s)"
        return text


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not the usage text plus the error."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def _check_value(self, action, value):
        """A value outside an argument's choices is named with the nearest choice."""
        if action.choices is not None and value not in action.choices:
            from glassgpt.errors import did_you_mean

            what = "dataset" if action.dest == "form" else "choice"
            raise argparse.ArgumentError(action, f"unknown {what} {value!r}{did_you_mean(value, list(action.choices))}; "
                                                 f"choose from {', '.join(map(str, action.choices))}")

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command_modules() -> dict:
    """Each command's name (`convert-hf`) -> its module in glassgpt.commands."""
    modules = [importlib.import_module(f"glassgpt.commands.{name}") for name in COMMANDS]
    return {getattr(m, "NAME", m.__name__.rsplit(".", 1)[1]): m for m in modules}


def build_parser() -> ArgumentParser:
    from glassgpt import __version__

    parser = ArgumentParser(prog="glassgpt", description="A GPT you can train fast and see through.")
    parser.add_argument("--version", action="version", version=f"glassgpt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser, metavar="COMMAND")
    for name, module in command_modules().items():
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", None))
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments; words after the options go to a command's trailing list (train's key=value
    overrides after --out, prepare text's PATHs after its options)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    trailing = getattr(args, "trailing", None)
    if trailing:
        takes = (lambda e: "=" in e) if trailing == "overrides" else (lambda e: True)
        late = [e for e in extra if not e.startswith("-") and takes(e)]
        setattr(args, trailing, getattr(args, trailing) + late)
        extra = [e for e in extra if e not in late]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    try:
        args.handler(args)
    except GlassGPTError as e:
        # a process stopped by a signal leaves at once: its checkpoint is on disk, and tearing down the
        # interpreter (torch's objects, compiled graphs) can take a minute on a busy machine
        fail(str(e), e.exit_code, leave_now=argv is None and getattr(e, "leave_now", False))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except MemoryError:
        fail("out of memory: ask for a smaller model, batch or window", 1)
    except OSError as e:
        fail(*os_error_message(e))


# A path that exists as the wrong kind of thing is the user's to change: a usage error.
WRONG_KIND = {FileExistsError: "already exists", NotADirectoryError: "is a file where a folder is needed",
              IsADirectoryError: "is a folder where a file is needed"}


def os_error_message(e: OSError) -> tuple[str, int]:
    """An OSError as one sentence naming the path, and its exit status."""
    path = f"{e.filename}" if e.filename is not None else "a file"
    for kind, what in WRONG_KIND.items():
        if isinstance(e, kind):
            return f"{path} {what}: choose another path", 2
    if isinstance(e, PermissionError):
        return f"permission denied on {path}: check who owns it, or choose another path", 1
    if isinstance(e, FileNotFoundError):
        return f"{path} does not exist", 2
    return f"{path}: {e.strerror or e}", 1


def note(message: str) -> None:
    print(f"glassgpt: note: {message}", file=sys.stderr)


def fail(message: str, code: int, leave_now: bool = False) -> None:
    print(f"glassgpt: error: {message}", file=sys.stderr)
    if leave_now:  # only where glassgpt is the process (main() read sys.argv), never inside a caller's
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
