"""A run directory: its name, the resolved config, the metrics log, and its checkpoints' metadata.

    RUN/config.toml      every setting of the run (usable again with --config)
    RUN/metrics.jsonl    one JSON object per training window or evaluation
    RUN/checkpoints/     see checkpoint.py
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charrnn import checkpoint, config
from charrnn.config import TrainConfig, to_toml
from charrnn.corpus import Corpus, Progress, load_corpus, scan, vocab_of
from charrnn.errors import CharRNNError
from charrnn.evaluate import Score
from charrnn.model import CharRNN, widen_vocab
from charrnn.train import Event, Trainer, set_seed
from charrnn.vocab import Vocab, describe_chars

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


def write_atomic(path: Path, text: str) -> None:
    """Replace a small text file so that it is the old or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rewind_metrics(run_dir: Path, step: int) -> None:
    """Drop the metrics logged after ``step`` (and a line cut short by a crash): a resumed run logs
    them again, so the file ends with neither duplicate nor missing lines."""
    path = run_dir / METRICS
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    write_atomic(path, "".join(kept))


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
            write_atomic(self.run_dir / CONFIG, to_toml(self.cfg.to_dict()))
            self._metrics = (self.run_dir / METRICS).open("a", encoding="utf-8")
        except OSError as e:
            raise CharRNNError(f"cannot write the run directory {self.run_dir}: {e.strerror}") from None

    def on_event(self, event: Event) -> None:
        if self._metrics is None:
            self._open()
        self._metrics.write(json.dumps(event.to_dict()) + "\n")
        self._metrics.flush()

    def meta(self, trainer: Trainer, score: Score | None) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "corpus": {"path": str(self.corpus.path.resolve()), "sha256": self.corpus.sha256,
                       "chars": int(len(self.corpus.tokens)), "encoding": self.corpus.encoding,
                       "errors": self.corpus.errors},
            "metrics": {"val_loss": score.loss if score else None, "val_chars": score.chars if score else None,
                        "best_val_loss": trainer.best_loss, "best_step": trainer.best_step},
            "elapsed": trainer.elapsed,
        }

    def save(self, trainer: Trainer, score: Score | None, resume_state: dict[str, Any]) -> None:
        if self._metrics is None:
            self._open()
        checkpoint.save(self.run_dir, trainer.step, trainer.model, self.corpus.vocab, self.meta(trainer, score),
                        resume_state)
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


@dataclass
class Setup:
    """Everything a training run starts from: new, warm-started or resumed."""

    run_dir: Path
    cfg: TrainConfig
    corpus: Corpus
    model: CharRNN
    trainer_state: dict[str, Any] | None = None  # set when resuming


LARGE_VOCAB = 10_000


def new_run(corpus_path: Path, cfg: TrainConfig, out: Path | None, encoding: str, errors: str,
            warn: list[str], progress: Progress | None = None) -> Setup:
    corpus = load_corpus(corpus_path, encoding, errors, progress=progress)
    if len(corpus.vocab) > LARGE_VOCAB:
        warn.append(f"{corpus_path} has {len(corpus.vocab):,} distinct characters; the output layer will be "
                    "large (is this really text in one encoding?)")
    set_seed(cfg.seed)
    return Setup(start(corpus, cfg, out), cfg, corpus, CharRNN(cfg.model_config(len(corpus.vocab))))


def warm_start(corpus_path: Path, config_file: Path | None, flags: dict[str, Any], out: Path | None,
               init_from: Path, grow_vocab: bool, encoding: str, errors: str, warn: list[str],
               progress: Progress | None = None) -> Setup:
    """A new run (fresh optimizer and step count) whose model starts from another run's weights."""
    ckpt = checkpoint.resolve(init_from, RUNS_ROOT, warn)
    old = ckpt.model_config
    cfg = config.resolve(config_file, flags, base={k: getattr(old, k) for k in config.MODEL_SETTINGS})
    for key in config.MODEL_SETTINGS:
        if getattr(cfg, key) != getattr(old, key):
            raise CharRNNError(f"{key} is {getattr(cfg, key)!r} but --init-from {init_from} has "
                               f"{getattr(old, key)!r}: a warm start keeps the model's shape")
    vocab = ckpt.vocab
    unknown = [c for c in vocab_of(scan(corpus_path, encoding, errors, progress)[0]).chars if c not in vocab]
    if unknown and not grow_vocab:
        raise CharRNNError(f"{corpus_path} has {len(unknown)} character(s) that {init_from} has never seen: "
                           f"{describe_chars(unknown)}; pass --grow-vocab to add them to the model")
    set_seed(cfg.seed)
    weights = ckpt.load_model().state_dict()
    if unknown:
        vocab = Vocab(vocab.chars + sorted(unknown))
        weights = widen_vocab(weights, len(vocab))
        warn.append(f"added {len(unknown)} new character(s) to the vocabulary: {describe_chars(unknown)}")
    model = CharRNN(cfg.model_config(len(vocab)))
    model.load_state_dict(weights)
    corpus = load_corpus(corpus_path, encoding, errors, vocab, progress)
    return Setup(start(corpus, cfg, out), cfg, corpus, model)


def training_corpus(ckpt: checkpoint.Checkpoint, progress: Progress | None = None) -> Corpus | None:
    """The corpus a checkpoint was trained on, encoded with its vocabulary; None if it is unreadable or
    no longer the same file (its SHA-256 differs)."""
    source = ckpt.meta.get("corpus", {})
    try:
        corpus = load_corpus(Path(source.get("path", "")), source.get("encoding", "utf-8"),
                             source.get("errors", "strict"), ckpt.vocab, progress)
    except CharRNNError:
        return None
    return corpus if corpus.sha256 == source.get("sha256") else None


def resume(run_dir: Path | None, config_file: Path | None, flags: dict[str, Any], warn: list[str],
           progress: Progress | None = None) -> Setup:
    """Continue a run from its newest good checkpoint, exactly where it stopped."""
    if run_dir is not None and run_dir.is_file():
        raise CharRNNError(f"{run_dir} is a file: --resume takes a run directory (or nothing for the latest run)")
    run_dir = run_dir if run_dir is not None else checkpoint.latest_run(RUNS_ROOT)
    if not run_dir.is_dir():
        raise CharRNNError(f"there is no run {run_dir} to resume")
    ckpt = checkpoint.latest_of(run_dir, warn)
    cfg = config.resolve_resume(TrainConfig(**ckpt.meta["config"]), config_file, flags)
    state = ckpt.trainer_state()
    done = state["ranks"][0]
    if done["step"] >= cfg.steps or (cfg.max_time is not None and done["elapsed"] >= cfg.max_time):
        raise CharRNNError(f"{run_dir} already finished (step {done['step']}, {done['elapsed']:.0f}s): "
                           "pass a larger --steps or --max-time to train further")
    corpus = training_corpus(ckpt, progress)
    if corpus is None:
        raise CharRNNError(f"the corpus {ckpt.meta['corpus']['path']} has changed since this run started; it cannot "
                           "be resumed exactly: start a new run (use --init-from to keep the weights)")
    set_seed(cfg.seed)
    return Setup(run_dir, cfg, corpus, ckpt.load_model(), state)
