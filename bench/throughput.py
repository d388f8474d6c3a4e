"""Training throughput: charrnn's train_step against a plain hand-written nn.LSTM loop, same settings.

    python bench/throughput.py [--hidden-size 256] [--num-layers 2] [--batch-size 32] [--seq-len 64]

Both loops train on random token windows of the same shape and vocabulary (65, as tiny shakespeare),
alternating in rounds so that machine noise hits both alike. Prints one JSON line per measurement and a
final line with the ratio, plus each one's fraction of the measured fp32 GEMM peak.
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
from charrnn.model import CharRNN
from charrnn.train import Trainer

VOCAB = 65


def gemm_peak(seconds: float = 1.0) -> float:
    """Measured fp32 GFLOP/s of a large square matmul on this machine."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 2048**3 * n / (time.perf_counter() - start) / 1e9


def flops_per_char(hidden: int, layers: int, emb: int) -> float:
    """Forward + backward (3x forward) matmul FLOPs per character of an LSTM language model."""
    forward = 0
    for layer in range(layers):
        inp = emb if layer == 0 else hidden
        forward += 2 * 4 * hidden * (inp + hidden)
    forward += 2 * hidden * VOCAB
    return 3 * forward


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--embedding-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=4.0, help="per loop per round")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto", help="charrnn's --precision (the baseline is fp32)")
    args = p.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    tokens = np.random.default_rng(0).integers(0, VOCAB, 200_000).astype(np.uint8)
    cfg = TrainConfig(hidden_size=args.hidden_size, num_layers=args.num_layers, embedding_size=args.embedding_size,
                      batch_size=args.batch_size, seq_len=args.seq_len, batching="random", device=args.device,
                      precision=args.precision, steps=10**9)
    trainer = Trainer(CharRNN(cfg.model_config(VOCAB)), cfg, tokens, tokens[:1000], dev)

    base = Baseline(VOCAB, args.hidden_size, args.num_layers, args.embedding_size).to(dev)
    opt = torch.optim.AdamW(base.parameters(), lr=2e-3)

    def baseline_step() -> None:
        batch = next(trainer.batches)
        x, y = batch.x.to(dev), batch.y.to(dev)
        loss = nn.functional.cross_entropy(base(x)[0].flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(base.parameters(), 1.0)
        opt.step()

    def charrnn_step() -> None:
        trainer.train_step(next(trainer.batches))

    def measure(step) -> float:
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            step()
            n += 1
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return n * args.batch_size * args.seq_len / (time.perf_counter() - start)

    for step in (baseline_step, charrnn_step):  # warm up
        for _ in range(3):
            step()
    peak = gemm_peak() if dev.type == "cpu" else float("nan")
    per_char = flops_per_char(args.hidden_size, args.num_layers, args.embedding_size)
    results: dict[str, list[float]] = {"baseline": [], "charrnn": []}
    for r in range(args.rounds):
        for name, step in (("baseline", baseline_step), ("charrnn", charrnn_step)):
            speed = measure(step)
            results[name].append(speed)
            print(json.dumps({"bench": "throughput", "round": r, "impl": name, "chars_per_s": round(speed)}))
    med = {k: float(np.median(v)) for k, v in results.items()}
    print(json.dumps({
        "bench": "throughput", "summary": True, "device": args.device, "threads": torch.get_num_threads(),
        "precision": "bf16" if trainer.amp else "fp32", "hidden_size": args.hidden_size, "num_layers": args.num_layers,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len, "baseline_chars_per_s": round(med["baseline"]),
        "charrnn_chars_per_s": round(med["charrnn"]), "ratio": round(med["charrnn"] / med["baseline"], 3),
        "gemm_peak_gflops": round(peak, 1),
        "baseline_peak_fraction": round(med["baseline"] * per_char / 1e9 / peak, 3),
        "charrnn_peak_fraction": round(med["charrnn"] * per_char / 1e9 / peak, 3),
    }))


if __name__ == "__main__":
    main()
