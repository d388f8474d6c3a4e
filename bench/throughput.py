"""Training throughput: charrnn's train_step against a plain hand-written nn.LSTM loop, same settings.

    python bench/throughput.py [--hidden-size 256] [--num-layers 2] [--batch-size 32] [--seq-len 64]

Both loops train on random token windows of the same shape and vocabulary (65, as tiny shakespeare),
alternating every few steps so that machine noise hits both alike (on a shared machine the speed of both
drifts by up to 1.5x over seconds: rounds of seconds each gave ratios anywhere from 1.0 to 1.4). Prints
one JSON line per round and a final line with the ratio of total chars/s over all rounds, plus each one's
fraction of the measured fp32 GEMM peak.
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
    """Measured fp32 GFLOP/s of a large square matmul on this machine: the faster of torch's own (MKL) and
    oneDNN's (the library behind nn.LSTM on CPU; on AMD CPUs MKL takes a slower path, so the two differ)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    calls = [lambda: a @ b]
    if torch.backends.mkldnn.is_available():
        am, bm = a.to_mkldnn(), b.t().contiguous().to_mkldnn()
        calls.append(lambda: torch._C._nn.mkldnn_linear(am, bm, None))
    best = 0.0
    for call in calls:
        call()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            call()
            n += 1
        best = max(best, 2 * 2048**3 * n / (time.perf_counter() - start) / 1e9)
    return best


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
    p.add_argument("--block", type=int, default=4, help="steps of one loop before switching to the other")
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

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(step, n: int) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(n):
            step()
        sync()
        return time.perf_counter() - start

    for step in (baseline_step, charrnn_step):  # warm up
        timed(step, 3)
    peak = gemm_peak() if dev.type == "cpu" else float("nan")
    per_char = flops_per_char(args.hidden_size, args.num_layers, args.embedding_size)
    chars = args.batch_size * args.seq_len
    spent = {"baseline": 0.0, "charrnn": 0.0}
    done = {"baseline": 0, "charrnn": 0}
    for r in range(args.rounds):
        round_spent, round_done = {"baseline": 0.0, "charrnn": 0.0}, {"baseline": 0, "charrnn": 0}
        while min(round_spent.values()) < args.seconds:
            for name, step in (("baseline", baseline_step), ("charrnn", charrnn_step)):
                round_spent[name] += timed(step, args.block)
                round_done[name] += args.block
        for name in spent:
            spent[name] += round_spent[name]
            done[name] += round_done[name]
        print(json.dumps({"bench": "throughput", "round": r, **{
            f"{name}_chars_per_s": round(round_done[name] * chars / round_spent[name]) for name in spent}}))
    speed = {name: done[name] * chars / spent[name] for name in spent}
    print(json.dumps({
        "bench": "throughput", "summary": True, "device": args.device, "threads": torch.get_num_threads(),
        "precision": "bf16" if trainer.autocast_dtype else "fp32",
        "cuda_graphs": trainer.use_graph, "hidden_size": args.hidden_size, "num_layers": args.num_layers,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len, "baseline_chars_per_s": round(speed["baseline"]),
        "charrnn_chars_per_s": round(speed["charrnn"]), "ratio": round(speed["charrnn"] / speed["baseline"], 3),
        "gemm_peak_gflops": round(peak, 1),
        "baseline_peak_fraction": round(speed["baseline"] * per_char / 1e9 / peak, 3),
        "charrnn_peak_fraction": round(speed["charrnn"] * per_char / 1e9 / peak, 3),
    }))


if __name__ == "__main__":
    main()
