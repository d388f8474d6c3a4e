import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn import evaluate as ev
from charrnn.config import ModelConfig
from charrnn.dist import World
from charrnn.model import CharRNN


def single_pass(model: CharRNN, tokens: np.ndarray) -> float:
    """Mean loss with one stream and the state carried through the whole text."""
    with torch.no_grad():
        x = torch.from_numpy(tokens[:-1].astype(np.int64))[None]
        y = torch.from_numpy(tokens[1:].astype(np.int64))
        logits, _ = model.eval()(x)
        return F.cross_entropy(logits[0], y).item()


@pytest.fixture
def model() -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=7, hidden_size=16, embedding_size=4))


def test_short_text_is_exactly_one_pass(model: CharRNN):
    tokens = np.random.default_rng(0).integers(0, 7, 500)
    score = ev.evaluate(model, tokens, torch.device("cpu"))
    assert score.chars == 499
    assert score.loss == pytest.approx(single_pass(model, tokens), rel=1e-5)


def test_long_text_counts_every_character_once(model: CharRNN, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ev, "MIN_STREAM_LEN", 100)
    monkeypatch.setattr(ev, "ACTIVATION_BUDGET", 9 * (7 + 4 * 16 * 2) * 50)  # chunks of 50, state carried
    tokens = np.random.default_rng(1).integers(0, 7, 1000)
    bounds, starts, width = ev._layout(len(tokens))
    assert len(starts) == 9 and (starts == np.maximum(bounds[:-1] - ev.CONTEXT, 0)).all()
    pos, counted = ev._window(bounds[:-1], bounds[1:], starts, 0, width, len(tokens))
    assert sorted(pos[counted].tolist()) == list(range(999))
    score = ev.evaluate(model, tokens, torch.device("cpu"))
    assert score.chars == 999
    # an untrained model has short memory: the context window makes the cut invisible
    assert score.loss == pytest.approx(single_pass(model, tokens), rel=1e-4)


def test_derived_metrics():
    s = ev.Score(loss=1.5, chars=10)
    assert s.perplexity == pytest.approx(math.exp(1.5))
    assert s.bpc == pytest.approx(1.5 / math.log(2))
    assert ev.Score(loss=0.0, chars=1).perplexity == 1.0
    assert s.to_dict() == {"loss": 1.5, "bpc": s.bpc, "perplexity": s.perplexity, "chars": 10}
    assert ev.Score(loss=1e6, chars=1).perplexity == math.exp(700.0)  # a diverged loss prints, never raises


def test_too_short_texts(model: CharRNN):
    for n in (0, 1):
        score = ev.evaluate(model, np.zeros(n, dtype=np.int64), torch.device("cpu"))
        assert score.chars == 0 and math.isnan(score.loss)
    tokens = np.array([3, 5])
    score = ev.evaluate(model, tokens, torch.device("cpu"))
    assert score.chars == 1 and score.loss == pytest.approx(single_pass(model, tokens), rel=1e-6)


def test_dropout_is_off_while_evaluating_and_the_mode_restored(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ev, "ACTIVATION_BUDGET", 1)  # below one column: one column at a time
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=7, hidden_size=16, embedding_size=4, num_layers=2, dropout=0.5))
    tokens = np.random.default_rng(0).integers(0, 7, 60)
    want = single_pass(model.eval(), tokens)
    model.train()
    assert ev.evaluate(model, tokens, torch.device("cpu")).loss == pytest.approx(want, rel=1e-6)
    assert model.training
    ev.evaluate(model.eval(), tokens, torch.device("cpu"))
    assert not model.training


def test_the_sum_is_kept_in_float64(monkeypatch: pytest.MonkeyPatch):
    """Many small losses after a large total: a float32 sum would drop them (one column per chunk here)."""
    model = latch(confidence=4.6)  # loss ~9.2 per c after y, ~1e-4 per c after x
    tokens = np.array([1] + [2] * 1000 + [0] + [2] * 1000)
    monkeypatch.setattr(ev, "ACTIVATION_BUDGET", 1)
    assert ev.evaluate(model, tokens, torch.device("cpu")).loss == pytest.approx(naive_loss(model, tokens), rel=1e-6)


def test_workers_split_the_streams_and_sum(monkeypatch: pytest.MonkeyPatch):
    """Two data-parallel workers, simulated in turn: each scores its own streams; the sum is the whole."""
    monkeypatch.setattr(ev, "MIN_STREAM_LEN", 100)
    model = counter()
    tokens = np.concatenate([[0] + [1] * (k % 11 + 2) for k in range(200)])[:1000]
    solo = ev.evaluate(model, tokens, torch.device("cpu"))
    totals = []
    monkeypatch.setattr(ev, "all_sum_", lambda world, total: totals.append(total.item()))
    for rank in (0, 1):
        ev.evaluate(model, tokens, torch.device("cpu"), World(rank=rank, world_size=2))
    assert totals[0] != pytest.approx(totals[1])
    assert (totals[0] + totals[1]) / (len(tokens) - 1) == pytest.approx(solo.loss, rel=1e-6)

    def other_rank_adds(world: World, total: torch.Tensor) -> None:
        total += totals[1]

    monkeypatch.setattr(ev, "all_sum_", other_rank_adds)
    assert ev.evaluate(model, tokens, torch.device("cpu"), World(rank=0, world_size=2)).loss == \
        pytest.approx(solo.loss, rel=1e-6)


# --- exactness against a model with real memory ----------------------------------------------------------------

def naive_loss(model: CharRNN, tokens: np.ndarray) -> float:
    """Mean cross-entropy from one character at a time, the state carried through the whole text, in float64."""
    total, state = 0.0, None
    with torch.no_grad():
        for a, b in zip(tokens[:-1], tokens[1:], strict=True):
            logits, state = model.eval()(torch.tensor([[int(a)]]), state)
            total -= logits[0, -1].double().log_softmax(-1)[int(b)].item()
    return total / (len(tokens) - 1)


def hand_set(vocab: int, hidden: int, w_ih: torch.Tensor, w_hh: torch.Tensor, head_w: torch.Tensor,
             head_b: torch.Tensor) -> CharRNN:
    """A one-layer tanh RNN with one-hot embeddings and the given weights (no biases in the core)."""
    model = CharRNN(ModelConfig(vocab_size=vocab, cell="rnn", embedding_size=vocab, hidden_size=hidden,
                                num_layers=1))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.weight.copy_(torch.eye(vocab))
        model.rnn.weight_ih_l0.copy_(w_ih)
        model.rnn.weight_hh_l0.copy_(w_hh)
        model.head.weight.copy_(head_w)
        model.head.bias.copy_(head_b)
    return model.eval()


def latch(confidence: float = 4.0) -> CharRNN:
    """Tokens x y c d. One saturated unit remembers forever whether it last saw x (+1) or y (-1) and predicts
    c after x, d after y; from a zero state it stays at 0 and cannot tell."""
    w_ih = torch.tensor([[30.0, -30.0, 0.0, 0.0]])
    head_w = torch.tensor([[0.0], [0.0], [confidence], [-confidence]])
    return hand_set(4, 1, w_ih, torch.tensor([[10.0]]), head_w, torch.tensor([-10.0, -10.0, 0.0, 0.0]))


COUNT = 16


def counter() -> CharRNN:
    """Tokens a b. A saturated shift register of COUNT units counts the b's since the last a (an a resets it
    exactly, so no memory reaches further back than one gap) and predicts the next a from the count."""
    w_ih = torch.zeros(COUNT, 2)
    w_ih[:, 0] = -30.0
    w_ih[0, 0], w_ih[0, 1] = 30.0, -30.0
    w_hh = 10.0 * torch.diag(torch.ones(COUNT - 1), -1)  # unit k copies unit k-1
    c = torch.linspace(-3.0, 3.0, COUNT)  # logit of "a comes next" after k b's
    head_w = torch.stack([c / 2, torch.zeros(COUNT)])
    return hand_set(2, COUNT, w_ih, w_hh, head_w, torch.tensor([float(c.sum()) / 2, 0.0]))


def chunk_budget(model: CharRNN, streams: int, columns: int) -> int:
    cfg = model.config
    return columns * streams * (cfg.vocab_size + 4 * cfg.hidden_size * cfg.num_layers)


def test_one_stream_carries_the_state_across_chunks(monkeypatch: pytest.MonkeyPatch):
    model = latch()
    tokens = np.array([0] + [2] * 150 + [1] + [3] * 150)  # x c c c ... y d d d ...
    monkeypatch.setattr(ev, "ACTIVATION_BUDGET", chunk_budget(model, 1, 7))  # 43 chunks of 7 columns
    assert len(ev._layout(len(tokens))[1]) == 1
    score = ev.evaluate(model, tokens, torch.device("cpu"))
    want = naive_loss(model, tokens)
    assert want < 0.1  # the model knows the text once it has seen its first character...
    assert score.loss == pytest.approx(want, rel=1e-6)  # ...and evaluation never made it forget


def test_streams_and_chunks_equal_one_pass_when_memory_fits_the_context(monkeypatch: pytest.MonkeyPatch):
    model = counter()
    rng = np.random.default_rng(3)
    tokens = np.concatenate([[0] + [1] * int(k) for k in rng.integers(2, COUNT - 1, 120)])[:1000]
    monkeypatch.setattr(ev, "MIN_STREAM_LEN", 100)
    monkeypatch.setattr(ev, "CONTEXT", 2 * COUNT)  # longer than any gap between a's
    monkeypatch.setattr(ev, "ACTIVATION_BUDGET", chunk_budget(model, 9, 5))
    assert len(ev._layout(len(tokens))[1]) == 9
    score = ev.evaluate(model, tokens, torch.device("cpu"))
    assert score.chars == len(tokens) - 1
    assert score.loss == pytest.approx(naive_loss(model, tokens), rel=1e-6)


def test_a_worker_without_streams_adds_nothing(model: CharRNN, monkeypatch: pytest.MonkeyPatch):
    totals = []
    monkeypatch.setattr(ev, "all_sum_", lambda world, total: totals.append(total.item()))
    tokens = np.random.default_rng(0).integers(0, 7, 50)  # one stream: worker 1 of 2 has none
    ev.evaluate(model, tokens, torch.device("cpu"), World(rank=1, world_size=2))
    assert totals == [0.0]


def test_progress_reports_every_chunk_and_stop_interrupts(model: CharRNN, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ev, "MIN_STREAM_LEN", 100)
    monkeypatch.setattr(ev, "ACTIVATION_BUDGET", 9 * (7 + 4 * 16 * 2) * 50)  # 9 streams, chunks of 50 columns
    tokens = np.random.default_rng(1).integers(0, 7, 1000)
    heard: list[tuple[int, int]] = []
    score = ev.evaluate(model, tokens, torch.device("cpu"), progress=lambda done, total: heard.append((done, total)))
    assert len(heard) > 2 and heard[0] == (0, 999) and heard[-1] == (999, 999) == (score.chars, score.chars)
    assert [d for d, _ in heard] == sorted(d for d, _ in heard)
    heard.clear()
    with pytest.raises(ev.Stopped):  # asked to stop after two chunks: no score, the model back in its mode
        ev.evaluate(model.train(), tokens, torch.device("cpu"), progress=lambda d, t: heard.append((d, t)),
                    stop=lambda: len(heard) >= 3)
    assert len(heard) == 3 and model.training
