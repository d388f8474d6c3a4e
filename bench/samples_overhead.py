"""What samples while training cost: the same run trained with --sample-every 0 and with --sample-every N,
interleaved, in the same process; and how long `charrnn runs` takes to read a directory of many runs.

    python bench/samples_overhead.py [--corpus ../shared/data/tinyshakespeare.txt] [--steps 300] [--every 50]
                                     [--repeats 3] [--config configs/shakespeare.toml] [--runs 200]

Prints one JSON line per training run (elapsed seconds of training, from the run's own clock) and per `runs`
listing, then a summary line with the ratio sampled / plain (1.0 = free). Sampling draws 200 characters one step
at a time every N steps, so the expected overhead is about 200 x (one-character step) / (N x training step).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from charrnn import config, run, runs
from charrnn.cli.runs import table

ROOT = Path(__file__).resolve().parent.parent


def train(corpus: Path, out: Path, cfg_file: Path | None, steps: int, every: int) -> float:
    flags = {"steps": steps, "sample_every": every, "eval_every": steps, "device": "cpu"}
    setup = run.prepare(corpus, config_file=cfg_file, flags=flags, out=out)
    summary = run.fit(run.build_trainer(setup), setup)
    return summary.elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare.toml")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--runs", type=int, default=200, help="runs to list with `charrnn runs` (copies of one)")
    a = p.parse_args()
    config.load_file(a.config)  # fail early on a bad config
    work = Path(tempfile.mkdtemp(prefix="samples-bench-"))
    times: dict[int, list[float]] = {0: [], a.every: []}
    try:
        for r in range(a.repeats):
            for every in (0, a.every) if r % 2 == 0 else (a.every, 0):  # interleaved: drift hits both alike
                out = work / f"run-{every}-{r}"
                seconds = train(a.corpus, out, a.config, a.steps, every)
                times[every].append(seconds)
                print(json.dumps({"bench": "train", "sample_every": every, "steps": a.steps, "seconds": seconds,
                                  "threads": torch.get_num_threads()}), flush=True)
        listing = work / "listing"
        for i in range(a.runs):
            shutil.copytree(work / f"run-{a.every}-0", listing / f"run-{i:04d}",
                            ignore=shutil.ignore_patterns("*.safetensors", "trainer.pt"))  # runs reads meta only
        started = time.perf_counter()
        found = runs.list_runs(listing)
        table(found)
        listed = time.perf_counter() - started
        print(json.dumps({"bench": "runs", "runs": len(found), "seconds": listed}), flush=True)
        plain, sampled = statistics.median(times[0]), statistics.median(times[a.every])
        print(json.dumps({"summary": True, "plain_s": plain, "sampled_s": sampled, "ratio": sampled / plain,
                          "every": a.every, "runs_listed_per_s": len(found) / listed}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
