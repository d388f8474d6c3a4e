"""A conversation with a model: text comes in turn by turn and each turn is continued, with the hidden state and
the sampling settings kept between turns, so that the whole exchange is one continuing text (what was typed and
what was generated, back to back).

``charrnn generate --interactive`` is a prompt loop around a Session; a server or a notebook can hold one the same
way. This module reads no files and prints nothing.

What a seed reproduces: a session draws its randomness as ``sample.generate`` does, so its first turn continues a
line exactly as ``charrnn generate --prefix LINE --seed S`` does; later turns go on drawing from the same
generator. ``reseed`` restarts the generator, ``reset`` the text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch

from charrnn.config import check_seed
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN, State
from charrnn.sample import Sampling, gumbel, next_token, noise_steps, warm_up
from charrnn.step import stepper
from charrnn.vocab import Vocab


def check_length(length: int) -> None:
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise CharRNNError(f"length must be a whole number >= 0, not {length!r}")


class Session:
    """One continuing text. ``turn(text)`` adds ``text`` and yields the ``length`` characters that continue it;
    the settings (``how``, ``length``) may change between turns."""

    def __init__(self, model: CharRNN, vocab: Vocab, how: Sampling | None = None, length: int = 500,
                 seed: int | None = None) -> None:
        check_length(length)
        self.model, self.vocab, self.how, self.length = model.eval(), vocab, how or Sampling(), length
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(self.device)
        self.reseed(seed)
        self.reset()

    def reset(self) -> None:
        """Start a fresh text: the state goes back to zeros (the settings and the generator stay)."""
        self._state: State | None = None  # after every token but the pending ones
        self._pending: list[int] = []  # tokens of the text not yet run through the network

    def reseed(self, seed: int | None) -> None:
        """Restart the random generator from ``seed`` (None: from fresh randomness)."""
        self.seed = seed
        if seed is None:
            self.generator.seed()
        else:
            check_seed(seed)
            self.generator.manual_seed(seed)

    def configure(self, length: int | None = None, **sampling: object) -> None:
        """Change the length and any of the Sampling fields (temperature, top_k, top_p, greedy); all are checked
        before any is changed."""
        if length is not None:
            check_length(length)
        how = dataclasses.replace(self.how, **sampling)  # Sampling checks its values
        self.how, self.length = how, self.length if length is None else length

    def turn(self, text: str = "") -> Iterator[str]:
        """Add ``text`` to the conversation; an iterator over the characters that continue it. A character the
        model has never seen is an error here, before anything changes. If the caller stops iterating early, the
        text ends at the last character it was given."""
        ids = self.vocab.encode(text, "the line").tolist()
        if self.length == 0:
            self._pending += ids  # run with the next turn's text
            return iter(())
        pending = self._pending + ids
        if not pending:  # a text starts after a newline, as `charrnn generate` starts one without a prefix
            pending = self.vocab.encode("\n" if "\n" in self.vocab else self.vocab.chars[0]).tolist()
        return self._continue(pending)

    @torch.inference_mode()
    def _continue(self, pending: list[int]) -> Iterator[str]:
        """Run the pending tokens in one pass, then generate; the session's state changes with the first
        character yielded, and then holds the text up to the last one."""
        last, state = warm_up(self.model, torch.tensor(pending), self._state)
        step, started = stepper(self.model, state, 1), False
        block, noise = noise_steps(1, len(self.vocab)), None
        try:
            for i in range(self.length):
                if not self.how.greedy and i % block == 0:
                    noise = gumbel((min(block, self.length - i), 1, len(self.vocab)), self.generator, self.device)
                token = next_token(last, self.how, self.generator, None if noise is None else noise[i % block])
                self._pending, started = [int(token)], True  # the state is now step.state
                yield self.vocab.chars[int(token)]
                if i + 1 < self.length:
                    self._pending = []
                    last = step.step(token)
        finally:
            if started:
                self._state = step.state
