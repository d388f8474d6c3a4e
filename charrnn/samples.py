"""Samples while training: every ``sample_every`` steps the model continues a fixed prefix with a fixed seed, so
successive samples differ only by what the model has learned, and the line goes to ``RUN/samples.jsonl``.

Each sample is exactly what ``charrnn generate --checkpoint CKPT --prefix PREFIX --seed SEED --length 200``
prints with the weights of that step (without its final newline): the same code draws it, from its own
``torch.Generator``, so sampling never moves the training's random number streams. When to sample is the
trainer's business (train.py); this module does not know about steps or schedules.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from charrnn.dist import SOLO, World
from charrnn.errors import CharRNNError
from charrnn.evaluate import Score
from charrnn.model import CharRNN
from charrnn.sample import Sampling, generate
from charrnn.schema import SampleLine
from charrnn.vocab import Vocab

if TYPE_CHECKING:
    from charrnn.train import Trainer

SAMPLES = "samples.jsonl"
LENGTH = 200  # characters after the prefix: a few lines, enough to see spelling and layout


def start(vocab: Vocab, prefix: str) -> torch.Tensor:
    """The token ids a sample starts from: ``prefix``, or a newline (what ``charrnn generate`` starts from)."""
    text = prefix or ("\n" if "\n" in vocab else vocab.chars[0])
    return torch.from_numpy(vocab.encode(text, "sample_prefix").astype("int64"))


def draw(model: CharRNN, ids: torch.Tensor, length: int, seed: int) -> list[int]:
    """``length`` token ids continuing ``ids``, sampled at temperature 1 from a generator of its own seeded with
    ``seed``; the model is back in the mode it was in (training, usually) afterwards."""
    was_training = model.training
    device = next(model.parameters()).device
    try:
        generator = torch.Generator(device).manual_seed(seed)
        return [int(t) for t in generate(model, ids, length, Sampling(), generator)]
    finally:
        model.train(was_training)


class SampleWriter:
    """The trainer's ``sample`` hook: draws the sample, appends it to ``RUN/samples.jsonl`` and hands it to the
    ``listeners`` (the progress view, TensorBoard). Every worker has one; only rank 0 samples."""

    def __init__(self, run_dir: Path, vocab: Vocab, prefix: str, seed: int, world: World = SOLO,
                 listeners: Sequence[Callable[[SampleLine], None]] = (), length: int = LENGTH) -> None:
        self.path = run_dir / SAMPLES
        self.vocab, self.prefix, self.seed, self.length = vocab, prefix, seed, length
        self.ids = start(vocab, prefix)  # checks the prefix before training starts
        self.world = world
        self.listeners = list(listeners)

    def __call__(self, trainer: Trainer, score: Score | None) -> None:
        if not self.world.is_main:
            return
        text = self.prefix + self.vocab.decode(draw(trainer.model, self.ids, self.length, self.seed))
        line = SampleLine(trainer.step, trainer.elapsed, None if score is None else score.loss, self.seed, text)
        try:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line.to_dict(), ensure_ascii=False) + "\n")
        except OSError as e:
            raise CharRNNError(f"cannot write {self.path}: {e.strerror}") from None
        for listener in self.listeners:
            listener(line)

