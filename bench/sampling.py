"""Sampling speed: charrnn's generate (fused step over cached weights) against the naive loop that calls
the model once per character, one stream and N streams at once, in the same run.

    python bench/sampling.py [--hidden-size 256] [--num-layers 2] [--cell lstm] [--streams 64]

Prints one JSON line per measurement and a summary line with chars/s and ratios.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from charrnn.config import ModelConfig
from charrnn.model import CharRNN
from charrnn.sample import Sampling, generate

VOCAB = 65


@torch.inference_mode()
def naive(model: CharRNN, prefix: torch.Tensor, length: int, how: Sampling, g: torch.Generator, n: int):
    """What a hand-written sampler does: model(x, state) on one character per call, softmax, multinomial."""
    logits, state = model(prefix.unsqueeze(0).expand(n, -1))
    last = logits[:, -1]
    for _ in range(length):
        token = torch.multinomial((last / how.temperature).softmax(-1), 1, generator=g).squeeze(1)
        yield token
        logits, state = model(token.unsqueeze(1), state)
        last = logits[:, -1]


def speed(fn, model, length: int, n: int, seconds: float) -> float:
    prefix = torch.tensor([1, 2, 3])
    how = Sampling(temperature=0.8)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        g = torch.Generator().manual_seed(done)
        for token in fn(model, prefix, length, how, g, n):
            int(token[0])  # consume the character, as a caller printing it would
        done += length * n
    return done / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cell", default="lstm")
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--length", type=int, default=500)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(VOCAB, args.cell, 64, args.hidden_size, args.num_layers)).eval()
    res: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for n in (1, args.streams):
            for name, fn in (("naive", naive), ("charrnn", generate)):
                s = speed(fn, model, args.length, n, args.seconds)
                res.setdefault(f"{name}_{n}", []).append(s)
                line = {"bench": "sampling", "round": r, "impl": name, "streams": n, "chars_per_s": round(s)}
                print(json.dumps(line))
    best = {k: max(v) for k, v in res.items()}
    print(json.dumps({
        "bench": "sampling", "summary": True, "cell": args.cell, "hidden_size": args.hidden_size,
        "num_layers": args.num_layers, "threads": torch.get_num_threads(),
        **{f"{k}_chars_per_s": round(v) for k, v in best.items()},
        "ratio_1_stream": round(best["charrnn_1"] / best["naive_1"], 2),
        f"ratio_{args.streams}_streams": round(best[f"charrnn_{args.streams}"] / best[f"naive_{args.streams}"], 2),
    }))


if __name__ == "__main__":
    main()
