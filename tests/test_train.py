import math
import signal
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from charrnn import devices, train
from charrnn.corpus import load_corpus
from charrnn.data import split
from charrnn.errors import CharRNNError, Damaged
from charrnn.evaluate import Score, evaluate
from charrnn.train import Event, lr_factor
from tests.helpers import fake_clock, make_trainer


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

    def spy(idx, state=None, targets=None):
        captured["state"] = state
        return original(idx, state, targets)

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
    monkeypatch.setattr("charrnn.model.F.cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
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

    monkeypatch.setattr("charrnn.model.F.cross_entropy", flaky)
    summary = trainer.fit()
    assert summary.steps == tiny.steps and np.isfinite(summary.final.loss)


def test_a_continuing_batch_starts_from_the_carried_state(corpus, tiny):
    trainer = make_trainer(corpus, tiny)
    trainer.train_step(next(trainer.batches))
    carried = [h.clone() for h in trainer.hidden]
    seen = []
    original = trainer.model.forward
    trainer.model.forward = lambda idx, state=None, targets=None: (seen.append(state), original(idx, state, targets))[1]
    batch = next(trainer.batches)
    assert not batch.reset
    trainer.train_step(batch)
    (state,) = seen
    assert state is not None and all(torch.equal(a, b) for a, b in zip(state, carried, strict=True))
    assert all(h.abs().sum() > 0 for h in carried)


class FakeGraph:
    """Stands in for graphs.GraphedStep on the CPU: records replays and runs the captured step eagerly."""

    made: list["FakeGraph"] = []

    def __init__(self, compute, params, x, y, state):
        self.compute, self.shape, self.replays = compute, x.shape, 0
        FakeGraph.made.append(self)

    def fits(self, x):
        return x.shape == self.shape

    def __call__(self, x, y, state):
        self.replays += 1
        return self.compute(x, y, state)


def test_graph_dispatch_captures_once_and_replays_same_shaped_batches(corpus, tiny, monkeypatch):
    monkeypatch.setattr("charrnn.graphs.GraphedStep", FakeGraph)
    FakeGraph.made = []
    trainer = make_trainer(corpus, tiny, use_graph=True)
    eager = make_trainer(corpus, tiny)
    losses = [float(trainer.train_step(next(trainer.batches))[0]) for _ in range(3)]
    assert len(FakeGraph.made) == 1 and trainer.graph.replays == 3
    assert losses == [float(eager.train_step(next(eager.batches))[0]) for _ in range(3)]
    batch = next(trainer.batches)
    batch.x, batch.y = batch.x[:2], batch.y[:2]
    trainer.hidden = None
    trainer.train_step(batch)  # another shape: eager, no new capture
    assert len(FakeGraph.made) == 1 and trainer.graph.replays == 3


def test_a_failed_capture_warns_and_trains_eagerly(corpus, tiny, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("capture failed")

    monkeypatch.setattr("charrnn.graphs.GraphedStep", broken)
    trainer = make_trainer(corpus, tiny, use_graph=True)
    with pytest.warns(UserWarning, match="training without CUDA graphs: capturing the step failed"):
        loss, _ = trainer.train_step(next(trainer.batches))
    assert trainer.graph is None and not trainer.use_graph and math.isfinite(float(loss))
    trainer.train_step(next(trainer.batches))  # no second attempt, no second warning


@pytest.mark.skipif(not devices.NATIVE_BF16_FLAGS & devices.cpu_flags(), reason="this CPU has no native bf16 "
                    "(avx512_bf16 or amx_bf16): bf16 autocast would be ~100x slower here")
def test_bf16_autocast_trains_on_cpu(corpus, tiny):
    trainer = make_trainer(corpus, replace(tiny, precision="bf16"))
    dtypes = []
    trainer.model.head.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    first = float(trainer.train_step(next(trainer.batches))[0])
    for _ in range(20):
        last = float(trainer.train_step(next(trainer.batches))[0])
    assert dtypes[0] == torch.bfloat16 and math.isfinite(last) and last < first


def test_the_state_carried_from_a_bf16_step_is_fp32(corpus, tiny):
    # a model this small trains in bf16 in milliseconds even where the CPU emulates it
    trainer = make_trainer(corpus, replace(tiny, precision="bf16", batching="sequential"))
    for _ in range(3):
        trainer.train_step(next(trainer.batches))
    assert all(h.dtype == torch.float32 for h in trainer.hidden)  # what a checkpoint holds and a resume accepts
    trainer.autocast_dtype = None  # resumed with --precision fp32: the carried state goes into an fp32 LSTM
    assert math.isfinite(float(trainer.train_step(next(trainer.batches))[0]))


def test_non_finite_weights_are_never_saved(corpus, tiny):
    trainer = make_trainer(corpus, tiny)
    trainer.train_step(next(trainer.batches))
    with torch.no_grad():
        trainer.model.head.bias[0] = float("nan")
    with pytest.raises(CharRNNError, match="weights are no longer finite at step 1; nothing was saved") as info:
        trainer.save(trainer, None)
    assert info.value.exit_code == 4
    run_dir = trainer.save.__self__.run_dir
    assert not (run_dir / "checkpoints").exists()


def test_validation_scores_a_fixed_slice_of_the_split(corpus, tiny):
    _, val = split(load_corpus(corpus).tokens, tiny.val_fraction)
    for eval_chars, chars in ((100, 100), (0, len(val) - 1), (10**6, len(val) - 1)):
        scores: list = []
        trainer = make_trainer(corpus, replace(tiny, steps=20, eval_chars=eval_chars),
                               save=lambda t, s, scores=scores: scores.append(s))
        trainer.fit()
        assert [s.chars for s in scores] == [chars, chars]
        assert scores[-1] == evaluate(trainer.model, val[:chars + 1], trainer.device)  # the first chars + 1


@pytest.mark.parametrize("twice", [False, True])
def test_a_stop_signal_saves_a_scored_checkpoint_unless_given_twice(corpus, tiny, twice):
    events, saves = [], []
    trainer = make_trainer(corpus, tiny, callback=events.append, save=lambda t, s: saves.append((t.step, s)))
    step = trainer.train_step

    def train_step(batch):
        out = step(batch)
        if trainer.step == 15:  # as run.py's signal handler does for a first (and a second) Ctrl-C
            trainer.received_signal, trainer.skip_eval = signal.SIGINT, twice
        return out

    trainer.train_step = train_step
    summary = trainer.fit()
    assert summary.stopped_by == "signal" and summary.steps == 15 and trainer.stop_signal == signal.SIGINT
    assert [step for step, _ in saves] == [10, 15]
    assert (saves[-1][1] is None) == twice and summary.final == saves[-1][1]
    if not twice:  # scored like the validated checkpoints, so that it competes with them for best
        assert saves[-1][1] == evaluate(trainer.model, trainer.eval_tokens, trainer.device)
    # ...but kept out of the log and the best loss: a resumed run repeats an uninterrupted one
    assert [e.step for e in events if e.split == "val"] == [10] and summary.best_step == 10


def test_max_time_keeps_room_for_the_final_evaluation(corpus, tiny, monkeypatch):
    # a fake clock: a training step takes 0.1 s, an evaluation 1 s; the run must end, evaluation included,
    # within one step of --max-time, with the learning rate fully decayed
    trainer = make_trainer(corpus, replace(tiny, steps=10**6, max_time=5.0, eval_every=10))
    clock = fake_clock(monkeypatch, trainer, step=0.1, evaluation=1.0)
    summary = trainer.fit()
    assert summary.stopped_by == "time" and trainer.eval_seconds == pytest.approx(1.0)
    assert clock[0] <= 5.0 + 0.1 + 1e-6
    assert trainer.progress() >= 1.0


def test_signals_stop_then_skip_the_scoring_then_quit():
    from charrnn import run

    trainer, heard = SimpleNamespace(received_signal=None, skip_eval=False), []
    with run._stop_on_signals(trainer, heard.append):
        signal.raise_signal(signal.SIGINT)
        assert (trainer.received_signal, trainer.skip_eval) == (signal.SIGINT, False)
        signal.raise_signal(signal.SIGTERM)
        assert (trainer.received_signal, trainer.skip_eval) == (signal.SIGINT, True)
        with pytest.raises(run.Interrupted):
            signal.raise_signal(signal.SIGINT)
    assert heard == [signal.SIGINT, signal.SIGTERM]


def test_a_non_finite_gradient_alone_skips_the_update_and_restarts_the_streams(corpus, tiny, monkeypatch):
    trainer = make_trainer(corpus, tiny)
    trainer.train_step(next(trainer.batches))
    assert all(h.abs().sum() > 0 for h in trainer.hidden)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    monkeypatch.setattr("torch.nn.utils.clip_grad_norm_", lambda params, max_norm: torch.tensor(float("inf")))
    loss, norm = trainer.train_step(next(trainer.batches))
    assert math.isfinite(float(loss)) and not math.isfinite(float(norm))  # the loss was fine, the gradient not
    assert all(torch.equal(p, b) for p, b in zip(trainer.model.parameters(), before, strict=True))
    assert int(trainer.bad_run) == 1 and all(h.abs().sum() == 0 for h in trainer.hidden)


def test_the_learning_rate_follows_the_schedule_step_by_step(corpus, tiny):
    trainer = make_trainer(corpus, replace(tiny, warmup_steps=5, steps=20, lr=1e-2, min_lr_ratio=0.1))
    for step in range(1, 8):
        trainer.train_step(next(trainer.batches))
        want = 1e-2 * lr_factor(step, (step - 1) / 20, 5, 0.1)  # scheduled before the step counter moves on
        assert trainer.lr() == pytest.approx(want, rel=1e-9), step


@pytest.mark.parametrize("drop", [0.5, 1.0])
def test_a_rising_validation_loss_drops_the_learning_rate_for_good(corpus, tiny, monkeypatch, drop):
    """A validation loss more than RISE above the best so far multiplies the rate by lr_drop from the next step on,
    down to the schedule's final rate (one within RISE is noise and does not); the drop is in the scheduler's
    state, so a resumed run keeps it."""
    monkeypatch.setattr(train, "lr_factor", lambda *args: 1.0)  # a constant schedule: the rate is the base rate
    cfg = replace(tiny, steps=60, lr=1e-2, min_lr_ratio=0.1, lr_drop=drop)
    trainer = make_trainer(corpus, cfg)
    losses = iter([2.0, 1.9, 1.9 * (1 + train.RISE) - 1e-6, 2.1, 2.2, 1.8])
    monkeypatch.setattr(trainer, "evaluate", lambda: Score(next(losses), 100))
    rates = []
    trainer.callback = lambda event: rates.append((event.lr, trainer.scheduler.base_lrs[0])) if event.split == "val" \
        else None
    trainer.fit()
    want = [1e-2, 1e-2, 1e-2, 1e-2 * drop, 1e-2 * drop**2, 1e-2 * drop**2]
    assert [r for pair in rates for r in pair] == pytest.approx([r for r in want for _ in range(2)], rel=1e-12)
    resumed = make_trainer(corpus, cfg)
    resumed.restore(*trainer.state())
    resumed.train_step(next(resumed.batches))
    assert resumed.lr() == pytest.approx(want[-1], rel=1e-12)


def test_the_rate_drops_to_the_schedules_floor_then_a_rise_ends_the_run(corpus, tiny, monkeypatch):
    """Drops stop at lr x min_lr_ratio; a rise with the rate already there ends the run at that evaluation (its
    checkpoint saved, the best kept): what is left of it could only overfit further."""
    monkeypatch.setattr(train, "lr_factor", lambda *args: 1.0)
    saves = []
    trainer = make_trainer(corpus, replace(tiny, steps=60, lr=1e-2, min_lr_ratio=0.1, lr_drop=0.05),
                           save=lambda t, s: saves.append(t.step))
    losses = iter([2.0, 2.1, 2.01, 1.9, 2.2, 2.3])  # 2.01: within RISE of the best, not a rise
    monkeypatch.setattr(trainer, "evaluate", lambda: Score(next(losses), 100))
    summary = trainer.fit()
    assert trainer.scheduler.base_lrs == [1e-3, 1e-3] and trainer.lr() == 1e-3  # 5e-4 would be below the floor
    assert (summary.stopped_by, summary.steps, summary.final.loss) == ("validation", 50, 2.2)
    assert (summary.best_loss, summary.best_step) == (1.9, 40) and saves == [10, 20, 30, 40, 50]


def _set(where: str, **values):
    """Tamper with one part of a saved trainer state: the scheduler's, or the optimizer's first group."""
    return lambda shared: (shared.scheduler if where == "scheduler" else shared.optimizer["param_groups"][0]).update(
        values)


@pytest.mark.parametrize("tamper, part", [
    (_set("scheduler", base_lrs=[1e9, 1e9]), "learning-rate schedule"),
    (_set("scheduler", base_lrs=["0.01", "0.01"]), "learning-rate schedule"),
    (_set("scheduler", base_lrs=[0.01]), "learning-rate schedule"),
    (_set("scheduler", base_lrs=[math.nan, 0.01]), "learning-rate schedule"),
    (_set("scheduler", last_epoch=-5), "learning-rate schedule"),
    (_set("scheduler", last_epoch="3"), "learning-rate schedule"),
    (_set("scheduler", optimizer=1), "learning-rate schedule"),
    (_set("scheduler", lr_lambdas=[1, None]), "learning-rate schedule"),
    (_set("scheduler", _step_count="x"), "learning-rate schedule"),
    (_set("optimizer", lr="0.01"), "optimizer's settings"),
    (_set("optimizer", lr=1e9), "optimizer's settings"),
    (_set("optimizer", betas=(2.0, 0.99)), "optimizer's settings"),
    (_set("optimizer", eps="x"), "optimizer's settings"),
])
def test_a_tampered_schedule_or_optimizer_setting_is_damaged_not_a_crash(corpus, tiny, tamper, part):
    """The scheduler copies its saved state into its attributes and fused AdamW reads its groups' settings: a rate
    above the run's, or a field of another type or not its own, would train wrong or crash; it is refused."""
    trainer = make_trainer(corpus, tiny)
    shared, own = trainer.state()
    tamper(shared)
    with pytest.raises(Damaged, match=part):
        make_trainer(corpus, tiny).restore(shared, own)


@pytest.mark.parametrize("change", [{"bad_run": 2**64}, {"bad_run": -1},
                                    {"window": {"steps": math.inf, "loss": 0.0, "chars": 0}},
                                    {"window": {"steps": 1.0}}, {"window": {"steps": 0, "loss": "x", "chars": 0}}])
def test_tampered_log_totals_are_damaged_not_a_crash(corpus, tiny, change):
    """The count of non-finite steps and the log window's totals become tensors and ints as they come."""
    shared, own = make_trainer(corpus, tiny).state()
    with pytest.raises(Damaged, match="the log's running totals"):
        make_trainer(corpus, tiny).restore(replace(shared, **change), own)
