"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): recurrent layers whose gates depend
only on the input, so a whole sequence is computed by a parallel prefix scan in log space (training),
while generation still advances one character in O(1) with the plain recurrence.

    minGRU:  z = σ(W_z x),  h̃ = g(W_h x),  h_t = (1 − z) ⊙ h_{t−1} + z ⊙ h̃
    minLSTM: f = σ(W_f x),  i = σ(W_i x),  h̃ = g(W_h x),  f' = f/(f+i), i' = i/(f+i),
             h_t = f' ⊙ h_{t−1} + i' ⊙ h̃
with g(a) = a + 1/2 for a ≥ 0 and σ(a) otherwise, which keeps h positive so that log h exists.
Each layer is a pre-norm residual block (x + W_o·cell(LN x)) followed by a residual MLP, as in the paper.
Shapes: B batch, T time, H hidden, L layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# all states (B, T, H) of h_t = a_t ⊙ h_{t−1} + b_t from a, b (B, T, H) and h_0 (B, H)
Recurrence = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def log_g(a: torch.Tensor) -> torch.Tensor:
    return torch.where(a >= 0, torch.log(F.relu(a) + 0.5), -F.softplus(-a))


def g(a: torch.Tensor) -> torch.Tensor:
    return torch.where(a >= 0, a + 0.5, torch.sigmoid(a))


def scan_log(log_a: torch.Tensor, log_b: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """h_t = a_t ⊙ h_{t−1} + b_t for all t at once, from log a and log b (B, T, H) and h0 (B, H) > 0.

    Heinsen's method: log h_t = A_t + logcumsumexp_{s≤t}(log b_s − A_s), with A_t = Σ_{s≤t} log a_s."""
    a_star = log_a.cumsum(dim=1)  # (B, T, H)
    values = log_b - a_star
    if h0 is not None:
        values = torch.cat([h0.log().unsqueeze(1), values], dim=1)
        return (a_star + torch.logcumsumexp(values, dim=1)[:, 1:]).exp()
    return (a_star + torch.logcumsumexp(values, dim=1)).exp()


def recurrence(a: torch.Tensor, b: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """h_t = a_t ⊙ h_{t−1} + b_t one step at a time. Written in the Python that TorchScript compiles, so that
    export.py can turn it into an ONNX loop over a sequence of any length."""
    out = []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, dim=1)


class MinCell(nn.Module):
    """One minGRU or minLSTM layer over (B, T, H) with a carried (B, H) state."""

    def __init__(self, kind: str, size: int) -> None:
        super().__init__()
        self.kind = kind
        self.gates = nn.Linear(size, size * (2 if kind == "mingru" else 3))

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log a, log b of h_t = a ⊙ h_{t−1} + b, in float32 whatever the gates' precision: under autocast the
        gates are bf16 or fp16, where the scan's running sum of log a (about −0.7 a step) would lose h by 10-30 % in
        64 steps (CPU autocast keeps softplus, cumsum and logcumsumexp in their input's precision)."""
        k = self.gates(x).float()
        if self.kind == "mingru":
            kz, kh = k.chunk(2, dim=-1)
            return -F.softplus(kz), -F.softplus(-kz) + log_g(kh)
        kf, ki, kh = k.chunk(3, dim=-1)
        diff = F.softplus(-kf) - F.softplus(-ki)
        return -F.softplus(diff), -F.softplus(-diff) + log_g(kh)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
        """All states (B, T, H): by the parallel scan, or by the recurrence for one step."""
        log_a, log_b = self.coefficients(x)
        if x.shape[1] == 1 and h0 is not None:
            return log_a.exp() * h0.unsqueeze(1) + log_b.exp()
        return scan_log(log_a, log_b, h0)

    def sequential(self, x: torch.Tensor, h0: torch.Tensor | None, recur: Recurrence = recurrence) -> torch.Tensor:
        """The same states, one step at a time: the reference the scan is tested against, and the form that
        is exported (with ``recur`` compiled)."""
        log_a, log_b = self.coefficients(x)
        h = torch.zeros_like(x[:, 0]) if h0 is None else h0
        return recur(log_a.exp(), log_b.exp(), h)


class MinBlock(nn.Module):
    def __init__(self, kind: str, size: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(size), nn.LayerNorm(size)
        self.cell = MinCell(kind, size)
        self.out = nn.Linear(size, size)
        self.mlp = nn.Sequential(nn.Linear(size, 2 * size), nn.GELU(), nn.Linear(2 * size, size))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None, sequential: bool | Recurrence = False):
        if sequential:
            h = self.cell.sequential(self.norm1(x), h0, recurrence if sequential is True else sequential)
        else:
            h = self.cell(self.norm1(x), h0)  # (B, T, H)
        x = x + self.drop(self.out(h))
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, h[:, -1]


class MinRNN(nn.Module):
    """A stack of minGRU/minLSTM blocks with the calling convention of torch.nn.LSTM (batch_first):
    ``forward(x (B, T, E), state (L, B, H) | None) -> (out (B, T, H), state (L, B, H))``. With ``sequential``
    (True, or a ``Recurrence`` to use) the states are computed one step at a time instead of by the scan."""

    def __init__(self, kind: str, input_size: int, hidden_size: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.Linear(input_size, hidden_size)
        self.blocks = nn.ModuleList(MinBlock(kind, hidden_size, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None, sequential: bool | Recurrence = False):
        x = self.proj(x)
        last = []
        for i, block in enumerate(self.blocks):
            x, h = block(x, None if state is None else state[i], sequential)
            last.append(h)
        return self.norm(x), torch.stack(last)
