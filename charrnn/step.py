"""One character at a time, fast: a recurrent step over weights prepared once for inference.

Sampling runs the network on a single character per stream per step, where the framework's per-call
overhead (not arithmetic) dominates. This step therefore works on cached, pre-transposed weights with
preallocated buffers, folds the embedding and the first layer's input projection and biases into one
lookup table, and orders the LSTM gates so that one sigmoid and one tanh cover them all. It computes
exactly what ``CharRNN.forward`` computes, one position at a time. Shapes: N streams, H hidden, V vocab.
"""

from __future__ import annotations

import torch

from charrnn.model import CharRNN, State


class ForwardStepper:
    """The general step: the model's own forward pass on one character (used for the min* cells,
    whose one-step forward already is the O(1) recurrence)."""

    def __init__(self, model: CharRNN, state: State, num_streams: int) -> None:
        self.model, self.state = model, state

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        logits, self.state = self.model(tokens.unsqueeze(1), self.state)
        return logits[:, -1]


def stepper(model: CharRNN, state: State, num_streams: int) -> Stepper | ForwardStepper:
    """The fastest exact one-character step for this model."""
    cls = ForwardStepper if model.config.cell not in ("rnn", "gru", "lstm") else Stepper
    return cls(model, state, num_streams)


class Stepper:
    """``step(tokens)`` advances N streams by one character and returns the next-character logits."""

    def __init__(self, model: CharRNN, state: State, num_streams: int) -> None:
        cfg = model.config
        self.cell, H, L = cfg.cell, cfg.hidden_size, cfg.num_layers
        rnn = model.rnn
        gates = {"rnn": 1, "gru": 3, "lstm": 4}[self.cell]
        # LSTM gates come as (i, f, g, o); reorder to (i, f, o, g): sigmoid over 3H, tanh over H.
        order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)]) \
            if self.cell == "lstm" else torch.arange(gates * H)
        with torch.no_grad():
            w_ih = [getattr(rnn, f"weight_ih_l{i}")[order] for i in range(L)]
            w_hh = [getattr(rnn, f"weight_hh_l{i}")[order] for i in range(L)]
            b_ih = [getattr(rnn, f"bias_ih_l{i}")[order] for i in range(L)]
            b_hh = [getattr(rnn, f"bias_hh_l{i}")[order] for i in range(L)]
            if self.cell == "gru":  # b_hn sits inside r * (...): it cannot merge with the input bias
                self.table = model.embed.weight @ w_ih[0].T + b_ih[0]  # (V, 3H)
                self.b_ih = [b.clone() for b in b_ih]
                self.b_hh = [b.clone() for b in b_hh]
            else:
                self.table = model.embed.weight @ w_ih[0].T + b_ih[0] + b_hh[0]  # (V, G*H)
                self.b_ih = [b_ih[i] + b_hh[i] for i in range(L)]
            self.w_ihT = [w.T.contiguous() for w in w_ih]
            self.w_hhT = [w.T.contiguous() for w in w_hh]
            self.head_wT = model.head.weight.T.contiguous()  # (H, V)
            self.head_b = model.head.bias.clone()
        h = state[0] if isinstance(state, tuple) else state
        self.h = [h[i].clone() for i in range(L)]  # each (N, H)
        self.c = [state[1][i].clone() for i in range(L)] if self.cell == "lstm" else []
        N, dev = num_streams, self.table.device
        self.g = [torch.empty(N, gates * H, device=dev) for _ in range(L)]
        self.gh = [torch.empty(N, gates * H, device=dev) for _ in range(L)] if self.cell == "gru" else []
        self.tmp = torch.empty(N, H, device=dev)
        self.logits = torch.empty(N, self.head_wT.shape[1], device=dev)
        self.H = H

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N,) int64 -> logits (N, V). The returned tensor is reused by the next call."""
        H = self.H
        x = None
        for i, (h, g) in enumerate(zip(self.h, self.g, strict=True)):
            if i == 0:
                torch.index_select(self.table, 0, tokens, out=g)
            else:
                torch.addmm(self.b_ih[i], x, self.w_ihT[i], out=g)
            if self.cell == "lstm":
                g.addmm_(h, self.w_hhT[i])
                torch.sigmoid(g[:, : 3 * H], out=g[:, : 3 * H])
                torch.tanh(g[:, 3 * H :], out=g[:, 3 * H :])
                c = self.c[i]
                c.mul_(g[:, H : 2 * H]).addcmul_(g[:, :H], g[:, 3 * H :])
                torch.tanh(c, out=self.tmp)
                torch.mul(g[:, 2 * H : 3 * H], self.tmp, out=h)
            elif self.cell == "gru":
                gh = self.gh[i]
                torch.addmm(self.b_hh[i], h, self.w_hhT[i], out=gh)
                rz = g[:, : 2 * H].add_(gh[:, : 2 * H]).sigmoid_()
                n = g[:, 2 * H :].addcmul_(rz[:, :H], gh[:, 2 * H :]).tanh_()
                h.sub_(n).mul_(rz[:, H:]).add_(n)  # h' = n + z * (h - n)
            else:
                g.addmm_(h, self.w_hhT[i]).tanh_()
                h.copy_(g)
            x = h
        return torch.addmm(self.head_b, x, self.head_wT, out=self.logits)
