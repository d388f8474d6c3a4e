"""Where in a text the model is surprised: the surprisal of every character (-log2 of the probability the model
gave it, in bits) and the model's top guesses for it, with the state carried through the text in one pass.
Memory is bounded: the text runs CHUNK characters at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from charrnn.evaluate import bits_per_char, perplexity
from charrnn.model import CharRNN
from charrnn.vocab import Vocab

CHUNK = 1024


@dataclass(frozen=True)
class Surprisal:
    """Per character of a text of T characters: ``bits`` (T - 1 values: the first character has no context) and
    ``top`` (for each, the model's most likely characters with their probabilities, most likely first)."""

    loss: float  # mean cross-entropy in nats per predicted character
    bits: list[float]
    top: list[list[tuple[str, float]]]

    def to_dict(self, text: str) -> dict:
        """The JSON answer: the mean scores, then per character of ``text``, the first one's entries null."""
        return {"loss": self.loss, "bpc": bits_per_char(self.loss), "perplexity": perplexity(self.loss),
                "chars": len(self.bits), "text": text, "bits": [None, *(round(b, 4) for b in self.bits)],
                "top": [None, *([[c, round(p, 5)] for c, p in guesses] for guesses in self.top)]}


@torch.inference_mode()
def surprisal(model: CharRNN, vocab: Vocab, tokens: torch.Tensor, top: int = 5) -> Surprisal:
    """Score tokens (T,) int64, T >= 2: each character after the first given all before it."""
    model.eval()
    device = model.head.weight.device
    state, bits, guesses, total = None, [], [], 0.0
    for start in range(0, len(tokens) - 1, CHUNK):
        x = tokens[start:start + CHUNK].to(device)
        y = tokens[start + 1:start + 1 + CHUNK].to(device)
        x = x[:len(y)]
        logits, state = model(x.unsqueeze(0), state)  # (1, c, V)
        logp = torch.log_softmax(logits[0].float(), dim=-1)  # (c, V)
        nats = -logp.gather(1, y.unsqueeze(1)).squeeze(1)  # (c,)
        total += float(nats.double().sum())
        bits += (nats / math.log(2)).tolist()
        if top:
            p, ids = logp.exp().topk(min(top, logp.shape[-1]), dim=-1)  # (c, top)
            guesses += [[(vocab.chars[i], q) for i, q in zip(row_ids, row_p, strict=True)]
                        for row_ids, row_p in zip(ids.tolist(), p.tolist(), strict=True)]
        else:
            guesses += [[] for _ in range(len(y))]
    return Surprisal(total / (len(tokens) - 1), bits, guesses)
