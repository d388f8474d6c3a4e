import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn import evaluate as ev
from charrnn.config import ModelConfig
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
