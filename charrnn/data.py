"""Corpora and batches: reading text, the train/validation split, and the two batch streams.

Token arrays are NumPy (in memory or memory-mapped); a batch is built by fancy indexing, so a stream
never copies more of the corpus than one batch. This module knows nothing about the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab

BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Corpus:
    """A whole corpus as token ids, with its vocabulary and a fingerprint of the file."""

    tokens: np.ndarray
    vocab: Vocab
    path: Path
    sha256: str
    encoding: str = "utf-8"
    errors: str = "strict"


def read_text(path: Path, encoding: str = "utf-8", errors: str = "strict") -> tuple[str, str]:
    """Read a text file as (text, sha256 of its bytes), with a clear error for every bad case."""
    if not path.exists():
        raise CharRNNError(f"{path} does not exist: give the path of a text file")
    if path.is_dir():
        raise CharRNNError(f"{path} is a directory: give the path of a text file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CharRNNError(f"cannot read {path}: {e.strerror}") from None
    digest = hashlib.sha256(raw).hexdigest()
    skip = len(BOM) if encoding.lower().replace("_", "-") in ("utf-8", "utf8") and raw.startswith(BOM) else 0
    if b"\x00" in raw[: 1 << 16] and encoding.lower().startswith("utf-8"):
        raise CharRNNError(f"{path} looks like a binary file (it contains NUL bytes): give a text file")
    try:
        text = raw[skip:].decode(encoding, errors)
    except LookupError:
        raise CharRNNError(f"unknown encoding {encoding!r}: use a name Python knows, e.g. utf-8 or latin-1") from None
    except UnicodeDecodeError as e:
        raise CharRNNError(
            f"{path} is not valid {encoding}: bad byte 0x{raw[skip + e.start]:02x} at byte offset "
            f"{skip + e.start}; convert the file, or pass --encoding (e.g. latin-1) or --errors replace"
        ) from None
    if not text.strip():
        raise CharRNNError(f"{path} is empty or only whitespace: give a file with text to learn from")
    return text, digest


def load_corpus(path: Path, encoding: str = "utf-8", errors: str = "strict", vocab: Vocab | None = None) -> Corpus:
    """Read and encode a corpus, with its own vocabulary or a given one (unknown characters are an error)."""
    text, digest = read_text(path, encoding, errors)
    vocab = vocab or Vocab.from_text(text)
    return Corpus(vocab.encode(text, str(path)), vocab, path, digest, encoding, errors)


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

    With ``world_size`` > 1 the corpus is cut into ``batch_size * world_size`` streams and this
    process takes its own disjoint ``batch_size`` of them.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int,
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
        self.starts = (np.arange(batch_size) + rank * batch_size) * self.stream_len
        self.batches_per_epoch = self.stream_len // seq_len
        self.epoch = 0
        self.pos = 0

    def __iter__(self) -> SequentialBatches:
        return self

    def __next__(self) -> Batch:
        batch = _gather(self.tokens, self.starts + self.pos * self.seq_len, self.seq_len)
        batch.reset = self.pos == 0
        self.pos += 1
        if self.pos == self.batches_per_epoch:
            self.epoch, self.pos = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"]) % self.batches_per_epoch


class RandomBatches:
    """Independent windows at random offsets; every batch starts from a zero state."""

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if len(tokens) - 1 < seq_len:
            raise CharRNNError(
                f"the training split ({len(tokens)} characters) is shorter than seq_len {seq_len}: "
                "lower seq_len or use a longer text"
            )
        self.tokens = tokens
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.generator = torch.Generator().manual_seed(seed + 1_000_003 * rank)
        self.high = len(tokens) - seq_len  # exclusive bound on a window's first index

    def __iter__(self) -> RandomBatches:
        return self

    def __next__(self) -> Batch:
        starts = torch.randint(self.high, (self.batch_size,), generator=self.generator).numpy()
        return _gather(self.tokens, starts, self.seq_len)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])


def make_batches(tokens: np.ndarray, batching: str, batch_size: int, seq_len: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> SequentialBatches | RandomBatches:
    if batching == "sequential":
        return SequentialBatches(tokens, batch_size, seq_len, rank, world_size)
    return RandomBatches(tokens, batch_size, seq_len, seed, rank, world_size)
