"""Where a model's loss on the generated logs goes: nats per character of the validation split, by field of the
log line (IP, time, path, status, bytes, agent, and the fixed text between them), at the start of the split and at
its end, against each field's floor (the entropy of the generator's random choices).

    python bench/logs_fields.py /tmp/corpora/logs.txt RUN_DIR [RUN_DIR ...] [--chars 60000]

The validation split is the last 10 % of the file, so it is the logs' future: its timestamps are larger than any
the model trained on, the more so the further into the split. Each run's final checkpoint is scored on the first
and on the last --chars characters of the split, from a zero state, one stream (as `charrnn eval` scores).
A field is the characters of its value; the length of a number is told by the character after it, fixed text, so
a numeric field can land a little under its own floor and the fixed text a little over zero: compare totals.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from corpora import FIELD_BITS, LOG_LINE, field_floors

import charrnn
from charrnn.checkpoint import latest_of
from charrnn.corpus import load_corpus
from charrnn.data import split


def field_of_each_char(text: str) -> np.ndarray:
    fields = np.full(len(text), "fixed", dtype=object)
    for line in LOG_LINE.finditer(text):
        for name in FIELD_BITS:
            start, end = line.span(name)
            fields[start:end] = name
    return fields


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", type=Path)
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--chars", type=int, default=60_000)
    args = p.parse_args()
    text = args.corpus.read_text(encoding="utf-8")
    _, val = split(load_corpus(args.corpus).tokens, 0.1)
    val, val_text = np.asarray(val), text[len(text) - len(val):]
    names = [*FIELD_BITS, "fixed"]
    floor = {**field_floors(text), "fixed": 0.0}
    print("| where | run | total | " + " | ".join(names) + " |")
    print("|" + "---|" * (len(names) + 3))
    print("| floor | | " + f"{sum(floor.values()):.4f} | " + " | ".join(f"{floor[n]:.4f}" for n in names) + " |")
    n = args.chars
    for where, start in (("start", 0), ("end", len(val) - n - 1)):
        tokens = val[start:start + n + 1].astype(np.int64)
        fields = field_of_each_char(val_text[start:start + n + 1])[1:]  # of each target
        x, y = torch.from_numpy(tokens[:-1]).unsqueeze(0), torch.from_numpy(tokens[1:]).unsqueeze(0)
        for run in args.runs:
            network = charrnn.load(latest_of(run).path, device="cpu").network.eval()
            with torch.no_grad():
                nll = network(x, None, targets=y)[0][0].numpy()
            cells = " | ".join(f"{nll[fields == name].sum() / n:.4f}" for name in names)
            print(f"| {where} | {run.name} | {nll.mean():.4f} | {cells} |")


if __name__ == "__main__":
    main()
