"""Shared fixtures: tiny synthetic corpora and a tiny training configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from charrnn.config import TrainConfig
from tests.helpers import synthetic_text

# The tests' models are tiny: one thread does their arithmetic as fast as two, without two threads of this
# process (and of the subprocesses some tests start) fighting over two cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def corpus_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test encodes corpora into its own cache, never the user's."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(path))
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(synthetic_text(), encoding="utf-8")
    return path


@pytest.fixture
def tiny() -> TrainConfig:
    return TrainConfig(hidden_size=24, embedding_size=8, num_layers=2, batch_size=4, seq_len=16,
                       steps=30, eval_every=10, log_every=5, warmup_steps=5, dropout=0.0, device="cpu")
