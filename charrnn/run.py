"""A run directory: its name, the resolved config, the metrics log, and its checkpoints' metadata.

    RUN/config.toml      every setting of the run (usable again with --config)
    RUN/metrics.jsonl    one JSON object per training window or evaluation
    RUN/checkpoints/     see checkpoint.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from charrnn import checkpoint
from charrnn.config import TrainConfig, to_toml
from charrnn.data import Corpus
from charrnn.errors import CharRNNError
from charrnn.evaluate import Score
from charrnn.train import Event, Trainer

RUNS_ROOT = Path("runs")
CONFIG = "config.toml"
METRICS = "metrics.jsonl"


def new_run_dir(corpus_path: Path, root: Path = RUNS_ROOT) -> Path:
    """A fresh, unused directory name under ``root``: CORPUS-STEM-YYYYMMDD-HHMMSS[-N]."""
    base = f"{corpus_path.stem or 'corpus'}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = root / base, 1
    while path.exists():
        n += 1
        path = root / f"{base}-{n}"
    return path


class RunWriter:
    """Writes a run's files. Nothing is created until the first event, so a run that fails during
    set-up leaves no empty directory behind."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, corpus: Corpus) -> None:
        self.run_dir = run_dir
        self.cfg = cfg
        self.corpus = corpus
        self._metrics = None

    def _open(self) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / CONFIG).write_text(to_toml(self.cfg.to_dict()), encoding="utf-8")
            self._metrics = (self.run_dir / METRICS).open("a", encoding="utf-8")
        except OSError as e:
            raise CharRNNError(f"cannot write the run directory {self.run_dir}: {e.strerror}") from None

    def on_event(self, event: Event) -> None:
        if self._metrics is None:
            self._open()
        self._metrics.write(json.dumps(event.to_dict()) + "\n")
        self._metrics.flush()

    def meta(self, trainer: Trainer, score: Score) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "corpus": {"path": str(self.corpus.path.resolve()), "sha256": self.corpus.sha256,
                       "chars": int(len(self.corpus.tokens))},
            "metrics": {"val_loss": score.loss, "val_chars": score.chars,
                        "best_val_loss": trainer.best_loss, "best_step": trainer.best_step},
            "elapsed": trainer.elapsed,
        }

    def save(self, trainer: Trainer, score: Score) -> None:
        if self._metrics is None:
            self._open()
        checkpoint.save(self.run_dir, trainer.step, trainer.model, self.corpus.vocab, self.meta(trainer, score))
        checkpoint.prune(self.run_dir, self.cfg.keep)

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()


def start(corpus: Corpus, cfg: TrainConfig, out: Path | None) -> Path:
    """Choose and check the run directory for a new run on ``corpus`` (nothing is written yet)."""
    run_dir = out if out is not None else new_run_dir(corpus.path)
    if run_dir.exists() and not run_dir.is_dir():
        raise CharRNNError(f"--out {run_dir} is a file: give a directory")
    if checkpoint.list_checkpoints(run_dir) or (run_dir / METRICS).exists():
        raise CharRNNError(f"{run_dir} already holds a run: choose another --out")
    return run_dir
