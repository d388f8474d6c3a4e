"""Data-parallel training with torchrun: 2 CPU workers over Gloo against 1 process, on a tiny corpus."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from charrnn import checkpoint
from tests.test_resume import STOP_AT_SCRIPT

ROOT = Path(__file__).parent.parent
FLAGS = ["--hidden-size", "24", "--embedding-size", "8", "--seq-len", "16", "--log-every", "5", "--eval-every", "10",
         "--warmup-steps", "5", "--device", "cpu"]


def run(args: list[str], cwd: Path, workers: int = 1, stop_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if stop_at is not None:
        script = cwd / "stop_at.py"
        script.write_text(STOP_AT_SCRIPT)
        target = [str(script), str(stop_at)]
    else:
        target = ["-m", "charrnn"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={workers}"] \
        if workers > 1 else [sys.executable]
    result = subprocess.run([*launcher, *target, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=300)
    if result.returncode not in (0, 130) and "ChildFailedError" not in result.stderr:
        raise AssertionError(result.stderr[-3000:])
    return result


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint.list_checkpoints(run_dir)[-1] / "model.safetensors")


def test_two_workers_match_one_process_with_the_same_global_batch(corpus: Path, tmp_path: Path):
    one = run(["train", corpus, "--steps", 20, "--batch-size", 4, *FLAGS, "--out", "one"], tmp_path)
    two = run(["train", corpus, "--steps", 20, "--batch-size", 2, *FLAGS, "--out", "two"], tmp_path, workers=2)
    assert one.returncode == two.returncode == 0, two.stderr[-2000:]
    assert "2 workers x batch 2 = global batch 4" in two.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "one", "two"]  # rank 1 wrote nothing
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [(m["split"], m["step"]) for m in a] == [(m["split"], m["step"]) for m in b]  # rank 0 wrote once
    for x, y in zip(a, b, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4)
        if x["split"] == "train":
            assert x["chars_per_s"] > 0 and y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-3)
    wa, wb = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_distributed_resume_reproduces_an_uninterrupted_run(corpus: Path, tmp_path: Path):
    args = ["train", corpus, "--steps", 30, "--batch-size", 2, "--dropout", "0.1", *FLAGS]
    run([*args, "--out", "whole"], tmp_path, workers=2)
    stopped = run([*args, "--out", "halves"], tmp_path, workers=2, stop_at=17)
    assert checkpoint.latest_of(tmp_path / "halves", []).step == 17, stopped.stderr[-2000:]
    state = checkpoint.latest_of(tmp_path / "halves", []).trainer_state()
    assert state["world_size"] == 2 and len(state["ranks"]) == 2  # each worker's streams, state and RNGs
    assert state["ranks"][0]["hidden"][0].shape == (2, 2, 24)
    run(["train", "--resume", "halves"], tmp_path, workers=2)
    strip = [(m["split"], m["step"], m["loss"]) for m in metrics(tmp_path / "whole")]
    assert strip == [(m["split"], m["step"], m["loss"]) for m in metrics(tmp_path / "halves")]
    wa, wb = weights(tmp_path / "whole"), weights(tmp_path / "halves")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    other = run(["train", "--resume", "halves", "--steps", 35], tmp_path, workers=1)
    assert "saved by 2 worker(s) and resumes on 1" in other.stderr and other.returncode == 0


def test_sigterm_to_one_worker_stops_all_after_one_checkpoint(corpus: Path, tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "charrnn",
           "train", str(corpus), "--steps", "100000", "--batch-size", "2", *FLAGS, "--out", "r"]
    launcher = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
    deadline = time.monotonic() + 120
    while not checkpoint.list_checkpoints(tmp_path / "r"):
        assert launcher.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    workers = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    os.kill(int(workers[-1]), signal.SIGTERM)  # one worker only
    _, stderr = launcher.communicate(timeout=120)
    assert "stopped by SIGTERM at step" in stderr and "Resume with: charrnn train --resume r" in stderr
    last = checkpoint.latest_of(tmp_path / "r", [])
    state = last.trainer_state()
    assert [s["step"] for s in state["ranks"]] == [last.step, last.step]  # both stopped on the same step
    assert last.val_loss is None or last.step % 10 == 0
    resumed = run(["train", "--resume", "r", "--steps", last.step + 4], tmp_path, workers=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
