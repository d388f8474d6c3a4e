"""The vocabulary: the corpus's characters (code points) in code-point order.

Encoding is vectorised through NumPy so that large corpora encode at memory speed.
This module touches no files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from charrnn.errors import CharRNNError


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every token id."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def describe_chars(chars: Iterable[str], limit: int = 5, total: int | None = None) -> str:
    """A short, unambiguous listing of characters for error messages: 'é' (U+00E9), ... (``total``: how many
    there are in all, when ``chars`` holds only the first few)."""
    chars = list(chars)
    shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in chars[:limit])
    more = (len(chars) if total is None else total) - min(limit, len(chars))
    return shown + (f" and {more:,} more" if more > 0 else "")


EXAMPLES = 5  # unknown characters named in a message


@dataclass(frozen=True)
class Unseen:
    """Characters of a text that a vocabulary lacks: how often they occur, how many distinct ones there are,
    and the first few in order of appearance."""

    count: int
    distinct: int
    examples: tuple[str, ...]

    def describe(self) -> str:
        times = f" ({self.count:,} times in all)" if self.count > self.distinct else ""
        return f"{self.distinct:,} character(s) the model has never seen{times}: " \
               f"{describe_chars(self.examples, total=self.distinct)}"


class UnknownCharacters(CharRNNError):
    """A text has characters outside the vocabulary; ``reworded`` gives the same error with other advice."""

    def __init__(self, what: str, unseen: Unseen, advice: str = "remove them, or train on text that contains them",
                 ) -> None:
        super().__init__(f"{what} has {unseen.describe()}; {advice}")
        self.what, self.unseen = what, unseen

    def reworded(self, advice: str) -> UnknownCharacters:
        return UnknownCharacters(self.what, self.unseen, advice)


class Tally:
    """Counts the characters outside a vocabulary as a text streams by, in memory that does not grow with the
    text: a bitmap of the code points seen so far, and the first EXAMPLES in order of appearance."""

    def __init__(self) -> None:
        self.count, self.distinct, self.examples = 0, 0, []
        self._seen: np.ndarray | None = None  # made at the first unknown character

    def add(self, points: np.ndarray) -> None:
        """Count ``points``: the unknown code points of the next piece of text, in order."""
        if not len(points):
            return
        if self._seen is None:
            self._seen = np.zeros(0x110000, dtype=bool)
        self.count += len(points)
        fresh = points[~self._seen[points]]
        new, first = np.unique(fresh, return_index=True)
        if len(self.examples) < EXAMPLES:
            self.examples += [chr(p) for p in fresh[np.sort(first)][: EXAMPLES - len(self.examples)]]
        self.distinct += len(new)
        self._seen[new] = True

    def result(self) -> Unseen | None:
        return Unseen(self.count, self.distinct, tuple(self.examples)) if self.count else None


class Vocab:
    """A fixed, ordered set of characters with ``encode`` and ``decode``."""

    def __init__(self, chars: Sequence[str]) -> None:
        if not chars:
            raise CharRNNError("the vocabulary is empty: the text has no characters")
        if any(len(c) != 1 for c in chars):
            raise CharRNNError("a vocabulary entry is not a single character")
        if len(set(chars)) != len(chars):
            raise CharRNNError("the vocabulary has duplicate characters")
        self.chars: list[str] = list(chars)
        self._points = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        self._order = np.argsort(self._points)
        self._sorted = self._points[self._order]
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls.from_code_points(np.unique(_code_points(text)))

    @classmethod
    def from_code_points(cls, points: np.ndarray) -> Vocab:
        return cls([chr(p) for p in sorted(int(p) for p in points)])

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def __contains__(self, char: str) -> bool:
        return char in self._index

    def encode(self, text: str, what: str = "the text") -> np.ndarray:
        """Token ids of ``text``; unknown characters are an error that counts and names them."""
        points = _code_points(text)
        pos = np.searchsorted(self._sorted, points)
        pos = np.minimum(pos, len(self._sorted) - 1)
        known = self._sorted[pos] == points
        if not known.all():
            tally = Tally()
            tally.add(points[~known])
            raise UnknownCharacters(what, tally.result())
        return self._order[pos].astype(token_dtype(len(self)))

    def decode(self, ids: Iterable[int]) -> str:
        chars = self.chars
        return "".join(chars[int(i)] for i in ids)
