"""Reference points for a model's bits per character on a text (``charrnn eval --baselines``): what counting,
compressing and guessing achieve on the same characters, so that a model's number means something.

- unigram: each character's frequency in the training split, add-one smoothed over the model's V characters
  (every character of the vocabulary gets at least 1 / (N + V)), ignoring all context;
- n-gram: interpolated Kneser-Ney (ngram.py) counted on the first MAX_CHARS characters of the training split,
  its order (1 .. ngram.MAX_ORDER) chosen on the last tenth of those characters, then counted again on all of them;
- lzma: the size of the text's UTF-8 bytes compressed by ``lzma`` at preset 9 | PRESET_EXTREME (``xz -9e``; its
  dictionary no larger than the text, which changes the memory used, not the size) in bits per character, for
  at most the first LZMA_CHARS characters. A compressor is not a predictive model (it sees the text it encodes
  and has learnt nothing from the training split): it is given for reference only;
- uniform: log2 V, what a model that has learnt nothing scores (an untrained network starts near it).

The unigram and n-gram scores count the same characters a network's evaluation does: every one after the first.
Memory: the n-gram tables grow with MAX_CHARS (see ngram.py); the text is scored in chunks.
"""

from __future__ import annotations

import lzma
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from charrnn import ngram
from charrnn.vocab import Vocab

MAX_CHARS = 10_000_000  # training characters the n-gram model counts
LZMA_CHARS = 10_000_000  # text characters compressed (xz -9e runs at about 1 MB/s)
CHUNK = 1 << 20  # characters read at a time
HELD_OUT = 0.1  # of the counted characters, to choose the n-gram order on

Progress = Callable[[str], None]  # what is being computed now


@dataclass(frozen=True)
class Baselines:
    """Bits per character of each reference point on one text (``chars`` characters scored)."""

    chars: int
    unigram: float
    ngram: float
    order: int  # of the n-gram model
    held_out: dict[int, float]  # bits per character of each order on the held-out part of the training split
    counted: int  # training characters the n-gram model counted
    lzma: float
    lzma_chars: int  # characters of the text compressed
    uniform: float  # log2 V
    vocab_size: int  # V

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["held_out"] = {str(k): v for k, v in self.held_out.items()}
        return d


def unigram_bits(train: np.ndarray, text: np.ndarray, vocab_size: int) -> float:
    """Bits per character of every character of ``text`` after the first under add-one smoothed unigram
    frequencies of ``train``. Both are read CHUNK characters at a time."""
    counts = np.ones(vocab_size, np.float64)
    for start in range(0, len(train), CHUNK):
        counts += np.bincount(np.asarray(train[start: start + CHUNK]), minlength=vocab_size)[:vocab_size]
    cost = -np.log2(counts / counts.sum())
    total = 0.0
    for start in range(1, len(text), CHUNK):
        total += float(cost[np.asarray(text[start: start + CHUNK])].sum())
    return total / (len(text) - 1)


def lzma_bits(text: np.ndarray, vocab: Vocab) -> tuple[float, int]:
    """(bits per character of the first LZMA_CHARS characters of ``text`` compressed by xz -9e, characters)."""
    chars = min(len(text), LZMA_CHARS)
    points = np.array([ord(c) for c in vocab.chars], np.uint32)
    utf8 = 1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000)  # bytes of each character in UTF-8
    size = sum(int(utf8[np.asarray(text[s: min(s + CHUNK, chars)])].sum()) for s in range(0, chars, CHUNK))
    dict_size = min(max(size, 4096), 64 << 20)  # preset 9's dictionary is 64 MiB
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": dict_size}]
    compressor = lzma.LZMACompressor(lzma.FORMAT_XZ, check=lzma.CHECK_NONE, filters=filters)
    out = 0
    for start in range(0, chars, CHUNK):
        piece = points[np.asarray(text[start: min(start + CHUNK, chars)])].tobytes().decode("utf-32-le")
        out += len(compressor.compress(piece.encode("utf-8")))
    out += len(compressor.flush())
    return 8 * out / chars, chars


def compute(train: np.ndarray, text: np.ndarray, vocab: Vocab, progress: Progress | None = None) -> Baselines:
    """Every reference point for ``text`` (ids of ``vocab``, at least two), trained on ``train`` (the run's
    training split). ``train`` and ``text`` may be token files read on demand."""
    say = progress or (lambda what: None)
    v = len(vocab)
    say("unigram")
    unigram = unigram_bits(train, text, v)
    counted = np.asarray(train[:MAX_CHARS])
    say(f"choosing the n-gram order on {len(counted):,} training characters")
    chosen = ngram.select_order(counted, v, held_out=HELD_OUT)
    say(f"counting {chosen.order}-grams")
    model = ngram.KneserNey.fit(counted, v, chosen.order)
    say("scoring with the n-gram model")
    ngram_bpc = model.bits_per_char(text)
    say("compressing with lzma")
    lzma_bpc, lzma_chars = lzma_bits(text, vocab)
    return Baselines(len(text) - 1, unigram, ngram_bpc, chosen.order, chosen.held_out, len(counted), lzma_bpc,
                     lzma_chars, math.log2(v), v)
