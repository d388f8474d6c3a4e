"""Reading runs back: what each run directory holds, how far it got and how it ended (``charrnn runs``), and its
logged losses and samples (``charrnn plot``).

Everything is read through the typed schemas (schema.py) and bounded: a damaged line of metrics.jsonl, a
checkpoint whose meta.json does not parse, a directory that is not a run, or a run with no checkpoint yet is
described in ``RunInfo.problems``, never raised. Checkpoints are known by their meta.json alone (their weights
are neither hashed nor loaded), so listing many large runs stays fast. This module writes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from charrnn import checkpoint, config, run, samples
from charrnn.errors import CharRNNError, Damaged
from charrnn.evaluate import bits_per_char
from charrnn.model import CharRNN
from charrnn.schema import CheckpointMeta, MetricLine, RunEnd, SampleLine

State = Literal["running", "finished", "stopped", "crashed", "empty"]
MAX_LINE = 1 << 20  # characters: a longer line of a JSON-lines log is damaged, and never held whole


@dataclass(frozen=True)
class RunInfo:
    """One run directory as ``charrnn runs`` shows it; None wherever the run does not (yet) say."""

    path: Path
    state: State
    resumable: bool  # a checkpoint with training state that ``charrnn train --resume`` can continue
    corpus: str | None = None  # the corpus file's name
    corpus_sha256: str | None = None
    vocab_size: int | None = None
    cell: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    parameters: int | None = None
    step: int | None = None  # steps done: the newest checkpoint's (of a running run: the newest logged step)
    steps: int | None = None  # steps planned
    max_time: float | None = None
    elapsed: float | None = None  # seconds of training
    best_loss: float | None = None  # the lowest validation loss logged, in nats per character
    best_step: int | None = None
    updated: float = 0.0  # when the run last wrote a log line or a checkpoint (seconds since the epoch)
    problems: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def best_bpc(self) -> float | None:
        return None if self.best_loss is None else bits_per_char(self.best_loss)

    def to_dict(self) -> dict[str, Any]:
        """For ``--json``: plain JSON values (no NaN or infinity)."""
        d = {"name": self.name, "path": str(self.path), "state": self.state, "resumable": self.resumable,
             "corpus": self.corpus, "corpus_sha256": self.corpus_sha256, "vocab_size": self.vocab_size,
             "cell": self.cell, "num_layers": self.num_layers, "hidden_size": self.hidden_size,
             "parameters": self.parameters, "step": self.step, "steps": self.steps, "max_time": self.max_time,
             "elapsed": self.elapsed, "best_loss": self.best_loss, "best_bpc": self.best_bpc,
             "best_step": self.best_step, "updated": self.updated, "problems": list(self.problems)}
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in d.items()}


def list_runs(root: Path) -> list[RunInfo]:
    """Every run directory under ``root``, most recently active first; ``root`` itself if it is a run."""
    if not root.exists():
        raise CharRNNError(f"{root} does not exist: train a model first (charrnn train CORPUS), or give the "
                           "directory that holds your runs")
    if not root.is_dir():
        raise CharRNNError(f"{root} is a file: give a directory of runs (default runs/) or a run directory")
    if looks_like_run(root):
        return [read(root)]
    try:
        dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError as e:
        raise CharRNNError(f"cannot read {root}: {e.strerror}") from None
    return sorted((read(p) for p in dirs), key=lambda r: (r.updated, r.name), reverse=True)


def looks_like_run(path: Path) -> bool:
    """Whether charrnn has trained (or started to train) in ``path``."""
    return any((path / name).exists() for name in (checkpoint.CHECKPOINTS, run.METRICS, run.CONFIG))


def read(run_dir: Path) -> RunInfo:
    """What ``run_dir`` holds, how far its training got and how it ended."""
    problems: list[str] = []
    metrics, damaged = read_metrics(run_dir)
    if damaged:
        problems.append(f"{damaged} damaged line(s) in {run.METRICS} skipped")
    meta = _newest_meta(run_dir, problems)
    cfg = meta.config if meta is not None else _config_file(run_dir, problems)
    running = is_running(run_dir)
    state, resumable = _state(run_dir, meta, cfg, metrics, running, problems)
    # a finished or interrupted run is where its newest checkpoint is (what a resume continues from); a running one
    # is as far as its log says
    upto = math.inf if running or meta is None else meta.step
    logged = [m for m in metrics if m.step <= upto]
    val = [m for m in logged if m.split == "val" and math.isfinite(m.loss)]
    best = min(val, key=lambda m: (m.loss, m.step)) if val else None
    info: dict[str, Any] = {}
    if best is not None:
        info.update(best_loss=best.loss, best_step=best.step)
    elif meta is not None and meta.metrics.best_val_loss is not None:
        info.update(best_loss=meta.metrics.best_val_loss, best_step=meta.metrics.best_step)
    if cfg is not None:
        info.update(cell=cfg.cell, num_layers=cfg.num_layers, hidden_size=cfg.hidden_size, steps=cfg.steps,
                    max_time=cfg.max_time)
    if meta is not None:
        info.update(corpus=Path(meta.corpus.path).name, corpus_sha256=meta.corpus.sha256,
                    vocab_size=meta.model.vocab_size, parameters=_parameters(meta), step=meta.step,
                    elapsed=meta.elapsed)
    if running and logged and (meta is None or logged[-1].step > meta.step):
        info.update(step=logged[-1].step, elapsed=logged[-1].elapsed)
    return RunInfo(run_dir, state, resumable, updated=_updated(run_dir), problems=tuple(problems), **info)


def _state(run_dir: Path, meta: CheckpointMeta | None, cfg: config.TrainConfig | None, metrics: list[MetricLine],
           running: bool, problems: list[str]) -> tuple[State, bool]:
    """How the run ended (or that it has not): running, finished, stopped or crashed; and whether it can resume."""
    if running:
        return "running", False
    if meta is None:
        if metrics or cfg is not None:
            problems.append("no checkpoint: it stopped before its first save, and cannot be resumed")
            return "crashed", False
        if not problems:
            problems.append("not a charrnn run (no checkpoints, metrics.jsonl or config.toml)")
        return "empty", False
    resumable = checkpoint.TRAINER in meta.files
    end = _ended(run_dir, problems)
    trained = meta.step >= meta.config.steps or (  # all its steps, or all its time (as a resume would judge)
        meta.config.max_time is not None and meta.elapsed >= meta.config.max_time)
    if end is not None and end.step == meta.step:  # a signal in the last evaluation comes after the last step
        return ("stopped", resumable) if end.how == "signal" and not trained else ("finished", False)
    if trained:  # a run from before ended.json, or one killed after its last save
        return "finished", False
    if any(m.split == "val" and m.step == meta.step and (m.progress or 0) >= 1 for m in metrics):
        return "finished", False  # a timed run that ran out of time
    lost = [m.step for m in metrics if m.step > meta.step]
    if lost:
        problems.append(f"logged up to step {max(lost)}, saved up to step {meta.step}: a resume starts there")
    return "crashed", resumable


def is_running(run_dir: Path) -> bool:
    """Whether a process is training in ``run_dir`` now: it holds the run's lock (run._claim). Probed without
    waiting, with a shared lock released at once."""
    try:
        fd = os.open(run_dir / run.LOCK, os.O_RDONLY)
    except OSError:
        return False  # no lock file: nothing ever trained here, or it was not charrnn
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _newest_meta(run_dir: Path, problems: list[str]) -> CheckpointMeta | None:
    """The metadata of the run's newest checkpoint whose meta.json reads, noting the ones that do not."""
    for path in reversed(checkpoint.list_checkpoints(run_dir)):
        try:
            return checkpoint.read_meta(path)
        except CharRNNError as e:
            problems.append(f"{path.name} skipped: {e}")
    return None


def _config_file(run_dir: Path, problems: list[str]) -> config.TrainConfig | None:
    path = run_dir / run.CONFIG
    if not path.exists():
        return None
    try:
        return config.TrainConfig(**config.load_file(path))
    except CharRNNError as e:
        problems.append(f"{run.CONFIG} unreadable: {e}")
        return None


def _ended(run_dir: Path, problems: list[str]) -> RunEnd | None:
    try:
        return run.read_end(run_dir)
    except (OSError, ValueError, RecursionError, Damaged) as e:
        problems.append(f"{run.ENDED} unreadable ({e})")
        return None


def _parameters(meta: CheckpointMeta) -> int:
    with torch.device("meta"):  # shapes only: nothing is allocated
        return sum(p.numel() for p in CharRNN(meta.model).parameters())


def _updated(run_dir: Path) -> float:
    times = []
    for path in (run_dir / run.METRICS, run_dir / checkpoint.CHECKPOINTS, run_dir):
        with contextlib.suppress(OSError):
            times.append(path.stat().st_mtime)
    return max(times, default=0.0)


def read_metrics(run_dir: Path) -> tuple[list[MetricLine], int]:
    """A run's metrics.jsonl, in order, and how many of its lines were damaged (and skipped)."""
    return _read_lines(run_dir / run.METRICS, MetricLine.from_dict)


def read_samples(run_dir: Path) -> tuple[list[SampleLine], int]:
    """A run's samples.jsonl, in order, and how many of its lines were damaged (and skipped)."""
    return _read_lines(run_dir / samples.SAMPLES, SampleLine.from_dict)


def _read_lines(path: Path, parse: Any) -> tuple[list[Any], int]:
    out, damaged = [], 0
    for n, line in enumerate(jsonl(path), 1):
        try:
            out.append(parse(json.loads(line), f"{path.name} line {n}"))
        except (ValueError, RecursionError, Damaged):
            damaged += 1
    return out, damaged


def jsonl(path: Path, max_line: int = MAX_LINE) -> Iterator[str]:
    """The lines of a JSON-lines file, reading at most ``max_line`` characters of each: a longer line comes out as
    the empty string (which no JSON parser accepts) and bytes that are not UTF-8 as U+FFFD. Nothing if the file
    cannot be read."""
    try:
        f = path.open(encoding="utf-8", errors="replace")
    except OSError:
        return
    with f:
        while line := f.readline(max_line):
            if len(line) == max_line and not line.endswith("\n"):
                while (rest := f.readline(max_line)) and not rest.endswith("\n"):
                    pass  # the rest of an overlong line
                line = ""
            yield line
