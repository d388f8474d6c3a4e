"""Text generation: warm the state up on the prefix in one pass, then one character at a time.

Strategies: greedy, or sampling at a temperature (by the Gumbel-max trick), optionally restricted to the
top-k characters and/or the smallest set whose probability reaches top-p. Randomness comes only from an explicit
``torch.Generator``, so a seed reproduces the text. This module reads no files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.step import stepper


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise CharRNNError(
                f"temperature must be > 0, not {self.temperature} (use --greedy for the most likely text)"
            )
        if self.top_k is not None and self.top_k < 1:
            raise CharRNNError(f"top_k must be at least 1, not {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CharRNNError(f"top_p must be in (0, 1], not {self.top_p}")


def gumbel(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise: argmax(logits + noise) is a sample from softmax(logits)."""
    u = torch.rand(shape, generator=generator, device=device)
    return -torch.log(-torch.log(u))


def next_token(logits: torch.Tensor, how: Sampling, generator: torch.Generator | None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
    """Choose one token per row of ``logits`` (N, V); returns (N,) int64.

    Sampling uses the Gumbel-max trick (one add and one argmax, no softmax or multinomial); ``noise``
    may be given pre-drawn, as ``generate`` does in blocks."""
    if how.greedy:
        return logits.argmax(dim=-1)
    logits = logits.float() / how.temperature
    if how.top_k is not None and how.top_k < logits.shape[-1]:
        kth = torch.topk(logits, how.top_k, dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if how.top_p is not None and how.top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the ones before it already reach top_p; the first one always stays
        drop = probs.cumsum(dim=-1) - probs >= how.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    if noise is None:
        noise = gumbel(logits.shape, generator, logits.device)
    return (logits + noise).argmax(dim=-1)


NOISE_BLOCK = 256  # steps of Gumbel noise drawn at once


@torch.inference_mode()
def generate(
    model: CharRNN,
    prefix: torch.Tensor,
    length: int,
    how: Sampling,
    generator: torch.Generator | None = None,
    num_samples: int = 1,
) -> Iterator[torch.Tensor]:
    """Yield ``length`` steps of (num_samples,) token ids continuing ``prefix`` (P,) int64, P >= 1.

    The prefix runs through the network in one pass; each new character is then one fast step."""
    model.eval()
    device = next(model.parameters()).device
    idx = prefix.to(device).unsqueeze(0).expand(num_samples, -1)  # (N, P)
    logits, state = model(idx)  # (N, P, V)
    last = logits[:, -1]
    step = stepper(model, state, num_samples).step
    noise = None
    for i in range(length):
        if not how.greedy and i % NOISE_BLOCK == 0:
            noise = gumbel((min(NOISE_BLOCK, length - i), *last.shape), generator, device)
        token = next_token(last, how, generator, None if noise is None else noise[i % NOISE_BLOCK])  # (N,)
        yield token
        if i + 1 < length:
            last = step(token)
