"""What reusing freed memory buys a CPU training run (devices.reuse_freed_memory): the same `charrnn train` for
the same wall-clock seconds, with glibc's default malloc and with the command line's setting, alternating,
one run at a time.

    python bench/allocator.py ../shared/data/tinyshakespeare.txt /tmp/corpora/chinese.txt --seconds 20 --rounds 2 \
        [--out bench/results/allocator.jsonl]

Each run is `charrnn train CORPUS --max-time SECONDS --device cpu` with a fixed model (no auto-sizing, validation
only at the end) in its own process; the "default" one enters the command line without the setting. Printed per
run: steps made, training chars/s (the mean of its logged windows), the page faults the kernel served (minor
faults: fresh zeroed pages) and the seconds the process spent in the kernel.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
from pathlib import Path

from quality import train_cli

MODELS = {"2x128": ["--hidden-size", "128"], "2x256": ["--hidden-size", "256"], "2x384": ["--hidden-size", "384"]}
FIXED = ["--num-layers", "2", "--dropout", "0", "--lr", "6e-3", "--batch-size", "32", "--seq-len", "64",
         "--eval-every", "1000000", "--eval-chars", "20000", "--device", "cpu"]
# the command line entered with the setting or without it (main() makes it; app() alone does not)
ENTER = """
import sys
from charrnn import devices
from charrnn.cli import app
if sys.argv[1] == "reuse":
    assert devices.reuse_freed_memory()
app(sys.argv[2:], prog_name="charrnn")
"""


def run(mode: str, corpus: Path, seconds: float, model: list[str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with train_cli(corpus, seconds, [*FIXED, *model], entry=("-c", ENTER, mode)) as (out, _, _):
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    speeds = [m["chars_per_s"] for m in lines if m["split"] == "train" and m.get("chars_per_s")]
    return {"steps": max(m["step"] for m in lines), "chars_per_s": round(statistics.mean(speeds)),
            "page_faults": after.ru_minflt - before.ru_minflt, "system_s": round(after.ru_stime - before.ru_stime, 1),
            "user_s": round(after.ru_utime - before.ru_utime, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpora", type=Path, nargs="+")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--models", default="2x128,2x256,2x384")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    for corpus in args.corpora:
        for name in args.models.split(","):
            for round_ in range(args.rounds):
                for mode in ("default", "reuse"):
                    line = {"bench": "allocator", "corpus": corpus.name, "model": name, "mode": mode,
                            "round": round_, "seconds": args.seconds, **run(mode, corpus, args.seconds, MODELS[name])}
                    print(json.dumps(line), flush=True)
                    if args.out:
                        with args.out.open("a") as f:
                            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
