import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.model import CharRNN
from charrnn.step import ForwardStepper, Stepper, stepper


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize(("layers", "cutoffs"), [(1, ()), (3, ()), (2, (4, 7))])
def test_fast_step_equals_the_full_forward_pass(cell: str, layers: int, cutoffs: tuple[int, ...]):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, embedding_size=5, hidden_size=8, num_layers=layers,
                                cutoffs=cutoffs))
    if cutoffs:  # the adaptive head, with a shuffled frequency order
        model.head.rank.copy_(torch.randperm(11))
    model.eval()
    idx = torch.randint(11, (3, 12))  # 3 streams
    with torch.no_grad():
        want, _ = model(idx)
        _, state = model(idx[:, :4])
    stepper = Stepper(model, state)
    for t in range(4, 12):
        got = stepper.step(idx[:, t]).clone()
        torch.testing.assert_close(got, want[:, t], rtol=1e-5, atol=1e-5)


def test_stepper_does_not_touch_the_model_or_its_state():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=5, hidden_size=4, embedding_size=3)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        _, state = model(torch.tensor([[1, 2]]))
    h = state[0].clone()
    stepper = Stepper(model, state)
    stepper.step(torch.tensor([3]))
    assert torch.equal(state[0], h)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(("cell", "streams", "kind"), [("lstm", 3, Stepper), ("gru", 15, Stepper),
                                                       ("rnn", 16, ForwardStepper), ("mingru", 2, ForwardStepper),
                                                       ("minlstm", 2, ForwardStepper)])
def test_the_chosen_step_equals_the_full_forward_pass(cell: str, streams: int, kind: type):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, embedding_size=5, hidden_size=8, num_layers=2)).eval()
    idx = torch.randint(11, (streams, 10))
    with torch.no_grad():
        want, _ = model(idx)
        _, state = model(idx[:, :4])
    step = stepper(model, state, streams)
    assert type(step) is kind  # the cell kernels pay off on CPU for few streams (bench/sampling.py)
    for t in range(4, 10):
        torch.testing.assert_close(step.step(idx[:, t]).clone(), want[:, t], rtol=1e-5, atol=1e-5)
