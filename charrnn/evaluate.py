"""Token-weighted evaluation over a whole text: loss (nats/char), bits per character, perplexity.

Every character after the first is predicted once. For speed the text is cut into up to
``MAX_STREAMS`` contiguous pieces that run side by side as one batch; each piece after the first is
first run over the ``CONTEXT`` characters before it (their loss not counted), so the result is, to
within noise, that of one pass with the state carried through the whole text. The cut depends only on
the text's length, so training and ``charrnn eval`` report the same number for the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from charrnn.dist import SOLO, World, all_sum_
from charrnn.model import CharRNN

MAX_STREAMS = 64
MIN_STREAM_LEN = 1024
CONTEXT = 128
ACTIVATION_BUDGET = 1 << 23  # floats of logits and gate activations held at once: bounds eval memory
IGNORE = -1

Progress = Callable[[int, int], None]  # (characters scored so far, characters to score), after every chunk


class Stopped(Exception):
    """``evaluate`` was asked to stop (between chunks) before scoring the whole text."""


def bits_per_char(loss: float) -> float:
    """Nats per character to bits per character."""
    return loss / math.log(2)


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy); capped so that a diverged loss prints as a huge number, not an error."""
    return math.exp(min(loss, 700.0))


@dataclass(frozen=True)
class Score:
    """Mean cross-entropy in nats per character over ``chars`` predicted characters."""

    loss: float
    chars: int

    @property
    def bpc(self) -> float:
        return bits_per_char(self.loss)

    @property
    def perplexity(self) -> float:
        return perplexity(self.loss)

    def to_dict(self) -> dict[str, float | int]:
        return {"loss": self.loss, "bpc": self.bpc, "perplexity": self.perplexity, "chars": self.chars}


def _layout(n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Cut the n - 1 predictions of ``n`` tokens into streams: (bounds (S+1,), starts (S,), width).

    Stream s counts the predictions made from inputs bounds[s] .. bounds[s+1]-1 and starts reading at
    starts[s] (CONTEXT earlier, except the first); width is the longest stream's length."""
    targets = n - 1
    streams = max(1, min(MAX_STREAMS, targets // MIN_STREAM_LEN))
    bounds = np.linspace(0, targets, streams + 1).astype(np.int64)
    starts = np.maximum(bounds[:-1] - CONTEXT, 0)
    return bounds, starts, int((bounds[1:] - starts).max())


def _window(lo: np.ndarray, hi: np.ndarray, starts: np.ndarray, t0: int, t1: int,
            n: int) -> tuple[np.ndarray, np.ndarray]:
    """Input positions (S, t1-t0) of columns t0..t1 of streams that read from ``starts`` and count the
    predictions from inputs lo..hi-1, and which of the positions are counted."""
    pos = starts[:, None] + np.arange(t0, t1)
    counted = (pos >= lo[:, None]) & (pos < hi[:, None])
    return np.minimum(pos, n - 2), counted


@torch.no_grad()
def evaluate(model: CharRNN, tokens: np.ndarray, device: torch.device, world: World = SOLO,
             progress: Progress | None = None, stop: Callable[[], bool] | None = None) -> Score:
    """Mean loss over every character of ``tokens`` after the first, in nats. Memory stays bounded by
    one chunk of columns, so a validation split of any size (read from disk on demand) can be scored.
    Data-parallel workers each take every world_size-th stream and sum their losses. ``progress`` hears
    of this worker's share after every chunk; when ``stop()`` turns true between chunks, raises Stopped
    (after the workers' sum, so that none of them waits for the others)."""
    n = len(tokens)
    if n < 2:
        return Score(loss=float("nan"), chars=0)
    was_training = model.training
    model.eval()
    bounds, starts, width = _layout(n)
    mine = np.arange(world.rank, len(starts), world.world_size)
    cfg = model.config
    per_column = len(starts) * (cfg.vocab_size + 4 * cfg.hidden_size * cfg.num_layers)  # floats per time step
    chunk = max(1, ACTIVATION_BUDGET // per_column)
    total = torch.zeros((), dtype=torch.float64, device=device)
    state = None
    done, to_score, stopped = 0, int((bounds[1:][mine] - bounds[:-1][mine]).sum()), False
    if progress is not None:
        progress(0, to_score)
    for t in range(0, width if len(mine) else 0, chunk):
        if stop is not None and stop():
            stopped = True
            break
        pos, counted = _window(bounds[:-1][mine], bounds[1:][mine], starts[mine], t, min(t + chunk, width), n)
        x = torch.from_numpy(tokens[pos].astype(np.int64)).to(device, non_blocking=True)
        y = torch.from_numpy(np.where(counted, tokens[pos + 1].astype(np.int64), IGNORE)).to(device)
        nll, state = model(x, state, targets=y)  # (S, T), zero where not counted
        total += nll.sum(dtype=torch.float64)
        done += int(counted.sum())
        if progress is not None:
            progress(done, to_score)
    model.train(was_training)
    all_sum_(world, total)
    if stopped:
        raise Stopped
    return Score(loss=total.item() / (n - 1), chars=n - 1)
