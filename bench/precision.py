"""Training chars/s in fp32 and in bf16 autocast, model by model, on this machine.

    python bench/precision.py [--corpus /tmp/corpora/chinese.txt] [--hidden 128,256,384] [--seconds 3]

For each width (2 layers, batch 32 x 64): two charrnn Trainers, one per precision, alternating three steps at a
time until each has trained for --seconds, so that the machine's drift hits both alike. Without --corpus the
tokens are random over 65 characters (tiny shakespeare's vocabulary, full softmax); with one, its own vocabulary
and output layer (the adaptive one above the break-even). On a CPU without native bf16 (avx512_bf16 or amx_bf16
in /proc/cpuinfo) bf16 is emulated and ~100x slower. Prints one JSON line per width.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from charrnn.config import TrainConfig
from charrnn.corpus import Corpus, load_corpus
from charrnn.devices import NATIVE_BF16_FLAGS, cpu_flags
from charrnn.model import CharRNN
from charrnn.run import new_model
from charrnn.train import Trainer

PRECISIONS = ("fp32", "bf16")


def trainer(tokens: np.ndarray, corpus: Corpus | None, hidden: int, precision: str) -> Trainer:
    """A Trainer for the model a run would build (``corpus``'s output layer), or a full softmax over 65."""
    torch.manual_seed(0)
    cfg = TrainConfig(hidden_size=hidden, num_layers=2, batch_size=32, seq_len=64, precision=precision,
                      steps=10**9, device="cpu")
    model = new_model(cfg, corpus) if corpus else CharRNN(cfg.model_config(65))
    return Trainer(model, cfg, tokens, tokens[:1000], torch.device("cpu"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path)
    p.add_argument("--hidden", default="128,256,384")
    p.add_argument("--seconds", type=float, default=3.0, help="per precision and width")
    args = p.parse_args()
    corpus = load_corpus(args.corpus) if args.corpus else None
    tokens = corpus.tokens[:300_000] if corpus else np.random.default_rng(0).integers(0, 65, 200_000).astype(np.uint8)
    native = sorted(NATIVE_BF16_FLAGS & cpu_flags())
    for hidden in map(int, args.hidden.split(",")):
        trainers = {p: trainer(tokens, corpus, hidden, p) for p in PRECISIONS}
        for t in trainers.values():  # allocation, kernel choice
            for _ in range(3):
                t.train_step(next(t.batches))
        spent, steps = dict.fromkeys(PRECISIONS, 0.0), dict.fromkeys(PRECISIONS, 0)
        while min(spent.values()) < args.seconds:
            for name, t in trainers.items():
                start = time.perf_counter()
                for _ in range(3):
                    t.train_step(next(t.batches))
                spent[name] += time.perf_counter() - start
                steps[name] += 3
        speed = {name: round(steps[name] * 32 * 64 / spent[name]) for name in PRECISIONS}
        print(json.dumps({"bench": "precision", "corpus": args.corpus.name if args.corpus else "random-65",
                          "vocab": len(corpus.vocab) if corpus else 65,
                          "adaptive": bool(trainers["fp32"].model.config.cutoffs),
                          "model": f"2x{hidden}", **{f"{k}_chars_per_s": v for k, v in speed.items()},
                          "ratio": round(speed["bf16"] / speed["fp32"], 2), "native_bf16": native,
                          "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
