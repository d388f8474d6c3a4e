"""The training step's forward, backward and clipping, captured once as a CUDA graph and replayed.

A small recurrent model on a GPU spends longer launching kernels than running them: cuDNN's LSTM
launches several per time step and layer, forward and backward. A replay launches them all at once.
Replays need fixed shapes and fixed memory, so the inputs and the carried state are copied into
static tensors first, and the gradients live in the graph's memory pool, where the optimizer (run
eagerly after the replay, so that learning-rate changes need no recapture) finds them.
See https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from charrnn.model import CharRNN, State

Out = tuple[torch.Tensor, torch.Tensor, State]  # loss, gradient norm, new state
# (x, y, state) -> Out; it must set the gradients to None before backward
Compute = Callable[[torch.Tensor, torch.Tensor, State], Out]

WARMUP = 3  # eager runs before the capture (cuBLAS/cuDNN workspaces, autograd's buffers)


class GraphedStep:
    def __init__(self, compute: Compute, params: list[torch.nn.Parameter], x: torch.Tensor, y: torch.Tensor,
                 state: State) -> None:
        """Capture ``compute`` on inputs shaped like ``x``, ``y`` and ``state`` (a tensor, or a tuple for an LSTM)."""
        self.x, self.y = x.clone(), y.clone()
        self.tuple = isinstance(state, tuple)
        self.state = tuple(s.clone() for s in state) if self.tuple else (state.clone(),)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # the weights are not updated: the optimizer is not part of compute
            for _ in range(WARMUP):
                compute(self.x, self.y, self._static_state())
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = compute(self.x, self.y, self._static_state())
        self.params = params
        self.grads = [p.grad for p in params]  # allocated in the graph's pool, rewritten by each replay

    def _static_state(self) -> State:
        return self.state if self.tuple else self.state[0]

    def fits(self, x: torch.Tensor) -> bool:
        """Whether a batch shaped like ``x`` can be replayed (another shape runs eagerly)."""
        return x.shape == self.x.shape

    def __call__(self, x: torch.Tensor, y: torch.Tensor, state: State | None) -> Out:
        """Replay on new inputs; ``state`` None starts from zeros. The outputs are overwritten by the next
        replay: use them (or copy them) before calling again."""
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        if state is None:
            for static in self.state:
                static.zero_()
        else:
            for static, s in zip(self.state, state if self.tuple else (state,), strict=True):
                static.copy_(s)
        self.graph.replay()
        for p, g in zip(self.params, self.grads, strict=True):  # an eager step in between may have replaced them
            p.grad = g
        return self.out


def capture(compute: Compute, model: CharRNN, x: torch.Tensor, y: torch.Tensor) -> GraphedStep | None:
    """``compute`` captured for batches shaped like ``x``, or None (with a warning) if capturing fails:
    training then goes on eagerly."""
    cfg = model.config
    zeros = torch.zeros(cfg.num_layers, x.shape[0], cfg.hidden_size, device=x.device)
    state = (zeros, zeros.clone()) if cfg.cell == "lstm" else zeros
    try:
        return GraphedStep(compute, list(model.parameters()), x, y, state)
    except RuntimeError as e:
        warnings.warn(f"training without CUDA graphs: capturing the step failed ({e})", stacklevel=2)
        return None
