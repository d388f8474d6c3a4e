"""Corpus scaling: preparation time, cache reuse and peak memory for synthetic corpora of growing size.

    python bench/scaling.py [--sizes-mb 10 100 1000] [--dir /tmp/charrnn-scaling]

For each size, writes a synthetic mostly-English corpus (with some non-ASCII characters in every
megabyte), then runs the real command line twice in a fresh process, `charrnn train FILE --steps 20`:
the first run encodes the corpus to the token cache, the second reuses it. Reports wall time, encoding
speed (MB/s) and the peak resident memory of each process. The baseline in the same run is the usual
hand-written preparation (read the whole file, then a Python dict lookup per character, as in nanoGPT's
character prepare.py), timed on the sizes it can hold in memory (<= 100 MB). Prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = ("the machine keeper light river bread salt stone wind north harbor lamp spring brass learned "
         "slowly under over with from into said and but because every morning evening café naïve — "
         "Zürich").split()


def write_corpus(path: Path, megabytes: int) -> None:
    rng = np.random.default_rng(0)
    words = np.array(WORDS, dtype=object)
    block = []
    for _ in range(4000):
        line = " ".join(words[rng.integers(0, len(words), rng.integers(5, 14))])
        block.append(line.capitalize() + ".\n")
    one_mb = "".join(block).encode()[: 1 << 20]
    one_mb = one_mb[: one_mb.rfind(b"\n") + 1]
    with path.open("wb") as f:
        written = 0
        while written < megabytes << 20:
            f.write(one_mb)
            written += len(one_mb)


def run_charrnn(corpus: Path, work: Path, cache: Path) -> dict:
    out = work / f"run-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "charrnn", "train", str(corpus), "--steps", "20", "--eval-every", "1000",
           "--val-fraction", "0.0005", "--hidden-size", "128", "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "CHARRNN_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    log = work / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak memory
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(log.read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def baseline(corpus: Path) -> dict:
    """Whole-file read and a per-character dict lookup, in a child process to measure its memory."""
    code = f"""
import resource, sys, time, numpy as np
t = time.perf_counter()
data = open({str(corpus)!r}, encoding="utf-8").read()
chars = sorted(set(data))
stoi = {{c: i for i, c in enumerate(chars)}}
ids = np.array([stoi[c] for c in data], dtype=np.uint16)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return {"prepare_s": round(float(out[0]), 2), "peak_rss_mb": round(int(out[1]) / 1024, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes-mb", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--dir", type=Path, default=None, help="where to write the corpora (default: a temp dir)")
    p.add_argument("--baseline-max-mb", type=int, default=100)
    args = p.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="charrnn-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    empty = work / "empty.txt"
    empty.write_text("a tiny corpus to time start-up alone. " * 400)
    startup = run_charrnn(empty, work, cache)
    print(json.dumps({"bench": "scaling", "corpus_mb": 0, "startup": startup}))
    for mb in args.sizes_mb:
        corpus = work / f"synthetic-{mb}mb.txt"
        write_corpus(corpus, mb)
        first = run_charrnn(corpus, work, cache)
        second = run_charrnn(corpus, work, cache)
        encode_s = max(first["wall_s"] - second["wall_s"], 1e-3)
        line = {"bench": "scaling", "corpus_mb": mb, "first_run": first, "cached_run": second,
                "encode_s": round(encode_s, 2), "encode_mb_per_s": round(mb / encode_s, 1)}
        if mb <= args.baseline_max_mb:
            line["baseline"] = baseline(corpus)
        print(json.dumps(line), flush=True)
        corpus.unlink()
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
