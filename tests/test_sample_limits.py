"""Sampling at the edges (issue 10): seeds, tiny temperatures, length 0, and memory bounded in N."""

import pytest
import torch

from charrnn import sample
from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.sample import Sampling, chunk_seed, generate, generate_chunks, noise_steps

PREFIX = torch.tensor([1, 2, 3])

# Captured from the implementation before issue 10 (prefix run per stream, 256-step noise blocks) with
# torch 2.13: one sample must stay byte-identical, so seeded README outputs do not change.
BEFORE_DEFAULT_1234 = (
    "836123031486652435648666722713325566531033748687483166638653750018256818140632514482848373850366608658030124"
    "805442166731376423255021061102004804530014485077726238761651638353704188183033730867018777082763838716232868"
    "214581671373634651207134072514156638527113556538708706177588351705173431746535082774"
)
BEFORE_T07_K5_99 = "386663638226833388321236183826163188188121683621383882613621"


@pytest.fixture
def model() -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=9, hidden_size=16, embedding_size=4))


def run(model: CharRNN, how: Sampling, seed: int = 0, n: int = 1, length: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack(list(generate(model, PREFIX, length, how, g, n)), dim=1)


def digits(row: torch.Tensor) -> str:
    return "".join(str(int(t)) for t in row)


def test_one_sample_is_unchanged(model: CharRNN):
    assert digits(run(model, Sampling(), 1234, length=300)[0]) == BEFORE_DEFAULT_1234
    assert digits(run(model, Sampling(temperature=0.7, top_k=5), 99, length=60)[0]) == BEFORE_T07_K5_99


@pytest.mark.parametrize("temperature", [1e-31, 1e-39, 1e-45, 1e-300, 5e-324])
def test_tiny_temperatures_are_greedy(model: CharRNN, temperature: float):
    greedy = run(model, Sampling(greedy=True))
    assert torch.equal(run(model, Sampling(temperature=temperature), 3), greedy)
    assert torch.equal(run(model, Sampling(temperature=temperature, top_p=0.5), 3), greedy)


def test_tiny_temperature_breaks_exact_ties_at_random():
    logits = torch.tensor([[1.0, 3.0, 3.0, -2.0]]).expand(1000, 4)
    g = torch.Generator().manual_seed(0)
    assert set(sample.next_token(logits, Sampling(temperature=1e-40), g).tolist()) == {1, 2}


@pytest.mark.parametrize("temperature", [float("inf"), float("nan")])
def test_non_finite_temperatures_are_refused(temperature: float):
    with pytest.raises(CharRNNError, match="temperature must be > 0"):
        Sampling(temperature=temperature)


def test_length_zero_yields_nothing_and_runs_nothing(model: CharRNN, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(model, "forward", lambda *a: pytest.fail("length 0 ran the model"))
    assert list(generate(model, PREFIX, 0, Sampling(), None, 2)) == []
    chunks = list(generate_chunks(model, PREFIX, 0, Sampling(), 5, 3))
    assert [c.shape for c in chunks] == [(3, 0)]


@pytest.mark.parametrize(("length", "n"), [(-1, 1), (5, 0)])
def test_bad_sizes_are_errors(model: CharRNN, length: int, n: int):
    with pytest.raises(CharRNNError, match="length must be|num_samples must be"):
        list(generate(model, PREFIX, length, Sampling(), None, n))


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5])
def test_bad_seeds_are_errors(model: CharRNN, seed):
    with pytest.raises(CharRNNError, match=r"seed must be a whole number from 0 to 2\*\*63 - 1"):
        next(generate_chunks(model, PREFIX, 5, Sampling(), seed, 1))


class Spy:
    """Counts the model's forward calls and the batch size of each."""

    def __init__(self, model: CharRNN) -> None:
        self.batches: list[tuple[int, int]] = []
        model.register_forward_pre_hook(lambda m, args: self.batches.append(tuple(args[0].shape)))


@pytest.mark.parametrize("cell", ["lstm", "gru", "mingru"])
@pytest.mark.parametrize("n", [3, 40])  # the fused cell step, and the model's own forward step
def test_the_prefix_runs_once_whatever_the_number_of_samples(cell: str, n: int):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=9, hidden_size=16, embedding_size=4, cell=cell))
    spy = Spy(model)
    prefix = torch.arange(500) % 9
    out = run_with(model, prefix, Sampling(greedy=True), n=n, length=6)
    assert spy.batches[0] == (1, 500)
    assert all(shape == (n, 1) for shape in spy.batches[1:])  # the rest are one-character steps
    # every stream continues the same state: greedy streams are all the single-stream text
    single = run_with(model, prefix, Sampling(greedy=True), n=1, length=6)
    assert torch.equal(out, single.expand(n, -1))


def run_with(model: CharRNN, prefix: torch.Tensor, how: Sampling, n: int, length: int) -> torch.Tensor:
    return torch.stack(list(generate(model, prefix, length, how, torch.Generator().manual_seed(0), n)), dim=1)


def test_noise_is_drawn_within_the_budget(model: CharRNN, monkeypatch: pytest.MonkeyPatch):
    shapes = []
    real = sample.gumbel

    def recording(shape, generator, device):
        shapes.append(shape)
        return real(shape, generator, device)

    monkeypatch.setattr(sample, "gumbel", recording)
    monkeypatch.setattr(sample, "NOISE_BUDGET", 9 * 100 * 4)  # 4 steps of 100 streams x 9 characters
    run(model, Sampling(), n=100, length=10)
    assert [s[0] for s in shapes] == [4, 4, 2] and all(s[1:] == (100, 9) for s in shapes)
    shapes.clear()
    run(model, Sampling(), n=1000, length=3)  # wider than the budget: one step at a time
    assert shapes == [(1, 1000, 9)] * 3
    assert noise_steps(1, 9) == sample.NOISE_BLOCK


def test_the_block_size_does_not_change_the_text_on_cpu(model: CharRNN, monkeypatch: pytest.MonkeyPatch):
    wide = run(model, Sampling(), 4, n=50, length=30)
    monkeypatch.setattr(sample, "NOISE_BUDGET", 1)
    assert torch.equal(run(model, Sampling(), 4, n=50, length=30), wide)


def test_chunks_bound_the_batch_and_are_reproducible(model: CharRNN):
    spy = Spy(model)
    chunks = list(generate_chunks(model, PREFIX, 7, Sampling(), 11, 10, chunk_size=4))
    assert [tuple(c.shape) for c in chunks] == [(4, 7), (4, 7), (2, 7)]
    assert spy.batches == [(1, 3)]  # one prefix pass for all chunks (the steps are fused cell calls)
    again = list(generate_chunks(model, PREFIX, 7, Sampling(), 11, 10, chunk_size=4))
    assert all(torch.equal(a, b) for a, b in zip(chunks, again, strict=True))
    # the first chunk is what one batch with the same seed gives; the others have their own seeds
    assert torch.equal(chunks[0], run(model, Sampling(), 11, n=4, length=7))
    assert torch.equal(chunks[1], run(model, Sampling(), chunk_seed(11, 1), n=4, length=7))
    assert len({chunk_seed(11, j) for j in range(100)}) == 100
