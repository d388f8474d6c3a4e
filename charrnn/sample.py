"""Text generation: warm the state up on the prefix in one pass, then one character at a time.

Strategies: greedy, or sampling at a temperature (by the Gumbel-max trick), optionally restricted to the
top-k characters and/or the smallest set whose probability reaches top-p. Randomness comes only from an explicit
``torch.Generator``, so a seed reproduces the text. This module reads no files.

Memory is bounded: the prefix runs once (batch 1) and its state is copied to the N streams; Gumbel noise is
drawn NOISE_BLOCK steps at a time only while that is at most NOISE_BUDGET numbers (else fewer steps per draw);
and ``generate_chunks`` splits a huge N into chunks of at most CHUNK_SAMPLES streams.

Draw order (what a seed reproduces): noise for step i, stream n, character v is drawn in that order (i, then n,
then v), one ``torch.rand`` per block of steps. On the CPU the generator is consumed serially, so the block size
does not change the text; on an accelerator it can, and the block size depends only on N and V.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from charrnn.config import check_seed
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN, State
from charrnn.step import stepper

# Below this temperature logits / temperature can overflow float32 (or the temperature rounds to 0 in it): such
# a temperature is the limit T -> 0, i.e. greedy (ties between equal maxima broken at random).
MIN_TEMPERATURE = 1e-30


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise CharRNNError(
                f"temperature must be > 0, not {self.temperature} (use --greedy for the most likely text)"
            )
        if self.top_k is not None and self.top_k < 1:
            raise CharRNNError(f"top_k must be at least 1, not {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CharRNNError(f"top_p must be in (0, 1], not {self.top_p}")


def gumbel(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise: argmax(logits + noise) is a sample from softmax(logits). A uniform draw of exactly 0
    (about one in 2**24) would be noise of -inf: with one character left (top-k 1) every score would be -inf, and
    argmax would pick character 0."""
    u = torch.rand(shape, generator=generator, device=device).clamp_(min=torch.finfo(torch.float32).tiny)
    return -torch.log(-torch.log(u))


def next_token(logits: torch.Tensor, how: Sampling, generator: torch.Generator | None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
    """Choose one token per row of ``logits`` (N, V); returns (N,) int64.

    Sampling uses the Gumbel-max trick (one add and one argmax, no softmax or multinomial); ``noise``
    may be given pre-drawn, as ``generate`` does in blocks."""
    if how.greedy:
        return logits.argmax(dim=-1)
    logits = logits.float()
    if how.temperature < MIN_TEMPERATURE:
        best = logits.amax(dim=-1, keepdim=True)  # (N, 1)
        logits = torch.where(logits == best, 0.0, float("-inf"))
    else:
        logits = logits / how.temperature
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


NOISE_BLOCK = 256  # steps of Gumbel noise drawn at once ...
NOISE_BUDGET = 1 << 22  # ... while that is at most this many numbers (16 MiB of float32)
CHUNK_SAMPLES = 4096  # generate_chunks runs at most this many streams at once


def noise_steps(num_samples: int, vocab_size: int) -> int:
    """Steps of noise drawn per ``torch.rand`` call: NOISE_BLOCK, or fewer (at least 1) for wide batches."""
    return max(1, min(NOISE_BLOCK, NOISE_BUDGET // (num_samples * vocab_size)))


def _expand(state: State, n: int) -> State:
    """A batch-1 state (L, 1, H) copied to n streams (L, n, H)."""
    if isinstance(state, tuple):
        return tuple(_expand(s, n) for s in state)
    return state.expand(state.shape[0], n, *state.shape[2:]).contiguous()


PREFIX_CHUNK = 4096  # characters: the logits of one piece of a Chinese model's prefix take ~100 MB


@torch.inference_mode()
def warm_up(model: CharRNN, prefix: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
    """Run the prefix (P,) through the network once, from ``state`` (None: zeros): the next-character logits (1, V)
    and the state (batch 1). It runs in pieces of PREFIX_CHUNK characters, so that a book given as the prefix needs
    memory for one piece's logits, not for P x V of them."""
    if not len(prefix):
        raise ValueError("the prefix is empty")
    model.eval()
    device = next(model.parameters()).device
    for piece in prefix.split(PREFIX_CHUNK):
        logits, state = model(piece.to(device).unsqueeze(0), state)  # (1, piece, V)
    return logits[:, -1], state


def _check_sizes(length: int, num_samples: int) -> None:
    if length < 0:
        raise CharRNNError(f"length must be >= 0, not {length}")
    if num_samples < 1:
        raise CharRNNError(f"num_samples must be at least 1, not {num_samples}")


@torch.inference_mode()
def generate(
    model: CharRNN,
    prefix: torch.Tensor,
    length: int,
    how: Sampling,
    generator: torch.Generator | None = None,
    num_samples: int = 1,
    warm: tuple[torch.Tensor, State] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield ``length`` steps of (num_samples,) token ids continuing ``prefix`` (P,) int64, P >= 1 (nothing
    for length 0).

    The prefix runs through the network once (or ``warm``, what ``warm_up`` returned for it, is used); each
    new character is then one fast step for all streams."""
    _check_sizes(length, num_samples)
    if length == 0:
        return
    model.eval()
    device = next(model.parameters()).device
    last, state = warm if warm is not None else warm_up(model, prefix)
    last, state = last.expand(num_samples, -1), _expand(state, num_samples)  # (N, V), (L, N, H)
    step = stepper(model, state, num_samples).step
    block = noise_steps(num_samples, last.shape[-1])
    noise = None
    for i in range(length):
        if not how.greedy and i % block == 0:
            noise = gumbel((min(block, length - i), *last.shape), generator, device)  # (b, N, V)
        token = next_token(last, how, generator, None if noise is None else noise[i % block])  # (N,)
        yield token
        if i + 1 < length:
            last = step(token)


def chunk_seed(seed: int, chunk: int) -> int:
    """The seed of chunk ``chunk`` of ``generate_chunks``: the seed itself for chunk 0, else a hash of both."""
    if chunk == 0:
        return seed
    digest = hashlib.sha256(f"charrnn-chunk:{seed}:{chunk}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


def generate_chunks(
    model: CharRNN,
    prefix: torch.Tensor,
    length: int,
    how: Sampling,
    seed: int,
    num_samples: int,
    chunk_size: int = CHUNK_SAMPLES,
) -> Iterator[torch.Tensor]:
    """Yield ``num_samples`` samples as (n, length) int64 tensors of at most ``chunk_size`` rows each, so that
    memory does not grow with ``num_samples``. Chunk j draws from its own generator seeded with
    ``chunk_seed(seed, j)``: up to ``chunk_size`` samples are exactly ``generate(..., num_samples)`` with a
    generator seeded with ``seed``. The prefix runs once for all chunks."""
    check_seed(seed, "seed")
    _check_sizes(length, num_samples)
    if chunk_size < 1:
        raise CharRNNError(f"chunk_size must be at least 1, not {chunk_size}")
    device = next(model.parameters()).device
    warm = warm_up(model, prefix) if length else None
    for j, start in enumerate(range(0, num_samples, chunk_size)):
        n = min(chunk_size, num_samples - start)
        out = torch.empty((n, length), dtype=torch.int64, device=device)  # (n, length)
        generator = torch.Generator(device).manual_seed(chunk_seed(seed, j))
        for i, token in enumerate(generate(model, prefix, length, how, generator, n, warm)):
            out[:, i] = token
        yield out
