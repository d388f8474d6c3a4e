"""The CUDA-graph training step (charrnn/graphs.py) against the eager one. Needs a CUDA GPU: skipped elsewhere
(run it with `python -m pytest tests/test_graphs.py` on a GPU machine; bench/gpu.sh does)."""

import math
from dataclasses import replace

import pytest
import torch

from charrnn.config import TrainConfig
from charrnn.train import Trainer
from tests.helpers import make_trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def trained(corpus, cfg: TrainConfig, graphs: bool, steps: int, monkeypatch) -> tuple[Trainer, list[float]]:
    monkeypatch.setenv("CHARRNN_CUDA_GRAPHS", "1" if graphs else "0")
    trainer = make_trainer(corpus, cfg)
    assert trainer.use_graph is graphs
    losses = [float(trainer.train_step(next(trainer.batches))[0]) for _ in range(steps)]
    return trainer, losses


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("batching", ["sequential", "random"])
def test_graph_replays_train_like_eager_steps(corpus, tiny, cell, batching, monkeypatch):
    cfg = replace(tiny, cell=cell, batching=batching, device="cuda")
    eager, eager_losses = trained(corpus, cfg, False, 40, monkeypatch)
    graphed, graphed_losses = trained(corpus, cfg, True, 40, monkeypatch)
    assert graphed.graph is not None, "the step was not captured"
    assert graphed_losses == pytest.approx(eager_losses, rel=1e-4)
    for a, b in zip(eager.model.parameters(), graphed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    if batching == "sequential":  # the carried state went through the graph's static inputs
        for a, b in zip(eager.hidden, graphed.hidden, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_eager_steps_between_replays_keep_the_gradients_right(corpus, tiny, monkeypatch):
    """A batch of another shape runs eagerly; the replays after it must still hand the optimizer their gradients."""
    cfg = replace(tiny, device="cuda", dropout=0.0)
    trainer, _ = trained(corpus, cfg, True, 3, monkeypatch)
    batch = next(trainer.batches)
    batch.x, batch.y = batch.x[:2], batch.y[:2]
    batch.reset = True
    trainer.train_step(batch)  # eager: replaces every .grad
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.hidden = None
    trainer.train_step(next(trainer.batches))  # replayed
    assert all(p.grad.data_ptr() == g.data_ptr() for p, g in zip(trainer.model.parameters(), trainer.graph.grads,
                                                                 strict=True))
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters(), strict=True))


def test_graphs_train_with_dropout(corpus, tiny, monkeypatch):
    """cuDNN's dropout between layers and nn.Dropout before the head both draw random numbers inside the graph."""
    cfg = replace(tiny, device="cuda", dropout=0.2, num_layers=2)
    trainer, losses = trained(corpus, cfg, True, 60, monkeypatch)
    assert trainer.graph is not None
    assert all(map(math.isfinite, losses))
    assert sum(losses[-10:]) < sum(losses[:10])
