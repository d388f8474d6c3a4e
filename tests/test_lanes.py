"""The decoder's step (serve/lanes.py): a row's result does not depend on how many rows run beside it or where it
sits among them, bit for bit, for every cell; and it is the model's own forward pass, to float rounding."""

import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.devices import FUSED_CELLS
from charrnn.model import CharRNN
from charrnn.sample import warm_up
from charrnn.serve.lanes import ALIGN, LaneStep, lanes_for

CELLS = ["lstm", "gru", "rnn", "mingru", "minlstm"]


def model(cell: str, hidden_size: int, cutoffs: tuple[int, ...] = ()) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=11, cell=cell, hidden_size=hidden_size, embedding_size=16,
                               cutoffs=cutoffs)).eval()


def stepper(net: CharRNN, one_call: bool) -> LaneStep:
    lanes = LaneStep(net)
    if one_call and not lanes.one_call:
        pytest.skip("the probe finds this BLAS's one product over all rows row-dependent: groups are used")
    lanes.one_call = one_call
    return lanes


def row_logits(lanes: LaneStep, rows: int, at: int, steps: int = 3) -> torch.Tensor:
    """Logits of one stream run at row ``at`` of ``rows``, the other rows holding another stream's state and reading
    other characters: (steps, V)."""
    _, mine = warm_up(lanes.model, torch.tensor([1, 2, 3, 4]))
    _, other = warm_up(lanes.model, torch.tensor([5, 6, 7]))
    lanes.resize(0)
    lanes.resize(rows)
    lanes.set_rows(list(range(lanes.rows)), other)
    lanes.set_rows([at], mine)
    tokens = torch.randint(0, 11, (lanes.rows,), generator=torch.Generator().manual_seed(rows))
    out = []
    for t in range(steps):
        tokens[at] = t
        out.append(lanes.step(tokens)[at].clone())
    return torch.stack(out)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("hidden_size", [64, 25])  # 25: a group of 4 rows would not fill whole SIMD steps
@pytest.mark.parametrize("one_call", [False, True], ids=["groups", "one call"])
def test_a_rows_result_is_the_same_whatever_the_other_rows(cell: str, hidden_size: int, one_call: bool):
    lanes = stepper(model(cell, hidden_size), one_call)
    alone = row_logits(lanes, 1, 0)
    more = [(300, 299)] if one_call and cell in FUSED_CELLS else []  # 300: more rows than one product takes
    for rows, at in [(2, 1), (3, 0), (7, 6), (9, 4), (40, 0), (40, 39), *more]:
        assert torch.equal(row_logits(lanes, rows, at), alone), (rows, at)


@pytest.mark.parametrize("cell", ["lstm", "mingru"])
@pytest.mark.parametrize("one_call", [False, True], ids=["groups", "one call"])
def test_the_adaptive_output_layer_too(cell: str, one_call: bool):
    lanes = stepper(model(cell, 64, cutoffs=(4, 8)), one_call)
    alone = row_logits(lanes, 1, 0)
    for rows, at in [(3, 0), (9, 4), (40, 39)]:
        assert torch.equal(row_logits(lanes, rows, at), alone), (rows, at)


def test_the_probe_refuses_products_whose_rows_depend_on_the_batch(monkeypatch: pytest.MonkeyPatch):
    net = model("lstm", 24)
    weight = torch.randn(8, 16)
    monkeypatch.setattr(LaneStep, "_products", lambda self: [(8, lambda x: x @ weight)])
    assert LaneStep(net).one_call
    monkeypatch.setattr(LaneStep, "_products", lambda self: [(8, lambda x: x @ weight + 1e-6 * len(x))])
    assert not LaneStep(net).one_call


def test_lanes_fill_whole_simd_steps():
    assert lanes_for(model("lstm", 64)) == 4
    for hidden in (24, 25, 30, 96):
        lanes = lanes_for(model("gru", hidden))
        assert lanes >= 4 and lanes * hidden % ALIGN == 0


@pytest.mark.parametrize("cell, cutoffs", [(cell, ()) for cell in CELLS] + [("gru", (4,))])
def test_the_step_is_the_models_forward_pass(cell: str, cutoffs: tuple[int, ...]):
    net = model(cell, 24, cutoffs)
    text = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9])
    with torch.no_grad():
        full, _ = net(text[None])  # (1, T, V)
    _, state = warm_up(net, text[:4])
    lanes = LaneStep(net)
    lanes.resize(3)
    lanes.set_rows([0, 1, 2], state)
    for t in range(4, len(text)):
        torch.testing.assert_close(lanes.step(text[t].repeat(lanes.rows))[1], full[0, t], atol=1e-5, rtol=1e-5)


def test_resizing_keeps_the_rows_kept():
    net = model("lstm", 24)
    _, state = warm_up(net, torch.tensor([3, 1, 4]))
    lanes = LaneStep(net)
    lanes.resize(2)
    lanes.set_rows([1], state)
    lanes.resize(9)
    assert lanes.rows == 12 and torch.equal(lanes.state[0][:, 1], state[0][:, 0])
    assert not lanes.state[0][:, 2:].any()
    lanes.resize(1)
    assert lanes.rows == 4 and torch.equal(lanes.state[1][:, 1], state[1][:, 0])
