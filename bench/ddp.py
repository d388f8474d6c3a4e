"""Data-parallel scaling: chars/s of 1 process against N torchrun workers at the same global batch.

    python bench/ddp.py CORPUS [--workers 2] [--global-batch 32] [--steps 150] [--device cpu] [--rounds 2]

Runs `charrnn train` alternately as 1 process with --batch-size G and as N workers with --batch-size G/N
(so every step sees the same G sequences), reads the training chars/s that each run logged, and prints
JSON lines with the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def chars_per_s(corpus: Path, workers: int, batch: int, args: argparse.Namespace, out: Path) -> float:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={workers}"] \
        if workers > 1 else [sys.executable]
    cmd = [*launcher, "-m", "charrnn", "train", str(corpus), "--steps", str(args.steps), "--batch-size", str(batch),
           "--eval-every", str(10**6), "--log-every", "10", "--device", args.device, "--out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    speeds = [m["chars_per_s"] for m in lines if m["split"] == "train"][2:]  # skip the warm-up windows
    return statistics.median(speeds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", type=Path)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--global-batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    res: dict[int, list[float]] = {1: [], args.workers: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for workers in (1, args.workers):
                out = Path(tmp) / f"r{r}-w{workers}"
                speed = chars_per_s(args.corpus, workers, args.global_batch // workers, args, out)
                res[workers].append(speed)
                print(json.dumps({"bench": "ddp", "round": r, "workers": workers, "chars_per_s": round(speed)}))
    one, many = statistics.median(res[1]), statistics.median(res[args.workers])
    print(json.dumps({"bench": "ddp", "summary": True, "device": args.device, "global_batch": args.global_batch,
                      "one_process_chars_per_s": round(one), f"{args.workers}_workers_chars_per_s": round(many),
                      "ratio": round(many / one, 3)}))


if __name__ == "__main__":
    main()
