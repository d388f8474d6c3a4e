"""A training run: setting it up (new, warm-started or resumed), its directory, and everything it writes.

    RUN/config.toml      every setting of the run (usable again with --config)
    RUN/metrics.jsonl    one JSON object per training window or evaluation
    RUN/checkpoints/     see checkpoint.py
    RUN/samples.jsonl    with sample_every: one JSON object per sample (samples.py)
    RUN/ended.json       how training ended, when it ended cleanly (a crash leaves none; a resume removes it)
    RUN/tensorboard/     with --tensorboard: the same scalars and samples for TensorBoard (board.py)
    RUN/.lock            held (flock) by the process training in RUN, so that no two processes share a run

``prepare`` turns what the user asked for into a ``Setup``; ``build_trainer`` makes its Trainer (splits,
device, the writer that saves checkpoints on every worker's behalf, the restored resume state); ``fit``
trains it with signals turned into a saved checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charrnn import autosize, board, checkpoint, config, devices, dist, samples
from charrnn.config import TrainConfig, to_toml
from charrnn.corpus import Corpus, Progress, file_sha256, load_corpus, token_counts, vocab_of
from charrnn.data import split
from charrnn.dist import SOLO, World
from charrnn.errors import CharRNNError, Damaged
from charrnn.evaluate import Score
from charrnn.model import AdaptiveHead, CharRNN, choose_cutoffs, frequency_rank, widen_vocab
from charrnn.schema import CheckpointMeta, CorpusInfo, ResumeState, RunEnd, SampleLine, Scores, SourceFile
from charrnn.sources import expand
from charrnn.train import Event, Summary, Trainer, set_seed, training_time
from charrnn.vocab import UnknownCharacters, Vocab, describe_chars

RUNS_ROOT = Path("runs")
CONFIG = "config.toml"
METRICS = "metrics.jsonl"
ENDED = "ended.json"
MAX_ENDED = 1 << 12  # bytes of ended.json
LOCK = ".lock"
LARGE_VOCAB = 10_000
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill, a closed terminal


@dataclass
class Setup:
    """Everything a training run starts from: new, warm-started or resumed."""

    run_dir: Path
    cfg: TrainConfig
    corpus: Corpus
    model: CharRNN
    resume: ResumeState | None = None  # set when resuming
    warnings: list[str] = field(default_factory=list)
    validation: Corpus | None = None  # the validation file (val_file); None: the end of the corpus
    notes: list[str] = field(default_factory=list)  # lines for the user, such as what auto-sizing chose
    numbered: bool = False  # run_dir is a default name: if another run takes it first, use the next -N
    lock: int | None = None  # file descriptor holding RUN/.lock while this process trains (rank 0)
    # what run_dir held before this run claimed it, if it was there already (--out an existing folder): all that a
    # run that fails before writing anything of value may remove is what it added
    found: frozenset[str] | None = None
    seen: tuple[str, ...] = ()  # the run's checkpoints when it was prepared (a resumed one's)
    board: board.Board | None = None  # TensorBoard's writer while this process trains (rank 0, --tensorboard)


def prepare(corpus: Path | Sequence[Path] | None, *, config_file: Path | None = None,
            flags: dict[str, Any] | None = None, out: Path | None = None, resume: bool = False,
            init_from: Path | None = None, grow_vocab: bool = False, encoding: str = "utf-8", errors: str = "strict",
            progress: Progress | None = None, auto: bool = True) -> Setup:
    """Check what the user asked for and load what the run starts from; nothing is written yet. ``corpus`` is a
    file, a folder, or a list of them (sources.py); with ``resume``, the run directory. A new run with a time
    budget and no config file is sized for it (autosize.py) unless ``auto`` is false."""
    flags = flags or {}
    given = (corpus,) if isinstance(corpus, Path) else tuple(corpus or ())
    if resume:
        if init_from is not None or out is not None:
            raise CharRNNError("--resume continues a run in place: it takes neither --init-from nor --out")
        if len(given) > 1:
            raise CharRNNError("--resume takes one run directory (or nothing for the latest run)")
        return _resume(given[0] if given else None, config_file, flags, progress)
    if not given:
        raise CharRNNError("give the corpus to train on: charrnn train CORPUS (or --resume to continue a run)")
    if init_from is not None:
        return _warm_start(given, config_file, flags, out, init_from, grow_vocab, encoding, errors, progress)
    given_values = config.given(config_file, flags)  # the config file is read once
    cfg, explicit = _budgeted(TrainConfig(**given_values), given_values), set(given_values)
    sources = expand(given, encoding, errors)
    text = sources.load(encoding, errors, progress)
    warnings = [sources.warning] if sources.warning else []
    if len(text.vocab) > LARGE_VOCAB:
        warnings.append(f"{sources.name} has {len(text.vocab):,} distinct characters; the output layer will be "
                        "large (is this really text in one encoding?)")
    validation = _validation_file(cfg, text.vocab, encoding, errors, progress)
    warnings += _overlap(text, validation)
    notes = []
    left_to_size = {*autosize.CHOSEN, *autosize.PACING} - explicit  # the user may have given every one
    if auto and cfg.max_time is not None and config_file is None and left_to_size:
        choice = size_for_budget(cfg, text, validation, explicit)
        cfg = dataclasses.replace(cfg, **{k: v for k, v in choice.settings.items() if k not in explicit})
        notes.append(choice.describe())
    set_seed(cfg.seed)
    model = new_model(cfg, text, validation)
    run_dir = _check_new_run_dir(out) if out is not None else RUNS_ROOT / _default_name(sources.name)
    return Setup(run_dir, cfg, text, model, warnings=warnings, notes=notes, validation=validation,
                 numbered=out is None)


def size_for_budget(cfg: TrainConfig, corpus: Corpus, validation: Corpus | None,
                    explicit: set[str] = frozenset()) -> autosize.Choice:
    """Auto-sizing's choice for ``cfg.max_time``: the reference model's speed on this machine (at the batch shape
    the user gave, where they gave one: a short text may need it), and where the user gave the width or depth,
    their model's too (it paces validation). Measured on throwaway models before the run's seed is set, so that
    the run itself is what the seed makes it."""
    device = devices.for_worker(cfg.device, dist.SOLO)  # TF32 on CUDA, as the run will have it
    seconds = min(autosize.PROBE_SECONDS, autosize.PROBE_SHARE * cfg.max_time)

    def probe(**shape: Any) -> tuple[float, bool, bool, int, int]:
        """Time ``cfg`` with ``shape`` instead of its own, without dropout or samples (throwaway steps)."""
        probed = dataclasses.replace(cfg, **shape, dropout=0.0, sample_every=0)
        train_tokens, val_tokens = splits(probed, corpus, validation)
        trainer = Trainer(new_model(probed, corpus, validation), probed, train_tokens, val_tokens[:2], device)
        adaptive, bf16 = isinstance(trainer.model.head, AdaptiveHead), trainer.autocast_dtype is not None
        return autosize.measure(trainer, seconds), adaptive, bf16, len(train_tokens), len(val_tokens) - 1

    given_shape = explicit & {"batch_size", "seq_len"}
    shape = {k: v for k, v in autosize.REFERENCE.items() if k not in given_shape}
    speed, adaptive, bf16, train_chars, val_chars = probe(**shape)
    yours = {k: getattr(cfg, k) for k in explicit}
    choice = autosize.choose(cfg.max_time, speed, train_chars, adaptive, yours, val_chars=val_chars, bf16=bf16)
    if explicit & {"hidden_size", "num_layers"}:
        own = {k: v for k, v in choice.settings.items() if k != "dropout"}
        choice = autosize.choose(cfg.max_time, speed, train_chars, adaptive, yours, probe(**own)[0], val_chars, bf16)
    return choice


def _budgeted(cfg: TrainConfig, given: dict[str, Any]) -> TrainConfig:
    """With a time budget and no number of steps given, the clock alone ends the run."""
    if cfg.max_time is not None and "steps" not in given:
        return dataclasses.replace(cfg, steps=config.LIMITS["steps"])
    return cfg


def splits(cfg: TrainConfig, corpus: Corpus, validation: Corpus | None) -> tuple[Any, Any]:
    """The training and validation tokens: the whole corpus and the validation file, or else the corpus split
    at ``val_fraction`` from its end."""
    if validation is None:
        return split(corpus.tokens, cfg.val_fraction)
    return corpus.tokens, validation.tokens


def _validation_file(cfg: TrainConfig, vocab: Vocab, encoding: str, errors: str,
                     progress: Progress | None) -> Corpus | None:
    """The run's validation file (``val_file``), encoded with the training corpus's vocabulary, or None."""
    if cfg.val_file is None:
        return None
    path = Path(cfg.val_file)
    try:
        validation = load_corpus(path, encoding, errors, vocab, progress)
    except UnknownCharacters as e:
        raise e.reworded("a validation file may only hold characters of the training corpus: remove them from "
                         "it, or add text that has them to the corpus") from None
    if len(validation.tokens) < 2:
        raise CharRNNError(f"the validation file {path} needs at least two characters")
    return validation


def _overlap(corpus: Corpus, validation: Corpus | None) -> list[str]:
    """A warning if the validation file is also trained on (named alone or found in a corpus folder)."""
    if validation is None:
        return []
    trained = [f for f, _ in corpus.files] or [corpus.path]
    if validation.path.resolve() not in {f.resolve() for f in trained}:
        return []
    return [f"the validation file {validation.path} is part of the corpus too: the model trains on it, so its "
            "score does not measure how well the model does on text it has not seen"]


def new_model(cfg: TrainConfig, corpus: Corpus, validation: Corpus | None = None) -> CharRNN:
    """A freshly initialised model for a corpus; with the adaptive head its clusters are fitted to the training
    split's character frequencies."""
    vocab_size = len(corpus.vocab)
    if not cfg.adaptive(vocab_size):
        return CharRNN(cfg.model_config(vocab_size))
    counts = torch.from_numpy(token_counts(splits(cfg, corpus, validation)[0], vocab_size))
    model = CharRNN(cfg.model_config(vocab_size, choose_cutoffs(counts, cfg.hidden_size)))
    if isinstance(model.head, AdaptiveHead):  # too few characters for clusters: a plain softmax instead
        model.head.rank.copy_(frequency_rank(counts))
    return model


def _default_name(corpus_path: Path) -> str:
    stem = corpus_path.resolve().name if corpus_path.is_dir() else corpus_path.stem
    stem = stem[:80] or "corpus"  # a file name may be 255 bytes; the run's name must fit too
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_new_run_dir(run_dir: Path) -> Path:
    if run_dir.exists() and not run_dir.is_dir():
        raise CharRNNError(f"--out {run_dir} is a file: give a directory")
    if checkpoint.list_checkpoints(run_dir) or (run_dir / METRICS).exists():
        raise CharRNNError(f"{run_dir} already holds a run: choose another --out")
    if (run_dir / CONFIG).exists():  # e.g. the file given with --config: never overwrite a user's file
        raise CharRNNError(f"{run_dir} already has a {CONFIG} that a run would overwrite: choose another --out")
    return run_dir


def _warm_start(given: tuple[Path, ...], config_file: Path | None, flags: dict[str, Any], out: Path | None,
                init_from: Path, grow_vocab: bool, encoding: str, errors: str, progress: Progress | None) -> Setup:
    """A new run (fresh optimizer and step count) whose model starts from another run's weights."""
    ckpt = checkpoint.find(init_from, RUNS_ROOT)
    old = ckpt.model_config
    given_values = config.given(config_file, flags)
    cfg = _budgeted(TrainConfig(**{**{k: getattr(old, k) for k in config.MODEL_SETTINGS}, **given_values}),
                    given_values)
    for key in config.MODEL_SETTINGS:
        if getattr(cfg, key) != getattr(old, key):
            raise CharRNNError(f"{key} is {getattr(cfg, key)!r} but --init-from {init_from} has "
                               f"{getattr(old, key)!r}: a warm start keeps the model's shape")
    sources = expand(given, encoding, errors)
    vocab = ckpt.vocab
    unknown = [c for c in vocab_of(sources.scan(encoding, errors, progress)).chars if c not in vocab]
    if unknown and not grow_vocab:
        raise CharRNNError(f"{sources.name} has {len(unknown)} character(s) that {init_from} has never seen: "
                           f"{describe_chars(unknown)}; pass --grow-vocab to add them to the model")
    set_seed(cfg.seed)
    weights = ckpt.load_model().state_dict()
    warnings = list(ckpt.skipped) + ([sources.warning] if sources.warning else [])
    if unknown:
        vocab = Vocab(vocab.chars + sorted(unknown))
        weights = widen_vocab(weights, len(vocab))
        warnings.append(f"added {len(unknown)} new character(s) to the vocabulary: {describe_chars(unknown)}")
    model = CharRNN(cfg.model_config(len(vocab), old.cutoffs))
    model.load_state_dict(weights)
    text = sources.load(encoding, errors, progress, vocab=vocab)
    validation = _validation_file(cfg, vocab, encoding, errors, progress)
    warnings += _overlap(text, validation)
    run_dir = _check_new_run_dir(out) if out is not None else RUNS_ROOT / _default_name(sources.name)
    return Setup(run_dir, cfg, text, model, warnings=warnings, validation=validation, numbered=out is None)


def _resume(run_dir: Path | None, config_file: Path | None, flags: dict[str, Any],
            progress: Progress | None) -> Setup:
    """Continue a run from its newest good checkpoint, exactly where it stopped."""
    if run_dir is not None and run_dir.is_file():
        raise CharRNNError(f"{run_dir} is a file: --resume takes a run directory (or nothing for the latest run)")
    run_dir = run_dir if run_dir is not None else checkpoint.latest_run(RUNS_ROOT)
    if not run_dir.is_dir():
        raise CharRNNError(f"there is no run {run_dir} to resume")
    seen = _names(checkpoint.list_checkpoints(run_dir))
    ckpt = checkpoint.latest_of(run_dir)
    cfg = config.resolve_resume(ckpt.meta.config, config_file, flags)
    state = ckpt.resume_state()
    done = state.trainer
    if _finished(run_dir, done.step, ckpt.meta.config, cfg) or done.step >= cfg.steps or (  # no time to train:
            cfg.max_time is not None and done.elapsed >= training_time(cfg.max_time, done.eval_seconds)):
        raise CharRNNError(f"{run_dir} already finished (step {done.step}, {done.elapsed:.0f}s): "
                           "pass a larger --steps or --max-time to train further")
    _same_files(ckpt.meta.corpus)
    text = training_corpus(ckpt, progress)
    if text is None:
        raise _changed(ckpt.meta.corpus)
    validation = recorded_text(ckpt.meta.validation, ckpt.vocab, "validation file", progress)
    if validation is None and ckpt.meta.validation is not None:
        raise _changed(ckpt.meta.validation, "validation file")
    set_seed(cfg.seed)
    return Setup(run_dir, cfg, text, ckpt.load_model(), state, warnings=list(ckpt.skipped), validation=validation,
                 seen=seen)


def _finished(run_dir: Path, step: int, old: TrainConfig, cfg: TrainConfig) -> bool:
    """Whether the run ended cleanly at ``step`` on a limit that ``cfg`` (the resumed run's) does not raise: a timed
    run stops short of --max-time by the time it keeps for its last evaluation. Raises where validation ended it."""
    try:
        end = read_end(run_dir)
    except (OSError, ValueError, RecursionError, Damaged):
        return False  # judged by its limits alone
    if end is None or end.step != step:
        return False
    if end.how == "validation":
        raise CharRNNError(f"{run_dir} already finished: validation rose with the learning rate at its floor "
                           f"(step {step}), so more steps would only overfit; to train further, start a new run "
                           f"from it with --init-from {run_dir}")
    return end.how == "time" and (cfg.max_time or 0) <= (old.max_time or 0)


def read_end(run_dir: Path) -> RunEnd | None:
    """How the run's training ended (its ended.json), or None if it has not ended cleanly. Raises OSError,
    ValueError or Damaged where the file does not read."""
    path = run_dir / ENDED
    try:
        if path.stat().st_size > MAX_ENDED:
            raise ValueError("too large")
        return RunEnd.from_dict(json.loads(path.read_bytes()), ENDED)
    except FileNotFoundError:
        return None


def _changed(info: CorpusInfo, what: str = "corpus") -> CharRNNError:
    """The error for a run whose text is no longer what it was trained on."""
    return CharRNNError(f"the {what} {info.path} has changed since this run started{_which(info)}; it cannot be "
                        "resumed exactly: start a new run (use --init-from to keep the weights)")


def _which(info: CorpusInfo) -> str:
    """For a corpus of several files that changed: which file did (the first), as a note for a message."""
    changed = next((f.path for f in info.files if file_sha256(Path(f.path)) != f.sha256), None)
    return f" ({changed} changed)" if changed else ""


def _same_files(info: CorpusInfo) -> None:
    """For a corpus of several files: the folders and files it was named by must still stand for the same files
    (none added or removed), or resuming would quietly train on a different list."""
    if not info.inputs:
        return
    for name in info.inputs:
        if not Path(name).exists():
            raise CharRNNError(f"the run's corpus {name} is gone: it is needed to resume the run")
    now = [str(f.absolute()) for f in expand([Path(p) for p in info.inputs], info.encoding, info.errors).files]
    before = [f.path for f in info.files]
    added, removed = [f for f in now if f not in set(before)], [f for f in before if f not in set(now)]
    if now != before:
        detail = f"{added[0]} was added" if added else f"{removed[0]} was removed" if removed else \
            "its files are in another order"
        more = len(added) + len(removed) - 1
        raise CharRNNError(f"the corpus {info.path} has changed since this run started ({detail}"
                           f"{f' and {more} more' if more > 0 else ''}); it cannot be resumed exactly: start a new "
                           "run (use --init-from to keep the weights)")


def training_corpus(ckpt: checkpoint.Checkpoint, progress: Progress | None = None) -> Corpus | None:
    """The corpus a checkpoint was trained on, encoded with its vocabulary and checked byte for byte against the
    SHA-256 it had (never trusted to the cache); None if it is no longer that text. An error if it is gone or
    cannot be read (or the cache cannot be written: that is not a changed corpus)."""
    return recorded_text(ckpt.meta.corpus, ckpt.vocab, "corpus", progress)


def recorded_text(info: CorpusInfo | None, vocab: Vocab, what: str, progress: Progress | None = None) -> Corpus | None:
    """The text a checkpoint records (its corpus or validation file: ``what``), checked byte for byte as
    ``training_corpus`` says; None if there is none recorded or it is no longer that text."""
    if info is None:
        return None
    files = [Path(f.path) for f in info.files] or [Path(info.path)]
    for path in files:
        if not path.is_file():
            raise CharRNNError(f"the run's {what} {path} is gone: it is needed to resume or to score the run's own "
                               "validation text (pass the text to score: `charrnn eval FILE`)")
    source = files if info.files else files[0]
    try:
        text = load_corpus(source, info.encoding, info.errors, vocab, progress, verify=True,
                           given=[Path(p) for p in info.inputs])
    except UnknownCharacters:  # characters the model has never seen: another text (an unreadable one says so)
        return None
    return text if text.sha256 == info.sha256 else None


def validation_split(ckpt: checkpoint.Checkpoint, progress: Progress | None = None) -> tuple[Any, str]:
    """Re-create the validation text a checkpoint was scored on (its validation file, or the end of its corpus),
    refusing a changed text: (tokens, name)."""
    meta = ckpt.meta
    if meta.validation is not None:
        validation = recorded_text(meta.validation, ckpt.vocab, "validation file", progress)
        if validation is None:
            raise CharRNNError(f"the run's validation file {meta.validation.path} has changed since training: pass "
                               "the text to score")
        return validation.tokens, f"{meta.validation.path} (validation file)"
    corpus = training_corpus(ckpt, progress)
    if corpus is None:
        raise CharRNNError(f"the run's corpus {meta.corpus.path} has changed since training{_which(meta.corpus)}: "
                           "pass the text to score")
    _, val = split(corpus.tokens, meta.config.val_fraction)
    return val, f"{meta.corpus.path} (validation split)"


def training_split(ckpt: checkpoint.Checkpoint, needed_by: str, progress: Progress | None = None) -> tuple[Any, Corpus]:
    """The training split a checkpoint was trained on (its whole corpus when it had a validation file), with the
    corpus, for ``needed_by`` (an option's name): an error if the corpus is gone or changed."""
    meta = ckpt.meta
    gone = [p for p in [Path(f.path) for f in meta.corpus.files] or [Path(meta.corpus.path)] if not p.is_file()]
    if gone:
        raise CharRNNError(f"the run's corpus {gone[0]} is gone: {needed_by} needs the text the run was trained on")
    corpus = training_corpus(ckpt, progress)
    if corpus is None:
        raise CharRNNError(f"the run's corpus {meta.corpus.path} has changed since training{_which(meta.corpus)}: "
                           f"{needed_by} needs the text the run was trained on")
    train = corpus.tokens if meta.validation is not None else split(corpus.tokens, meta.config.val_fraction)[0]
    return train, corpus


def build_trainer(setup: Setup, world: World = SOLO, on_event: Callable[[Event], None] | None = None,
                  on_sample: Callable[[SampleLine], None] | None = None, tensorboard: bool = False) -> Trainer:
    """The trainer for a prepared run: its splits and device, a writer that logs ``on_event``'s events and saves
    checkpoints (rank 0 alone writes), one that writes samples (``on_sample`` hears of them) if the run takes
    them, TensorBoard's if asked for, and, when resuming, the restored state. Rank 0 claims the run directory."""
    cfg = setup.cfg
    if tensorboard:
        board.require()
    _same_text_everywhere(setup, world)
    train_tokens, val_tokens = splits(cfg, setup.corpus, setup.validation)
    device = devices.for_worker(cfg.device, world)
    trainer = Trainer(setup.model, cfg, train_tokens, val_tokens, device, world=world)
    if world.rank:  # each worker its own dropout masks; the weights are rank 0's (DDP broadcast them)
        torch.manual_seed(cfg.seed + 2_000_003 * world.rank)  # not the seed of its batches' generator
    if setup.resume is not None:
        warning = _restore(trainer, setup.resume, setup.run_dir, world)
        setup.warnings += [warning] if warning else []
    if cfg.sample_every:
        samples.start(setup.corpus.vocab, cfg.sample_prefix)  # a prefix of unseen characters fails before any write
    if world.is_main:
        setup.run_dir, setup.lock, setup.found = _claim(setup.run_dir, setup.numbered)
        _still_as_prepared(setup)
        try:
            if setup.resume is not None:
                for name in (METRICS, samples.SAMPLES):
                    _rewind(setup.run_dir / name, trainer.step)
            (setup.run_dir / ENDED).unlink(missing_ok=True)  # after the logs: a run that cannot go on keeps its end
        except OSError as e:
            raise CharRNNError(f"cannot write the run directory {setup.run_dir}: {e.strerror or e}; free some disk "
                               "space and resume again") from None
        if tensorboard:  # a resumed run's events from after its checkpoint are hidden (they are logged again)
            setup.board = board.Board(setup.run_dir, trainer.step + 1 if setup.resume is not None else None)
    setup.run_dir = dist.broadcast(world, setup.run_dir)
    writer = RunWriter(setup.run_dir, cfg, setup.corpus, world, setup.validation)
    trainer.save = writer.save
    listeners = [writer.log] + [on_event] * (on_event is not None)
    sample_listeners = [on_sample] * (on_sample is not None)
    if setup.board is not None:
        listeners.append(setup.board.event)
        sample_listeners.append(setup.board.sample)

    def callback(event: Event) -> None:
        for listener in listeners:
            listener(event)

    trainer.callback = callback
    if cfg.sample_every:
        trainer.sample = samples.SampleWriter(setup.run_dir, setup.corpus.vocab, cfg.sample_prefix, cfg.seed, world,
                                              sample_listeners)
    return trainer


def _same_text_everywhere(setup: Setup, world: World) -> None:
    """Every worker read the corpus on its own (rank 0 first): they must have read the same files with the same
    bytes (a file added to a folder or edited in between would make them train on different corpora)."""
    if not world.enabled:
        return
    ours = (setup.corpus.sha256, setup.validation.sha256 if setup.validation else None)
    differs = float(dist.broadcast(world, ours) != ours)
    if dist.all_max(world, [differs], torch.device("cpu"))[0]:
        raise CharRNNError(f"the workers read different texts from {setup.corpus.path} (a file changed, or was "
                           "added or removed, while they read it): run again")


def _restore(trainer: Trainer, state: ResumeState, run_dir: Path, world: World) -> str | None:
    """Load this worker's part of a resume state; returns a warning if the run cannot continue exactly."""
    # saved by another number of workers: their streams cut the text differently (a position may not even exist
    # in this world's), and one worker's random generators restored on two would draw the same batches and masks
    own = state.workers[world.rank] if len(state.workers) == world.world_size else None
    try:
        trainer.restore(state.trainer, own)
    except Damaged as e:
        raise CharRNNError(f"the newest checkpoint of {run_dir} has a damaged training state ({e}); move it "
                           "aside to resume from the one before, or start a new run with --init-from") from None
    if own is None:
        return (f"the run was saved by {len(state.workers)} worker(s) and resumes on {world.world_size}: it goes "
                "on from the same weights, optimizer and step, each worker on a stream of batches of its own")
    return None


def _claim(run_dir: Path, numbered: bool) -> tuple[Path, int, frozenset[str] | None]:
    """Make ``run_dir`` this process's own: create it (with the next free -N suffix if ``numbered`` and the
    name is taken) and hold its lock, so that two runs started in the same second never share a directory.
    Returns the directory, the lock's descriptor, and the names the directory held if it was there already."""
    base, n = run_dir, 1
    while True:
        found = None
        try:
            try:
                run_dir.mkdir(parents=True)
            except FileExistsError:
                if numbered:
                    n += 1
                    run_dir = base.with_name(f"{base.name}-{n}")
                    continue
                found = frozenset(os.listdir(run_dir))
        except OSError as e:
            raise CharRNNError(f"cannot create the run directory {run_dir}: {e.strerror}") from None
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CharRNNError(f"another charrnn process is training in {run_dir}: wait for it to finish, "
                               "or choose another --out") from None
        return run_dir, fd, found


def _names(paths: list[Path]) -> tuple[str, ...]:
    return tuple(p.name for p in paths)


def _still_as_prepared(setup: Setup) -> None:
    """Check, holding the lock, that no other run trained in the directory while this one was being prepared (two
    runs started into one --out, the first done before the second claimed it); let go of it if one did."""
    try:
        if setup.resume is None:
            _check_new_run_dir(setup.run_dir)
        elif _names(checkpoint.list_checkpoints(setup.run_dir)) != setup.seen:
            raise CharRNNError(f"another charrnn process trained in {setup.run_dir} while this one was starting: "
                               "run the command again to resume from where it stopped")
    except CharRNNError:
        os.close(setup.lock)
        setup.lock = None
        raise


def write_atomic(path: Path, text: str) -> None:
    """Replace a small text file so that it is the old or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _rewind(path: Path, step: int) -> None:
    """Drop the lines of a log (metrics or samples) written after ``step`` (and a line cut short by a crash): a
    resumed run writes them again, so the file ends with neither duplicate nor missing lines."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError, RecursionError):  # a damaged line is dropped
            continue
    write_atomic(path, "".join(kept))


def weights_checksum(model: torch.nn.Module) -> str:
    """A hash of every weight's bytes, to check that workers' copies of the model are bit-identical."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def corpus_info(c: Corpus) -> CorpusInfo:
    """What a checkpoint records of a text it was trained or validated on."""
    return CorpusInfo(str(c.path.resolve()), c.sha256, int(len(c.tokens)), c.encoding, c.errors,
                      tuple(str(g.absolute()) for g in c.given), tuple(SourceFile(str(f), sha) for f, sha in c.files))


class RunWriter:
    """Writes a run's files: the metrics log and, with every worker's resume state, its checkpoints.
    Every worker has one (saving is collective); only rank 0 writes."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, corpus: Corpus, world: World = SOLO,
                 validation: Corpus | None = None) -> None:
        self.run_dir = run_dir
        self.cfg = cfg
        self.corpus = corpus
        self.world = world
        self.validation = validation

    def log(self, event: Event) -> None:
        if not self.world.is_main:
            return
        try:
            if not (self.run_dir / CONFIG).exists():
                write_atomic(self.run_dir / CONFIG, to_toml(self.cfg.to_dict()))
            with (self.run_dir / METRICS).open("a", encoding="utf-8") as f:
                f.write(json.dumps(event.to_dict()) + "\n")
        except OSError as e:
            raise CharRNNError(f"cannot write the run directory {self.run_dir}: {e.strerror}") from None

    def meta(self, trainer: Trainer, score: Score | None) -> CheckpointMeta:
        c = self.corpus
        best = trainer.best_loss if np.isfinite(trainer.best_loss) else None
        return CheckpointMeta(
            step=trainer.step, vocab=c.vocab.chars, model=trainer.model.config, config=self.cfg,
            corpus=corpus_info(c),
            metrics=Scores(score.loss if score else None, score.chars if score else None, best, trainer.best_step),
            elapsed=trainer.elapsed, validation=None if self.validation is None else corpus_info(self.validation))

    def save(self, trainer: Trainer, score: Score | None) -> None:
        """Save a checkpoint with every worker's resume state; all workers take part, rank 0 writes."""
        if not all(torch.isfinite(p).all() for p in trainer.model.parameters()):
            raise CharRNNError(f"the weights are no longer finite at step {trainer.step}; nothing was saved: "
                               "lower --lr or --clip and resume from the last checkpoint", exit_code=4)
        shared, own = trainer.state()
        workers = dist.gather(self.world, own)
        if self.world.enabled:
            sums = dist.gather(self.world, weights_checksum(trainer.model))
            if self.world.is_main and len(set(sums)) != 1:
                raise CharRNNError(f"the workers' weights differ at step {trainer.step}: this is a bug, please "
                                   "report it", exit_code=1)
        if self.world.is_main:
            checkpoint.save(self.run_dir, trainer.model, self.meta(trainer, score), ResumeState(shared, workers))
            checkpoint.prune(self.run_dir, self.cfg.keep)
        dist.barrier(self.world)  # nobody exits (or is killed by torchrun) while rank 0 is still writing


def fit(trainer: Trainer, setup: Setup, on_signal: Callable[[int], None] | None = None) -> Summary:
    """Train to the end. The first SIGINT, SIGTERM or SIGHUP finishes the step, scores and saves; a second one skips
    the scoring (``on_signal`` is told of both); a third stops at once. A run that fails before writing anything
    leaves no directory behind."""
    try:
        with _stop_on_signals(trainer, on_signal or (lambda signum: None)):
            summary = trainer.fit()
        if setup.lock is not None:  # rank 0, before it lets go of the run
            stop = trainer.stop_signal
            end = RunEnd(summary.stopped_by, summary.steps, signal.Signals(stop).name if stop else None)
            with contextlib.suppress(OSError):  # without it, `charrnn runs` calls the run crashed: no worse
                write_atomic(setup.run_dir / ENDED, json.dumps(end.to_dict()) + "\n")
        return summary
    except BaseException:
        _remove_if_empty(setup.run_dir, setup.found)
        raise
    finally:
        if setup.board is not None:
            setup.board.close()
            setup.board = None
        if setup.lock is not None:
            os.close(setup.lock)  # the run is free to be resumed
            setup.lock = None


class Interrupted(Exception):
    """A second stop signal: leave at once (exit code 128 + signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer, on_signal: Callable[[int], None]) -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        if trainer.received_signal is None:
            trainer.received_signal = signum
        elif not trainer.skip_eval:
            trainer.skip_eval = True  # an evaluation in progress stops at its next chunk
        else:
            raise Interrupted(signum)
        with contextlib.suppress(OSError):  # telling the user must not unwind the run: a closed terminal
            on_signal(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _remove_if_empty(run_dir: Path, found: frozenset[str] | None = None) -> None:
    """Remove a run directory that holds nothing of value (no checkpoint, no metrics), or, where it was there
    before the run (``found``: what it held then), only what the run added to it."""
    if not run_dir.is_dir() or checkpoint.list_checkpoints(run_dir) or (run_dir / METRICS).exists():
        return
    if found is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in set(os.listdir(run_dir)) - found:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def describe(setup: Setup, trainer: Trainer) -> str:
    """One line saying what is being trained, where, and how."""
    cfg, text, world = setup.cfg, setup.corpus, trainer.world
    scale = f"batch {cfg.batch_size}"
    if world.enabled:
        scale = f"{world.world_size} workers x {scale} = global batch {world.world_size * cfg.batch_size}"
    params = sum(p.numel() for p in trainer.model.parameters())
    files = f" ({len(text.files):,} files)" if text.files else ""
    held_out = f"; validation file {setup.validation.path}" if setup.validation is not None else ""
    return (f"corpus {text.path}{files}: {len(text.tokens):,} characters, {len(text.vocab)} distinct{held_out}; "
            f"model {cfg.cell} "
            f"{cfg.num_layers}x{cfg.hidden_size}, {params:,} parameters on {trainer.device}; "
            f"{scale}, lr {cfg.lr:g}{', bf16 autocast' if trainer.autocast_dtype else ''}; run {setup.run_dir}")
