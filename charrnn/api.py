"""The library's front door: ``charrnn.load(path)`` gives a trained model that generates and scores text.

    import charrnn
    model = charrnn.load("runs/sample-20261126-183320")   # a run (its best checkpoint), a checkpoint, or None
    print(model.generate("The machine", length=200, seed=7))
    print(model.score("The machine was quiet.").bpc)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from charrnn import checkpoint, devices, run
from charrnn.evaluate import Score, evaluate
from charrnn.model import CharRNN
from charrnn.sample import Sampling, generate
from charrnn.session import Session
from charrnn.stop import StopMatcher
from charrnn.vocab import Vocab


@dataclass
class Model:
    """A trained model in evaluation mode (no dropout), with the vocabulary it was trained with."""

    network: CharRNN
    vocab: Vocab
    device: torch.device
    checkpoint: checkpoint.Checkpoint

    def generate(self, prefix: str = "", length: int = 500, *, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, greedy: bool = False, seed: int | None = None,
                 stop: Sequence[str] = ()) -> str:
        """``prefix`` followed by ``length`` generated characters (a newline starts the text if there is no prefix);
        the same seed gives the same text. The text ends early at the first of the ``stop`` strings found in the
        generated part (the stop string is left out)."""
        how = Sampling(temperature, top_k, top_p, greedy)
        start = prefix or ("\n" if "\n" in self.vocab else self.vocab.chars[0])
        ids = torch.from_numpy(self.vocab.encode(start, "the prefix").astype("int64"))
        generator = torch.Generator(self.device)
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        matcher, text = StopMatcher(stop), [prefix]
        for token in generate(self.network, ids, length, how, generator):
            shown, stopped = matcher.feed(self.vocab.chars[int(token)])
            text.append(shown)
            if stopped:
                break
        return "".join(text) + matcher.flush()

    def session(self, length: int = 500, *, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, greedy: bool = False, seed: int | None = None) -> Session:
        """A conversation: ``"".join(session.turn(text))`` continues ``text`` and everything before it, keeping the
        state between turns (see session.py)."""
        return Session(self.network, self.vocab, Sampling(temperature, top_k, top_p, greedy), length, seed)

    def score(self, text: str) -> Score:
        """Mean loss (nats), bits per character and perplexity of the model on ``text`` (at least two characters;
        every character must be in the vocabulary)."""
        tokens = self.vocab.encode(text, "the text")
        return evaluate(self.network, tokens, self.device)


def load(path: str | Path | None = None, device: str = "auto") -> Model:
    """A run's best checkpoint (or a given checkpoint; by default the latest run's best) as a ``Model``."""
    ckpt = checkpoint.find(None if path is None else Path(path), run.RUNS_ROOT)
    dev = devices.resolve(device)
    network = ckpt.load_model(dev).eval()
    return Model(network, ckpt.vocab, dev, ckpt)
