"""What the server's JSON says: the limits, parsing and checking request bodies (with the command line's own
rules and messages: ``Sampling``, ``check_seed``, the vocabulary's unseen-character error), and the model's
description. A bad request is a ``RequestError`` with the HTTP status to answer with. No web code lives here.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import asdict, dataclass
from pathlib import PurePath
from typing import Any

import numpy as np
import torch

from charrnn import __version__
from charrnn.checkpoint import Checkpoint
from charrnn.config import check_seed
from charrnn.errors import CharRNNError, printable
from charrnn.evaluate import bits_per_char
from charrnn.model import CharRNN, num_parameters
from charrnn.sample import Sampling
from charrnn.serve.batcher import Job
from charrnn.stop import check_stops
from charrnn.vocab import Vocab


class RequestError(CharRNNError):
    """A request the server refuses: ``status`` is the HTTP status (400 bad request, 413 too large)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how many streams run at once."""

    max_prefix: int = 4096  # characters of prefix
    max_length: int = 10_000  # characters generated per sample
    max_samples: int = 16  # samples per request
    max_streams: int = 256  # samples generated at once, all requests together (beyond: 429)
    max_score_chars: int = 20_000  # characters of text to score
    max_body: int = 1 << 20  # bytes of request body

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CharRNNError(f"--{name.replace('_', '-')} must be at least 1, not {value!r}")


def parse_json(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise RequestError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise RequestError("the request body must be a JSON object")
    return value


GENERATE_FIELDS = {"prefix": "", "length": 500, "temperature": 1.0, "greedy": False, "top_k": None, "top_p": None,
                   "seed": None, "num_samples": 1, "stop": [], "stream": False}
SCORE_FIELDS = {"text": None, "top": 5}
MAX_TOP = 10


def _fields(body: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r} (known fields: {', '.join(sorted(known))})")
    return {**known, **body}


def _whole(value: Any, name: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"{name} must be a whole number{' or null' if optional else ''}, not {value!r}")
    return value


def _number(value: Any, name: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RequestError(f"{name} must be a number{' or null' if optional else ''}, not {value!r}")
    try:
        return float(value)
    except OverflowError:  # a whole number of hundreds of digits
        raise RequestError(f"{name} is out of range") from None


def _at_most(value: int, limit: int, name: str) -> None:
    if value > limit:
        raise RequestError(f"{name} must be at most {limit} on this server, not {value}")


def _encode(vocab: Vocab, text: str, what: str) -> torch.Tensor:
    try:
        return torch.from_numpy(vocab.encode(text, what).astype("int64"))
    except CharRNNError as e:
        raise RequestError(str(e)) from None


def parse_generate(body: dict[str, Any], vocab: Vocab, limits: Limits) -> tuple[Job, bool]:
    """A /v1/generate body as a Job, and whether to stream it."""
    f = _fields(body, GENERATE_FIELDS)
    prefix = f["prefix"]
    if not isinstance(prefix, str):
        raise RequestError(f"prefix must be a string, not {prefix!r}")
    if len(prefix) > limits.max_prefix:
        raise RequestError(f"the prefix is {len(prefix)} characters long; this server takes at most "
                           f"{limits.max_prefix}")
    length, num_samples = _whole(f["length"], "length"), _whole(f["num_samples"], "num_samples")
    if length < 0:
        raise RequestError(f"length must be >= 0, not {length}")
    if num_samples < 1:
        raise RequestError(f"num_samples must be at least 1, not {num_samples}")
    _at_most(length, limits.max_length, "length")
    _at_most(num_samples, min(limits.max_samples, limits.max_streams), "num_samples")  # more would never start
    for name in ("greedy", "stream"):
        if not isinstance(f[name], bool):
            raise RequestError(f"{name} must be true or false, not {f[name]!r}")
    try:
        how = Sampling(_number(f["temperature"], "temperature"), _whole(f["top_k"], "top_k", optional=True),
                       _number(f["top_p"], "top_p", optional=True), f["greedy"])
        # a seed drawn here is below 2**53, so that JavaScript (whose numbers are doubles) can send it back exactly
        seed = f["seed"] if f["seed"] is not None else secrets.randbelow(2**53)
        check_seed(seed, "seed")
        stops = f["stop"] if isinstance(f["stop"], list) else [] if f["stop"] is None else [f["stop"]]
        stops = check_stops(stops)
    except RequestError:
        raise
    except CharRNNError as e:
        raise RequestError(str(e)) from None
    start = prefix or ("\n" if "\n" in vocab else vocab.chars[0])
    return Job(_encode(vocab, start, "the prefix"), length, how, seed, num_samples, stops), f["stream"]


def parse_score(body: dict[str, Any], vocab: Vocab, limits: Limits) -> tuple[str, np.ndarray, int]:
    """A /v1/score body: the text, its tokens, and how many top guesses to give per character."""
    f = _fields(body, SCORE_FIELDS)
    text, top = f["text"], _whole(f["top"], "top")
    if not isinstance(text, str):
        raise RequestError(f"text must be a string, not {text!r}")
    if len(text) < 2:
        raise RequestError("text must be at least 2 characters long: every character after the first is scored")
    if len(text) > limits.max_score_chars:
        raise RequestError(f"the text is {len(text)} characters long; this server scores at most "
                           f"{limits.max_score_chars}")
    if not 0 <= top <= MAX_TOP:
        raise RequestError(f"top must be from 0 to {MAX_TOP}, not {top}")
    try:
        return text, vocab.encode(text, "the text"), top
    except CharRNNError as e:
        raise RequestError(str(e)) from None


def describe(ckpt: Checkpoint, model: CharRNN, limits: Limits) -> dict[str, Any]:
    """What GET /v1/model answers: the model's shape, what it was trained on, how good it was, and the limits.
    Only the names of the corpus and checkpoint, never the paths on this machine."""
    cfg, val = ckpt.model_config, ckpt.val_loss
    val = val if val is not None and math.isfinite(val) else None  # JSON has no NaN
    samples = min(limits.max_samples, limits.max_streams)  # what a request may ask for (parse_generate)
    return {
        "vocab_size": cfg.vocab_size, "cell": cfg.cell, "embedding_size": cfg.embedding_size,
        "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers, "parameters": num_parameters(model),
        "corpus": printable(PurePath(ckpt.meta.corpus.path).name), "checkpoint": printable(ckpt.path.name),
        "step": ckpt.step, "val_loss": val, "val_bpc": None if val is None else bits_per_char(val),
        "vocab": "".join(ckpt.vocab.chars), "limits": {**asdict(limits), "max_samples": samples},
        "charrnn_version": __version__,
    }

