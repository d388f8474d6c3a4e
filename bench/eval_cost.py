"""What one of auto's evaluations costs: seconds to score CHARS validation characters with the 2x128 auto picks
at 100 s, against its training steps (timed as auto's probe times them, for 5 s), freed memory reused as the CLI does.

    python bench/eval_cost.py CORPUS CHARS        # e.g. /tmp/corpora/chinese.txt 127800

Auto evaluates five times and keeps the last evaluation's length in reserve at the end of the budget, so a run
spends about six of these.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from charrnn import autosize
from charrnn.config import TrainConfig
from charrnn.corpus import load_corpus
from charrnn.data import split
from charrnn.devices import reuse_freed_memory
from charrnn.evaluate import evaluate
from charrnn.run import new_model
from charrnn.train import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", type=Path)
    p.add_argument("chars", type=int)
    args = p.parse_args()
    reuse_freed_memory()
    corpus = load_corpus(args.corpus)
    train, val = split(corpus.tokens, 0.1)
    cfg = TrainConfig(hidden_size=128, num_layers=2, dropout=0.0, lr=2e-2, batch_size=32, seq_len=64)
    model = new_model(cfg, corpus, None)
    trainer = Trainer(model, cfg, train, val[:2], torch.device("cpu"))
    step = cfg.batch_size * cfg.seq_len / autosize.measure(trainer, seconds=5.0)  # seconds a step, median
    for _ in range(2):
        start = time.perf_counter()
        evaluate(model, np.asarray(val[:args.chars]), torch.device("cpu"))
        seconds = time.perf_counter() - start
        print(f"{args.corpus.name}: {type(model.head).__name__} head, a step {step * 1000:.1f} ms "
              f"({cfg.batch_size * cfg.seq_len / step:,.0f} chars/s); scoring {args.chars:,} characters "
              f"{seconds:.2f} s ({args.chars / seconds:,.0f} chars/s, the time of {seconds / step:.0f} steps)")


if __name__ == "__main__":
    main()
