"""Suffix arrays over token ids: building one in NumPy, and matching statistics against it.

``build`` sorts every suffix of a text by prefix doubling (Manber & Myers; refined groups only, as Larsson &
Sadakane do): suffixes are first bucketed by their first two tokens (a counting sort) and sorted by their first
few tokens packed into one integer, then each round sorts the suffixes that still tie by the rank of the suffix
``h`` tokens later, which doubles the length they are known to share. O(n log n) in the worst case (a text of one
repeated character); ordinary text finishes in a few rounds, after which only its repeated passages (duplicated
documents, boilerplate) are still being sorted. Sorting a chunk uses one int64 key (group, next rank), about ten
times faster than ``np.lexsort``.

Memory: the suffix array, the ranks and the list of still-tied suffixes (4 bytes per token each, 8 beyond 2**31
tokens), the tokens + 1 as uint16 during the first sort, plus work arrays for about CHUNK suffixes at a time
(about 40 bytes each); more only for a single group larger than that (e.g. every suffix that starts with the
same two characters, or with the same run of spaces), which is sorted whole.

``matches`` gives, for every position of a query, the longest prefix of the rest of the query that occurs in
the text and one place where it does: a binary search for the query's suffix among the text's suffixes (all
positions of the query at once), then the longer common prefix with the two neighbours it falls between. The
text and the suffix array are read through ``Rows`` (an in-memory array, or a file read with ``pread``), so a
query reads only what the searches touch. This module knows nothing of caches: copycheck.py keeps the index.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

CHUNK = 1 << 21  # tied suffixes sorted at a time
WINDOW = 32  # tokens compared at a time when searching
BATCH = 4096  # query positions searched at a time
END = -1  # past the end of the text: sorts before every token
QUERY_END = -2  # past the end of the query: differs from everything in the text
FITS_ONE_KEY = 3_000_000_000  # texts shorter than this sort (group, next rank) as one int64: (n + 1)**2 < 2**63

Progress = Callable[[int, int], None]  # (suffixes in their final place, suffixes in all)


def index_dtype(n: int) -> np.dtype:
    """The type of suffix-array entries for a text of ``n`` tokens."""
    return np.dtype(np.int32) if n < 2**31 - 1 else np.dtype(np.int64)


def build(tokens: np.ndarray, progress: Progress | None = None, packed: int | None = None) -> np.ndarray:
    """The suffix array of ``tokens`` (non-negative ids): the start of every suffix, in lexicographic order of the
    suffixes, a suffix that is a prefix of another coming first. The first sort compares ``packed`` tokens (by
    default as many as fit in 64 bits; fewer make more doubling rounds, which tests want)."""
    tokens = np.asarray(tokens)
    n = len(tokens)
    dtype = index_dtype(n)
    if n == 0:
        return np.empty(0, dtype)
    sa, rank = np.empty(n, dtype), np.empty(n, dtype)
    tied, shared = _first_sort(tokens, sa, rank, packed)
    while len(tied):
        if progress is not None:
            progress(n - len(tied), n)
        tied = _refine(sa, rank, tied, shared)
        shared *= 2
    if progress is not None:
        progress(n, n)
    return sa


def _first_sort(tokens: np.ndarray, sa: np.ndarray, rank: np.ndarray, packed: int | None) -> tuple[np.ndarray, int]:
    """Sort the suffixes by their first ``width`` tokens: fill ``sa``, set each suffix's rank to the first index of
    its group in ``sa``, and return the indices of ``sa`` still tied (in groups of two or more) and ``width``.

    A counting sort by the first two tokens (the first one for large vocabularies) puts every suffix in its
    bucket, in one pass over the text; then buckets are sorted by their packed first tokens, about CHUNK suffixes
    at a time (a single bucket may be larger: all the suffixes that start with the same two tokens)."""
    n = len(tokens)
    top = int(tokens.max()) + 1
    bits = top.bit_length()  # token + 1, so that 0 stands for "past the end"
    width = max(1, 64 // bits) if packed is None else min(packed, max(1, 64 // bits))
    shifted = np.zeros(n + width + 1, np.uint16 if top < 65535 else np.uint32)  # token + 1, then 0s
    shifted[:n] = tokens
    shifted[:n] += 1
    base = top + 1
    bins = base * base if width >= 2 and base * base <= 1 << 22 else base

    def bucket(lo: int, hi: int) -> np.ndarray:
        first = shifted[lo:hi].astype(np.int64)
        return first * base + shifted[lo + 1: hi + 1] if bins > base else first

    sizes = np.zeros(bins, np.int64)
    for lo in range(0, n, CHUNK):
        sizes += np.bincount(bucket(lo, min(lo + CHUNK, n)), minlength=bins)
    ends = np.cumsum(sizes)
    fill = ends - sizes  # the next free slot of each bucket
    for lo in range(0, n, CHUNK):
        codes = bucket(lo, min(lo + CHUNK, n))
        order = np.argsort(codes, kind="stable")
        codes = codes[order]
        runs = np.flatnonzero(np.diff(codes, prepend=-1))  # where each code's run starts
        counts = np.diff(runs, append=len(codes))
        sa[np.repeat(fill[codes[runs]] - runs, counts) + np.arange(len(codes))] = lo + order
        fill[codes[runs]] += counts
    tied = np.empty(n, sa.dtype)
    ties = lo = 0
    cuts = np.unique(np.searchsorted(ends, np.arange(CHUNK, n + CHUNK, CHUNK), side="right"))
    for hi in [int(ends[min(c, bins - 1)]) for c in cuts] + [n]:  # bucket boundaries about CHUNK apart
        hi = max(hi, lo)
        if hi == lo:
            continue
        where = sa[lo:hi].astype(np.int64)
        key = np.zeros(hi - lo, np.uint64)
        for j in range(width):
            key <<= np.uint64(bits)
            key |= shifted[where + j]
        order = np.argsort(key)
        key = key[order]
        new = np.empty(len(key), bool)
        new[0] = True
        np.not_equal(key[1:], key[:-1], out=new[1:])
        ties += _place(sa, rank, tied, ties, np.arange(lo, hi, dtype=sa.dtype), where[order], new)
        lo = hi
    return tied[:ties], width


def _place(sa: np.ndarray, rank: np.ndarray, tied: np.ndarray, ties: int, slots: np.ndarray, suffixes: np.ndarray,
           new: np.ndarray) -> int:
    """Put ``suffixes`` (sorted, ``new`` marking where a group starts) into the consecutive ``slots`` of ``sa``,
    rank each by its group's first slot, and append the slots of groups of two or more to ``tied``."""
    sa[slots] = suffixes
    starts = np.flatnonzero(new)
    rank[suffixes] = np.repeat(slots[starts], np.diff(starts, append=len(new)))
    alone = new.copy()
    alone[:-1] &= new[1:]  # a group of one: it starts here and the next one starts right after
    kept = slots[~alone]
    tied[ties: ties + len(kept)] = kept
    return len(kept)


def _refine(sa: np.ndarray, rank: np.ndarray, tied: np.ndarray, shared: int) -> np.ndarray:
    """One doubling round: sort each group of suffixes that share their first ``shared`` tokens by the rank of
    the suffix ``shared`` tokens later. Groups are sorted a chunk of whole groups at a time; ranks updated by an
    earlier chunk are only more precise, which keeps the order right (Larsson & Sadakane). Returns the slots of
    ``sa`` still tied (``tied`` is reused for them)."""
    n, count, i, kept = len(sa), len(tied), 0, 0
    while i < count:
        j = _group_end(sa, rank, tied, min(i + CHUNK, count))
        slots = tied[i:j].copy()  # tied[:j] is overwritten below
        suffixes = sa[slots]
        group = rank[suffixes].astype(np.int64)
        later = suffixes.astype(np.int64) + shared
        second = np.full(len(later), END, np.int64)
        inside = later < n
        second[inside] = rank[later[inside]]
        new = np.empty(len(slots), bool)
        new[0] = True
        if n < FITS_ONE_KEY:  # one int64 key sorts about ten times faster than np.lexsort's two
            key = group * (n + 1) + (second + 1)
            order = np.argsort(key, kind="stable")
            key = key[order]
            np.not_equal(key[1:], key[:-1], out=new[1:])
        else:
            order = np.lexsort((second, group))
            group, second = group[order], second[order]
            new[1:] = (group[1:] != group[:-1]) | (second[1:] != second[:-1])
        kept += _place(sa, rank, tied, kept, slots, suffixes[order], new)  # writes behind what is still to be read
        i = j
    return tied[:kept]


def _group_end(sa: np.ndarray, rank: np.ndarray, tied: np.ndarray, j: int) -> int:
    """The first index at or after ``j`` of ``tied`` that starts a new group (groups are never cut in two)."""
    if j >= len(tied):
        return len(tied)
    head = rank[sa[tied[j - 1]]]
    while j < len(tied):
        block = tied[j: j + 4096]
        other = np.flatnonzero(rank[sa[block]] != head)
        if len(other):
            return j + int(other[0])
        j += len(block)
    return j


class OutOfRange(ValueError):
    """A suffix array read from a file holds a position outside its text: it is damaged."""


class Rows:
    """Reads windows of a 1-D sequence of integers (the first ``length`` items), as int64 with END past the end:
    from an array in memory, or from a file at ``offset`` items, one ``pread`` per window. With ``bound``, every
    item read must be in [0, bound) (a suffix array's positions), else OutOfRange."""

    def __init__(self, source: np.ndarray | int, length: int, dtype: np.dtype | None = None, offset: int = 0,
                 bound: int | None = None) -> None:
        self.length, self.bound = length, bound
        if isinstance(source, np.ndarray):
            self.array: np.ndarray | None = source
        else:
            self.array, self.fd, self.dtype, self.offset = None, source, np.dtype(dtype), offset

    def get(self, starts: np.ndarray, width: int) -> np.ndarray:
        """(len(starts), width): the items at starts[i] + 0 .. width-1."""
        at = starts[:, None] + np.arange(width)
        inside = at < self.length
        if self.array is not None:
            out = self.array[np.minimum(at, self.length - 1)].astype(np.int64)
        else:
            size, fd, base = self.dtype.itemsize, self.fd, self.offset
            want = width * size
            raw = b"".join([os.pread(fd, want, (base + int(s)) * size).ljust(want, b"\0") for s in starts])
            out = np.frombuffer(raw, self.dtype).reshape(len(starts), width).astype(np.int64)
        out[~inside] = END
        if self.bound is not None and len(out) and (out[inside].min(initial=0) < 0
                                                    or out[inside].max(initial=0) >= self.bound):
            raise OutOfRange(f"an entry is outside 0..{self.bound - 1}")
        return out


def _first_difference(query: np.ndarray, at: np.ndarray, text: Rows, suffixes: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """For query positions ``at`` and text suffixes ``suffixes`` (pairwise): the length of their common prefix
    and whether the query's suffix sorts after the text's. Reads WINDOW tokens at a time, only as far as needed;
    ``query`` ends with QUERY_END padding, so every pair differs somewhere."""
    common = np.zeros(len(at), np.int64)
    after = np.zeros(len(at), bool)
    todo = np.arange(len(at))
    while len(todo):
        unique, inverse = np.unique(suffixes[todo] + common[todo], return_inverse=True)
        t = text.get(unique, WINDOW)[inverse]  # (todo, WINDOW)
        q = query[np.minimum(at[todo, None] + common[todo, None] + np.arange(WINDOW), len(query) - 1)]
        differ = q != t
        found = differ.any(axis=1)
        first = np.argmax(differ, axis=1)
        rows = todo[found]
        common[rows] += first[found]
        after[rows] = q[found, first[found]] > t[found, first[found]]
        common[todo[~found]] += WINDOW
        todo = todo[~found]
    return common, after


def matches(query: np.ndarray, text: Rows, sa: Rows) -> tuple[np.ndarray, np.ndarray]:
    """Matching statistics of ``query`` against the text whose suffix array is ``sa``: for each position i, the
    length of the longest prefix of query[i:] that occurs in the text, and a text position where it starts.
    Positions are searched BATCH at a time, so memory does not grow with the query beyond the answer."""
    padded = np.concatenate([np.asarray(query, np.int64), np.full(WINDOW + 1, QUERY_END, np.int64)])
    best, where = np.zeros(len(query), np.int64), np.zeros(len(query), np.int64)
    for start in range(0, len(query), BATCH):
        at = np.arange(start, min(start + BATCH, len(query)), dtype=np.int64)
        best[at], where[at] = _search(padded, at, text, sa)
    return best, where


def _search(padded: np.ndarray, at: np.ndarray, text: Rows, sa: Rows) -> tuple[np.ndarray, np.ndarray]:
    """Matching statistics of the query's positions ``at`` (``padded``: the query, then QUERY_END padding)."""
    m, n = len(at), sa.length
    lo, hi = np.zeros(m, np.int64), np.full(m, n, np.int64)
    searching = np.arange(m)
    while len(searching):  # all binary searches advance together: insertion points of the query's suffixes
        mid = (lo[searching] + hi[searching]) // 2
        unique, inverse = np.unique(mid, return_inverse=True)
        suffixes = sa.get(unique, 1)[inverse, 0]
        _, after = _first_difference(padded, at[searching], text, suffixes)
        lo[searching[after]] = mid[after] + 1
        hi[searching[~after]] = mid[~after]
        searching = searching[lo[searching] < hi[searching]]
    best, where = np.zeros(m, np.int64), np.zeros(m, np.int64)
    for neighbour in (lo - 1, lo):  # the longest match is with a suffix next to the insertion point
        ok = np.flatnonzero((neighbour >= 0) & (neighbour < n))
        if not len(ok):
            continue
        suffixes = sa.get(neighbour[ok], 1)[:, 0]
        common, _ = _first_difference(padded, at[ok], text, suffixes)
        longer = common > best[ok]
        best[ok[longer]], where[ok[longer]] = common[longer], suffixes[longer]
    return best, where
