"""The decoder's step: one character for R rows (streams) at once, computed so that each row's result depends on
that row alone: not on how many rows run beside it, nor on where it sits among them.

Why it needs care: a matrix product can give a row last-bit-different results depending on the batch's size (BLAS
picks kernels and summation orders by shape: on x86, ``F.linear`` over 12 rows or more of a 256-wide model gives
other bits than over 4), and torch's vectorised sigmoid differs in the last bit from its scalar code, which handles
the tail of a tensor whose size is not a multiple of the SIMD width. A last-bit difference can turn a near-tie
into another character, so a request's text would depend on the load. Hence:

- rows come in whole groups of ``lanes`` (R is a multiple of it), and ``lanes * hidden_size`` is a multiple of
  ALIGN, so elementwise functions over whole rows have no scalar tail; the CPU step runs on one thread (the serve
  command sets it), so no tensor is split between threads at a place that depends on the load;
- every matrix product is either one product over all rows (up to PROBED_ROWS at a time), when ``probe`` has
  found (once, for this model's weights and every such batch size) that it gives each row, at every position,
  exactly what the row gets at the top of a product of ``lanes`` rows; or else a batched product of groups of
  ``lanes`` rows, every group of the same shape. On the CPU the rnn/gru/lstm step multiplies by weights stored
  transposed (x @ Wᵀ as a product with a contiguous Wᵀ), which x86 BLAS computes row-independently at every batch
  size; on a GPU the groups run one call each.

The step computes what ``CharRNN.forward`` computes (to float rounding): for rnn/gru/lstm the cell equations on
the layers' weights, for the min* cells the model's own forward pass. A row may hold no stream (a free lane): it is
computed and its result ignored. Shapes: R rows, L layers, E embedding, H hidden, V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from charrnn.devices import FUSED_CELLS
from charrnn.model import CharRNN, State

ALIGN = 32  # floats: the widest unrolled SIMD step of torch's CPU elementwise loops (2 × 16 with AVX-512)
CPU_LANES = 4  # a product over 4 rows costs about what one row costs on a CPU: a stream alone pays little
ACCELERATOR_LANES = 64  # on a GPU a group's step costs its kernel launches, whatever its rows
PROBED_ROWS = 256  # one product takes at most this many rows (more run as several): the probe checks up to here



def lanes_for(model: CharRNN) -> int:
    """Rows per group for this model on its device: at least the device's default, and enough that a group's
    hidden numbers fill whole SIMD steps."""
    cpu = model.head.weight.device.type == "cpu"
    return max(CPU_LANES if cpu else ACCELERATOR_LANES, ALIGN // math.gcd(model.config.hidden_size, ALIGN))


class LaneStep:
    """Holds the recurrent state of R rows and advances them all by one character: ``step(tokens) -> logits``."""

    def __init__(self, model: CharRNN, lanes: int | None = None) -> None:
        self.model = model.eval()
        self.lanes = lanes or lanes_for(model)
        cfg = model.config
        self.device = model.head.weight.device
        self.rows = 0
        empty = torch.zeros(cfg.num_layers, 0, cfg.hidden_size, device=self.device)
        self.state: State = (empty, empty.clone()) if cfg.cell == "lstm" else empty  # (L, R, H), or (h, c)
        self.cells = cfg.cell in FUSED_CELLS and self.device.type == "cpu"
        if self.cells:
            self._gather_weights()
        self.span = max(self.lanes, PROBED_ROWS // self.lanes * self.lanes)  # rows per product in one-call mode
        self.one_call = self.device.type == "cpu" and self.probe(self.span)

    def _gather_weights(self) -> None:
        """Transposed weights, for x @ Wᵀ; rnn and lstm layers multiply [x, h] by one matrix, gru keeps the input
        and hidden products apart (its new gate scales the hidden product by the reset gate)."""
        rnn, cell = self.model.rnn, self.model.config.cell
        self.layers = []
        for i in range(self.model.config.num_layers):
            w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{n}_l{i}").detach() for n in
                                      ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            if cell == "gru":
                self.layers.append((w_ih.t().contiguous(), b_ih, w_hh.t().contiguous(), b_hh))
            else:
                self.layers.append((torch.cat([w_ih, w_hh], 1).t().contiguous(), b_ih + b_hh))
        self.embed = self.model.embed.weight.detach()
        self.head = (self.model.head.weight.detach().t().contiguous(), self.model.head.bias.detach())

    def _products(self) -> list[tuple[int, Callable[[torch.Tensor], torch.Tensor]]]:
        """Every matrix product the step makes: (input width K, x (r, K) -> result)."""
        if self.cells:
            pairs = [pair for layer in self.layers for pair in zip(layer[::2], layer[1::2], strict=True)]
            return [(w.shape[0], lambda x, w=w, b=b: torch.addmm(b, x, w)) for w, b in [*pairs, self.head]]
        return [(m.in_features, lambda x, m=m: m(x.unsqueeze(1)).squeeze(1))  # (r, 1, K): one step of the min* cells
                for m in self.model.modules() if isinstance(m, torch.nn.Linear)]

    @torch.inference_mode()
    def probe(self, max_rows: int) -> bool:
        """Whether one product over R rows (R a multiple of ``lanes``, up to ``max_rows``) gives every row exactly
        what it gets at the top of a product of ``lanes`` rows, for every product the step makes."""
        generator = torch.Generator().manual_seed(0)
        for width, product in self._products():
            x = torch.randn(max_rows, width, generator=generator)  # (R, K)
            block, alone = torch.zeros(self.lanes, width), []
            for row in x:
                block[0] = row
                alone.append(product(block)[0])
            alone = torch.stack(alone)
            for rows in range(self.lanes, max_rows + 1, self.lanes):
                if not torch.equal(product(x[:rows]), alone[:rows]):
                    return False
        return True

    def resize(self, rows: int) -> None:
        """Hold ``rows`` rows (rounded up to whole groups); rows kept keep their state, new rows start at zero."""
        rows = -(-rows // self.lanes) * self.lanes

        def fit(s: torch.Tensor) -> torch.Tensor:
            if rows > self.rows:
                return torch.cat([s, s.new_zeros(s.shape[0], rows - self.rows, s.shape[2])], 1)
            return s[:, :rows].contiguous()

        if rows != self.rows:
            self.state = tuple(fit(s) for s in self.state) if isinstance(self.state, tuple) else fit(self.state)
            self.rows = rows

    def _parts(self) -> tuple[torch.Tensor, ...]:
        return self.state if isinstance(self.state, tuple) else (self.state,)

    def set_rows(self, rows: list[int], state: State) -> None:
        """Put a batch-1 state (L, 1, H) (what a prefix left) into each of ``rows``."""
        index = torch.tensor(rows, device=self.device)
        for s, new in zip(self._parts(), state if isinstance(state, tuple) else (state,), strict=True):
            s[:, index] = new.to(s.dtype)

    def move(self, src: int, dst: int) -> None:
        """Copy row ``src``'s state to row ``dst``."""
        for s in self._parts():
            s[:, dst] = s[:, src]

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (R,) int64 -> next-character logits (R, V), advancing every row's state by one character."""
        if self.cells:
            return self._cells(tokens)
        size = self.span if self.one_call else self.lanes
        out = []
        for start in range(0, self.rows, size):  # the model's own one-step forward pass, per group
            rows = slice(start, start + size)
            logits, state = self.model(tokens[rows].unsqueeze(1), tuple(s[:, rows] for s in self._parts())
                                       if isinstance(self.state, tuple) else self.state[:, rows])  # (r, 1, V)
            for s, new in zip(self._parts(), state if isinstance(state, tuple) else (state,), strict=True):
                s[:, rows] = new
            out.append(logits[:, -1])
        return torch.cat(out) if len(out) != 1 else out[0]

    def _product(self, bias: torch.Tensor, x: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
        """bias + x @ weight_t for x (R, K): one product (per ``span`` rows), or products of exactly ``lanes`` rows
        each -> (R, N)."""
        if self.one_call:
            if len(x) <= self.span:
                return torch.addmm(bias, x, weight_t)
            return torch.cat([torch.addmm(bias, part, weight_t) for part in x.split(self.span)])
        groups = x.shape[0] // self.lanes
        out = torch.baddbmm(bias, x.view(groups, self.lanes, -1), weight_t.expand(groups, *weight_t.shape))
        return out.view(x.shape[0], -1)

    def _cells(self, tokens: torch.Tensor) -> torch.Tensor:
        """The rnn/gru/lstm equations of torch.nn, for every row at once."""
        cell, H = self.model.config.cell, self.model.config.hidden_size
        x = F.embedding(tokens, self.embed)  # (R, E)
        for i, weights in enumerate(self.layers):
            if cell == "lstm":
                w, b = weights
                h, c = self.state[0][i], self.state[1][i]  # (R, H) each
                gates = self._product(b, torch.cat([x, h], 1), w)  # (R, 4H): input, forget, cell, output
                sig = torch.sigmoid(gates)
                c = sig[:, H:2 * H] * c + sig[:, :H] * torch.tanh(gates[:, 2 * H:3 * H])
                x = sig[:, 3 * H:] * torch.tanh(c)
                self.state[0][i], self.state[1][i] = x, c
            elif cell == "gru":
                w_ih, b_ih, w_hh, b_hh = weights
                h = self.state[i]
                gi, gh = self._product(b_ih, x, w_ih), self._product(b_hh, h, w_hh)  # (R, 3H): reset, update, new
                r = torch.sigmoid(gi[:, :H] + gh[:, :H])
                z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
                n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
                x = n + z * (h - n)
                self.state[i] = x
            else:
                w, b = weights
                x = torch.tanh(self._product(b, torch.cat([x, self.state[i]], 1), w))
                self.state[i] = x
        return self._product(self.head[1], x, self.head[0])  # (R, V)
