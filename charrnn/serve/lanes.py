"""The decoder's step: one character for R rows (streams) at once, computed so that each row's result depends on
that row alone: not on how many rows run beside it, nor on where it sits among them.

Why it needs care: a matrix product can give a row last-bit-different results depending on the batch's size (BLAS
picks kernels and summation orders by shape: on x86, ``x @ W.T`` with torch's own weight layout gives a 256-wide
layer other last bits over 12 rows or more than over 4), and torch's vectorised sigmoid differs in the last bit
from its scalar code, which handles the tail of a tensor whose size is not a multiple of the SIMD width. A last-bit
difference can turn a near-tie into another character, so a request's text would depend on the load. Hence:

- rows come in whole groups of ``lanes`` (R is a multiple of it), and ``lanes * hidden_size`` is a multiple of
  ALIGN, so elementwise functions over whole rows have no scalar tail; the CPU step runs on one thread (the serve
  command sets it), so no tensor is split between threads at a place that depends on the load;
- the weights are stored transposed (``x @ W.T`` becomes a product with a contiguous matrix, which x86 BLAS computes
  row by row alike at every batch size), and ``probe`` checks once, for this model's weights and every batch size
  up to PROBED_ROWS, that one product over all rows gives each row, at every position, exactly what the row gets at
  the top of a product of ``lanes`` rows. If so all rows run in one call (PROBED_ROWS at a time); if not (another
  BLAS, a GPU) they run one group of ``lanes`` rows per call, every call of the same shape.

The step is the model's own, on a copy of it: the fused one-step ATen cells for rnn/gru/lstm (as step.py), the
model's forward pass for the min* cells, then its output layer (linear, or the adaptive head's log-probabilities).
A row may hold no stream (a free lane): it is computed and its result ignored.
Shapes: R rows, L layers, H hidden, V vocabulary.
"""

from __future__ import annotations

import copy
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
    cpu = model.embed.weight.device.type == "cpu"
    return max(CPU_LANES if cpu else ACCELERATOR_LANES, ALIGN // math.gcd(model.config.hidden_size, ALIGN))


class LaneStep:
    """Holds the recurrent state of R rows and advances them all by one character: ``step(tokens) -> logits``."""

    def __init__(self, model: CharRNN, lanes: int | None = None) -> None:
        self.lanes = lanes or lanes_for(model)
        # a copy of the model whose linear layers (output layer included) store their weights transposed
        self.model = copy.deepcopy(model).eval()
        for layer in self.model.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.data = _transposed(layer.weight.data)
        cfg = model.config
        self.device = model.embed.weight.device
        self.rows = 0
        empty = torch.zeros(cfg.num_layers, 0, cfg.hidden_size, device=self.device)
        self.state: State = (empty, empty.clone()) if cfg.cell == "lstm" else empty  # (L, R, H), or (h, c)
        self.cells = cfg.cell in FUSED_CELLS
        if self.cells:
            self._gather_weights()
        self.span = max(self.lanes, PROBED_ROWS // self.lanes * self.lanes)  # rows per call in one-call mode
        self.one_call = self.device.type == "cpu" and self.probe(self.span)

    def _gather_weights(self) -> None:
        """The cells' weights, each a transposed view of a contiguous transpose: the same numbers, laid out so that
        ``x @ W.T`` is a product with a contiguous matrix."""
        rnn, cfg = self.model.rnn, self.model.config
        self.cell = {"rnn": torch.rnn_tanh_cell, "gru": torch.gru_cell, "lstm": torch.lstm_cell}[cfg.cell]
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        self.weights = [tuple(_transposed(getattr(rnn, f"{n}_l{i}").detach()) for n in names)
                        for i in range(cfg.num_layers)]
        self.embed = self.model.embed.weight.detach()

    def _products(self) -> list[tuple[int, Callable[[torch.Tensor], torch.Tensor]]]:
        """Every matrix product the step makes: (input width K, x (r, K) -> result). Linear layers are checked on
        (r, K) and on (r, 1, K) inputs, the shapes the output layer and the min* cells' layers see."""
        linears = [m for m in self.model.modules() if isinstance(m, torch.nn.Linear)]
        products = [(m.in_features, m) for m in linears]
        products += [(m.in_features, lambda x, m=m: m(x.unsqueeze(1)).squeeze(1)) for m in linears]
        if self.cells:
            pairs = [(w[0], w[2]) for w in self.weights] + [(w[1], w[3]) for w in self.weights]
            products += [(w.shape[1], lambda x, w=w, b=b: F.linear(x, w, b)) for w, b in pairs]
        return products

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
        size = self.span if self.one_call else self.lanes
        out = [self._step_rows(tokens, slice(start, start + size)) for start in range(0, self.rows, size)]
        return torch.cat(out) if len(out) != 1 else out[0]

    def _step_rows(self, tokens: torch.Tensor, rows: slice) -> torch.Tensor:
        """Advance the rows ``rows`` by one character: (r, V) logits."""
        lstm = isinstance(self.state, tuple)
        if not self.cells:  # the model's own one-step forward pass
            state = tuple(s[:, rows] for s in self.state) if lstm else self.state[:, rows]
            logits, state = self.model(tokens[rows].unsqueeze(1), state)  # (r, 1, V)
            for s, new in zip(self._parts(), state if lstm else (state,), strict=True):
                s[:, rows] = new
            return logits[:, -1]
        x = F.embedding(tokens[rows], self.embed)  # (r, E)
        for i, w in enumerate(self.weights):
            if lstm:
                x, c = self.cell(x, (self.state[0][i, rows], self.state[1][i, rows]), *w)
                self.state[0][i, rows], self.state[1][i, rows] = x, c
            else:
                x = self.cell(x, self.state[i, rows], *w)
                self.state[i, rows] = x
        return self.model.logits(x)  # (r, V)


def _transposed(w: torch.Tensor) -> torch.Tensor:
    """The same matrix, stored transposed (a bias is left as it is)."""
    return w.t().contiguous().t() if w.dim() == 2 else w
