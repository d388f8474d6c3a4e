"""Interpolated Kneser-Ney character n-gram models, counted with NumPy: what counting alone achieves on a text,
to set beside what a network learns (``charrnn eval --baselines``). Nothing here reads files or knows the network.

The model of order N (Chen & Goodman 1998, "interpolated Kneser-Ney", one discount per order). At the highest
order, for the context h of the N-1 previous characters and the next character w:

    P(w | h)  = max(c(hw) - D_N, 0) / c(h.)  +  D_N * N1+(h.) / c(h.) * P'(w | h-)

where c(hw) counts hw in the training text, c(h.) = sum over w of c(hw), N1+(h.) = the number of distinct w with
c(hw) > 0, and h- is h without its first character. Each lower order m uses continuation counts in place of
counts: N1+(.hw), the number of distinct characters seen just before hw, so that a character that follows few
different contexts gets little weight when the model backs off to it:

    P'(w | h) = max(N1+(.hw) - D_m, 0) / N1+(.h.)  +  D_m * N1+(h.)' / N1+(.h.) * P'(w | h-)

with N1+(.h.) = sum over w of N1+(.hw) and N1+(h.)' = the number of w with N1+(.hw) > 0. Order 1 interpolates
with the uniform distribution over the model's V characters, so a character never seen in training still gets a
positive probability:

    P'(w) = max(N1+(.w) - D_1, 0) / N1+(..)  +  D_1 * |{w : N1+(.w) > 0}| / N1+(..) * 1 / V

A context never seen (c(h.) = 0, or N1+(.h.) = 0 below the top) backs off entirely: P(w | h) = P'(w | h-). With
0 < D <= 1 the probabilities over the vocabulary sum to 1 at every context. The discount of each order is
D_m = n1 / (n1 + 2 n2) from the numbers of n-grams seen once and twice at that order (Ney, Essen & Kneser
1994), clipped to [0.05, 0.95]; or one fixed discount for every order. The first characters of a text, which
have fewer than N-1 characters before them, are predicted from the context there is.

n-grams are packed into one uint64 (bits per character x order <= 64: orders up to 8 for vocabularies up to 256
characters, fewer beyond) and counted with ``np.unique``; the tables hold one key and one count per distinct
n-gram of each order, so memory grows with the text counted, which callers cap (baselines.py: MAX_CHARS).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_ORDER = 8
SCORE_CHUNK = 1 << 20  # characters scored at a time
MIN_DISCOUNT, MAX_DISCOUNT = 0.05, 0.95


@dataclass(frozen=True)
class Table:
    """The n-grams of one order seen in training, with their (continuation) counts and their contexts' sums."""

    keys: np.ndarray  # (G,) uint64, sorted: context << bits | character
    counts: np.ndarray  # (G,) int64
    contexts: np.ndarray  # (H,) uint64, sorted
    totals: np.ndarray  # (H,) float64: the counts of each context summed over the next character
    types: np.ndarray  # (H,) float64: how many distinct characters follow each context
    discount: float


def _table(keys: np.ndarray, counts: np.ndarray, bits: int, discount: float | None) -> Table:
    contexts, first = np.unique(keys >> np.uint64(bits), return_index=True)  # keys sorted: contexts grouped
    totals = np.add.reduceat(counts, first).astype(np.float64) if len(keys) else np.zeros(0)
    types = np.diff(np.append(first, len(keys))).astype(np.float64)
    if discount is None:
        n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
        discount = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.5
        discount = min(max(discount, MIN_DISCOUNT), MAX_DISCOUNT)
    return Table(keys, counts.astype(np.int64), contexts, totals, types, discount)


def bits_for(vocab_size: int) -> int:
    """Bits that hold one character id."""
    return max(1, (vocab_size - 1).bit_length())


def max_order(vocab_size: int) -> int:
    """The highest order whose n-grams fit one uint64 (at most MAX_ORDER)."""
    return max(1, min(MAX_ORDER, 64 // bits_for(vocab_size)))


def _grams(tokens: np.ndarray, m: int, bits: int) -> np.ndarray:
    """Keys of every m-gram of ``tokens`` (uint64), in text order."""
    n = len(tokens) - m + 1
    key = np.zeros(max(n, 0), np.uint64)
    for j in range(m):
        key = (key << np.uint64(bits)) | tokens[j: j + n]
    return key


def count(tokens: np.ndarray, vocab_size: int, order: int, discount: float | None = None
          ) -> tuple[list[Table], list[Table]]:
    """Tables for every order up to ``order``: ([raw counts of orders 1..order], [continuation counts of orders
    1..order-1]). The model of order M uses the continuation tables below M and the raw table of M."""
    if not 1 <= order <= max_order(vocab_size):
        raise ValueError(f"order must be 1..{max_order(vocab_size)} for {vocab_size} characters, not {order}")
    bits = bits_for(vocab_size)
    tokens = np.asarray(tokens).astype(np.uint64)
    raw, cont = [], []
    for m in range(1, order + 1):
        keys, counts = np.unique(_grams(tokens, m, bits), return_counts=True)
        raw.append(_table(keys, counts, bits, discount))
        if m > 1:  # each distinct m-gram x+g adds one distinct predecessor x to g
            suffix = keys & np.uint64((1 << (bits * (m - 1))) - 1)
            keys, counts = np.unique(suffix, return_counts=True)
            cont.append(_table(keys, counts, bits, discount))
    return raw, cont


def _level(table: Table, key: np.ndarray, usable: np.ndarray, lower: np.ndarray, bits: int) -> np.ndarray:
    """P at one order for the n-grams ``key`` (where ``usable``: the text has the whole context), interpolated
    with ``lower``, the next order down."""
    if not len(table.keys):
        return lower
    context = key >> np.uint64(bits)
    h = np.minimum(np.searchsorted(table.contexts, context), len(table.contexts) - 1)
    seen = usable & (table.contexts[h] == context)
    g = np.minimum(np.searchsorted(table.keys, key), len(table.keys) - 1)
    c = np.where(table.keys[g] == key, table.counts[g], 0)
    d = table.discount
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (np.maximum(c - d, 0) + d * table.types[h] * lower) / table.totals[h]
    return np.where(seen, p, lower)


class KneserNey:
    """An interpolated Kneser-Ney model over the character ids 0..V-1 (see the module's docstring)."""

    def __init__(self, levels: Sequence[Table], vocab_size: int) -> None:
        self.levels, self.vocab_size, self.char_bits = list(levels), vocab_size, bits_for(vocab_size)

    @property
    def order(self) -> int:
        return len(self.levels)

    @classmethod
    def fit(cls, tokens: np.ndarray, vocab_size: int, order: int, discount: float | None = None) -> KneserNey:
        """Count ``tokens`` (ids below ``vocab_size``); ``discount`` fixed for every order, or estimated."""
        raw, cont = count(tokens, vocab_size, order, discount)
        return cls(cont[: order - 1] + raw[order - 1:], vocab_size)

    def probabilities(self, tokens: np.ndarray, first: int = 1) -> np.ndarray:
        """P(tokens[t] | what precedes it in ``tokens``) for t = first .. len-1 (float64)."""
        tokens = np.asarray(tokens).astype(np.uint64)
        targets = np.arange(first, len(tokens))
        p = np.full(len(targets), 1 / self.vocab_size)
        key = np.zeros(len(targets), np.uint64)
        for m, table in enumerate(self.levels, start=1):
            key |= tokens[np.maximum(targets - (m - 1), 0)] << np.uint64(self.char_bits * (m - 1))  # prepend a char
            p = _level(table, key, targets >= m - 1, p, self.char_bits)
        return p

    def distribution(self, context: Sequence[int]) -> np.ndarray:
        """P(w | context) for every character w (V,)."""
        return np.array([self.probabilities(np.array([*context, w]), len(context))[0]
                         for w in range(self.vocab_size)])

    def bits(self, tokens: np.ndarray, first: int = 1) -> float:
        """Total -log2 P of tokens[first:], scored SCORE_CHUNK characters at a time (``tokens`` may be any
        sliceable sequence of ids, e.g. a token file read on demand)."""
        total, back = 0.0, self.order - 1
        for start in range(first, len(tokens), SCORE_CHUNK):
            lo = max(0, start - back)
            window = np.asarray(tokens[lo: start + SCORE_CHUNK])
            total -= float(np.log2(self.probabilities(window, start - lo)).sum())
        return total

    def bits_per_char(self, tokens: np.ndarray) -> float:
        """Mean -log2 P of every character after the first (those a network's evaluation predicts)."""
        return self.bits(tokens) / (len(tokens) - 1) if len(tokens) > 1 else math.nan


@dataclass(frozen=True)
class Selection:
    """The order chosen on held-out text, and each order's bits per character there."""

    order: int
    held_out: dict[int, float]


def select_order(tokens: np.ndarray, vocab_size: int, highest: int = MAX_ORDER, held_out: float = 0.1,
                 discount: float | None = None) -> Selection:
    """Fit every order 1..highest on the first (1 - held_out) of ``tokens`` and choose the one that predicts the
    rest best (each order's top table on the continuation tables of the orders below, counted once)."""
    highest = min(highest, max_order(vocab_size))
    cut = len(tokens) - max(1, int(len(tokens) * held_out))
    raw, cont = count(tokens[:cut], vocab_size, highest, discount)
    scores = {}
    for order in range(1, highest + 1):
        model = KneserNey(cont[: order - 1] + [raw[order - 1]], vocab_size)
        lo = max(0, cut - (order - 1))
        scores[order] = model.bits(tokens[lo:], cut - lo) / (len(tokens) - cut)
    return Selection(min(scores, key=lambda o: (scores[o], o)), scores)
