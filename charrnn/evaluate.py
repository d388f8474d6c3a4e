"""Token-weighted evaluation over a whole text: loss (nats/char), bits per character, perplexity.

Every character after the first is predicted once. For speed the text is cut into up to
``MAX_STREAMS`` contiguous pieces that run side by side as one batch; each piece after the first is
first run over the ``CONTEXT`` characters before it (their loss not counted), so the result is, to
within noise, that of one pass with the state carried through the whole text. The cut depends only on
the text's length, so training and ``charrnn eval`` report the same number for the same weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.model import CharRNN

MAX_STREAMS = 64
MIN_STREAM_LEN = 1024
CONTEXT = 128
LOGITS_BUDGET = 1 << 23  # floats of logits held at once, bounding memory for large vocabularies
IGNORE = -1


@dataclass(frozen=True)
class Score:
    """Mean cross-entropy in nats per character over ``chars`` predicted characters."""

    loss: float
    chars: int

    @property
    def bpc(self) -> float:
        return self.loss / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    def to_dict(self) -> dict[str, float | int]:
        return {"loss": self.loss, "bpc": self.bpc, "perplexity": self.perplexity, "chars": self.chars}


def _layout(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Input and label rows (S, T) for ``n`` tokens; labels are IGNORE where not counted."""
    targets = n - 1
    streams = max(1, min(MAX_STREAMS, targets // MIN_STREAM_LEN))
    bounds = np.linspace(0, targets, streams + 1).astype(np.int64)
    starts = np.maximum(bounds[:-1] - CONTEXT, 0)
    width = int((bounds[1:] - starts).max())
    pos = starts[:, None] + np.arange(width)  # (S, T) index of each input token
    counted = (pos >= bounds[:-1, None]) & (pos < bounds[1:, None])
    return np.minimum(pos, targets - 1), counted


@torch.no_grad()
def evaluate(model: CharRNN, tokens: np.ndarray, device: torch.device) -> Score:
    """Mean loss over every character of ``tokens`` after the first, in nats."""
    if len(tokens) < 2:
        return Score(loss=float("nan"), chars=0)
    was_training = model.training
    model.eval()
    pos, counted = _layout(len(tokens))
    x = torch.from_numpy(tokens[pos].astype(np.int64))
    y = torch.from_numpy(np.where(counted, tokens[pos + 1].astype(np.int64), IGNORE))
    chunk = max(1, LOGITS_BUDGET // (x.shape[0] * model.config.vocab_size))
    total = torch.zeros((), dtype=torch.float64, device=device)
    state = None
    for t in range(0, x.shape[1], chunk):
        xb = x[:, t : t + chunk].to(device, non_blocking=True)
        yb = y[:, t : t + chunk].to(device, non_blocking=True)
        logits, state = model(xb, state)
        total += F.cross_entropy(logits.flatten(0, 1).float(), yb.flatten(), ignore_index=IGNORE,
                                 reduction="sum").double()
    model.train(was_training)
    chars = int(counted.sum())
    return Score(loss=total.item() / chars, chars=chars)
