"""Never lose a run: exact resume in a new process, signals, SIGKILL at any moment, warm starts."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from charrnn import checkpoint
from tests.helpers import CPU, TINY_FLAGS, TINY_SHAPE, charrnn, env

pytestmark = pytest.mark.slow  # each test runs the command line in subprocesses

def losses(run_dir: Path) -> list[tuple]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(m["split"], m["step"], m["loss"], m["lr"], m["grad_norm"]) for m in lines]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint.list_checkpoints(run_dir)[-1] / "model.safetensors")


@pytest.mark.parametrize(
    ("steps", "stop_at", "extra"),
    [(40, 20, []), (200, 100, ["--dropout", "0.1"]), (60, 30, ["--batching", "random", "--dropout", "0.2"])],
    ids=["sequential", "across-epoch-boundary", "random-batches"],
)
def test_resume_is_bit_identical(corpus: Path, tmp_path: Path, steps: int, stop_at: int, extra: list[str]):
    args = ["train", corpus, "--steps", steps, "--eval-every", 15, "--log-every", 4, *TINY_SHAPE, *extra, *CPU]
    charrnn(*args, "--out", "whole", cwd=tmp_path)
    stopped = charrnn(*args, "--out", "halves", cwd=tmp_path, stop_at=stop_at)
    assert stopped.returncode == 130, stopped.stderr
    assert "Resume with: charrnn train --resume halves" in stopped.stderr
    assert checkpoint.latest_of(tmp_path / "halves").step == stop_at
    charrnn("train", "--resume", "halves", cwd=tmp_path)
    assert losses(tmp_path / "whole") == losses(tmp_path / "halves")
    a, b = final_weights(tmp_path / "whole"), final_weights(tmp_path / "halves")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_changed_settings_and_finished_runs(corpus: Path, tmp_path: Path):
    charrnn("train", corpus, "--steps", 10, *TINY_FLAGS, "--out", "r", cwd=tmp_path)
    changed = charrnn("train", "--resume", "r", "--hidden-size", 32, cwd=tmp_path, check=False)
    assert changed.returncode == 2
    assert "Error: hidden_size is 32 but the run was trained with 24" in changed.stderr
    done = charrnn("train", "--resume", "r", cwd=tmp_path, check=False)
    assert done.returncode == 2 and "already finished" in done.stderr
    more = charrnn("train", "--resume", "r", "--steps", 20, cwd=tmp_path)
    assert "resuming r at step 10" in more.stderr
    (tmp_path / "r" / "notes.txt").write_text("x")
    as_file = charrnn("train", "--resume", "r/notes.txt", cwd=tmp_path, check=False)
    assert as_file.returncode == 2 and "is a file: --resume takes a run directory" in as_file.stderr
    corpus.write_text(corpus.read_text(encoding="utf-8") + "more", encoding="utf-8")
    edited = charrnn("train", "--resume", "r", "--steps", 30, cwd=tmp_path, check=False)
    assert edited.returncode == 2 and f"the corpus {corpus} has changed since this run started" in edited.stderr
    none = charrnn("train", "--resume", "nothing-here", cwd=tmp_path, check=False)
    assert none.returncode == 2 and "Error: there is no run nothing-here to resume" in none.stderr


def _wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not checkpoint.list_checkpoints(run_dir):
        assert proc.poll() is None and time.monotonic() < deadline, "training never saved a checkpoint"
        time.sleep(0.05)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_and_tells_how_to_resume(corpus: Path, tmp_path: Path, sig: int, code: int):
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(corpus), "--steps", "100000",
                             *TINY_FLAGS, "--out", "r"], cwd=tmp_path, env=env(), stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(tmp_path / "r", proc)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Resume with: charrnn train --resume r" in stderr and "Traceback" not in stderr
    last = checkpoint.latest_of(tmp_path / "r")
    assert f"stopped by {signal.Signals(sig).name} at step {last.step}; checkpoint saved" in stderr
    assert charrnn("train", "--resume", "r", "--steps", last.step + 3, cwd=tmp_path).returncode == 0


def test_sigkill_at_random_moments_never_leaves_an_unloadable_run(corpus: Path, tmp_path: Path):
    rng = random.Random(0)
    run_dir = tmp_path / "r"
    args = [sys.executable, "-m", "charrnn", "train", str(corpus), "--steps", "100000", *TINY_SHAPE,
            "--eval-every", "1", "--log-every", "1", *CPU, "--out", "r"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env(), stderr=subprocess.DEVNULL)
    _wait_for_checkpoint(run_dir, proc)
    for kill in range(4):
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()
        proc.wait()
        ckpt = checkpoint.latest_of(run_dir)
        ckpt.load_model()
        ckpt.resume_state()
        if kill < 3:
            proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", "--resume", "r"], cwd=tmp_path,
                                    env=env(), stderr=subprocess.DEVNULL)
            time.sleep(2.0)  # let it get past start-up and save again
    assert charrnn("generate", "--checkpoint", "r", "--length", "5", cwd=tmp_path).returncode == 0
    assert charrnn("eval", "--checkpoint", "r", cwd=tmp_path).returncode == 0


def test_warm_start_and_vocabulary_growth(corpus: Path, tmp_path: Path):
    charrnn("train", corpus, "--steps", 10, *TINY_FLAGS, "--out", "base", cwd=tmp_path)
    new = tmp_path / "new.txt"
    new.write_text(corpus.read_text(encoding="utf-8") + " Zürich!", encoding="utf-8")
    refused = charrnn("train", new, "--init-from", "base", *TINY_FLAGS, cwd=tmp_path, check=False)
    assert refused.returncode == 2
    assert "has 3 character(s) that base has never seen: '!' (U+0021), 'Z' (U+005A), 'ü' (U+00FC)" in refused.stderr
    shape = charrnn("train", new, "--init-from", "base", "--hidden-size", 32, cwd=tmp_path, check=False)
    assert "Error: hidden_size is 32 but --init-from base has 24" in shape.stderr
    grown = charrnn("train", new, "--init-from", "base", "--grow-vocab", "--steps", 5, *TINY_SHAPE,
                    "--out", "tuned", cwd=tmp_path)
    assert "added 3 new character(s)" in grown.stderr
    old, tuned = checkpoint.latest_of(tmp_path / "base"), checkpoint.latest_of(tmp_path / "tuned")
    assert tuned.vocab.chars[: len(old.vocab)] == old.vocab.chars and tuned.step == 5
    assert tuned.model_config.hidden_size == 24
    out = charrnn("generate", "--checkpoint", "tuned", "--prefix", "Zürich", "--length", "5", cwd=tmp_path)
    assert out.stdout.startswith("Zürich")
