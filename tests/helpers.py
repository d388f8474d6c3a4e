"""What several test files share: tiny flags, a trainer built like the CLI builds it, and ways to run the real
command line in a subprocess (plain, stopped at a given step, or under torchrun)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from charrnn import run
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


TINY_SHAPE = ["--hidden-size", "24", "--embedding-size", "8", "--batch-size", "4", "--seq-len", "16"]
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


def charrnn(*args: object, cwd: Path, stop_at: int | None = None, workers: int = 1,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run ``charrnn ARGS`` in a subprocess (under torchrun with ``workers`` > 1), optionally stopping at a step.
    With ``check``, any exit code but 0 or 130 (stopped) fails the test with the whole stderr."""
    if stop_at is not None:
        script = cwd / "stop_at.py"
        script.write_text(STOP_AT_SCRIPT)
        target = [str(script), str(stop_at)]
    else:
        target = ["-m", "charrnn"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={workers}"] \
        if workers > 1 else [sys.executable]
    result = subprocess.run([*launcher, *target, *map(str, args)], cwd=cwd, env=env(), capture_output=True,
                            text=True, timeout=300)
    if check and result.returncode not in (0, 130):
        raise AssertionError(f"exit {result.returncode}\n{result.stderr}")
    return result


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
