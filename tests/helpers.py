"""What several test files share: tiny flags, a trainer built like the CLI builds it, and ways to run the real
command line in a subprocess (plain, stopped at a given step, or under torchrun)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from charrnn import run
from charrnn import train as training
from charrnn.config import TrainConfig
from charrnn.train import Trainer

ROOT = Path(__file__).parent.parent

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


def wide_text(chars: int = 20000, distinct: int = 1200, seed: int = 0) -> str:
    """Text over ``distinct`` CJK characters with Zipf-like frequencies (like Chinese: a few characters are most of
    the text), in short lines; every character occurs at least once."""
    gen = np.random.default_rng(seed)
    ranks = np.minimum(gen.zipf(1.3, chars), distinct) - 1
    ranks[:distinct] = np.arange(distinct)
    body = [chr(0x4E00 + r) for r in gen.permutation(ranks)]
    for i in range(0, chars, 24):
        body[i] = "\n"
    return "".join(body)


TINY_SHAPE = ["--hidden-size", "24", "--embedding-size", "8", "--batch-size", "4", "--seq-len", "16", "--dropout", "0"]
TINY_CADENCE = ["--eval-every", "10", "--log-every", "5", "--warmup-steps", "5"]
CPU = ["--device", "cpu"]
TINY_FLAGS = [*TINY_SHAPE, *TINY_CADENCE, *CPU]


def make_trainer(corpus: Path, cfg: TrainConfig, **attrs: object) -> Trainer:
    """A trainer for ``cfg`` on ``corpus``, set up exactly as ``charrnn train`` sets one up, writing into a fresh
    run directory beside the corpus. ``attrs`` replace Trainer attributes (e.g. ``callback`` or ``save``)."""
    out = Path(tempfile.mkdtemp(prefix="run-", dir=corpus.parent))
    trainer = run.build_trainer(run.prepare(corpus, flags=cfg.to_dict(), out=out))
    for name, value in attrs.items():
        setattr(trainer, name, value)
    return trainer


def fake_clock(monkeypatch: pytest.MonkeyPatch, trainer: Trainer, step: float, evaluation: float) -> list[float]:
    """Training's clock made fake: each of ``trainer``'s steps takes ``step`` seconds, each evaluation
    ``evaluation``. Returns the clock (its one element is the time now)."""
    clock = [0.0]
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    real_evaluate, real_step = training.evaluate, trainer.train_step

    def slow_evaluate(*args: object, **kwargs: object) -> object:
        clock[0] += evaluation
        return real_evaluate(*args, **kwargs)

    def timed_step(batch: object) -> object:
        clock[0] += step
        return real_step(batch)

    monkeypatch.setattr(training, "evaluate", slow_evaluate)
    trainer.train_step = timed_step
    return clock


def env() -> dict[str, str]:
    """The environment for a subprocess that imports this checkout's charrnn."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


# Runs the real CLI, but asks the trainer to stop (as a first Ctrl-C would) once it reaches the step in argv[1].
STOP_AT_SCRIPT = """
import signal, sys
from charrnn import train
from charrnn.cli import main
stop_at = int(sys.argv[1])
step = train.Trainer.train_step
def train_step(self, batch):
    out = step(self, batch)
    if self.step == stop_at:
        self.received_signal = signal.SIGINT
    return out
train.Trainer.train_step = train_step
sys.argv = ["charrnn"] + sys.argv[2:]
main()
"""


def charrnn(*args: object, cwd: Path, stop_at: int | None = None, workers: int = 1, check: bool = True,
            separate: bool = False) -> subprocess.CompletedProcess:
    """Run ``charrnn ARGS`` in ``cwd``, optionally stopping (as a first Ctrl-C would) once training reaches step
    ``stop_at``: in this process (CliRunner), or in a new process when ``separate`` or under torchrun with
    ``workers`` > 1. With ``check``, any exit code but 0 or 130 (stopped) fails the test with the whole stderr."""
    if not separate and workers == 1:
        result = _in_process([str(a) for a in args], cwd, stop_at)
    else:
        result = _subprocess(args, cwd, stop_at, workers)
    if check and result.returncode not in (0, 130):
        raise AssertionError(f"exit {result.returncode}\n{result.stderr}")
    return result


def _in_process(args: list[str], cwd: Path, stop_at: int | None) -> subprocess.CompletedProcess:
    """The command line in this process: no interpreter start-up and torch import per call (they cost seconds)."""
    from typer.testing import CliRunner

    from charrnn.cli import app

    threads, before, step = torch.get_num_threads(), os.getcwd(), Trainer.train_step

    def train_step(self: Trainer, batch: object) -> object:  # as STOP_AT_SCRIPT does in a subprocess
        out = step(self, batch)
        if self.step == stop_at:
            self.received_signal = signal.SIGINT
        return out

    os.chdir(cwd)
    Trainer.train_step = train_step
    try:
        result = CliRunner().invoke(app, args)
    finally:
        Trainer.train_step = step
        os.chdir(before)
        torch.set_num_threads(threads)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def _subprocess(args: tuple[object, ...], cwd: Path, stop_at: int | None, workers: int) -> subprocess.CompletedProcess:
    if stop_at is not None:
        script = cwd / "stop_at.py"
        script.write_text(STOP_AT_SCRIPT)
        target = [str(script), str(stop_at)]
    else:
        target = ["-m", "charrnn"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={workers}"] \
        if workers > 1 else [sys.executable]
    return subprocess.run([*launcher, *target, *map(str, args)], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=300)


def tiny_run(root: Path) -> tuple[Path, Path]:
    """A finished 10-step run of a 1x24 LSTM on ``synthetic_text`` under ``root`` (its corpus cache there too):
    (run directory, corpus)."""
    import pytest

    corpus = root / "corpus.txt"
    corpus.write_text(synthetic_text(6000), encoding="utf-8")
    cfg = TrainConfig(hidden_size=24, embedding_size=8, num_layers=1, batch_size=4, seq_len=16, steps=10,
                      eval_every=10, log_every=5, warmup_steps=5, device="cpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARRNN_CACHE_DIR", str(root / "cache"))
        setup = run.prepare(corpus, flags=cfg.to_dict(), out=root / "run")
        run.fit(run.build_trainer(setup), setup)
    return root / "run", corpus


def quick_checkpoint(root: Path, cell: str = "lstm", steps: int = 30, extra_chars: str = "T/✓日",
                     cutoffs: tuple[int, ...] = ()) -> Path:
    """A tiny model (2x16) given ``steps`` quick Adam steps on ``synthetic_text`` (enough to repeat words rather
    than one character: well under a second), saved as a real checkpoint under ``root``/``cell``, the way
    `charrnn train` leaves one, without a run. Its vocabulary also holds ``extra_chars``, never seen in training.
    With ``cutoffs`` the model has the adaptive head, its characters ranked by frequency in the text."""
    from charrnn import checkpoint
    from charrnn.config import CELLS, ModelConfig
    from charrnn.model import CharRNN, frequency_rank
    from charrnn.schema import CheckpointMeta, CorpusInfo, Scores
    from charrnn.vocab import Vocab

    text = synthetic_text(3000)
    vocab = Vocab.from_text(text + extra_chars)
    data = torch.from_numpy(vocab.encode(text).astype("int64"))
    torch.manual_seed(CELLS.index(cell))
    model = CharRNN(ModelConfig(vocab_size=len(vocab), cell=cell, embedding_size=8, hidden_size=16, num_layers=2,
                                cutoffs=cutoffs))
    if cutoffs:
        model.head.rank.copy_(frequency_rank(torch.bincount(data, minlength=len(vocab))))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        starts = torch.randint(len(data) - 17, (8,))
        batch = torch.stack([data[s : s + 17] for s in starts])  # (8, 17)
        nll, _ = model(batch[:, :-1], targets=batch[:, 1:])
        loss = nll.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    meta = CheckpointMeta(step=steps, vocab=vocab.chars, model=model.config, config=TrainConfig(cell=cell),
                          corpus=CorpusInfo("/somewhere/corpus.txt", "0" * 64, len(text)),
                          metrics=Scores(val_loss=loss.item()), elapsed=1.0)
    return checkpoint.save(root / (cell + "-adaptive" * bool(cutoffs)), model, meta)


# Tiny in-process runs (train, resume). Dropout makes training draw from the global random number generator, so
# that anything else drawing from it changes the losses.
RUN_FLAGS = dict(hidden_size=24, embedding_size=8, batch_size=4, seq_len=16, steps=20, eval_every=10, log_every=5,
                 warmup_steps=5, device="cpu", dropout=0.1, keep=5)


def train(root: Path, name: str, stop_at: int | None = None, **flags: object) -> Path:
    """Train a tiny run in-process into root/name; ``stop_at`` stops it there as a first Ctrl-C would."""
    setup = run.prepare(root / "corpus.txt", flags={**RUN_FLAGS, **flags}, out=root / name)
    trainer = run.build_trainer(setup)
    if stop_at is not None:
        stop_when(trainer, stop_at)
    run.fit(trainer, setup)
    return root / name


def resume(run_dir: Path) -> None:
    """Resume a run in-process to its end."""
    setup = run.prepare(run_dir, resume=True)
    run.fit(run.build_trainer(setup), setup)


def stop_when(trainer: Trainer, step: int) -> None:
    """Make ``trainer`` stop after ``step`` as if a first SIGINT had come then."""
    original = trainer.train_step

    def train_step(batch):  # type: ignore[no-untyped-def]
        out = original(batch)
        if trainer.step == step:
            trainer.received_signal = signal.SIGINT
        return out

    trainer.train_step = train_step  # type: ignore[method-assign]


def random_checkpoint(run_dir: Path, chars: str, cell: str = "lstm", hidden_size: int = 32, num_layers: int = 2,
                      embedding_size: int = 8, seed: int = 0) -> Path:
    """A checkpoint of an untrained model (random weights) over the characters ``chars``: no training needed."""
    from charrnn import checkpoint
    from charrnn.model import CharRNN
    from charrnn.schema import CheckpointMeta, CorpusInfo, Scores

    torch.manual_seed(seed)
    cfg = TrainConfig(cell=cell, hidden_size=hidden_size, num_layers=num_layers, embedding_size=embedding_size,
                      device="cpu")
    model = CharRNN(cfg.model_config(len(set(chars))))
    meta = CheckpointMeta(step=0, vocab=sorted(set(chars)), model=model.config, config=cfg,
                          corpus=CorpusInfo("synthetic.txt", "0" * 64, 0), metrics=Scores(), elapsed=0.0)
    return checkpoint.save(run_dir, model, meta)
