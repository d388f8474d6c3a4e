"""Bits per character of every item of a text (see items.py) under one or several models, and which model
compresses each item best: classification by per-class language models.

Each item is scored on its own: the model starts from a fresh state, reads a newline (the item is scored as
text that follows a line break; a model whose corpus had no newline reads a space, or else its first
character), then predicts every character of the item, the first one included.

A character outside a model's vocabulary is not an error here: it costs UNSEEN_BITS, the bits of a uniform
choice among all 1,112,064 Unicode scalar values (what spelling the character out with no knowledge at all
would cost). The cost is the same for every model, so between models an item is decided by the characters they
know and by how many each does not. After an unseen character the model starts afresh, as at the start of an
item: it cannot know what an unseen character implies, and feeding it some stand-in would be a guess.

Short items are scored in batches (sorted by length, so that little is padding); an item longer than
``items.LONG`` characters is scored alone as a stream, its state carried from piece to piece. Both give the same
bits.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.evaluate import ACTIVATION_BUDGET, IGNORE
from charrnn.items import Piece, text_of
from charrnn.model import CharRNN, State
from charrnn.vocab import Vocab

UNSEEN_BITS = math.log2(0x110000 - 0x800)  # 20.085 bits: the code points less the 2,048 surrogates
HEAD = 40  # characters of each item shown in its result
BATCH_TOKENS = 1 << 15  # rows x columns of one padded batch of short items
WINDOW_ITEMS, WINDOW_CHARS = 4096, 1 << 20  # short items gathered, then sorted by length, before scoring


@dataclass(frozen=True)
class ItemScore:
    """One item's total surprisal in bits under each model (unseen characters included), and how many of its
    characters each model has never seen."""

    item: int
    line: int
    head: str
    chars: int
    bits: tuple[float, ...]
    unseen: tuple[int, ...]

    @property
    def bpc(self) -> tuple[float, ...]:
        return tuple(b / self.chars for b in self.bits)

    @property
    def best(self) -> int:
        """The index of the model that compresses the item best (the first of equals)."""
        return min(range(len(self.bits)), key=self.bits.__getitem__)


def _split(ids: np.ndarray, known: np.ndarray) -> list[np.ndarray]:
    """The runs of known characters between unseen ones (a run may be empty)."""
    cuts = np.flatnonzero(~known)
    parts = np.split(ids, cuts)
    return [parts[0], *(p[1:] for p in parts[1:])]


class ModelScorer:
    """Scores items with one model: short ones in batches, long ones as streams."""

    def __init__(self, model: CharRNN, vocab: Vocab, device: torch.device) -> None:
        self.model, self.device = model.eval(), device
        points = np.array([ord(c) for c in vocab.chars], dtype=np.uint32)
        self.order = np.argsort(points)
        self.sorted = points[self.order]
        self.start = next((vocab.chars.index(c) for c in ("\n", " ") if c in vocab), 0)
        cfg = model.config
        self.per_column = cfg.vocab_size + 4 * cfg.hidden_size * cfg.num_layers  # floats per row and time step

    def lookup(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, known): the ids of code points (0 where unseen), and which are in the vocabulary."""
        pos = np.minimum(np.searchsorted(self.sorted, points), len(self.sorted) - 1)
        known = self.sorted[pos] == points
        return np.where(known, self.order[pos], 0).astype(np.int64), known

    @torch.no_grad()
    def bits(self, x: np.ndarray, y: np.ndarray, state: State | None = None) -> tuple[np.ndarray, State]:
        """Bits of the targets ``y`` (B, T) (IGNORE where padding) after inputs ``x`` (B, T), per row, in column
        chunks that keep activations within the evaluation budget; and the state after the last column."""
        chunk = max(1, ACTIVATION_BUDGET // (x.shape[0] * self.per_column))
        total = torch.zeros(x.shape[0], dtype=torch.float64, device=self.device)
        for t in range(0, x.shape[1], chunk):
            xs = torch.from_numpy(x[:, t:t + chunk]).to(self.device)
            ys = torch.from_numpy(y[:, t:t + chunk]).to(self.device)
            logits, state = self.model(xs, state)  # (B, T, V)
            nats = F.cross_entropy(logits.transpose(1, 2).float(), ys, ignore_index=IGNORE, reduction="none")
            total += nats.double().sum(1)
        return total.cpu().numpy() / math.log(2), state

    def score_short(self, texts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(bits, unseen) of whole short items, their runs batched by length."""
        bits, unseen = np.zeros(len(texts)), np.zeros(len(texts), dtype=np.int64)
        runs: list[tuple[int, np.ndarray]] = []
        for i, points in enumerate(texts):
            ids, known = self.lookup(points)
            unseen[i] = int((~known).sum())
            runs += [(i, run) for run in _split(ids, known) if len(run)]
        runs.sort(key=lambda r: -len(r[1]))
        at = 0
        while at < len(runs):
            width = len(runs[at][1])
            rows = runs[at:at + max(1, BATCH_TOKENS // width)]
            x = np.full((len(rows), width), self.start, dtype=np.int64)
            y = np.full((len(rows), width), IGNORE, dtype=np.int64)
            for r, (_, run) in enumerate(rows):
                x[r, 1:len(run)] = run[:-1]
                y[r, :len(run)] = run
            row_bits, _ = self.bits(x, y)
            np.add.at(bits, [i for i, _ in rows], row_bits)
            at += len(rows)
        return bits + unseen * UNSEEN_BITS, unseen

    def stream(self) -> ItemStream:
        return ItemStream(self)


class ItemStream:
    """One long item scored piece by piece, the state carried across pieces (and reset after unseen characters)."""

    def __init__(self, scorer: ModelScorer) -> None:
        self.scorer, self.state, self.prev = scorer, None, scorer.start
        self.bits, self.unseen = 0.0, 0

    def feed(self, points: np.ndarray) -> None:
        ids, known = self.scorer.lookup(points)
        self.unseen += int((~known).sum())
        for k, run in enumerate(_split(ids, known)):
            if k:  # after an unseen character: start afresh
                self.state, self.prev = None, self.scorer.start
                self.bits += UNSEEN_BITS
            if len(run):
                x = np.concatenate([[self.prev], run[:-1]])[None]
                bits, self.state = self.scorer.bits(x, run[None].astype(np.int64), self.state)
                self.bits += float(bits[0])
                self.prev = int(run[-1])


def score_items(scorers: Sequence[ModelScorer], pieces: Iterable[Piece]) -> Iterator[ItemScore]:
    """Every item's score under each model, in the items' order."""
    window: list[Piece] = []
    gathered = 0  # characters in the window

    def flush() -> Iterator[ItemScore]:
        nonlocal gathered
        texts = [p.points for p in window]
        results = [s.score_short(texts) for s in scorers]
        for k, p in enumerate(window):
            yield ItemScore(p.item, p.line, text_of(p.points[:HEAD]), len(p.points),
                            tuple(float(bits[k]) for bits, _ in results), tuple(int(u[k]) for _, u in results))
        window.clear()
        gathered = 0

    streams: list[ItemStream] = []
    head, chars = "", 0
    for piece in pieces:
        if piece.first and piece.last:
            window.append(piece)
            gathered += len(piece.points)
            if len(window) >= WINDOW_ITEMS or gathered >= WINDOW_CHARS:
                yield from flush()
            continue
        if piece.first:
            yield from flush()
            streams, head, chars = [s.stream() for s in scorers], "", 0
        head += text_of(piece.points[:HEAD - len(head)])
        for stream in streams:
            stream.feed(piece.points)
        chars += len(piece.points)
        if piece.last:
            yield ItemScore(piece.item, piece.line, head, chars, tuple(s.bits for s in streams),
                            tuple(s.unseen for s in streams))
    yield from flush()


def most_surprising(scores: Iterable[ItemScore], n: int) -> list[ItemScore]:
    """The ``n`` items that even the best model compresses worst (highest bits per character first; the earlier
    item first among equals)."""
    return heapq.nlargest(n, scores, key=lambda s: min(s.bpc))
