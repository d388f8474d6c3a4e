"""What one of auto's evaluations costs: seconds to score CHARS validation characters, and to save the checkpoint
that follows, with the 2x128 auto picks at 100 s (or --hidden), against its training steps (timed as auto's probe
times them, for 5 s), freed memory reused as the CLI does.

    python bench/eval_cost.py CORPUS CHARS [--hidden 256]       # e.g. /tmp/corpora/chinese.txt 127800

Auto evaluates five times or more (a small validation split: up to 50) and keeps the last evaluation's length in
reserve at the end of the budget.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from charrnn import autosize, run
from charrnn.devices import reuse_freed_memory
from charrnn.evaluate import evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", type=Path)
    p.add_argument("chars", type=int)
    p.add_argument("--hidden", type=int, default=128)
    args = p.parse_args()
    reuse_freed_memory()
    flags = {"hidden_size": args.hidden, "num_layers": 2, "dropout": 0.0, "lr": 2e-2, "batch_size": 32,
             "seq_len": 64, "device": "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = run.build_trainer(run.prepare(args.corpus, flags=flags, out=Path(tmp) / "run", auto=False))
        chars = trainer.cfg.batch_size * trainer.cfg.seq_len
        step = chars / autosize.measure(trainer, seconds=5.0)  # seconds a step, median
        name = f"{args.corpus.name}: 2x{args.hidden}, {type(trainer.model.head).__name__} head"
        print(f"{name}, a step {step * 1000:.1f} ms ({chars / step:,.0f} chars/s)")
        for _ in range(2):
            start = time.perf_counter()
            evaluate(trainer.model, np.asarray(trainer.val_tokens[:args.chars]), torch.device("cpu"))
            seconds = time.perf_counter() - start
            print(f"{name}: scoring {args.chars:,} characters {seconds:.2f} s ({args.chars / seconds:,.0f} chars/s, "
                  f"the time of {seconds / step:.0f} steps)")
        saves = []
        for _ in range(6):
            trainer.step += 1
            start = time.perf_counter()
            trainer.save(trainer, None)
            saves.append(time.perf_counter() - start)
        print(f"{name}: saving a checkpoint {statistics.median(saves):.3f} s (median of 6; the time of "
              f"{statistics.median(saves) / step:.1f} steps)")


if __name__ == "__main__":
    main()
