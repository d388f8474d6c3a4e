"""Training beside another torch process on the same CPU cores: steps/s of `charrnn train` alone and with a
`charrnn generate --length 100000000` running beside it, under three settings, in the same run.

    python bench/contention.py CORPUS [--seconds 30]

  old      what charrnn did before: OpenMP's default wait policy and torch's default threads (one per core) in
           both processes (an empty OMP_WAIT_POLICY is ignored by libgomp, and keeps charrnn from setting one)
  passive  OMP_WAIT_POLICY=PASSIVE in both processes, generate on one thread
  new      charrnn's defaults: training untouched; generate waits passively, on one thread for one stream
Each training run is `charrnn train CORPUS --max-time SECONDS --log-every 1` in a temporary directory (the model
generate uses is trained there first, for a few seconds), its speed read from the last training window in its
metrics. Prints one JSON line per case and a summary: steps/s for each case as a ratio of the old defaults alone.
Run it on an otherwise quiet machine: it measures contention, so anything else running skews it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent


def charrnn(*args: object, env: dict[str, str], cwd: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "charrnn", *map(str, args)], env=env, cwd=cwd, **kwargs)


MODES = ("old", "passive", "new")


def environment(mode: str, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(PYTHONPATH=str(ROOT), CHARRNN_CACHE_DIR=str(cache))
    if mode != "new":
        env["OMP_WAIT_POLICY"] = {"old": "", "passive": "PASSIVE"}[mode]
    return env


def train_speed(corpus: Path, seconds: float, out: Path, env: dict[str, str], cwd: Path) -> tuple[int, float]:
    """Train for ``seconds``; the steps done and the training seconds, from the run's last training window."""
    charrnn("train", corpus, "--max-time", seconds, "--log-every", 1, "--device", "cpu", "--out", out, env=env,
            cwd=cwd, stderr=subprocess.DEVNULL).wait()
    lines = [json.loads(line) for line in (cwd / out / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in lines if m["split"] == "train"][-1]
    return last["step"], last["elapsed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    corpus = args.corpus.resolve()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="contention-") as tmp:
        cwd = Path(tmp)
        charrnn("train", corpus, "--max-time", 5, "--device", "cpu", "--out", "model",
                env=environment("new", cwd / "cache"), cwd=cwd, stderr=subprocess.DEVNULL).wait()
        results = {}
        for mode in MODES:
            env = environment(mode, cwd / "cache")
            for neighbour in (False, True):
                generate = None
                if neighbour:  # the old default was torch's threads for generate too
                    threads = ["--threads", cores] if mode == "old" else []
                    generate = charrnn("generate", "--checkpoint", "model", "--length", 100_000_000, "--seed", 0,
                                       "--device", "cpu", *threads, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
                    time.sleep(3)  # loaded and generating
                try:
                    steps, elapsed = train_speed(corpus, args.seconds, Path(f"{mode}-{int(neighbour)}"), env, cwd)
                finally:
                    if generate is not None:
                        generate.terminate()
                        generate.wait()
                results[mode, neighbour] = steps / elapsed
                print(json.dumps({"mode": mode, "beside_generate": neighbour, "steps": steps,
                                  "seconds": round(elapsed, 2), "steps_per_s": round(steps / elapsed, 3),
                                  "cores": cores}), flush=True)
    base = results["old", False]
    print(json.dumps({"summary": "steps/s as a ratio of training alone with the old defaults",
                      **{f"{mode}{' beside generate' if beside else ' alone'}": round(speed / base, 3)
                         for (mode, beside), speed in results.items()}}))


if __name__ == "__main__":
    main()
