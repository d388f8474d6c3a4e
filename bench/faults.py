"""Fault injection: stop training runs the hard way, many times, and check that nothing is ever lost.

    python bench/faults.py [--faults 60] [--seed 0]

Each fault is one of SIGKILL, SIGTERM or SIGHUP at a random moment of one of four phases (watched for: the
encoder's temporary directory, or a first logged step of the training process), or a full disk:
  encode   a new run on a ~20 MB corpus with an empty cache: the signal lands while the corpus is encoded
  eval     a run whose validation split is large, so that most moments are inside an evaluation
  save     a run that saves a checkpoint at every step, so that most moments are inside a save
  disk     a resume under a file size limit (`ulimit -f`) that the optimizer state does not fit in
After each fault the run must load (generate/eval's view: manifest, weights; --resume's view: the resume
state) from its newest complete checkpoint. At the end every run is resumed to completion once more, and
no temporary file may be left in any checkpoint directory or in the corpus cache. Prints one JSON line per
fault and a summary: faults, unloadable (must be 0), temp files left (must be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from charrnn import checkpoint
from charrnn.errors import CharRNNError

WORDS = "the keeper mends the machine by the light of the north lamp and the river runs cold past the mill".split()
TINY = ["--hidden-size", "32", "--embedding-size", "8", "--batch-size", "4", "--seq-len", "16", "--device", "cpu",
        "--log-every", "1"]
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "HUP": signal.SIGHUP}


def text(chars: int, seed: int) -> str:
    rng = random.Random(seed)
    out, size = [], 0
    while size < chars:
        word = rng.choice(WORDS) + rng.choice("  \n.")
        out.append(word)
        size += len(word)
    return "".join(out)


def temp_files(work: Path) -> list[str]:
    """Temporary files or directories left in any run's checkpoints or in the corpus cache."""
    found = []
    for root in [*work.glob("*/checkpoints"), work / "cache" / "corpora"]:
        if root.is_dir():
            found += [str(p.relative_to(work)) for p in root.iterdir() if p.name.startswith(".")]
    return found


def loadable(run_dir: Path) -> str | None:
    """None if the run loads from its newest complete checkpoint (or has none yet), else the error."""
    if not checkpoint.list_checkpoints(run_dir):
        return None
    try:
        ckpt = checkpoint.latest_of(run_dir)
        ckpt.load_model()
        ckpt.resume_state()
    except CharRNNError as e:
        return str(e)
    return None


def encoding_started(cache: Path) -> bool:
    """The encoder's temporary directory exists in the corpus cache."""
    return cache.is_dir() and any(p.name.startswith(".") for p in cache.iterdir())


def grown(path: Path, size: int) -> bool:
    return path.exists() and path.stat().st_size > size


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 60) -> None:
    """Poll until ``condition`` holds, the process has ended, or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not condition() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faults", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "small.txt").write_text(text(300_000, 1))
        (work / "big.txt").write_text(text(20_000_000, 2))
        env = {**os.environ, "CHARRNN_CACHE_DIR": str(work / "cache")}

        def start(args: list[str], limit: int | None = None) -> subprocess.Popen:
            def preexec() -> None:
                if limit is not None:
                    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

            return subprocess.Popen([sys.executable, "-m", "charrnn", "train", *args], cwd=work, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)

        runs = {"eval": ["small.txt", "--val-fraction", "0.4", "--eval-every", "3"],
                "save": ["small.txt", "--eval-every", "1", "--val-fraction", "0.02"]}
        counts = {"faults": 0, "unloadable": 0, "exit_codes": {}}
        for i in range(args.faults):
            phase = rng.choice(["encode", "eval", "save", "disk"])
            name = rng.choice(list(SIGNALS))
            if phase == "encode":
                shutil.rmtree(work / "cache", ignore_errors=True)  # so that the corpus is encoded again
                proc = start(["big.txt", "--steps", "2", "--eval-every", "1", "--val-fraction", "0.0001", *TINY,
                              "--out", f"encode-{i}"])
                wait_until(partial(encoding_started, work / "cache" / "corpora"), proc)
                time.sleep(rng.uniform(0.0, 1.0))
            else:
                key = "save" if phase == "disk" else phase
                run_dir = work / key
                resume = checkpoint.list_checkpoints(run_dir)
                cmd = ["--resume", key, "--steps", "10000000"] if resume else [*runs[key], "--steps", "10000000",
                                                                               *TINY, "--out", key]
                limit = None
                if phase == "disk" and resume:
                    limit = (resume[-1] / "model.safetensors").stat().st_size + 2048
                metrics = run_dir / "metrics.jsonl"
                logged = metrics.stat().st_size if metrics.exists() else 0
                proc = start(cmd, limit)
                # past start-up (this process has logged a step), then a random moment
                wait_until(partial(grown, metrics, logged), proc)
                time.sleep(rng.uniform(0, 1.5))
            if proc.poll() is None and phase != "disk":
                proc.send_signal(SIGNALS[name])
            try:
                _, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            code = proc.returncode
            counts["exit_codes"][str(code)] = counts["exit_codes"].get(str(code), 0) + 1
            target = work / (f"encode-{i}" if phase == "encode" else "save" if phase == "disk" else phase)
            error = loadable(target)
            traceback = "Traceback" in (err or "")
            counts["faults"] += 1
            counts["unloadable"] += error is not None
            counts["tracebacks"] = counts.get("tracebacks", 0) + traceback
            print(json.dumps({"bench": "faults", "fault": i, "phase": phase, "signal": None if phase == "disk"
                              else name, "exit": code, "loadable": error is None, "error": error,
                              "traceback": traceback, "temp_now": len(temp_files(work))}), flush=True)
        for key in runs:  # finish every run once more: leftovers of earlier kills must be cleaned up
            if checkpoint.list_checkpoints(work / key):
                step = checkpoint.latest_of(work / key).step
                subprocess.run([sys.executable, "-m", "charrnn", "train", "--resume", key, "--steps", str(step + 2)],
                               cwd=work, env=env, capture_output=True, check=True)
        subprocess.run([sys.executable, "-m", "charrnn", "train", "big.txt", "--steps", "1", "--val-fraction", "0.0001",
                        *TINY, "--out", "encode-final"], cwd=work, env=env, capture_output=True, check=True)
        left = temp_files(work)
        print(json.dumps({"bench": "faults", "summary": True, **counts, "temp_files_left": len(left),
                          "left": left[:10]}))


if __name__ == "__main__":
    main()
