"""Per-character surprisal: for every character of a text, −log₂ of the probability the model gave it, and the
model's top guesses (with their probabilities) at that position.

The text is cut exactly as ``evaluate`` cuts it (the same streams, each read from ``CONTEXT`` characters
before its share), so the mean surprisal is ``evaluate``'s bits per character on the same text. The streams
are run one after another, in column chunks of the same activation budget, so that the blocks come out in text
order and memory stays bounded on a text of any length. The first character has no prediction: its surprisal
is NaN and it has no guesses (-1 ids, NaN probabilities).

This module does no I/O and knows nothing about colours or pages; the fixed colour scale lives here because
the terminal view and the HTML page share it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from charrnn import evaluate as ev
from charrnn.model import CharRNN

TOP = 5  # guesses kept per position
SCALE_MAX = 8  # bits: the colour scale's last bin is 8 bits or more (p <= 1/256)
# Background colours of the bins 0-1, 1-2, ..., 7-8 and 8+ bits, cool to hot: light, so dark text stays
# readable on them, and distinct in the 256-colour palette a terminal may fall back to.
PALETTE = ("#dbeafe", "#bfdbfe", "#a5f3fc", "#bbf7d0", "#fef08a", "#fed7aa", "#fdba74", "#fb923c", "#ef4444")


def colour_bin(bits: float) -> int:
    """The colour-scale bin of a surprisal: floor(bits), 0 to SCALE_MAX (which is 8 bits or more); -1 for NaN
    (the first character, which has no prediction)."""
    if math.isnan(bits):
        return -1
    return min(SCALE_MAX, max(0, int(bits)))


@dataclass(frozen=True)
class Block:
    """Surprisal of the characters at positions ``start`` .. ``start + len(tokens) - 1`` of a text."""

    start: int
    tokens: np.ndarray  # (n,) the characters' ids
    bits: np.ndarray  # (n,) float64 −log₂ p; NaN at position 0
    guesses: np.ndarray  # (n, k) int64 ids of the model's top guesses, most likely first; -1 at position 0
    probs: np.ndarray  # (n, k) float32 their probabilities; NaN at position 0

    def __len__(self) -> int:
        return len(self.tokens)


def _first(tokens: np.ndarray, top: int) -> Block:
    return Block(0, np.asarray(tokens[0:1]).astype(np.int64), np.full(1, np.nan),
                 np.full((1, top), -1, dtype=np.int64), np.full((1, top), np.nan, dtype=np.float32))


@torch.no_grad()
def surprisal(model: CharRNN, tokens: np.ndarray, device: torch.device, top: int = TOP,
              progress: ev.Progress | None = None) -> Iterator[Block]:
    """Yield every character's surprisal and the model's ``top`` guesses, in text order, block by block (each at
    most one chunk of columns long). ``tokens`` may be an array or a TokenFile (read on demand)."""
    n = len(tokens)
    if n == 0:
        return
    top = min(top, model.config.vocab_size)
    yield _first(tokens, top)
    if n < 2:
        return
    was_training = model.training
    model.eval()
    bounds, starts, _ = ev._layout(n)
    cfg = model.config
    chunk = max(1, ev.ACTIVATION_BUDGET // (cfg.vocab_size + 4 * cfg.hidden_size * cfg.num_layers))
    done = 0
    if progress is not None:
        progress(0, n - 1)
    try:
        for lo, hi, start in zip(bounds[:-1].tolist(), bounds[1:].tolist(), starts.tolist(), strict=True):
            state = None
            for t0 in range(start, hi, chunk):  # inputs t0 .. t1-1 predict characters t0+1 .. t1
                t1 = min(t0 + chunk, hi)
                window = np.asarray(tokens[t0:t1 + 1]).astype(np.int64)
                x = torch.from_numpy(window[:-1]).to(device)[None]  # (1, T)
                logits, state = model(x, state)  # (1, T, V)
                first = max(lo - t0, 0)  # the stream's context before its share is read, not counted
                if first >= t1 - t0:
                    continue
                logp = logits[0, first:].float().log_softmax(-1)  # (T', V)
                y = torch.from_numpy(window[first + 1:]).to(device)
                bits = -logp.gather(1, y[:, None])[:, 0].double() / math.log(2)
                best = logp.topk(top, dim=-1)
                yield Block(t0 + first + 1, window[first + 1:], bits.cpu().numpy(), best.indices.cpu().numpy(),
                            best.values.exp().cpu().numpy())
                done += t1 - t0 - first
                if progress is not None:
                    progress(done, n - 1)
    finally:
        model.train(was_training)
