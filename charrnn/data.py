"""Batches: the train/validation split and the two batch streams (reading corpora is corpus.py's).

Token arrays are NumPy arrays or corpus.TokenFile (read from disk on demand); a batch is built by fancy
indexing, so a stream never reads more of the corpus than one batch. This module knows nothing about the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from charrnn.errors import CharRNNError, Damaged


def split(tokens: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The last ``val_fraction`` of the tokens is validation, never trained on."""
    n_val = int(round(len(tokens) * val_fraction))
    if n_val < 2 or len(tokens) - n_val < 2:
        raise CharRNNError(
            f"the corpus is too short to split: {len(tokens)} characters with val_fraction "
            f"{val_fraction} leave too little for training or validation; use a longer text"
        )
    return tokens[:-n_val], tokens[-n_val:]


@dataclass
class Batch:
    """Inputs and labels (the inputs shifted by one), both (B, T) int64.

    ``reset`` says the rows do not continue the previous batch's rows: start from a zero state.
    """

    x: torch.Tensor
    y: torch.Tensor
    reset: bool


def _gather(tokens: np.ndarray, starts: np.ndarray, length: int) -> Batch:
    idx = starts[:, None] + np.arange(length + 1)  # (B, T+1)
    window = torch.from_numpy(tokens[idx].astype(np.int64))
    return Batch(x=window[:, :-1], y=window[:, 1:], reset=True)


class SequentialBatches:
    """``batch_size`` contiguous streams read left to right: row b of each batch continues row b of
    the previous one, so the hidden state can be carried across batches (truncated BPTT).

    Every epoch after the first shifts the windows by a pseudo-random offset below ``seq_len`` (fixed by
    the seed and the epoch), so that repeated epochs do not cut the text at the same places.
    With ``world_size`` > 1 the corpus is cut into ``batch_size * world_size`` streams and this
    process takes its own disjoint ``batch_size`` of them.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        streams = batch_size * world_size
        self.stream_len = (len(tokens) - 1) // streams
        if self.stream_len < seq_len:
            raise CharRNNError(
                f"the training split ({len(tokens)} characters) is too short for {streams} streams of "
                f"seq_len {seq_len}: lower batch_size or seq_len, or use a longer text"
            )
        self.tokens = tokens
        self.seq_len = seq_len
        self.seed = seed
        self.starts = (np.arange(batch_size) + rank * batch_size) * self.stream_len
        self.pos = 0
        self._start_epoch(0)

    def _start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        room = min(self.seq_len, self.stream_len - self.seq_len + 1)
        self.offset = int(np.random.default_rng([self.seed, epoch]).integers(room)) if epoch else 0
        self.batches_per_epoch = (self.stream_len - self.offset) // self.seq_len

    def __iter__(self) -> SequentialBatches:
        return self

    def __next__(self) -> Batch:
        first = self.starts + self.offset + self.pos * self.seq_len
        batch = _gather(self.tokens, first, self.seq_len)
        batch.reset = self.pos == 0
        self.pos += 1
        if self.pos == self.batches_per_epoch:
            self.pos = 0
            self._start_epoch(self.epoch + 1)
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def continue_from(self, step: int) -> None:
        """Go to about where ``step`` batches would have brought this stream (the epochs taken as equally long)."""
        nominal = max(1, self.stream_len // self.seq_len)
        self._start_epoch(step // nominal)
        self.pos = min(step % nominal, self.batches_per_epoch - 1)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.check_state(state)
        self._start_epoch(state["epoch"])
        self.pos = state["pos"]

    def check_state(self, state: dict[str, Any]) -> None:
        """Raise Damaged unless ``state`` is a position this stream can continue from."""
        epoch, pos = state.get("epoch"), state.get("pos")
        if not isinstance(epoch, int) or not isinstance(pos, int) or not 0 <= epoch < 2**62:
            raise Damaged("the batch stream position is not a pair of whole numbers")
        room = min(self.seq_len, self.stream_len - self.seq_len + 1)
        offset = int(np.random.default_rng([self.seed, epoch]).integers(room)) if epoch else 0
        if not 0 <= pos < (self.stream_len - offset) // self.seq_len:
            raise Damaged(f"the batch stream position {pos} is outside the epoch")


class RandomBatches:
    """Independent windows at random offsets; every batch starts from a zero state."""

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int, rank: int = 0) -> None:
        if len(tokens) - 1 < seq_len:
            raise CharRNNError(
                f"the training split ({len(tokens)} characters) is shorter than seq_len {seq_len}: "
                "lower seq_len or use a longer text"
            )
        self.tokens = tokens
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed, self.rank = seed, rank
        self.generator = torch.Generator().manual_seed(seed + 1_000_003 * rank)
        self.high = len(tokens) - seq_len  # exclusive bound on a window's first index

    def __iter__(self) -> RandomBatches:
        return self

    def __next__(self) -> Batch:
        starts = torch.randint(self.high, (self.batch_size,), generator=self.generator).numpy()
        return _gather(self.tokens, starts, self.seq_len)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def continue_from(self, step: int) -> None:
        """Draw windows no fresh stream drew first (a generator cannot skip ahead: a seed of the step's own)."""
        self.generator.manual_seed(continued_seed(self.seed, self.rank, step))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.check_state(state)
        self.generator.set_state(state["generator"])

    def check_state(self, state: dict[str, Any]) -> None:
        """Raise Damaged unless ``state`` holds a generator state like this stream's own."""
        saved, mine = state.get("generator"), self.generator.get_state()
        if not isinstance(saved, torch.Tensor) or saved.dtype != mine.dtype or saved.shape != mine.shape:
            raise Damaged("the batch stream's random generator state is damaged")


def make_batches(tokens: np.ndarray, batching: str, batch_size: int, seq_len: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> SequentialBatches | RandomBatches:
    if batching == "sequential":
        return SequentialBatches(tokens, batch_size, seq_len, seed, rank, world_size)
    return RandomBatches(tokens, batch_size, seq_len, seed, rank)


def continued_seed(seed: int, rank: int, step: int, stream: int = 0) -> int:
    """A seed for worker ``rank``'s random ``stream`` (0: windows, 1: dropout) from ``step`` on, when a run resumes on
    another number of workers: none of the seeds a fresh run starts from, and different for every step."""
    return int(np.random.SeedSequence([seed, rank, step, stream]).generate_state(1, np.uint64)[0]) % 2**63
