"""Speed of ``charrnn score`` on many short lines (batched, as it runs, against one item at a time) and of the
per-character surprisal behind ``eval --show / --html`` (against plain ``evaluate`` on the same text).

    python bench/score_speed.py [--text ../shared/data/tinyshakespeare.txt] [--lines 4000] [--chars 200000]
                                [--hidden-size 256] [--num-layers 2] [--threads 1] [--repeat 3]

The model is untrained (speed does not depend on the weights) with the vocabulary of the text. Each
measurement is repeated and the best time kept; the two ways are timed in the same run, alternately, so the
ratio holds even when absolute times drift. Prints one JSON line per measurement and one with the ratios.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from charrnn import items, score
from charrnn.config import ModelConfig
from charrnn.evaluate import evaluate
from charrnn.model import CharRNN
from charrnn.surprisal import surprisal
from charrnn.vocab import Vocab

ROOT = Path(__file__).resolve().parent.parent


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", type=Path, default=ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    parser.add_argument("--lines", type=int, default=4000, help="short lines scored by `score`")
    parser.add_argument("--chars", type=int, default=200_000, help="characters for the surprisal comparison")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    text = a.text.read_text(encoding="utf-8")
    vocab = Vocab.from_text(text)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), hidden_size=a.hidden_size, num_layers=a.num_layers)).eval()
    device = torch.device("cpu")
    scorer = score.ModelScorer(model, vocab, device)
    lines = [line for line in text.splitlines() if line.strip()][:a.lines]
    chunk = np.frombuffer("\n".join(lines).encode("utf-32-le"), dtype=np.uint32)
    line_chars = sum(map(len, lines))

    def score_all() -> None:
        for _ in score.score_items([scorer], items.pieces([chunk], "line")):
            pass

    batched = best_of(a.repeat, score_all)
    saved = score.BATCH_TOKENS
    score.BATCH_TOKENS = 1  # one run per batch: every line alone
    try:
        alone = best_of(a.repeat, score_all)
    finally:
        score.BATCH_TOKENS = saved
    tokens = vocab.encode(text[:a.chars])
    common = {"hidden_size": a.hidden_size, "num_layers": a.num_layers, "threads": a.threads}
    plain = best_of(a.repeat, lambda: evaluate(model, tokens, device))
    per_char = best_of(a.repeat, lambda: [None for _ in surprisal(model, tokens, device)])
    rows = [
        {"what": "score lines, batched", "items": len(lines), "chars": line_chars, "s": batched},
        {"what": "score lines, one at a time", "items": len(lines), "chars": line_chars, "s": alone},
        {"what": "evaluate", "chars": len(tokens), "s": plain},
        {"what": "surprisal (eval --show/--html)", "chars": len(tokens), "s": per_char},
    ]
    for row in rows:
        print(json.dumps({**row, **common, "chars_per_s": round(row["chars"] / row["s"])}))
    print(json.dumps({"batched_speedup": round(alone / batched, 2), "surprisal_vs_evaluate": round(per_char / plain, 2),
                      **common}))


if __name__ == "__main__":
    main()
