"""The one bounded reader: every file glassgpt reads from a run directory, a prepared
dataset, a user's corpus or config comes through here.

- Only a regular file is read. The path is opened without blocking (`O_NONBLOCK`: a named
  pipe in its place returns at once instead of waiting for a writer), and the opened
  descriptor is `fstat`ed, so a pipe, a device, a socket or a folder is refused, and so is a
  file swapped for one of them between a check and the open. A link is followed: what is
  read is judged on the descriptor, whatever the path pointed at (which links a corpus may
  hold is the ownership rule's: `glassgpt.ownership`).
- The size is checked before a byte is read (`fstat`), and at most `max_bytes + 1` bytes
  are read, so a file that grows meanwhile is caught too.
- JSON is parsed with limits: nesting depth (`MAX_JSON_DEPTH`), digits of an integer
  (`MAX_INT_DIGITS`: every integer read fits a float), no NaN or Infinity unless asked for,
  no number that overflows a float, and strings that are Unicode (no lone surrogate,
  which could not be written out again as UTF-8).
- Every failure is one `GlassGPTError` naming the file: a `RunError` (exit 1) unless the
  caller says the file is the user's to fix (`error=UsageError`, exit 2); `fix` says how.

A library that opens files by path (safetensors, numpy's memmap, torch.load) gets the path
after `check_regular` has vetted it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO, Iterator

from glassgpt.errors import GlassGPTError, RunError

MAX_JSON_DEPTH = 64  # glassgpt's own files nest 4 deep; a tokenizers JSON 4
MAX_INT_DIGITS = 100  # a seed is 19 digits; 100 keeps every integer inside a float's range (1e308)
_SURROGATE = re.compile("[\ud800-\udfff]")
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # POSIX; Windows has no named pipes at a path
_BINARY = getattr(os, "O_BINARY", 0)  # Windows; 0 elsewhere
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class JSONLimitError(ValueError):
    """A JSON text beyond one of the parser's limits (raised inside the parse, caught here)."""


def _fail(error: type[GlassGPTError], where, problem: str, fix: str) -> GlassGPTError:
    return error(f"{where} {problem}" + (f": {fix}" if fix else ""))


def kind_of(mode: int) -> str:
    """What a file of this `st_mode` is, in words ("a folder", "a named pipe (FIFO)", ...)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


@contextlib.contextmanager
def open_regular(path: str | Path, max_bytes: int | None = None, *, fix: str = "",
                 error: type[GlassGPTError] = RunError) -> Iterator[tuple[BinaryIO, int]]:
    """`(binary file, size)` of the regular file at `path`, opened without blocking and
    checked on its descriptor: a file of another kind, or one larger than `max_bytes`, is
    refused before anything is read. The file is closed when the block ends."""
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | _BINARY)
    except FileNotFoundError:
        raise _fail(error, path, "does not exist", fix) from None
    except OSError as e:  # a socket (ENXIO), a permission, a loop of links
        raise _fail(error, path, f"cannot be opened ({e.strerror or type(e).__name__})", fix) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _fail(error, path, f"is {kind_of(info.st_mode)}, not a regular file", fix)
        if max_bytes is not None and info.st_size > max_bytes:
            raise _fail(error, path, f"is {info.st_size:,} bytes, more than the {max_bytes:,} such a file can be",
                        fix)
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        yield file, info.st_size


def check_regular(path: str | Path, max_bytes: int | None = None, *, fix: str = "",
                  error: type[GlassGPTError] = RunError) -> int:
    """The size of the regular file at `path`, refused as `open_regular` refuses: for a
    library that opens the file by its path itself."""
    with open_regular(path, max_bytes, fix=fix, error=error) as (_, size):
        return size


def read_bytes(path: str | Path, max_bytes: int, *, fix: str = "", error: type[GlassGPTError] = RunError) -> bytes:
    """The whole of a regular file of at most `max_bytes` bytes."""
    with open_regular(path, max_bytes, fix=fix, error=error) as (file, _):
        try:
            data = file.read(max_bytes + 1)
        except OSError as e:
            raise _fail(error, path, f"cannot be read ({e.strerror or type(e).__name__})", fix) from None
    if len(data) > max_bytes:
        raise _fail(error, path, f"grew past {max_bytes:,} bytes while it was read", fix)
    return data


def decode_utf8(data: bytes, where, *, fix: str = "", error: type[GlassGPTError] = RunError) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail(error, where, f"is not UTF-8 text (byte {e.start:,})", fix) from None


def read_text(path: str | Path, max_bytes: int, *, fix: str = "", error: type[GlassGPTError] = RunError) -> str:
    """A regular file of at most `max_bytes` bytes, as UTF-8 text."""
    return decode_utf8(read_bytes(path, max_bytes, fix=fix, error=error), path, fix=fix, error=error)


def read_lines(path: str | Path, max_bytes: int, max_line_bytes: int, *, fix: str = "",
               error: type[GlassGPTError] = RunError) -> Iterator[bytes | None]:
    """The lines of a regular file of at most `max_bytes` bytes (`lines_of`)."""
    with open_regular(path, max_bytes, fix=fix, error=error) as (file, _):
        yield from lines_of(file, max_line_bytes, max_bytes)  # one that grows meanwhile is read to max_bytes


def lines_of(file: BinaryIO, max_line_bytes: int, max_bytes: int | None = None) -> Iterator[bytes | None]:
    """The lines of a binary stream, without their line breaks; a line longer than
    `max_line_bytes` comes as None, and no more than that of it is held. At most
    `max_bytes` bytes are read, when given."""
    total = 0
    while max_bytes is None or total <= max_bytes:
        line = file.readline(max_line_bytes + 1)
        if not line:
            return
        total += len(line)
        if len(line) <= max_line_bytes or line.endswith(b"\n"):
            yield line.rstrip(b"\r\n")
            continue
        while line and not line.endswith(b"\n") and (max_bytes is None or total <= max_bytes):  # skip the rest
            line = file.readline(max_line_bytes + 1)
            total += len(line)
        yield None


def read_capped(file: BinaryIO, max_bytes: int) -> bytes | None:
    """All of a stream (a decompressor's, say) if it ends within `max_bytes`, else None."""
    data = file.read(max_bytes + 1)
    return data if len(data) <= max_bytes else None


# ---------------------------------------------------------------- JSON

def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise JSONLimitError(f"holds a {digits:,}-digit integer, more than the {MAX_INT_DIGITS} glassgpt reads")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise JSONLimitError(f"holds a number too large for a float ({text[:20]}{'...' if len(text) > 20 else ''})")
    return value


def _refuse_constant(name: str):
    raise JSONLimitError(f"holds {name}, which is not a JSON number")


def _check_parsed(value, max_depth: int) -> None:
    """Nesting within `max_depth`, every string (keys too) valid Unicode; iterative, so a deep
    value cannot exhaust the stack here."""
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise JSONLimitError("holds a lone surrogate (\\ud800-\\udfff), which is not a character")
        elif isinstance(item, (dict, list)):
            if depth > max_depth:
                raise JSONLimitError(f"is nested more than {max_depth} deep")
            if isinstance(item, dict):
                todo.extend((key, depth) for key in item)
                todo.extend((v, depth + 1) for v in item.values())
            else:
                todo.extend((v, depth + 1) for v in item)


def loads_json(data: str | bytes, where, *, allow_nan: bool = False, max_depth: int = MAX_JSON_DEPTH,
               fix: str = "", error: type[GlassGPTError] = RunError):
    """JSON text (bytes are UTF-8) parsed within the limits above, or one error naming `where`
    (a file, or "FILE line N")."""
    text = decode_utf8(data, where, fix=fix, error=error) if isinstance(data, bytes) else data
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                           parse_constant=float if allow_nan else _refuse_constant)
        _check_parsed(value, max_depth)
    except json.JSONDecodeError as e:
        raise _fail(error, where, f"is not valid JSON ({e.msg}: line {e.lineno} column {e.colno})", fix) from None
    except RecursionError:
        raise _fail(error, where, f"is nested more than {max_depth} deep", fix) from None
    except (JSONLimitError, ValueError) as e:  # ValueError: whatever else the parser finds out of bounds
        raise _fail(error, where, str(e).splitlines()[0] if str(e) else "is not valid JSON", fix) from None
    return value


def read_json(path: str | Path, max_bytes: int, *, allow_nan: bool = False, fix: str = "",
              error: type[GlassGPTError] = RunError):
    """A JSON file of at most `max_bytes` bytes, read and parsed within the limits."""
    return loads_json(read_bytes(path, max_bytes, fix=fix, error=error), path, allow_nan=allow_nan, fix=fix,
                      error=error)
