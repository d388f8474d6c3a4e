"""The decoder's step: one character for R rows (streams) at once, computed so that each row's result depends on
that row alone: not on how many rows run beside it, nor on where it sits among them.

Why it needs care: a matrix product gives a row last-bit-different results depending on the batch's size (BLAS
picks kernels and summation orders by shape), and torch's vectorised sigmoid differs in the last bit from its
scalar code, which handles the tail of a tensor whose size is not a multiple of the SIMD width. A last-bit
difference can turn a near-tie into another character, so a request's text would depend on the load.
Hence rows run in groups of a fixed number of ``lanes``:

- every matrix product has the same shape whatever the load: a batched product over groups of ``lanes`` rows
  (CPU, rnn/gru/lstm), or one model call per group (the min* cells, and accelerators);
- ``lanes * hidden_size`` is a multiple of ALIGN, so elementwise functions over whole groups have no scalar
  tail, and the CPU step runs on one thread, so no tensor is split between threads at a load-dependent place.

A row may hold no stream (a free lane): it is computed like the others and its result ignored.
Shapes: R rows, G groups (R = G * lanes), L layers, H hidden, E embedding, V vocabulary.
"""

from __future__ import annotations

import math

import torch

from charrnn.devices import FUSED_CELLS
from charrnn.model import CharRNN, State

ALIGN = 32  # floats: the widest unrolled SIMD step of torch's CPU elementwise loops (2 × 16 with AVX-512)
CPU_LANES = 4  # a matrix product over 4 rows costs about what one row costs on a CPU: alone, a stream pays little
ACCELERATOR_LANES = 64  # on a GPU a group's step costs its kernel launches, whatever its rows


def lanes_for(model: CharRNN) -> int:
    """Rows per group for this model on its device: at least the device's default, and enough that a group's
    hidden numbers fill whole SIMD steps."""
    cpu = model.head.weight.device.type == "cpu"
    hidden = model.config.hidden_size
    return max(CPU_LANES if cpu else ACCELERATOR_LANES, ALIGN // math.gcd(hidden, ALIGN))


def _zeros_like_rows(state: State, rows: int) -> State:
    if isinstance(state, tuple):
        return tuple(_zeros_like_rows(s, rows) for s in state)
    return state.new_zeros(state.shape[0], rows, state.shape[2])


class LaneStep:
    """Holds the recurrent state of R rows and advances them all by one character: ``step(tokens) -> logits``."""

    def __init__(self, model: CharRNN, lanes: int | None = None) -> None:
        self.model = model.eval()
        self.lanes = lanes or lanes_for(model)
        cfg = model.config
        self.device = model.head.weight.device
        self.rows = 0
        lstm = cfg.cell == "lstm"
        empty = torch.zeros(cfg.num_layers, 0, cfg.hidden_size, device=self.device)
        self.state: State = (empty, empty.clone()) if lstm else empty  # (L, R, H), or (h, c) for an LSTM
        self.batched = cfg.cell in FUSED_CELLS and self.device.type == "cpu"
        if self.batched:
            self._gather_weights()

    def _gather_weights(self) -> None:
        """Transposed weights for x @ W; for rnn and lstm the input and hidden products are one product over
        [x, h], so a layer is one batched matrix product."""
        rnn, cell = self.model.rnn, self.model.config.cell
        self.layers = []
        for i in range(self.model.config.num_layers):
            w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{n}_l{i}").detach() for n in
                                      ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            if cell == "gru":
                self.layers.append((w_ih.t().contiguous(), w_hh.t().contiguous(), b_ih, b_hh))
            else:
                self.layers.append((torch.cat([w_ih, w_hh], 1).t().contiguous(), b_ih + b_hh))
        self.embed = self.model.embed.weight.detach()
        self.head = (self.model.head.weight.detach().t().contiguous(), self.model.head.bias.detach())

    def resize(self, rows: int) -> None:
        """Hold ``rows`` rows (rounded up to whole groups); rows kept keep their state, new rows start at zero."""
        rows = -(-rows // self.lanes) * self.lanes
        if rows > self.rows:
            extra = _zeros_like_rows(self.state, rows - self.rows)
            if isinstance(self.state, tuple):
                self.state = tuple(torch.cat([s, e], 1) for s, e in zip(self.state, extra, strict=True))
            else:
                self.state = torch.cat([self.state, extra], 1)
        elif rows < self.rows:
            if isinstance(self.state, tuple):
                self.state = tuple(s[:, :rows].contiguous() for s in self.state)
            else:
                self.state = self.state[:, :rows].contiguous()
        self.rows = rows

    def set_rows(self, rows: list[int], state: State) -> None:
        """Put a batch-1 state (L, 1, H) (what a prefix left) into each of ``rows``."""
        index = torch.tensor(rows, device=self.device)
        if isinstance(self.state, tuple):
            for s, new in zip(self.state, state, strict=True):
                s[:, index] = new.to(s.dtype)
        else:
            self.state[:, index] = state.to(self.state.dtype)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (R,) int64 -> next-character logits (R, V), advancing every row's state by one character."""
        if self.batched:
            return self._step_batched(tokens)
        return self._step_groups(tokens)

    def _bmm(self, bias: torch.Tensor, x: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
        """bias + x @ weight_t for x (R, K), as G products of exactly ``lanes`` rows each -> (R, N)."""
        groups = x.shape[0] // self.lanes
        out = torch.baddbmm(bias, x.view(groups, self.lanes, -1), weight_t.expand(groups, *weight_t.shape))
        return out.view(x.shape[0], -1)

    def _step_batched(self, tokens: torch.Tensor) -> torch.Tensor:
        cell, H = self.model.config.cell, self.model.config.hidden_size
        x = torch.nn.functional.embedding(tokens, self.embed)  # (R, E)
        for i, weights in enumerate(self.layers):
            if cell == "lstm":
                w, b = weights
                h, c = self.state[0][i], self.state[1][i]  # (R, H) each
                gates = self._bmm(b, torch.cat([x, h], 1), w)  # (R, 4H): input, forget, cell, output
                sig = torch.sigmoid(gates)
                c = sig[:, H:2 * H] * c + sig[:, :H] * torch.tanh(gates[:, 2 * H:3 * H])
                x = sig[:, 3 * H:] * torch.tanh(c)
                self.state[0][i].copy_(x)
                self.state[1][i].copy_(c)
            elif cell == "gru":
                w_ih, w_hh, b_ih, b_hh = weights
                h = self.state[i]
                gi, gh = self._bmm(b_ih, x, w_ih), self._bmm(b_hh, h, w_hh)  # (R, 3H): reset, update, new
                r = torch.sigmoid(gi[:, :H] + gh[:, :H])
                z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
                n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
                x = n + z * (h - n)
                self.state[i].copy_(x)
            else:
                w, b = weights
                x = torch.tanh(self._bmm(b, torch.cat([x, self.state[i]], 1), w))
                self.state[i].copy_(x)
        return self._bmm(self.head[1], x, self.head[0])  # (R, V)

    def _step_groups(self, tokens: torch.Tensor) -> torch.Tensor:
        """One model call per group of ``lanes`` rows: every call has the same shape."""
        out = []
        for start in range(0, self.rows, self.lanes):
            rows = slice(start, start + self.lanes)
            if isinstance(self.state, tuple):
                state = tuple(s[:, rows].contiguous() for s in self.state)
            else:
                state = self.state[:, rows].contiguous()
            logits, state = self.model(tokens[rows].unsqueeze(1), state)  # (lanes, 1, V)
            if isinstance(self.state, tuple):
                for s, new in zip(self.state, state, strict=True):
                    s[:, rows] = new
            else:
                self.state[:, rows] = state
            out.append(logits[:, -1])
        return torch.cat(out) if out else torch.zeros(0, self.model.config.vocab_size, device=self.device)
