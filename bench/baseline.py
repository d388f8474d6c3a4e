"""The hand-written reference model the benchmarks compare against: nn.Embedding -> nn.LSTM -> nn.Linear,
the loop people write by hand. It has CharRNN's calling convention, so charrnn's evaluate() scores it."""

from __future__ import annotations

import torch
from torch import nn

from charrnn.config import ModelConfig


class Baseline(nn.Module):
    def __init__(self, vocab: int, hidden: int = 256, layers: int = 2, emb: int = 64) -> None:
        super().__init__()
        self.config = ModelConfig(vocab_size=vocab, embedding_size=emb, hidden_size=hidden, num_layers=layers)
        self.embed = nn.Embedding(vocab, emb)
        self.rnn = nn.LSTM(emb, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor, state=None, targets: torch.Tensor | None = None):
        out, state = self.rnn(self.embed(x), state)
        logits = self.head(out)
        if targets is None:
            return logits, state
        nll = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1, reduction="none")
        return nll.view_as(targets), state
