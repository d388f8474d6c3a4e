import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.sample import Sampling, generate, next_token


@pytest.fixture
def model() -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=9, hidden_size=16, embedding_size=4))


def run(model: CharRNN, how: Sampling, seed: int = 0, n: int = 1, length: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack(list(generate(model, torch.tensor([1, 2, 3]), length, how, g, n)), dim=1)


def test_same_seed_same_text(model: CharRNN):
    assert torch.equal(run(model, Sampling(), 5), run(model, Sampling(), 5))
    assert not torch.equal(run(model, Sampling(), 5), run(model, Sampling(), 6))


def test_greedy_matches_a_full_forward_pass(model: CharRNN):
    out = run(model, Sampling(greedy=True))[0]
    seq = torch.tensor([1, 2, 3])
    with torch.no_grad():
        for token in out:
            logits, _ = model(seq[None])
            assert int(logits[0, -1].argmax()) == int(token)
            seq = torch.cat([seq, token[None]])


def test_top_k_one_and_tiny_top_p_are_greedy(model: CharRNN):
    greedy = run(model, Sampling(greedy=True))
    assert torch.equal(run(model, Sampling(top_k=1), 3), greedy)
    assert torch.equal(run(model, Sampling(top_p=1e-6), 4), greedy)


def test_top_k_and_top_p_restrict_the_choice():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(2000, 4)
    g = torch.Generator().manual_seed(0)
    assert set(next_token(logits, Sampling(top_k=2), g).tolist()) == {0, 1}
    assert set(next_token(logits, Sampling(top_p=0.7), g).tolist()) == {0, 1}
    assert set(next_token(logits, Sampling(top_p=0.85), g).tolist()) == {0, 1, 2}
    assert set(next_token(logits, Sampling(), g).tolist()) == {0, 1, 2, 3}


def test_batched_samples_are_independent(model: CharRNN):
    out = run(model, Sampling(), n=4)
    assert out.shape == (4, 40)
    assert len({tuple(r.tolist()) for r in out}) > 1


@pytest.mark.parametrize("bad", [{"temperature": 0.0}, {"temperature": -1.0}, {"top_k": 0}, {"top_p": 0.0},
                                 {"top_p": 1.5}])
def test_bad_settings(bad: dict):
    with pytest.raises(CharRNNError, match=next(iter(bad))):
        Sampling(**bad)
