import copy

import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.minrnn import MinCell, MinRNN, scan_log
from charrnn.model import CharRNN


def test_scan_solves_the_linear_recurrence():
    torch.manual_seed(0)
    a, b, h0 = torch.rand(2, 9, 3), torch.rand(2, 9, 3), torch.rand(2, 3) + 0.1
    h, want = h0, []
    for t in range(9):
        h = a[:, t] * h + b[:, t]
        want.append(h)
    torch.testing.assert_close(scan_log(a.log(), b.log(), h0), torch.stack(want, 1))
    torch.testing.assert_close(scan_log(a.log(), b.log(), None)[:, 0], b[:, 0])


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
def test_parallel_and_sequential_forms_agree(kind: str):
    torch.manual_seed(0)
    cell = MinCell(kind, 6)
    x, h0 = torch.randn(3, 20, 6), torch.rand(3, 6) + 0.1
    for state in (None, h0):
        torch.testing.assert_close(cell(x, state), cell.sequential(x, state), rtol=1e-4, atol=1e-5)
    model = MinRNN(kind, 4, 6, 2, 0.0)
    xs = torch.randn(2, 15, 4)
    out, state = model(xs)
    out_seq, state_seq = model(xs, sequential=True)
    torch.testing.assert_close(out, out_seq, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state, state_seq, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
def test_the_scan_is_float32_under_autocast(kind: str):
    """bf16 autocast rounds the gates, not the scan: the states are those of the one-step recurrence in float32 from
    the same rounded gates (a scan in bf16 loses h by 10-30 % over 64 steps)."""
    torch.manual_seed(0)
    cell = MinCell(kind, 16)
    x = torch.randn(4, 64, 16)
    with torch.autocast("cpu", torch.bfloat16):
        rounded = cell.gates(x)
        h = cell(x, None)
    reference = copy.deepcopy(cell)
    reference.gates.forward = lambda _: rounded.float()
    torch.testing.assert_close(h.float(), reference.sequential(x, None), rtol=1e-3, atol=1e-5)
    assert h.dtype == torch.float32


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
def test_state_carries_across_calls_and_gradients_flow(kind: str):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=9, cell=kind, embedding_size=4, hidden_size=8, num_layers=2))
    idx = torch.randint(9, (2, 12))
    whole, _ = model(idx)
    first, state = model(idx[:, :5])
    steps = [first]
    for t in range(5, 12):  # one character at a time: the O(1) recurrence used when sampling
        out, state = model(idx[:, t : t + 1], state)
        steps.append(out)
    torch.testing.assert_close(whole, torch.cat(steps, 1), rtol=1e-4, atol=1e-5)
    whole.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
