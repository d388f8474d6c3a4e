"""The vocabulary: the corpus's characters (code points) in code-point order.

Encoding is vectorised through NumPy so that large corpora encode at memory speed.
This module touches no files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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


def describe_chars(chars: Iterable[str], limit: int = 5) -> str:
    """A short, unambiguous listing of characters for error messages: 'é' (U+00E9), ..."""
    chars = list(chars)
    shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in chars[:limit])
    more = len(chars) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def unknown_error(what: str, count: int, chars: Iterable[str]) -> CharRNNError:
    """The one error for text with characters outside a vocabulary: which distinct characters (``chars``, in
    order of appearance), and how often they occur (``count``) when that is more."""
    chars = list(chars)
    times = f" ({count:,} times in all)" if count > len(chars) else ""
    return CharRNNError(f"{what} has {len(chars)} character(s) the model has never seen{times}: "
                        f"{describe_chars(chars)}; remove them, or train on text that contains them")


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
            bad = points[~known]
            raise unknown_error(what, bad.size, dict.fromkeys(chr(p) for p in bad))
        return self._order[pos].astype(token_dtype(len(self)))

    def decode(self, ids: Iterable[int]) -> str:
        chars = self.chars
        return "".join(chars[int(i)] for i in ids)
