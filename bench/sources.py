"""What reading a folder costs, and what leaving out unknown characters costs in memory.

    python bench/sources.py [--files 2000] [--mb 64] [--rounds 5] [--out DIR]

1. ``open``: a corpus of ``--files`` files (``--mb`` MB in all) against the same text in one file, both already
   in the cache: seconds to list the folder (probing each file's first 8 KiB) and open the cached entry
   (re-checking every file's size and times), and their ratio. Alternating rounds; the median of each.
   Also the first (encoding) read of each, once.
2. ``skip``: how much the peak memory (VmHWM, in a fresh process) grows during
   ``load_corpus(..., skip_unknown=True)`` on a text in which one character in ten is unknown to the vocabulary
   (20,000 distinct ones), against the same call on the text without them (pure ASCII, the fast path): both
   stay near a few chunks (CHUNK = 4 MiB of text, decoded to 4-byte code points), whatever the text's size.

Prints one JSON line per measurement. The text is synthetic (the words of tests/helpers.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from charrnn.corpus import load_corpus  # noqa: E402
from charrnn.sources import expand  # noqa: E402
from tests.helpers import synthetic_text  # noqa: E402


def make_folder(root: Path, files: int, mb: int) -> tuple[Path, Path]:
    """A folder of ``files`` files (in 20 sub-folders) and one file holding the text they join to."""
    per = max(1, mb * 2**20 // files)
    folder, single = root / "folder", root / "single.txt"
    pieces = []
    for i in range(files):
        text = synthetic_text(per, seed=i % 50).rstrip("\n") + "\n"
        path = folder / f"d{i % 20:02d}" / f"f{i:06d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        pieces.append((path, text))
    with single.open("w", encoding="utf-8") as f:
        for _, text in sorted(pieces, key=lambda p: p[0].relative_to(folder).parts):
            f.write(text)
    return folder, single


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_open(args: argparse.Namespace, root: Path) -> None:
    folder, single = make_folder(root, args.files, args.mb)
    first = {"folder": timed(lambda: expand(folder).load()), "single": timed(lambda: load_corpus(single))}
    folder_s, single_s = [], []
    for _ in range(args.rounds):
        folder_s.append(timed(lambda: expand(folder).load()))
        single_s.append(timed(lambda: load_corpus(single)))
    f, s = statistics.median(folder_s), statistics.median(single_s)
    print(json.dumps({"bench": "open", "files": args.files, "mb": args.mb, "folder_s": round(f, 4),
                      "single_s": round(s, 4), "ratio": round(f / s, 2), "first_folder_s": round(first["folder"], 3),
                      "first_single_s": round(first["single"], 3)}), flush=True)


# Peak memory from VmHWM (kB): ru_maxrss would keep the parent's peak across fork and exec.
CHILD = """
import sys
from pathlib import Path
from charrnn.corpus import load_corpus
from charrnn.vocab import Vocab
def peak():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
vocab = Vocab(list(Path(sys.argv[2]).read_text(encoding="utf-8")))
before = peak()
c = load_corpus(Path(sys.argv[1]), vocab=vocab, skip_unknown=sys.argv[3] == "skip")
print(peak() - before, len(c.tokens), c.skipped.count if c.skipped else 0)
"""


def bench_skip(args: argparse.Namespace, root: Path) -> None:
    root.mkdir(parents=True)
    base = synthetic_text(args.mb * 2**20, seed=1)
    base = base[: len(base) // 9 * 9]
    known = root / "vocab.txt"
    known.write_text("".join(sorted(set(base))), encoding="utf-8")
    clean, dirty = root / "clean.txt", root / "dirty.txt"
    clean.write_text(base, encoding="utf-8")
    rows = np.frombuffer(base.encode("utf-32-le"), dtype=np.uint32).reshape(-1, 9)  # after every 9 characters,
    cjk = (0x4E00 + np.arange(len(rows)) % 20000).astype(np.uint32)[:, None]  # one of 20,000 CJK ones
    dirty.write_text(np.hstack([rows, cjk]).tobytes().decode("utf-32-le"), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHARRNN_CACHE_DIR": str(root / "cache")}
    rows = {}
    for name, path, how in (("strict", clean, "strict"), ("skip", dirty, "skip")):
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(known), how], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        rows[name] = [int(v) for v in out]
    (grew_strict, tokens, _), (grew_skip, kept, skipped) = rows["strict"], rows["skip"]
    print(json.dumps({"bench": "skip", "text_mb": round(dirty.stat().st_size / 2**20, 1), "tokens": kept,
                      "skipped": skipped, "same_tokens": kept == tokens,
                      "peak_growth_strict_mb": round(grew_strict / 1024, 1),
                      "peak_growth_skip_mb": round(grew_skip / 1024, 1)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        os.environ["CHARRNN_CACHE_DIR"] = str(Path(tmp) / "cache")
        bench_open(args, Path(tmp) / "open")
        bench_skip(args, Path(tmp) / "skip")


if __name__ == "__main__":
    main()
