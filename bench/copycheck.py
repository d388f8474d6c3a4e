"""The copying check on a large corpus: index build time and peak memory, index size, and check time per sample.

    python bench/copycheck.py --mb 100 [--samples 20] [--brute 0] [--duplicates] [--workdir DIR]

The corpus (about MB megabytes) is made at run time from text files found on this machine (/usr/share/doc,
/usr/include, the Python standard library and site-packages: whatever decodes as UTF-8 without NUL bytes), each
file once (--duplicates keeps the many files reachable by several paths or installed twice: long exact repeats,
which make the suffix sort do more rounds), in a temporary directory that is removed afterwards (never committed).
Each phase runs in its own process, so that its peak resident memory (VmHWM) is its own:

  build  encode the corpus (charrnn's token cache), then build the suffix array of its training split (90 %) and
         store it (copycheck.open_index): build_s, peak_rss_mb, and the index's size on disk;
  check  verify the corpus as --check-copy does first (its SHA-256 and every block of the token cache:
         verify_corpus_s), open the stored index (every block's CRC-32 checked: open_s), then check --samples
         samples of 1,000 characters: half taken from the validation split (text the index has not seen: the
         usual case), half from the training split (copied whole: every comparison runs to the end of the
         sample, the worst case): seconds per sample of each kind, peak_rss_mb.

The baseline in the same run is brute force: for --brute samples, the matching statistics computed with str.find
over the whole training text (each position's match extended one character at a time, starting from the previous
position's length minus one), which must give the same longest span; the ratio of the times is printed.
Prints JSON lines.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

ROOTS = ["/usr/share/doc/**/*", "/usr/include/**/*", "/usr/lib/python3*/**/*.py",
         sysconfig.get_paths()["purelib"] + "/**/*.py"]
SAMPLE = 1000


def make_corpus(path: Path, size: int, duplicates: bool = False) -> int:
    """Concatenate UTF-8 text files found on the machine into ``path`` until it holds ``size`` bytes, each file
    once (the same file is often reachable by several paths) unless ``duplicates``."""
    done, seen = 0, set()
    with path.open("wb") as out:
        for pattern in ROOTS:
            for name in sorted(glob.iglob(pattern, recursive=True)):
                try:
                    if not os.path.isfile(name) or os.path.getsize(name) > 4 << 20:
                        continue
                    data = Path(name).read_bytes()
                    data.decode("utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                digest = hashlib.sha256(data).digest()
                if b"\x00" in data or not data or (digest in seen and not duplicates):
                    continue
                seen.add(digest)
                out.write(data[: size - done])
                done += min(len(data), size - done)
                if done >= size:
                    return done
    return done


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource  # not Linux: ru_maxrss (kilobytes on Linux, bytes on macOS)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def split_of(corpus_path: Path):
    from charrnn.corpus import load_corpus
    from charrnn.data import split
    corpus = load_corpus(corpus_path)
    train, val = split(corpus.tokens, 0.1)
    return corpus, train, val


def phase_build(corpus_path: Path) -> dict:
    from charrnn import copycheck
    from charrnn.corpus import cache_root
    corpus, train, _ = split_of(corpus_path)
    before = peak_rss_mb()
    start = time.perf_counter()
    copycheck.open_index(train, corpus).close()
    build = time.perf_counter() - start
    size = sum(p.stat().st_size for p in (cache_root() / "indexes").rglob("*") if p.is_file())
    return {"phase": "build", "train_chars": len(train), "build_s": round(build, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_build_mb": round(before, 1),
            "index_mb": round(size / 2**20, 1), "index_bytes_per_char": round(size / len(train), 2)}


def brute_longest(sample: str, text: str) -> int:
    best = length = 0
    for i in range(len(sample)):
        length = max(length - 1, 0)
        while i + length < len(sample) and text.find(sample[i: i + length + 1]) >= 0:
            length += 1
        best = max(best, length)
    return best


def phase_check(corpus_path: Path, samples: int, brute: int) -> dict:
    from charrnn import copycheck
    from charrnn.corpus import load_corpus
    start = time.perf_counter()
    load_corpus(corpus_path, verify=True)  # what --check-copy does first (run.training_corpus): re-hash, check all
    verified = time.perf_counter() - start
    corpus, train, val = split_of(corpus_path)
    start = time.perf_counter()
    index = copycheck.open_index(train, corpus)
    opened = time.perf_counter() - start
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {"novel": [], "copied": []}
    reports = []
    for k in range(samples):
        kind, source = ("novel", val) if k % 2 == 0 else ("copied", train)
        at = int(rng.integers(0, len(source) - SAMPLE))
        sample = corpus.vocab.decode(np.asarray(source[at: at + SAMPLE]))
        start = time.perf_counter()
        report = index.check(sample)
        times[kind].append(time.perf_counter() - start)
        reports.append((sample, report))
    result = {"phase": "check", "verify_corpus_s": round(verified, 3), "open_s": round(opened, 3),
              "peak_rss_mb": round(peak_rss_mb(), 1)}
    for kind, ts in times.items():
        result[f"check_{kind}_s_per_1000_chars"] = round(float(np.mean(ts)), 4) if ts else None
    if brute:
        text = corpus.vocab.decode(np.asarray(train))
        start = time.perf_counter()
        for sample, report in reports[:brute]:
            if brute_longest(sample, text) != report.longest:
                sys.exit(f"brute force disagrees with the index on {sample[:40]!r}...")
        per = (time.perf_counter() - start) / min(brute, len(reports))
        index_per = float(np.mean([t for ts in times.values() for t in ts][:brute]))
        result.update({"brute_s_per_1000_chars": round(per, 3), "brute_over_index": round(per / index_per, 1)})
    index.close()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=100)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--brute", type=int, default=None, help="samples checked by brute force too "
                   "[default: 1 up to 10 MB, else 0]")
    p.add_argument("--duplicates", action="store_true", help="keep files whose contents were seen already")
    p.add_argument("--workdir", type=Path, default=None, help="where the corpus and caches go [default: a temp dir]")
    p.add_argument("--phase", choices=["build", "check"], help=argparse.SUPPRESS)
    p.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase == "build":
        print(json.dumps(phase_build(args.corpus)))
        return
    if args.phase == "check":
        print(json.dumps(phase_check(args.corpus, args.samples, args.brute)))
        return
    brute = args.brute if args.brute is not None else int(args.mb <= 10)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        corpus = Path(tmp) / "corpus.txt"
        size = make_corpus(corpus, int(args.mb * 2**20), args.duplicates)
        env = {**os.environ, "CHARRNN_CACHE_DIR": str(Path(tmp) / "cache"),
               "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        print(json.dumps({"bench": "copycheck", "corpus_mb": round(size / 2**20, 1), "samples": args.samples,
                          "duplicates": args.duplicates, "command": " ".join(sys.argv)}), flush=True)
        for phase in (["--phase", "build"], ["--phase", "check", "--samples", str(args.samples), "--brute",
                                            str(brute)]):
            done = subprocess.run([sys.executable, __file__, *phase, "--corpus", str(corpus)], env=env,
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{phase[1]} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
            print(done.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
