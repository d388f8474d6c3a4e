"""Time to quality: validation loss after a fixed wall-clock budget, charrnn against a hand-written baseline.

    python bench/quality.py ../shared/data/tinyshakespeare.txt --seconds 100 [--config configs/shakespeare.toml]
                            [--device cpu] [--no-baseline] [any other flags for charrnn train]

charrnn runs through its real command line (`charrnn train --max-time SECONDS`). The baseline is the plain
loop people write by hand (nn.Embedding -> nn.LSTM 2x256 -> nn.Linear, batch 32, seq 64, random windows,
AdamW 2e-3 constant, clip 1.0) trained for the same wall-clock time in the same run. Both are scored by the
same function on the whole validation split (the last 10 %). Prints JSON lines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from baseline import Baseline
from torch import nn

from charrnn.corpus import load_corpus
from charrnn.data import RandomBatches, split
from charrnn.evaluate import evaluate


def run_baseline(corpus: Path, seconds: float, device: torch.device) -> dict:
    torch.manual_seed(0)
    c = load_corpus(corpus)
    train, val = split(c.tokens, 0.1)
    model = Baseline(len(c.vocab)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    batches = RandomBatches(train, 32, 64, seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        b = next(batches)
        logits, _ = model(b.x.to(device))
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), b.y.to(device).flatten())
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
    return {"impl": "baseline", "steps": steps, "val_loss": evaluate(model, val, device).loss}


@contextlib.contextmanager
def train_cli(corpus: Path, seconds: float, args: list[str], entry: tuple[str, ...] = ("-m", "charrnn")
              ) -> Iterator[tuple[Path, subprocess.CompletedProcess, float]]:
    """`charrnn train CORPUS --max-time SECONDS ARGS` into a temporary run directory: yields the directory, the
    finished command (its output captured) and its wall-clock seconds; exits with its stderr where it failed.
    ``entry`` is how Python enters the command line (the module's main() by default)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, *entry, "train", str(corpus), "--max-time", str(seconds), "--out", str(out), *args]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"charrnn train failed (exit {done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
        yield out, done, wall


def auto_line(done: subprocess.CompletedProcess) -> dict:
    """Auto-sizing's line from a finished `charrnn train`, as {"auto_line": ...}, or {} where it sized nothing."""
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("auto-sized")]
    return {"auto_line": lines[0]} if lines else {}


def run_charrnn(corpus: Path, seconds: float, config: Path | None, device: str, extra: list[str]) -> dict:
    args = ["--device", device, *(["--config", str(config)] if config else []), *extra]
    with train_cli(corpus, seconds, args) as (out, done, wall):
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        final = [m for m in lines if m["split"] == "val"][-1]
        return {"impl": "charrnn", "steps": final["step"], "val_loss": final["loss"], "wall_s": round(wall, 1),
                "command": " ".join(done.args[1:]), **auto_line(done)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", type=Path)
    p.add_argument("--seconds", type=float, default=100)
    p.add_argument("--config", type=Path, default=Path("configs/shakespeare.toml"))
    p.add_argument("--no-config", action="store_true", help="charrnn with its defaults (no --config)")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--device", default="cpu")
    args, extra = p.parse_known_args()  # anything else is passed on to `charrnn train`
    results = [run_charrnn(args.corpus, args.seconds, None if args.no_config else args.config, args.device, extra)]
    if not args.no_baseline:
        results.append(run_baseline(args.corpus, args.seconds, torch.device(args.device)))
    for r in results:
        print(json.dumps({"bench": "quality", "seconds": args.seconds, **r}))
    if len(results) == 2:
        print(json.dumps({"bench": "quality", "summary": True, "seconds": args.seconds,
                          "charrnn_val_loss": round(results[0]["val_loss"], 4),
                          "baseline_val_loss": round(results[1]["val_loss"], 4),
                          "difference": round(results[0]["val_loss"] - results[1]["val_loss"], 4)}))


if __name__ == "__main__":
    main()
