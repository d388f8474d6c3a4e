"""One character at a time, fast: the recurrent step used when sampling.

Sampling runs the network on a single character per stream per step, where the framework's per-call
overhead (not arithmetic) dominates: a full ``nn.LSTM`` call sets up a multi-step recurrent primitive for
one step. This step calls the fused single-step cell kernels directly on weights gathered once, a handful
of calls per character. It computes exactly what ``CharRNN.forward`` computes, one position at a time.
Shapes: N streams, H hidden, E embedding, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from charrnn.devices import FUSED_CELLS
from charrnn.model import CharRNN, State


class ForwardStepper:
    """The general step: the model's own forward pass on one character (used for the min* cells,
    whose one-step forward already is the O(1) recurrence)."""

    def __init__(self, model: CharRNN, state: State) -> None:
        self.model, self.state = model, state

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        logits, self.state = self.model(tokens.unsqueeze(1), self.state)
        return logits[:, -1]


CELL_STEP_MAX_STREAMS = 16  # beyond this, oneDNN's one-step layer beats separate cell calls on CPU


def stepper(model: CharRNN, state: State, num_streams: int) -> Stepper | ForwardStepper:
    """The fastest exact one-character step for this model and batch (measured: bench/sampling.py)."""
    cpu = model.embed.weight.device.type == "cpu"
    if model.config.cell in FUSED_CELLS and cpu and num_streams < CELL_STEP_MAX_STREAMS:
        return Stepper(model, state)
    return ForwardStepper(model, state)


class Stepper:
    """``step(tokens)`` advances N streams by one character and returns the next-character logits,
    with one fused ATen cell call per layer (torch.lstm_cell / gru_cell / rnn_tanh_cell) on weights
    gathered once, instead of a full recurrent-layer call per character."""

    def __init__(self, model: CharRNN, state: State) -> None:
        rnn, L = model.rnn, model.config.num_layers
        self.cell = {"rnn": torch.rnn_tanh_cell, "gru": torch.gru_cell, "lstm": torch.lstm_cell}[model.config.cell]
        self.lstm = model.config.cell == "lstm"
        self.weights = [tuple(getattr(rnn, f"{name}_l{i}").detach() for name in ("weight_ih", "weight_hh",
                                                                                  "bias_ih", "bias_hh"))
                        for i in range(L)]
        self.embed = model.embed.weight.detach()
        self.logits = model.logits
        if self.lstm:
            self.h = [(state[0][i], state[1][i]) for i in range(L)]  # each ((N, H), (N, H))
        else:
            self.h = [state[i] for i in range(L)]  # each (N, H)

    @property
    def state(self) -> State:
        """The state after the steps so far, in the model's layout: (L, N, H), or (h, c) for an LSTM."""
        if self.lstm:
            return tuple(torch.stack(part) for part in zip(*self.h, strict=True))
        return torch.stack(self.h)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N,) int64 -> logits (N, V)."""
        x = F.embedding(tokens, self.embed)  # (N, E)
        for i, w in enumerate(self.weights):
            self.h[i] = self.cell(x, self.h[i], *w)
            x = self.h[i][0] if self.lstm else self.h[i]
        return self.logits(x)
