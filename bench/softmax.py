"""Where the adaptive softmax pays: training chars/s of charrnn with the full and the adaptive output layer, and
of the hand-written loop (nn.LSTM + full nn.Linear), for vocabularies from tens to thousands of characters.

    python bench/softmax.py [--vocab 65 300 1000 3000 6000] [--seconds 3] [--rounds 3] [--hidden-size 256]

Tokens follow a Zipf law (exponent 1.1, as characters of Chinese text roughly do); cutoffs are what charrnn
would choose for them. The three loops alternate in blocks of a few steps, so that machine noise hits all alike.
Prints one JSON line per vocabulary size: chars/s of each and the ratios.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from baseline import Baseline
from torch import nn

from charrnn.config import TrainConfig
from charrnn.model import CharRNN, choose_cutoffs, frequency_rank
from charrnn.train import Trainer


def zipf_tokens(vocab: int, n: int, seed: int = 0) -> np.ndarray:
    weights = 1.0 / np.arange(1, vocab + 1) ** 1.1
    return np.random.default_rng(seed).choice(vocab, n, p=weights / weights.sum()).astype(np.int32)


def measure(vocab: int, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    tokens = zipf_tokens(vocab, 400_000)
    cfg = TrainConfig(hidden_size=args.hidden_size, batch_size=args.batch_size, seq_len=args.seq_len,
                      batching="random", device="cpu", steps=10**9)
    counts = torch.from_numpy(np.bincount(tokens, minlength=vocab))
    cutoffs = choose_cutoffs(counts, args.hidden_size)
    full = Trainer(CharRNN(cfg.model_config(vocab)), cfg, tokens, tokens[:1000], torch.device("cpu"))
    adaptive_model = CharRNN(cfg.model_config(vocab, cutoffs))
    if cutoffs:
        adaptive_model.head.rank.copy_(frequency_rank(counts))
    adaptive = Trainer(adaptive_model, cfg, tokens, tokens[:1000], torch.device("cpu"))
    base = Baseline(vocab, args.hidden_size)
    opt = torch.optim.AdamW(base.parameters(), lr=2e-3)

    def baseline_step() -> None:
        batch = next(full.batches)
        loss = nn.functional.cross_entropy(base(batch.x)[0].flatten(0, 1), batch.y.flatten())
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(base.parameters(), 1.0)
        opt.step()

    loops = {"baseline": baseline_step, "full": lambda: full.train_step(next(full.batches)),
             "adaptive": lambda: adaptive.train_step(next(adaptive.batches))}
    spent, done = dict.fromkeys(loops, 0.0), dict.fromkeys(loops, 0)
    for step in loops.values():
        step()  # warm up
    for _ in range(args.rounds):
        start_round = dict(spent)
        while min(spent[k] - start_round[k] for k in loops) < args.seconds:
            for name, step in loops.items():
                start = time.perf_counter()
                for _ in range(args.block):
                    step()
                spent[name] += time.perf_counter() - start
                done[name] += args.block
    speed = {name: done[name] * args.batch_size * args.seq_len / spent[name] for name in loops}
    return {"bench": "softmax", "vocab": vocab, "cutoffs": list(cutoffs), "threads": torch.get_num_threads(),
            "hidden_size": args.hidden_size, **{f"{k}_chars_per_s": round(v) for k, v in speed.items()},
            "adaptive_vs_full": round(speed["adaptive"] / speed["full"], 3),
            "adaptive_vs_baseline": round(speed["adaptive"] / speed["baseline"], 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, nargs="+", default=[65, 300, 1000, 3000, 6000])
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--seconds", type=float, default=3.0, help="per loop per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--block", type=int, default=3)
    args = p.parse_args()
    for vocab in args.vocab:
        print(json.dumps(measure(vocab, args)), flush=True)


if __name__ == "__main__":
    main()
