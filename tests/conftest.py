"""Shared fixtures: tiny synthetic corpora and a tiny training configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from charrnn.config import TrainConfig

WORDS = ["machine", "river", "bread", "light", "café", "naïve", "keeper", "stone", "wind", "salt"]


def synthetic_text(chars: int = 6000, seed: int = 0) -> str:
    """Deterministic pseudo-English with a little structure and a few non-ASCII characters."""
    state, out, size = seed + 1, [], 0
    while size < chars:
        state = (state * 1103515245 + 12345) % 2**31
        word = WORDS[state % len(WORDS)]
        sep = ".\n" if state % 7 == 0 else " "
        out.append(word + sep)
        size += len(word) + len(sep)
    return "".join(out)[:chars]


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
                       steps=30, eval_every=10, log_every=5, warmup_steps=5, device="cpu")


TINY_FLAGS = ["--hidden-size", "24", "--embedding-size", "8", "--batch-size", "4", "--seq-len", "16",
              "--eval-every", "10", "--log-every", "5", "--warmup-steps", "5", "--device", "cpu"]
