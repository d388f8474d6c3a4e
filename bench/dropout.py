"""What dropout costs a training step on the CPU, and where: a 2x256 LSTM at batch 32 x 64 (the auto-sizing
reference) with dropout 0, with dropout 0.2 inside nn.LSTM, and with 0.2 between two single-layer nn.LSTMs;
then the dropout ops alone on one (32, 64, 256) activation. Interleaved rounds, median step times.

    python bench/dropout.py [--rounds 6]

Never run beside another torch process (bench/contention.py: two of them on two cores run 20-90x slower).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

B, T, E, H, V, P = 32, 64, 64, 256, 65, 0.2


def training_step(kind: str) -> Callable[[], None]:
    """One AdamW step of embedding -> 2-layer LSTM -> dropout -> linear on random characters."""
    embed, head = nn.Embedding(V, E), nn.Linear(H, V)
    if kind == "two single-layer LSTMs":
        layers = nn.ModuleList([nn.LSTM(E, H, batch_first=True), nn.LSTM(H, H, batch_first=True)])

        def core(x: torch.Tensor) -> torch.Tensor:
            return layers[1](F.dropout(layers[0](x)[0], P, True))[0]
        rnn: nn.Module = layers
    else:
        rnn = nn.LSTM(E, H, 2, dropout=P if kind == "dropout in nn.LSTM" else 0.0, batch_first=True)

        def core(x: torch.Tensor) -> torch.Tensor:
            return rnn(x)[0]
    p = 0.0 if kind == "no dropout" else P
    optimizer = torch.optim.AdamW([*embed.parameters(), *rnn.parameters(), *head.parameters()], 1e-3)

    def step() -> None:
        x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
        loss = F.cross_entropy(head(F.dropout(core(embed(x)), p, True)).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def dropout_op(kind: str) -> Callable[[], None]:
    """Forward and backward of one dropout on a (B, T, H) activation."""
    x = torch.randn(B, T, H, requires_grad=True)
    masks = {"F.dropout": lambda: F.dropout(x, P, True),
             "rand >= p": lambda: x * ((torch.rand_like(x) >= P).to(x.dtype) / (1 - P))}

    def op() -> None:
        masks[kind]().backward(torch.ones(B, T, H))
    return op


def median_ms(fns: dict[str, Callable[[], None]], rounds: int, repeats: int) -> dict[str, float]:
    for fn in fns.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            started = time.perf_counter()
            for _ in range(repeats):
                fn()
            times[name].append((time.perf_counter() - started) / repeats)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args()
    torch.manual_seed(0)
    steps = {k: training_step(k) for k in ("no dropout", "dropout in nn.LSTM", "two single-layer LSTMs")}
    for name, ms in median_ms(steps, args.rounds, 15).items():
        print(f"training step, {name:24s} {ms:6.1f} ms")
    ops = {k: dropout_op(k) for k in ("F.dropout", "rand >= p")}
    for name, ms in median_ms(ops, args.rounds, 30).items():
        print(f"one dropout, {name:12s} forward + backward {ms:5.2f} ms")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
