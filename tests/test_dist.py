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
from charrnn.config import TrainConfig
from charrnn.corpus import load_corpus
from charrnn.data import RandomBatches, split
from tests.helpers import charrnn, env

# no dropout, whose draws differ between workers; fp32, since bf16 rounds a batch of 4 and two of 2 differently
FLAGS = ["--hidden-size", "24", "--embedding-size", "8", "--seq-len", "16", "--log-every", "5", "--eval-every", "10",
         "--warmup-steps", "5", "--dropout", "0", "--device", "cpu", "--precision", "fp32"]
pytestmark = pytest.mark.slow  # torchrun launches


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint.list_checkpoints(run_dir)[-1] / "model.safetensors")


def test_two_workers_match_one_process_with_the_same_global_batch(corpus: Path, tmp_path: Path):
    one = charrnn("train", corpus, "--steps", 20, "--batch-size", 4, *FLAGS, "--out", "one", cwd=tmp_path)
    two = charrnn("train", corpus, "--steps", 20, "--batch-size", 2, *FLAGS, "--out", "two", cwd=tmp_path, workers=2)
    assert one.returncode == two.returncode == 0, two.stderr
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
    charrnn(*args, "--out", "whole", cwd=tmp_path, workers=2)
    stopped = charrnn(*args, "--out", "halves", cwd=tmp_path, workers=2, stop_at=17, check=False)
    assert "stopped by SIGINT at step 17; checkpoint saved" in stopped.stderr, stopped.stderr
    assert checkpoint.latest_of(tmp_path / "halves").step == 17, stopped.stderr
    state = checkpoint.latest_of(tmp_path / "halves").resume_state()
    assert len(state.workers) == 2  # each worker's streams, state and RNGs
    assert state.workers[0].hidden[0].shape == (2, 2, 24)
    assert state.workers[0].batches != state.workers[1].batches or state.workers[0].hidden[0].ne(
        state.workers[1].hidden[0]).any()  # two different streams, not one saved twice
    assert not torch.equal(state.workers[0].rng_cpu, state.workers[1].rng_cpu)  # each its own random stream
    charrnn("train", "--resume", "halves", cwd=tmp_path, workers=2)
    strip = [(m["split"], m["step"], m["loss"]) for m in metrics(tmp_path / "whole")]
    assert strip == [(m["split"], m["step"], m["loss"]) for m in metrics(tmp_path / "halves")]
    wa, wb = weights(tmp_path / "whole"), weights(tmp_path / "halves")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    other = charrnn("train", "--resume", "halves", "--steps", 35, cwd=tmp_path)
    assert "saved by 2 worker(s) and resumes on 1" in other.stderr and other.returncode == 0


def test_sigterm_to_one_worker_stops_all_after_one_checkpoint(corpus: Path, tmp_path: Path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "charrnn",
           "train", str(corpus), "--steps", "100000", "--batch-size", "2", *FLAGS, "--out", "r"]
    launcher = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
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
    assert launcher.returncode != 0  # torchrun reports the stop as a failed worker (exit 143)
    last = checkpoint.latest_of(tmp_path / "r")
    state = last.resume_state()
    assert len(state.workers) == 2 and state.trainer.step == last.step  # both workers saved, on one step
    assert last.val_loss is not None  # the stop checkpoint is scored, by both workers together
    resumed = charrnn("train", "--resume", "r", "--steps", last.step + 4, cwd=tmp_path, workers=2)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize("batching", ["random", "sequential"])
def test_a_run_resumes_on_more_workers_with_a_stream_each(corpus: Path, tmp_path: Path, batching: str):
    """One worker's saved streams cannot be two's: restored on both they would draw the same random batches, and
    a sequential position past half of one worker's epoch does not exist in two's. Each goes on from the step on a
    stream of its own."""
    args = ["--batch-size", 2, "--batching", batching, "--dropout", "0.1", *FLAGS]
    charrnn("train", corpus, "--steps", 37, *args, "--out", "r", cwd=tmp_path)
    resumed = charrnn("train", "--resume", "r", "--steps", 45, cwd=tmp_path, workers=2)
    assert "saved by 1 worker(s) and resumes on 2" in resumed.stderr
    assert "a stream of batches of its own" in resumed.stderr
    state = checkpoint.latest_of(tmp_path / "r").resume_state()
    assert state.trainer.step == 45 and len(state.workers) == 2
    one, two = state.workers
    assert not torch.equal(one.rng_cpu, two.rng_cpu)  # their own dropout masks
    if batching == "random":  # their own windows, and not those a fresh run draws first
        assert not torch.equal(one.batches["generator"], two.batches["generator"])
        fresh = RandomBatches(split(load_corpus(corpus).tokens, 0.1)[0], 2, 16, TrainConfig().seed, rank=0)
        for _ in range(45 - 37):
            next(fresh)
        assert not torch.equal(one.batches["generator"], fresh.state_dict()["generator"])
    else:  # their own streams of the text
        assert not torch.equal(one.hidden[0], two.hidden[0])


def test_more_workers_than_gpus_is_an_error_and_cpu_workers_use_gloo(monkeypatch: pytest.MonkeyPatch):
    from charrnn import dist
    from charrnn.errors import CharRNNError

    joined = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: joined.append(f"cuda:{i}"))
    monkeypatch.setattr(dist.td, "is_initialized", lambda: False)
    monkeypatch.setattr(dist.td, "init_process_group", joined.append)
    for rank in (0, 1):
        world = dist.World(rank, 2, rank, 2)
        with pytest.raises(CharRNNError, match=r"torchrun started 2 workers on this machine, which has 1 GPU\(s\)"):
            dist.start(world)
        dist.start(world, "cpu")  # a machine with one GPU trains on its CPU with two workers
    assert joined == ["gloo", "gloo"]
    dist.start(dist.World(0, 2, 0, 1))  # one worker per GPU here (the other on another machine)
    assert joined[-2:] == ["cuda:0", "cpu:gloo,cuda:nccl"]
