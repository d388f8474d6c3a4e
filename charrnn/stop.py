"""Stop strings: end a generated sample where the first of them is complete; the stop string itself and everything
after it are left out, as OpenAI's API does (when two are completed by the same character, the longer one counts).
One implementation for every front end: the command line, ``Model.generate`` and the server.

Text arrives in pieces (a character at a time, or a streamed chunk); a piece may end with the beginning of a
stop string whose end has not been generated yet, so ``StopMatcher`` holds back the longest such ending until
the next piece settles it. Whatever the pieces, the result is the same. Stop strings match in the generated text
only, never in the prefix.
"""

from __future__ import annotations

from collections.abc import Sequence

from charrnn.errors import CharRNNError

MAX_STOPS = 16
MAX_STOP_CHARS = 256


def check_stops(stops: Sequence[str], what: str = "stop") -> tuple[str, ...]:
    """The stop strings as a tuple, checked: at most MAX_STOPS, none empty or longer than MAX_STOP_CHARS."""
    if len(stops) > MAX_STOPS:
        raise CharRNNError(f"at most {MAX_STOPS} {what} strings can be given, not {len(stops)}")
    for s in stops:
        if not isinstance(s, str) or not s:
            raise CharRNNError(f"a {what} string must be non-empty text, not {s!r}")
        if len(s) > MAX_STOP_CHARS:
            raise CharRNNError(f"a {what} string can be at most {MAX_STOP_CHARS} characters long, not {len(s)}")
    return tuple(stops)


class StopMatcher:
    """Feed generated text in pieces; get back what is safe to show, and whether a stop string ended it.

        matcher = StopMatcher(["\\n\\n"])
        shown, stopped = matcher.feed(piece)   # for each piece, until stopped
        shown = matcher.flush()                # at the end, if never stopped: the text held back
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = check_stops(stops)
        self.held = ""  # generated but not yet shown: it may be the start of a stop string
        self.stopped = False
        self._longest = max((len(s) for s in self.stops), default=0)
        self._firsts = {s[0] for s in self.stops}

    def feed(self, piece: str) -> tuple[str, bool]:
        """The text that can be shown now (up to the first stop string completed, which is left out) and whether a
        stop string has been reached; once it has, everything fed later is dropped."""
        if self.stopped:
            return "", True
        if not self.stops:
            return piece, False
        text = self.held + piece
        found = [(i + len(s), i) for i, s in ((text.find(s), s) for s in self.stops) if i >= 0]
        if found:  # the occurrence completed first, as if the text had come one character at a time
            self.held, self.stopped = "", True
            return text[:min(found)[1]], True
        keep = self._partial(text)
        self.held = text[len(text) - keep:]
        return text[:len(text) - keep], False

    def flush(self) -> str:
        """At the end of the text: what was held back (it never became a stop string)."""
        held, self.held = self.held, ""
        return held

    def _partial(self, text: str) -> int:
        """The length of the longest ending of ``text`` that is the start of some stop string (but not all of it)."""
        for p in range(max(0, len(text) - self._longest + 1), len(text)):
            if text[p] in self._firsts and any(s.startswith(text[p:]) for s in self.stops):
                return len(text) - p
        return 0


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string completed (left out), and whether there was one."""
    matcher = StopMatcher(stops)
    shown, stopped = matcher.feed(text)
    return (shown, True) if stopped else (shown + matcher.flush(), False)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(flag: str) -> str:
    """A stop string typed on a command line: ``\\n``, ``\\t``, ``\\r`` and ``\\\\`` stand for a newline, a tab, a
    carriage return and a backslash (a shell cannot easily pass a newline); any other backslash is kept."""
    out, i = [], 0
    while i < len(flag):
        if flag[i] == "\\" and i + 1 < len(flag) and flag[i + 1] in _ESCAPES:
            out.append(_ESCAPES[flag[i + 1]])
            i += 2
        else:
            out.append(flag[i])
            i += 1
    return "".join(out)
