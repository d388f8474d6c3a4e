"""The typed contents of a checkpoint's files: ``meta.json`` (CheckpointMeta) and ``trainer.pt`` (ResumeState).

Everything read from these files goes through ``from_dict``, which checks every field's type and raises
``CharRNNError`` on anything else, so no caller indexes a raw dict or trusts a value it has not seen checked.
Versions: meta.json and trainer.pt carry their own version numbers; older versions are read (and upgraded
here), newer ones are refused with a message to upgrade charrnn.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import CharRNNError, Damaged

FORMAT = "charrnn-checkpoint"
META_VERSION = 3  # 3: corpora of several files, the validation file; 2: best_val_loss null before any evaluation
# (1 wrote Infinity)
RESUME_VERSION = 2  # 2: shared trainer state once, one WorkerState per worker (1: a full dict per rank)


def _fields(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, without copying (``dataclasses.asdict`` would deep-copy tensors)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _get(d: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, optional: bool = False) -> Any:
    if not isinstance(d, dict):
        raise Damaged(f"{where} is not a JSON object")
    value = d.get(key)
    if value is None and optional:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise Damaged(f"{where}: {key!r} is out of range") from None
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise Damaged(f"{where}: {key!r} should be {' or '.join(k.__name__ for k in kinds)}, not {value!r}")
    return value


# training settings added since the first checkpoints, with the value that keeps a run saved before them doing
# what it did when resumed
ADDED = {"lr_drop": 1.0}


def _added(config: Any) -> Any:
    return {**ADDED, **config} if isinstance(config, dict) else config


def _settings(d: Any, cls: type, where: str) -> Any:
    """A config dataclass from a dict with exactly its fields (the dataclass validates the values)."""
    if not isinstance(d, dict):
        raise Damaged(f"{where} is not a JSON object")
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(types))
    if unknown:
        raise Damaged(f"{where} has unknown settings {', '.join(unknown)} (written by another charrnn version?)")
    for name, value in d.items():
        want = {"int": int, "float": (int, float), "str": str, "float | None": (int, float, type(None)),
                "str | None": (str, type(None)), "tuple[int, ...]": list}[types[name]]
        if not isinstance(value, want) or isinstance(value, bool):
            raise Damaged(f"{where}: {name} should be {types[name]}, not {value!r}")
    try:
        return cls(**d)
    except (TypeError, CharRNNError) as e:
        raise Damaged(f"{where}: {e}") from None


@dataclass(frozen=True)
class SourceFile:
    """One file of a corpus of several files."""

    path: str  # absolute
    sha256: str


@dataclass(frozen=True)
class CorpusInfo:
    """A text a run used (its corpus, or its validation file): where it was, its SHA-256, its length, and how it
    was decoded. A corpus of several files (version 3) also lists the folders and files it was named by
    (``inputs``) and every file read, in order, with its SHA-256 (``files``); its ``sha256`` is then that of
    the list (corpus.files_sha256) and ``path`` the first input. Both are empty for a single file."""

    path: str
    sha256: str
    chars: int
    encoding: str = "utf-8"
    errors: str = "strict"
    inputs: tuple[str, ...] = ()
    files: tuple[SourceFile, ...] = ()

    @classmethod
    def from_dict(cls, d: Any, where: str, version: int = META_VERSION) -> CorpusInfo:
        inputs: tuple[str, ...] = ()
        files: tuple[SourceFile, ...] = ()
        if version >= 3:
            inputs = tuple(_get(d, "inputs", list, where))
            files = tuple(SourceFile(_get(f, "path", str, f"{where} files"), _get(f, "sha256", str, f"{where} files"))
                          for f in _get(d, "files", list, where))
            if not all(isinstance(i, str) for i in inputs) or bool(inputs) != bool(files):
                raise Damaged(f"{where}: 'inputs' and 'files' should both list paths, or both be empty")
        return cls(_get(d, "path", str, where), _get(d, "sha256", str, where), _get(d, "chars", int, where),
                   _get(d, "encoding", str, where), _get(d, "errors", str, where), inputs, files)


@dataclass(frozen=True)
class Scores:
    """Validation scores at save time; None where there was no evaluation (a checkpoint saved on a signal)."""

    val_loss: float | None = None
    val_chars: int | None = None
    best_val_loss: float | None = None
    best_step: int = 0

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Scores:
        best = _get(d, "best_val_loss", float, where, optional=True)
        return cls(_get(d, "val_loss", float, where, optional=True), _get(d, "val_chars", int, where, optional=True),
                   None if best is None or math.isinf(best) else best, _get(d, "best_step", int, where))


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class CheckpointMeta:
    """meta.json: what a checkpoint is, what it was trained on, and a manifest of its other files."""

    step: int
    vocab: list[str]
    model: ModelConfig
    config: TrainConfig
    corpus: CorpusInfo
    metrics: Scores
    elapsed: float
    files: dict[str, FileEntry] = field(default_factory=dict)
    charrnn_version: str = ""
    validation: CorpusInfo | None = None  # the validation file (version 3); None: the end of the corpus

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {"format": FORMAT, "version": META_VERSION, **d}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> CheckpointMeta:
        vocab = _get(d, "vocab", list, where)
        if not all(isinstance(c, str) for c in vocab):
            raise Damaged(f"{where}: the vocabulary holds something other than characters")
        version = _get(d, "version", int, where)
        validation = None
        if version >= 3:  # null when the run validated on the end of its corpus, but always there
            if "validation" not in d:
                raise Damaged(f"{where}: 'validation' is missing")
            if d["validation"] is not None:
                validation = CorpusInfo.from_dict(d["validation"], f"{where} validation")
        files = {}
        for name, entry in _get(d, "files", dict, where).items():
            files[name] = FileEntry(_get(entry, "size", int, f"{where} files.{name}"),
                                    _get(entry, "sha256", str, f"{where} files.{name}"))
        meta = cls(
            step=_get(d, "step", int, where),
            vocab=vocab,
            model=_settings(d.get("model"), ModelConfig, f"{where} model"),
            config=_settings(_added(d.get("config")), TrainConfig, f"{where} config"),
            corpus=CorpusInfo.from_dict(d.get("corpus"), f"{where} corpus", version),
            metrics=Scores.from_dict(d.get("metrics"), f"{where} metrics"),
            elapsed=_get(d, "elapsed", float, where),
            files=files,
            charrnn_version=_get(d, "charrnn_version", str, where, optional=True) or "",
            validation=validation,
        )
        if meta.model.vocab_size != len(vocab):
            raise Damaged(f"{where}: the model has {meta.model.vocab_size} outputs but the vocabulary "
                          f"{len(vocab)} characters")
        return meta


@dataclass
class LogWindow:
    """The training-loss line being built: finite steps and their summed loss (on the device), and characters."""

    steps: torch.Tensor
    loss: torch.Tensor
    chars: int = 0

    @classmethod
    def empty(cls, device: torch.device) -> LogWindow:
        zero = torch.zeros((), dtype=torch.float64, device=device)
        return cls(zero.clone(), zero.clone())


@dataclass
class TrainerState:
    """The part of the resume state every worker shares (kept once)."""

    step: int
    elapsed: float  # seconds of training so far, across resumes
    best_loss: float
    best_step: int
    bad_run: int  # non-finite steps in a row
    window: dict[str, float | int]  # LogWindow as plain numbers: steps, loss, chars
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    eval_seconds: float = 0.0  # the last evaluation's: a timed run keeps that long for its final one (0: not saved)


@dataclass
class WorkerState:
    """One data-parallel worker's own part: its batch stream, carried hidden state and random generators."""

    batches: dict[str, Any]
    hidden: list[torch.Tensor]  # [h] or [h, c] for an LSTM, each (L, B, H); empty before the first step
    rng_cpu: torch.Tensor
    rng_cuda: list[torch.Tensor]


@dataclass
class ResumeState:
    """trainer.pt: everything but the weights that a resumed run needs to continue exactly."""

    trainer: TrainerState
    workers: list[WorkerState]  # by rank

    def to_dict(self) -> dict[str, Any]:
        workers = [_fields(w) for w in self.workers]
        return {"version": RESUME_VERSION, "trainer": _fields(self.trainer), "workers": workers}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ResumeState:
        if not isinstance(d, dict):
            raise Damaged(f"{where} is not a resume state")
        if "ranks" in d and "version" not in d:  # version 1: every rank's full state, the optimizer on rank 0
            ranks = _get(d, "ranks", list, where)
            d = {"trainer": ranks[0] if ranks else None, "workers": ranks}
        elif _get(d, "version", int, where) > RESUME_VERSION:
            raise CharRNNError(f"{where} was written by a newer charrnn: upgrade charrnn to resume it")
        t = _get(d, "trainer", dict, where)
        window = _get(t, "window", dict, where)
        trainer = TrainerState(
            step=_get(t, "step", int, where), elapsed=_get(t, "elapsed", float, where),
            best_loss=_get(t, "best_loss", float, where), best_step=_get(t, "best_step", int, where),
            bad_run=_get(t, "bad_run", int, where),
            window={"steps": _get(window, "steps", float, where), "loss": _get(window, "loss", float, where),
                    "chars": _get(window, "chars", int, where)},
            optimizer=_get(t, "optimizer", dict, where), scheduler=_get(t, "scheduler", dict, where),
            eval_seconds=_get(t, "eval_seconds", float, where, optional=True) or 0.0)
        workers = []
        for i, w in enumerate(_get(d, "workers", list, where)):
            at = f"{where} worker {i}"
            hidden = _get(w, "hidden", list, at)
            rng_cuda = _get(w, "rng_cuda", list, at)
            rng_cpu = _get(w, "rng_cpu", torch.Tensor, at)
            if not all(isinstance(h, torch.Tensor) for h in hidden + rng_cuda):
                raise Damaged(f"{at}: the hidden state and random generator states must be tensors")
            workers.append(WorkerState(_get(w, "batches", dict, at), hidden, rng_cpu, rng_cuda))
        if not workers:
            raise Damaged(f"{where} holds no worker state")
        return cls(trainer, workers)


# The run's own logs, beside its checkpoints: one JSON object per line of metrics.jsonl and samples.jsonl, and
# ended.json. Readers skip a line that does not fit (a crash can cut the last one short) and count it.

MAX_STEP = 2**62
MAX_LOSS = 1e30  # nats/char: far past any model's cross-entropy, and far below what overflows a chart's scale


@dataclass(frozen=True)
class MetricLine:
    """One line of metrics.jsonl: a window of training steps or an evaluation (train.Event writes it)."""

    split: str  # "train" or "val"
    step: int
    loss: float
    elapsed: float
    lr: float | None = None
    chars_per_s: float | None = None
    progress: float | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str) -> MetricLine:
        split = _get(d, "split", str, where)
        if split not in ("train", "val"):
            raise Damaged(f"{where}: 'split' should be 'train' or 'val', not {split!r}")
        step, loss = _get(d, "step", int, where), _get(d, "loss", float, where)
        elapsed = _get(d, "elapsed", float, where)
        if not 0 <= step <= MAX_STEP:
            raise Damaged(f"{where}: 'step' should be between 0 and {MAX_STEP}, not {step}")
        if not (0 <= loss <= MAX_LOSS or math.isnan(loss) or loss == math.inf):  # a diverged run's can be NaN or inf
            raise Damaged(f"{where}: 'loss' should be between 0 and {MAX_LOSS:g}, not {loss}")
        if not 0 <= elapsed < math.inf:
            raise Damaged(f"{where}: 'elapsed' should be a number of seconds, not {elapsed}")
        return cls(split, step, loss, elapsed,
                   _get(d, "lr", float, where, optional=True), _get(d, "chars_per_s", float, where, optional=True),
                   _get(d, "progress", float, where, optional=True))


@dataclass(frozen=True)
class SampleLine:
    """One line of samples.jsonl: what the model wrote at a step (samples.py)."""

    step: int
    elapsed: float
    val_loss: float | None  # the validation loss of this step, when it was an evaluation step
    seed: int
    text: str  # the prefix and the continuation

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> SampleLine:
        return cls(_get(d, "step", int, where), _get(d, "elapsed", float, where),
                   _get(d, "val_loss", float, where, optional=True), _get(d, "seed", int, where),
                   _get(d, "text", str, where))


ENDED_VERSION = 1


@dataclass(frozen=True)
class RunEnd:
    """ended.json: how a run's training ended, written when it ends cleanly (a crash leaves none) and removed
    when it resumes."""

    how: str  # "steps", "time", "validation" (finished) or "signal" (stopped)
    step: int
    signal: str | None = None  # SIGINT, SIGTERM, SIGHUP

    def to_dict(self) -> dict[str, Any]:
        return {"version": ENDED_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> RunEnd:
        if _get(d, "version", int, where) > ENDED_VERSION:
            raise Damaged(f"{where} was written by a newer charrnn")
        how = _get(d, "how", str, where)
        if how not in ("steps", "time", "validation", "signal"):
            raise Damaged(f"{where}: 'how' should be steps, time, validation or signal, not {how!r}")
        return cls(how, _get(d, "step", int, where), _get(d, "signal", str, where, optional=True))
