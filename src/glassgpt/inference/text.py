"""Text in and out of generation: a prompt to token ids, streamed token ids back to
text, and stopping at the end-of-text token or at stop strings.

`glassgpt.inference.generate` works in token ids only; `glassgpt sample` and the demo put these
around it: `encode_prompt`, then `StoppingDecoder` on each new token (a `StreamDecoder`
for the bytes of unfinished characters, a `StopText` for stop strings split across tokens).
"""

from __future__ import annotations

import codecs
from typing import Iterable

from glassgpt.errors import UsageError
from glassgpt.inference.generate import STOPPED


MAX_STOP_CHARS = 1000  # per stop string: matching is linear in the text, but a stop string is a phrase
MAX_STOPS = 32


def check_text(text: str, what: str) -> str:
    """`text`, refused in one sentence when it is not valid Unicode (a command-line argument
    holding bytes that are not UTF-8 arrives with lone surrogates in it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UsageError(f"{what} is not valid UTF-8 text (character {e.start}): pass it as UTF-8") from None
    return text


def encode_prompt(tokenizer, text: str | None) -> list[int]:
    """Prompt text -> token ids. No text (or empty text) starts from the tokenizer's
    start token (`<|endoftext|>` for GPT-2); a tokenizer without one starts from a
    newline when text is None, and an empty string is an error."""
    if text:
        return tokenizer.encode(check_text(text, "the prompt"))
    if tokenizer.eot_token is not None:
        return [tokenizer.eot_token]
    if text == "":
        raise UsageError("the prompt is empty and this tokenizer has no start token: give some text")
    try:
        return tokenizer.encode("\n")
    except UsageError:
        raise UsageError("this tokenizer has no start token and no newline: give a prompt") from None


def prompt_as_trained(prompt_ids: list[int], tokenizer, bos: bool) -> list[int]:
    """The prompt's ids as the run read its windows: after the run's BOS (`glassgpt.data.bos_token`: the
    end-of-text token, or the newline for characters and bytes) when it trained with `bos=true`, once."""
    from glassgpt.data import bos_token

    first = bos_token(tokenizer) if bos else None
    return prompt_ids if first is None or prompt_ids[:1] == [first] else [first, *prompt_ids]


def last_window(ids: list[int], block_size: int, keep_first: bool) -> list[int]:
    """The last `block_size` of `ids`; with `keep_first`, ids[0] (a bos=true run's BOS, which starts every
    window it read) stays first."""
    if not keep_first or len(ids) <= block_size:
        return ids[-block_size:]
    return [ids[0], *ids[len(ids) - block_size + 1:]]


class StreamDecoder:
    """Token ids in, printable text out, as tokens arrive.

    A byte-level BPE token can end in the middle of a multi-byte UTF-8 character
    ("é" or "🙂" may take two or more tokens). Each token's bytes go into Python's
    incremental UTF-8 decoder, which returns the characters that are complete and
    keeps the bytes of an unfinished one for the next token: exact, and O(1) per token."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids: list[int]) -> str:
        """Add new token ids; return the text that is now complete ("" while a character is unfinished)."""
        return self.utf8.decode(self.tokenizer.decode_bytes(ids))

    def flush(self) -> str:
        """Whatever is left: bytes of a character that never finished are shown as U+FFFD."""
        return self.utf8.decode(b"", final=True)


class StopText:
    """Stop strings on streamed text. `push(text) -> (text to show, stopped)`: the text up
    to the first stop string (which is not shown), holding back any tail that could be
    the start of one, so a stop string split across tokens is still found.

    Each stop string is matched by the Knuth-Morris-Pratt automaton: its state is the
    length of the longest start of the stop string that the text so far ends with, and
    each new character moves it in amortised constant time. So a push costs time linear
    in the text it adds (times the number of stop strings), however long they are."""

    def __init__(self, stops: Iterable[str]):
        self.stops = [check_text(s, "a stop string") for s in stops]
        if any(not s for s in self.stops):
            raise UsageError("a stop string must not be empty")
        if len(self.stops) > MAX_STOPS:
            raise UsageError(f"at most {MAX_STOPS} stop strings, got {len(self.stops)}")
        if any(len(s) > MAX_STOP_CHARS for s in self.stops):
            raise UsageError(f"a stop string is capped at {MAX_STOP_CHARS} characters, got "
                             f"{max(len(s) for s in self.stops)}")
        self.failure = [_failure_table(s) for s in self.stops]
        self.matched = [0] * len(self.stops)  # per stop string: how much of its start the text ends with
        self.held = ""
        self.stopped = False

    def _advance(self, i: int, char: str) -> bool:
        """Feed one character to stop string i's automaton; True when the whole string has matched."""
        stop, failure, m = self.stops[i], self.failure[i], self.matched[i]
        while m and stop[m] != char:
            m = failure[m - 1]
        m += stop[m] == char
        self.matched[i] = m
        return m == len(stop)

    def push(self, text: str) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        start = len(self.held)
        self.held += text
        for pos in range(start, len(self.held)):
            char = self.held[pos]
            hits = [i for i in range(len(self.stops)) if self._advance(i, char)]  # every automaton sees every char
            if hits:
                end = pos + 1 - max(len(self.stops[i]) for i in hits)  # the stop string that began first
                shown, self.held, self.stopped = self.held[:end], "", True
                return shown, True
        keep = max(self.matched, default=0)  # the tail that may still grow into a stop string
        shown, self.held = self.held[:len(self.held) - keep], self.held[len(self.held) - keep:]
        return shown, False

    def flush(self) -> str:
        """The held-back tail, when the text ended without a stop string."""
        rest, self.held = ("" if self.stopped else self.held), ""
        return rest


def _failure_table(pattern: str) -> list[int]:
    """KMP: for each prefix of `pattern`, the length of its longest proper prefix that is also its suffix."""
    table, k = [0] * len(pattern), 0
    for i in range(1, len(pattern)):
        while k and pattern[i] != pattern[k]:
            k = table[k - 1]
        k += pattern[i] == pattern[k]
        table[i] = k
    return table


class StoppingDecoder:
    """One row of new token ids in, the text to show out, stopping at the end-of-text
    token `eot` (not shown) or at a stop string (not shown). `reason` is None while
    it runs, then "end of text", "stop string", or after `finish`, "length"."""

    def __init__(self, tokenizer, stops: Iterable[str] = (), eot: int | None = None):
        self.decoder = StreamDecoder(tokenizer)
        self.stop_text = StopText(stops)
        self.eot = eot
        self.reason: str | None = None
        self.text = ""  # everything shown so far

    def _show(self, text: str, final: bool) -> str:
        shown, hit = self.stop_text.push(text)
        if final and not hit:
            shown += self.stop_text.flush()
        self.text += shown
        return shown

    def push(self, token: int) -> str:
        """The text that token completes ("" while a character or a possible stop string is incomplete)."""
        if self.reason is not None or token == STOPPED:
            return ""
        if token == self.eot:
            shown = self._show(self.decoder.flush(), final=True)
            self.reason = "stop string" if self.stop_text.stopped else "end of text"
            return shown
        shown = self._show(self.decoder.push([token]), final=False)
        if self.stop_text.stopped:
            self.reason = "stop string"
        return shown

    def finish(self) -> str:
        """At the end of generation: the text still held back; the reason becomes "length" if nothing stopped it."""
        if self.reason is not None:
            return ""
        shown = self._show(self.decoder.flush(), final=True)
        self.reason = "stop string" if self.stop_text.stopped else "length"
        return shown
