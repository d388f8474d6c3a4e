"""CharRNN: character embedding, a recurrent core from torch.nn, and a linear head over the vocabulary.

The model does no I/O and computes no loss: ``forward(idx, state) -> (logits, state)``.
Shapes: B batch, T time, E embedding, H hidden, L layers, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn

from charrnn.config import ModelConfig
from charrnn.minrnn import MinRNN

# The recurrent state: h of shape (L, B, H), or (h, c) for an LSTM.
State = torch.Tensor | tuple[torch.Tensor, ...]

_CORES = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
MIN_CELLS = ("mingru", "minlstm")  # parallel-scan cells, see minrnn.py


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embedding_size)
        if config.cell in MIN_CELLS:
            self.rnn = MinRNN(config.cell, config.embedding_size, config.hidden_size, config.num_layers,
                              config.dropout)
        else:
            core = _CORES[config.cell]
            kwargs = {"nonlinearity": "tanh"} if config.cell == "rnn" else {}
            self.rnn = core(
                config.embedding_size,
                config.hidden_size,
                num_layers=config.num_layers,
                dropout=config.dropout if config.num_layers > 1 else 0.0,
                batch_first=True,
                **kwargs,
            )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        x = self.embed(idx)  # (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H)
        return self.head(self.drop(out)), state  # (B, T, V)


def detach_state(state: State | None, keep: torch.Tensor | None = None) -> State | None:
    """Cut the graph at a batch boundary: the values carry over, the gradients do not.
    Where the boolean ``keep`` is False the state is zeroed instead (as if starting afresh)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(detach_state(s, keep) for s in state)
    state = state.detach()
    return state if keep is None else torch.where(keep, state, torch.zeros((), device=state.device))


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def widen_vocab(weights: dict[str, torch.Tensor], vocab_size: int) -> dict[str, torch.Tensor]:
    """Weights for a larger vocabulary whose first ids are the old ones. New characters get fresh
    embeddings and an output row that predicts them rarely (zero weights, the smallest old bias)."""
    emb, w, b = weights["embed.weight"], weights["head.weight"], weights["head.bias"]
    extra = vocab_size - emb.shape[0]
    return {
        **weights,
        "embed.weight": torch.cat([emb, torch.randn(extra, emb.shape[1], dtype=emb.dtype)]),
        "head.weight": torch.cat([w, torch.zeros(extra, w.shape[1], dtype=w.dtype)]),
        "head.bias": torch.cat([b, b.min().expand(extra)]),
    }
