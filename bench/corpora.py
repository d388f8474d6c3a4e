"""Benchmark corpora of different kinds, built at run time from text already on the machine (nothing here is
committed to the repository; each is written to a directory you name).

    python bench/corpora.py OUT_DIR [--size 1000000] [--sizes python=10000000,licences=100000]
                            [--jieba-dict PATH/TO/jieba/dict.txt]

- python.txt: Python source of the standard library (/usr/lib/python3*), files concatenated in path order.
- licences.txt: English legal prose: /usr/share/common-licenses and the packages' copyright files.
- logs.txt: generated web-server-like log lines with known structure (timestamps, IPs, paths, status codes), and
  so a known floor: the entropy of the generator's random choices (`floor_nats`, 0.263 nats/char at 3 MB).
- json.txt: JSON documents as they are on disk (indented): the AWS API descriptions that botocore installs
  (`botocore/data/*/*/service-2.json`, Apache-2.0), wherever a Python or the Google Cloud SDK keeps them;
  skipped where none is installed.
- chinese.txt (with --jieba-dict): Chinese-like text with thousands of distinct characters: words drawn by
  their corpus frequency from the jieba word list (`pip download jieba`, MIT licence), in clauses and sentences
  with Chinese punctuation. Not real prose (no grammar), but its character frequencies are those of Chinese.
Prints one JSON line per corpus: path, characters, distinct characters.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import re
import sys
from pathlib import Path


def _concat(paths: list[Path], size: int) -> str:
    parts, total = [], 0
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text if text.endswith("\n") else text + "\n")
        total += len(parts[-1])
        if total >= size:
            break
    return "".join(parts)[:size]


def python_source(size: int) -> str:
    root = Path(f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}")
    return _concat(sorted(p for p in root.rglob("*.py") if "test" not in p.parts), size)


def licences(size: int) -> str:
    paths = sorted(Path("/usr/share/common-licenses").glob("*")) + sorted(Path("/usr/share/doc").glob("*/copyright"))
    return _concat([p for p in paths if p.is_file()], size)


def logs(size: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    paths = ["/", "/index.html", "/api/v1/items", "/api/v1/items/{n}", "/login", "/static/app.js", "/search?q={w}"]
    words = ["river", "stone", "bread", "light", "salt", "wind"]
    agents = ["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5.0", "python-requests/2.31"]
    out, total, t = [], 0, 1_700_000_000
    while total < size:
        t += rng.randint(0, 3)
        path = rng.choice(paths).format(n=rng.randint(1, 999), w=rng.choice(words))
        status = rng.choices([200, 304, 404, 500], [80, 10, 8, 2])[0]
        line = (f"10.0.{rng.randint(0, 9)}.{rng.randint(1, 254)} - - [{t}] \"GET {path} HTTP/1.1\" {status} "
                f"{rng.randint(0, 50000) if status == 200 else 0} \"{rng.choice(agents)}\"\n")
        out.append(line)
        total += len(line)
    return "".join(out)[:size]


def json_documents(size: int) -> str:
    roots = [Path(sys.prefix), Path(sys.base_prefix), Path("/usr/lib"), Path("/root/.pyenv")]
    found = {p.resolve() for root in roots if root.is_dir() for p in root.rglob("botocore/data/*/*/service-2.json")}
    by_name = {p.relative_to(p.parents[2]): p for p in sorted(found)}  # one copy of each API, whichever install
    return _concat([by_name[k] for k in sorted(by_name)], size)


# one line of logs(), its fields named, and the entropy of each field's random choices in bits per line
LOG_LINE = re.compile(r'(?P<ip>10\.0\.\d+\.\d+) - - \[(?P<time>\d+)\] "GET (?P<path>\S+) HTTP/1\.1" (?P<status>\d+) '
                      r'(?P<bytes>\d+) "(?P<agent>[^"]+)"\n')
FIELD_BITS = {"ip": math.log2(10) + math.log2(254), "time": math.log2(4),  # the step from the previous line's
              "path": math.log2(7) + (math.log2(999) + math.log2(6)) / 7,  # the path, its item number or word
              "status": -sum(p * math.log2(p) for p in (0.8, 0.1, 0.08, 0.02)),
              "bytes": 0.8 * math.log2(50001), "agent": math.log2(3)}  # bytes only for status 200


def field_floors(text: str) -> dict[str, float]:
    """The entropy of each field's random choices per character of logs() ``text`` (nats)."""
    return {name: text.count("\n") * bits * math.log(2) / len(text) for name, bits in FIELD_BITS.items()}


def logs_floor(text: str) -> float:
    """The entropy of logs()'s random choices per character of ``text`` (nats): no model can score below it."""
    return sum(field_floors(text).values())


def chinese(dict_path: Path, size: int, seed: int = 0) -> str:
    words, weights = [], []
    for line in dict_path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit() and all("\u4e00" <= c <= "\u9fff" for c in parts[0]):
            words.append(parts[0])
            weights.append(int(parts[1]))
    rng = random.Random(seed)
    cumulative = list(itertools.accumulate(weights))
    out, total = [], 0
    while total < size:
        clauses = ["".join(rng.choices(words, cum_weights=cumulative, k=rng.randint(2, 6)))
                   for _ in range(rng.randint(1, 4))]
        sentence = "，".join(clauses) + rng.choice("。。。！？") + ("\n" if rng.random() < 0.3 else "")
        out.append(sentence)
        total += len(sentence)
    return "".join(out)[:size]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--size", type=int, default=1_000_000, help="characters per corpus")
    p.add_argument("--sizes", default="", help="sizes of single corpora, e.g. python=10000000,licences=100000")
    p.add_argument("--jieba-dict", type=Path)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    size = {name: args.size for name in ("python", "licences", "logs", "json", "chinese")}
    size.update({name: int(n) for name, n in (item.split("=") for item in args.sizes.split(",") if item)})
    corpora = {"python": python_source(size["python"]), "licences": licences(size["licences"]),
               "logs": logs(size["logs"]), "json": json_documents(size["json"])}
    if args.jieba_dict:
        corpora["chinese"] = chinese(args.jieba_dict, size["chinese"])
    for name, text in corpora.items():
        if not text:
            print(f"{name}: nothing of this kind on the machine, skipped", file=sys.stderr)
            continue
        path = args.out / f"{name}.txt"
        path.write_text(text, encoding="utf-8")
        floor = {"floor_nats": round(logs_floor(text), 4)} if name == "logs" else {}
        print(json.dumps({"corpus": name, "path": str(path), "chars": len(text), "distinct": len(set(text)), **floor}))


if __name__ == "__main__":
    main()
