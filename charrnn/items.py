"""Cutting a text into the items that ``charrnn score`` scores one by one: its lines, its paragraphs (runs of
lines separated by blank lines), or the whole file.

An item is its text without what separates it from the next: a line without its line ending (``\\n`` or
``\\r\\n``), a paragraph as its lines joined by ``\\n`` (no trailing newline), the file exactly as it is. Items
that are empty or only whitespace are skipped (they are not numbered); ``line`` says where each item starts in
the file. The text arrives as chunks of code points (``corpus.read_code_points``) and leaves as pieces of at most
about LONG characters, so that memory stays bounded however long a line, a paragraph or the file is: an item of
at most LONG characters is one piece (``first`` and ``last``), a longer one several, in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from charrnn.errors import CharRNNError

BY = ("line", "paragraph", "file")
LONG = 1 << 16  # characters: a longer item is cut into pieces (and scored as a stream)
NEWLINE, RETURN = 10, 13
WHITESPACE = np.array(sorted(c for c in range(0x3001) if chr(c).isspace()), dtype=np.uint32)  # none above U+3000


@dataclass(frozen=True)
class Piece:
    """Characters (code points, uint32) of item ``item`` (numbered from 0), which starts on line ``line``
    (numbered from 1); ``first`` and ``last`` say whether this piece begins or ends the item."""

    item: int
    line: int
    points: np.ndarray
    first: bool
    last: bool


def text_of(points: np.ndarray) -> str:
    return points.astype(np.uint32).tobytes().decode("utf-32-le", "surrogatepass")


def _blank(points: np.ndarray) -> bool:
    return bool(np.isin(points, WHITESPACE).all())


class _Builder:
    """Gathers the current item's characters and hands them on in pieces of at most about LONG characters."""

    def __init__(self) -> None:
        self.buf: list[np.ndarray] = []
        self.size, self.index, self.line, self.started = 0, 0, 0, False

    @property
    def empty(self) -> bool:
        return not self.started and self.size == 0

    def add(self, points: np.ndarray, line: int) -> Iterator[Piece]:
        if len(points) == 0:
            return
        if self.empty:
            self.line = line
        self.buf.append(points.astype(np.uint32, copy=False))
        self.size += len(points)
        if self.size > LONG:  # keep the last character back: an item is never left with an empty last piece
            whole = np.concatenate(self.buf)
            self.buf, self.size = [whole[-1:]], 1
            yield self._piece(whole[:-1], last=False)

    def end(self) -> Iterator[Piece]:
        """End the current item: its last piece, unless it is all blank (then it is skipped)."""
        whole = np.concatenate(self.buf) if self.buf else np.zeros(0, dtype=np.uint32)
        if self.started or (len(whole) and not _blank(whole)):
            yield self._piece(whole, last=True)
            self.index += 1
        self.buf, self.size, self.started = [], 0, False

    def _piece(self, points: np.ndarray, last: bool) -> Piece:
        piece = Piece(self.index, self.line, points, first=not self.started, last=last)
        self.started = True
        return piece


def _lines(chunks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, bool]]:
    """(fragment, ended): the text's lines in fragments, without their line endings; ``ended`` marks the last
    fragment of a line. A ``\\r`` is a line ending only just before ``\\n``."""
    held_return, open_line = False, False
    for chunk in chunks:
        points = chunk.astype(np.uint32)
        if held_return:
            points = np.concatenate([np.array([RETURN], dtype=np.uint32), points])
            held_return = False
        prev = 0
        for i in np.flatnonzero(points == NEWLINE).tolist():
            end = i - 1 if i > prev and points[i - 1] == RETURN else i
            yield points[prev:end], True
            prev, open_line = i + 1, False
        rest = points[prev:]
        if len(rest) and rest[-1] == RETURN:  # it may be half of a \r\n cut by the chunk
            held_return, rest = True, rest[:-1]
        if len(rest):
            yield rest, False
            open_line = True
    if held_return:
        yield np.array([RETURN], dtype=np.uint32), False
        open_line = True
    if open_line:
        yield np.zeros(0, dtype=np.uint32), True


def pieces(chunks: Iterable[np.ndarray], by: str) -> Iterator[Piece]:
    """The items of a text given as chunks of code points, ``by`` line, paragraph or file, as pieces."""
    if by not in BY:
        raise CharRNNError(f"--by must be line, paragraph or file, not {by!r}")
    b = _Builder()
    if by == "file":
        for chunk in chunks:
            yield from b.add(chunk, 1)
        yield from b.end()
        return
    line = 1
    held: list[np.ndarray] = []  # paragraphs: the current line, until it is known not to be blank
    held_size, streaming = 0, False
    for fragment, ended in _lines(chunks):
        if by == "line":
            yield from b.add(fragment, line)
            if ended:
                yield from b.end()
        else:
            if streaming:  # a line too long to hold: part of the paragraph as it comes
                yield from b.add(fragment, line)
            else:
                held.append(fragment)
                held_size += len(fragment)
            if not streaming and (ended or held_size > LONG):
                text = np.concatenate(held)
                if _blank(text) and ended:
                    yield from b.end()
                else:
                    if not b.empty:
                        yield from b.add(np.array([NEWLINE], dtype=np.uint32), line)
                    yield from b.add(text, line)
                    streaming = not ended
                held, held_size = [], 0
            if ended:
                streaming = False
        line += ended
    yield from b.end()
