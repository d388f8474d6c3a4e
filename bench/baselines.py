"""The reference points of `charrnn eval --baselines` on a corpus's validation split, without a model: their bits
per character (accuracy, which any machine measures the same), the n-gram order chosen, and the time and peak
memory it took (those only on a quiet machine).

    python bench/baselines.py ../shared/data/tinyshakespeare.txt [--val-fraction 0.1] [--max-chars 10000000]

The splits are charrnn's (the last --val-fraction of the corpus is validation), so the numbers are those that
`charrnn eval --baselines` prints beside a model trained on the same corpus with the same fraction. Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from charrnn import baselines
from charrnn.corpus import load_corpus
from charrnn.data import split


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", type=Path)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--max-chars", type=int, default=baselines.MAX_CHARS, help="training characters the n-gram "
                   "model counts")
    args = p.parse_args()
    baselines.MAX_CHARS = args.max_chars
    corpus = load_corpus(args.corpus)
    train, val = split(corpus.tokens, args.val_fraction)
    before = peak_rss_mb()
    start = time.perf_counter()
    b = baselines.compute(train, val, corpus.vocab)
    print(json.dumps({"bench": "baselines", "corpus": str(args.corpus), "train_chars": len(train),
                      **{k: round(v, 4) if isinstance(v, float) else v for k, v in b.to_dict().items()},
                      "seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
                      "rss_before_mb": round(before, 1)}))


if __name__ == "__main__":
    main()
