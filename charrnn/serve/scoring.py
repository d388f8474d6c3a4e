"""The /v1/score answer: where in a text the model is surprised, per character, as JSON. The numbers are
``charrnn.surprisal``'s (those of `charrnn eval --show` and `--html`): the mean surprisal is eval's bits per
character on the same text.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from charrnn.evaluate import perplexity
from charrnn.model import CharRNN
from charrnn.surprisal import surprisal
from charrnn.vocab import Vocab


def score_text(model: CharRNN, vocab: Vocab, text: str, tokens: np.ndarray, top: int = 5) -> dict[str, Any]:
    """The mean scores of ``text`` (its ``tokens``, at least two), then per character its surprisal in ``bits``
    and the model's ``top`` guesses for it with their probabilities, most likely first; the first character has
    no prediction, so its entries are null."""
    device = model.embed.weight.device
    blocks = list(surprisal(model, tokens, device, max(top, 1)))
    bits = np.concatenate([b.bits for b in blocks])
    guesses = np.concatenate([b.guesses for b in blocks])[:, :top].tolist()
    probs = np.concatenate([b.probs for b in blocks])[:, :top].tolist()
    mean = float(bits[1:].mean())
    chars = vocab.chars
    return {"loss": mean * math.log(2), "bpc": mean, "perplexity": perplexity(mean * math.log(2)),
            "chars": len(bits) - 1, "text": text, "bits": [None, *(round(float(b), 4) for b in bits[1:])],
            "top": [None, *([[chars[g], round(p, 5)] for g, p in zip(row_g, row_p, strict=True)]
                            for row_g, row_p in zip(guesses[1:], probs[1:], strict=True))]}

