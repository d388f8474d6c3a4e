import pytest
import torch

from charrnn import sample
from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.sample import NOISE_BLOCK, Sampling, chunk_seed, generate, generate_chunks, next_token, noise_steps


@pytest.fixture
def model() -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=9, hidden_size=16, embedding_size=4))


def run(model: CharRNN, how: Sampling, seed: int = 0, n: int = 1, length: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack(list(generate(model, torch.tensor([1, 2, 3]), length, how, g, n)), dim=1)


def test_a_long_prefix_runs_in_pieces_to_the_same_state(model: CharRNN, monkeypatch: pytest.MonkeyPatch):
    """A book as the prefix: its logits are kept for one piece at a time, and the text and state come out the same."""
    prefix = torch.randint(9, (50,), generator=torch.Generator().manual_seed(1))
    whole = sample.warm_up(model, prefix)
    monkeypatch.setattr(sample, "PREFIX_CHUNK", 7)
    shapes, forward = [], CharRNN.forward

    def recorded(self: CharRNN, idx: torch.Tensor, *args: object) -> object:
        shapes.append(idx.shape)
        return forward(self, idx, *args)

    monkeypatch.setattr(CharRNN, "forward", recorded)
    pieces = sample.warm_up(model, prefix)
    assert max(shape[1] for shape in shapes) == 7 and len(shapes) == 8
    assert torch.allclose(whole[0], pieces[0], atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole[1], pieces[1], strict=True))


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


def test_a_uniform_draw_of_exactly_zero_never_picks_a_character_filtered_out(monkeypatch: pytest.MonkeyPatch):
    """torch.rand returns 0.0 about once in 2**24 draws (a long generation draws millions)."""
    zeros = lambda shape, **kwargs: torch.zeros(shape)  # noqa: E731
    monkeypatch.setattr(torch, "rand", zeros)
    logits = torch.tensor([[0.0, 1.0, 3.0, 2.0]])
    for how in (Sampling(top_k=1), Sampling(top_p=1e-6), Sampling(temperature=1e-9), Sampling()):
        assert next_token(logits, how, None).item() == 2


def test_batched_samples_are_independent(model: CharRNN):
    out = run(model, Sampling(), n=4)
    assert out.shape == (4, 40)
    assert len({tuple(r.tolist()) for r in out}) > 1


@pytest.mark.parametrize("bad", [{"temperature": 0.0}, {"temperature": -1.0}, {"top_k": 0}, {"top_p": 0.0},
                                 {"top_p": 1.5}])
def test_bad_settings(bad: dict):
    with pytest.raises(CharRNNError, match=next(iter(bad))):
        Sampling(**bad)


# --- frequencies against the exact distribution -------------------------------------------------------------

SIGMAS = 5.0  # per-cell bound: a correct sampler fails one cell in ~2 million


def reference(logits: torch.Tensor, how: Sampling) -> torch.Tensor:
    """The distribution ``how`` asks for, per row of logits (N, V), in float64, written independently of
    sample.py: softmax at the temperature, then the k most likely, then the smallest most-likely prefix
    of what is left whose probability reaches top_p; the kept mass renormalised to 1."""
    p = (logits.double() / how.temperature).softmax(dim=-1)
    out = torch.zeros_like(p)
    for r, row in enumerate(p):
        order = sorted(range(len(row)), key=lambda j: -float(row[j]))
        kept = order[: how.top_k] if how.top_k is not None else order
        if how.top_p is not None:
            mass = sum(float(row[j]) for j in kept)
            total, prefix = 0.0, []
            for j in kept:
                prefix.append(j)
                total += float(row[j]) / mass
                assert abs(total - how.top_p) > 1e-4, "too close to the top_p boundary to test"
                if total >= how.top_p:
                    break
            kept = prefix
        out[r, kept] = row[kept] / row[kept].sum()
    return out


def assert_frequencies(counts: torch.Tensor, want: torch.Tensor) -> None:
    """counts (N, V) of draws from rows of ``want`` (N, V): excluded tokens never drawn, every other count
    within SIGMAS binomial standard deviations of its expectation (n draws per row)."""
    n = counts.sum(dim=-1, keepdim=True).double()
    expected = n * want
    sd = (n * want * (1 - want)).sqrt()
    assert (counts[want == 0] == 0).all(), "an excluded token was drawn"
    excess = ((counts - expected).abs() - SIGMAS * sd - 1) / sd.clamp(min=1e-12)
    assert (excess <= 0).all(), f"frequencies off the distribution:\n{counts}\nexpected\n{expected.round()}"


# Rows that differ from each other and are not sorted; no top-p boundary falls near a cumulative sum.
LOGITS = torch.tensor([[0.3, 2.1, -1.0, 1.2, 0.0, -0.4],
                       [1.5, -0.7, 0.4, 2.6, -2.0, 0.9],
                       [-0.2, 0.6, 1.9, -1.3, 1.1, 0.1]])
SETTINGS = [Sampling(temperature=0.5), Sampling(temperature=2.0), Sampling(temperature=0.7, top_k=3),
            Sampling(temperature=1.6, top_p=0.8), Sampling(temperature=0.8, top_k=4, top_p=0.75),
            Sampling(top_k=2), Sampling(top_p=0.6)]


@pytest.mark.parametrize("how", SETTINGS, ids=repr)
def test_next_token_frequencies_follow_the_distribution(how: Sampling):
    draws = 20_000
    g = torch.Generator().manual_seed(1)
    tokens = next_token(LOGITS.repeat_interleave(draws, dim=0), how, g).view(len(LOGITS), draws)
    counts = torch.stack([row.bincount(minlength=LOGITS.shape[1]) for row in tokens])
    assert_frequencies(counts, reference(LOGITS, how))


def markov_model(transitions: torch.Tensor, dropout: float = 0.0) -> CharRNN:
    """A hand-set RNN whose next-token logits are ``transitions[last token]`` (V, V) exactly (up to float
    rounding): one-hot embedding, no recurrence, tanh of a one-hot, a head that reads it back."""
    V = transitions.shape[0]
    model = CharRNN(ModelConfig(vocab_size=V, cell="rnn", embedding_size=V, hidden_size=V, num_layers=1,
                                dropout=dropout))
    scale = 3.0
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.weight.copy_(torch.eye(V))
        model.rnn.weight_ih_l0.copy_(scale * torch.eye(V))
        model.head.weight.copy_(transitions.T / torch.tanh(torch.tensor(scale)))
    return model


@pytest.mark.parametrize("how", SETTINGS[:5], ids=repr)
def test_generated_transitions_follow_the_distribution(how: Sampling):
    """generate draws its noise in blocks: every step of every stream must still be a fresh draw."""
    transitions = torch.cat([LOGITS, LOGITS.flip(1)[:3]])  # (6, 6): each row a different distribution
    model = markov_model(transitions)
    streams, length = 8, 3 * NOISE_BLOCK + 17
    g = torch.Generator().manual_seed(2)
    out = torch.stack(list(generate(model, torch.tensor([0]), length, how, g, streams)), dim=1)  # (N, L)
    seq = torch.cat([torch.zeros(streams, 1, dtype=torch.long), out], dim=1)
    counts = torch.zeros(6, 6, dtype=torch.long)
    counts.index_put_((seq[:, :-1].flatten(), seq[:, 1:].flatten()), torch.ones(seq[:, 1:].numel(),
                                                                                 dtype=torch.long), accumulate=True)
    assert_frequencies(counts, reference(transitions, how))


def kept_by_probe(logits: torch.Tensor, how: Sampling, check: bool = True) -> list[set[int]]:
    """Which tokens of each row ``next_token`` can choose, found exactly with pre-drawn noise: noise that
    cancels the tempered logits and favours token j picks j if and only if j was kept. With ``check``,
    also that an excluded j leaves the kept logits untouched (the best bonus among them wins)."""
    N, V = logits.shape
    kept: list[set[int]] = [set() for _ in range(N)]
    for j in range(V):
        favour = torch.linspace(0.0, 0.1, V).roll(j - V + 1)  # j gets the largest bonus
        noise = -(logits.float() / how.temperature) + favour
        chosen = next_token(logits, how, None, noise)
        for r in range(N):
            if int(chosen[r]) == j:
                kept[r].add(j)
            elif check:
                assert int(chosen[r]) == max(kept_by_reference(logits[r], how) - {j}, key=lambda i: favour[i])
    return kept


def kept_by_reference(row: torch.Tensor, how: Sampling) -> set[int]:
    return set(torch.nonzero(reference(row[None], how)[0]).flatten().tolist())


@pytest.mark.parametrize("how", SETTINGS, ids=repr)
def test_top_k_and_top_p_exclude_exactly_the_right_tokens(how: Sampling):
    assert kept_by_probe(LOGITS, how) == [kept_by_reference(row, how) for row in LOGITS]


def test_top_p_keeps_the_smallest_set_that_reaches_it():
    # four equal logits: probabilities are exactly 1/4, so two tokens reach 0.5 exactly
    logits = torch.zeros(1, 4)
    for how, size in [(Sampling(top_p=0.5), 2), (Sampling(top_p=0.51), 3), (Sampling(top_p=1.0), 4),
                      (Sampling(top_k=4), 4), (Sampling(top_k=5), 4)]:
        assert [len(k) for k in kept_by_probe(logits, how, check=False)] == [size]
    # top_p = 1 filters nothing, even where float32 cumulative sums reach 1 before the last token
    assert kept_by_probe(torch.tensor([[0.0, -40.0, -40.0]]), Sampling(top_p=1.0), check=False) == [{0, 1, 2}]


def test_greedy_takes_each_rows_argmax_whatever_the_temperature():
    want = LOGITS.argmax(dim=-1)
    assert want.unique().numel() == len(LOGITS)  # the rows really disagree
    for how in (Sampling(greedy=True), Sampling(greedy=True, temperature=0.3, top_k=1)):
        assert torch.equal(next_token(LOGITS, how, None), want)


def test_greedy_generation_follows_the_argmax_chain():
    """From the prefix's last position: each prefix token would start a different chain."""
    transitions = torch.cat([LOGITS, LOGITS.flip(1)[:3]])
    out = torch.stack(list(generate(markov_model(transitions), torch.tensor([1, 3, 4]), 12, Sampling(greedy=True),
                                    None, 2)), dim=1)
    assert transitions[[1, 3, 4]].argmax(dim=-1).unique().numel() == 3
    token, chain = 4, []
    for _ in range(12):
        token = int(transitions[token].argmax())
        chain.append(token)
    assert out.tolist() == [chain, chain]


def test_one_sample_by_default_and_dropout_off_while_generating():
    transitions = torch.cat([LOGITS, LOGITS.flip(1)[:3]])
    model = markov_model(transitions, dropout=0.5)  # dropout would zero the one active unit half the time
    want = [int(transitions[4].argmax())]
    for _ in range(7):
        want.append(int(transitions[want[-1]].argmax()))
    for seed in range(6):
        torch.manual_seed(seed)
        got = torch.stack(list(generate(model.train(), torch.tensor([2, 4]), 8, Sampling(greedy=True))), dim=1)
        assert got.tolist() == [want]  # (1, 8): one sample by default


# --- at the edges (issue 10): seeds, tiny temperatures, length 0, memory bounded in N ---------------------

PREFIX = torch.tensor([1, 2, 3])  # what run() continues

# Captured from the implementation before issue 10 (prefix run per stream, 256-step noise blocks) with
# torch 2.13: one sample must stay byte-identical, so seeded README outputs do not change.
BEFORE_DEFAULT_1234 = (
    "836123031486652435648666722713325566531033748687483166638653750018256818140632514482848373850366608658030124"
    "805442166731376423255021061102004804530014485077726238761651638353704188183033730867018777082763838716232868"
    "214581671373634651207134072514156638527113556538708706177588351705173431746535082774"
)
BEFORE_T07_K5_99 = "386663638226833388321236183826163188188121683621383882613621"


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
