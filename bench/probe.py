"""How far auto-sizing's probe wanders: the reference model timed exactly as `charrnn train --max-time` times it
(run.size_for_budget), several times in one process, each on a fresh model; then one stretch of steps of the same
model timed one by one, so that what the probe's first second sees can be set against the steady speed.

    python bench/probe.py ../shared/data/tinyshakespeare.txt --precision fp32 --repeats 8 --steps 120

Never run it beside another benchmark (it measures the machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

from charrnn import autosize, devices, dist, run
from charrnn.config import TrainConfig
from charrnn.corpus import load_corpus
from charrnn.train import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", type=Path)
    p.add_argument("--precision", default="auto")
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--steps", type=int, default=120)
    a = p.parse_args()
    devices.set_threads(None)
    cfg = TrainConfig(max_time=100, precision=a.precision, device="cpu")
    corpus = load_corpus(a.corpus)
    probes = []
    for _ in range(a.repeats):
        began = time.perf_counter()
        probes.append(run.size_for_budget(cfg, corpus, None).chars_per_s)
        print(json.dumps({"probe_chars_per_s": round(probes[-1]), "seconds": round(time.perf_counter() - began, 2)}),
              flush=True)
    reference = dataclasses.replace(cfg, **autosize.REFERENCE, dropout=0.0, sample_every=0)
    train, val = run.splits(reference, corpus, None)
    device = devices.for_worker("cpu", dist.SOLO)
    trainer = Trainer(run.new_model(reference, corpus, None), reference, train, val[:2], device)
    speeds = []
    for _ in range(a.steps):
        batch = next(trainer.batches)
        began = time.perf_counter()
        trainer.train_step(batch)[0].item()
        speeds.append(batch.x.numel() / (time.perf_counter() - began))
    tenth = max(1, a.steps // 10)
    print(json.dumps({
        "bench": "probe", "corpus": a.corpus.name, "precision": a.precision,
        "probes": [round(s) for s in probes], "probe_spread": round(max(probes) / min(probes), 3),
        "steady_by_tenths": [round(statistics.median(speeds[i:i + tenth])) for i in range(0, a.steps, tenth)],
        "first_steps": [round(s) for s in speeds[:8]]}))


if __name__ == "__main__":
    main()
