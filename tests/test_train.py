import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from charrnn.corpus import load_corpus
from charrnn.errors import CharRNNError
from charrnn.train import Event, lr_factor
from tests.helpers import make_trainer


def test_schedule_warms_up_then_decays():
    assert lr_factor(0, 0.0, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 0.0, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(50, 0.5, 10, 0.1) == pytest.approx(0.55)
    assert lr_factor(99, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(0, 0.0, 0, 0.0) == 1.0


def test_loss_falls_and_events_arrive(corpus, tiny):
    events: list[Event] = []
    saves = []
    trainer = make_trainer(corpus, replace(tiny, steps=60),
                           callback=events.append, save=lambda t, s: saves.append((t.step, s.loss)))
    summary = trainer.fit()
    train = [e for e in events if e.split == "train"]
    val = [e for e in events if e.split == "val"]
    assert [e.step for e in train] == list(range(5, 61, 5))
    assert [e.step for e in val] == [10, 20, 30, 40, 50, 60]
    assert [s for s, _ in saves] == [10, 20, 30, 40, 50, 60]
    assert val[-1].loss < val[0].loss < math.log(len(load_corpus(corpus).vocab)) + 0.5
    assert summary.final.loss == pytest.approx(val[-1].loss)
    assert summary.best_loss == min(e.loss for e in val)


@pytest.mark.parametrize("batching", ["sequential", "random"])
def test_same_seed_same_losses(corpus, tiny, batching):
    cfg = replace(tiny, batching=batching, dropout=0.1)
    runs = []
    for _ in range(2):
        events: list[Event] = []
        make_trainer(corpus, cfg, callback=events.append).fit()
        runs.append([e.loss for e in events])
    assert runs[0] == runs[1]


@pytest.mark.filterwarnings("ignore::UserWarning")  # optimizer.step is replaced by a probe
def test_gradients_are_clipped_by_global_norm(corpus, tiny):
    trainer = make_trainer(corpus, replace(tiny, clip=1e-3))
    seen = []
    params = list(trainer.model.parameters())
    trainer.optimizer.step = lambda: seen.append(torch.cat([p.grad.flatten() for p in params]).norm().item())
    _, norm = trainer.train_step(next(trainer.batches))
    assert norm > 1e-2  # the raw norm is reported...
    assert seen[0] == pytest.approx(1e-3, rel=1e-4)  # ...and the update sees min(1, clip/norm) * g


def test_sequential_state_is_carried_and_reset(corpus, tiny):
    trainer = make_trainer(corpus, tiny)
    trainer.train_step(next(trainer.batches))
    assert trainer.hidden is not None and not trainer.hidden[0].requires_grad
    carried = trainer.hidden[0].clone()
    trainer.batches.pos = 0  # next batch starts a new epoch: the state must start from zero
    captured = {}
    original = trainer.model.forward

    def spy(idx, state=None):
        captured["state"] = state
        return original(idx, state)

    trainer.model.forward = spy
    trainer.train_step(next(trainer.batches))
    assert captured["state"] is None
    assert carried.abs().sum() > 0


def test_max_time_stops_and_evaluates(corpus, tiny):
    cfg = replace(tiny, steps=10**6, max_time=0.5, eval_every=10**6)
    summary = make_trainer(corpus, cfg).fit()
    assert summary.stopped_by == "time"
    assert 0 < summary.steps < 10**6 and np.isfinite(summary.final.loss)


def test_non_finite_steps_are_skipped_then_stop(corpus, tiny, monkeypatch):
    saves = []
    trainer = make_trainer(corpus, tiny, save=lambda t, s: saves.append(t.step))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    real = torch.nn.functional.cross_entropy
    monkeypatch.setattr("charrnn.train.F.cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(CharRNNError, match="not finite for 5 steps in a row") as info:
        trainer.fit()
    assert info.value.exit_code == 4
    assert trainer.step == 5 and saves == []
    assert all(torch.equal(p, b) for p, b in zip(trainer.model.parameters(), before, strict=True))


def test_one_bad_step_is_skipped_and_training_goes_on(corpus, tiny, monkeypatch):
    trainer = make_trainer(corpus, tiny)
    real, calls = torch.nn.functional.cross_entropy, []

    def flaky(*a, **k):
        calls.append(1)
        return real(*a, **k) * (float("inf") if len(calls) == 3 else 1.0)

    monkeypatch.setattr("charrnn.train.F.cross_entropy", flaky)
    summary = trainer.fit()
    assert summary.steps == tiny.steps and np.isfinite(summary.final.loss)
