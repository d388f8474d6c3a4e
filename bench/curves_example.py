"""Make the example figure of docs/runs.md (docs/images/curves.png): three short runs on generated text, two
model sizes on one text and one run on another text, then `charrnn plot` of the three.

    python bench/curves_example.py [WORKDIR]     # a few minutes of one CPU core

The texts come from a small grammar written for this script (nothing copied), so the figure can be remade
anywhere. Prints the commands it runs.
"""

from __future__ import annotations

import random
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NOUNS = ["river", "machine", "keeper", "garden", "lantern", "stone", "harbour", "letter", "window", "engine",
         "orchard", "bridge", "signal", "market", "tower", "winter", "kettle", "mirror", "valley", "candle"]
VERBS = ["carries", "watches", "remembers", "mends", "follows", "opens", "hides", "warms", "counts", "finds"]
ADJS = ["old", "quiet", "bright", "narrow", "patient", "cold", "green", "hollow", "small", "distant"]
LINKS = ["and then", "while", "because", "until", "so that", "although"]


def sentence(rng: random.Random) -> str:
    def phrase() -> str:
        return f"the {rng.choice(ADJS)} {rng.choice(NOUNS)}" if rng.random() < 0.6 else f"the {rng.choice(NOUNS)}"
    s = f"{phrase()} {rng.choice(VERBS)} {phrase()}"
    if rng.random() < 0.4:
        s += f" {rng.choice(LINKS)} {phrase()} {rng.choice(VERBS)} {phrase()}"
    return s[0].upper() + s[1:] + "."


def prose(chars: int, seed: int) -> str:
    rng, out, size = random.Random(seed), [], 0
    while size < chars:
        para = " ".join(sentence(rng) for _ in range(rng.randint(2, 6))) + "\n\n"
        out.append(para)
        size += len(para)
    return "".join(out)[:chars]


def ledger(chars: int, seed: int) -> str:
    """A second, different text: lines of a made-up stock ledger."""
    rng, out, size = random.Random(seed), [], 0
    while size < chars:
        line = (f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d} {rng.choice(NOUNS):<8} "
                f"{rng.choice(['in', 'out']):<3} {rng.randint(1, 500):>4} @ {rng.uniform(0.5, 99):6.2f}\n")
        out.append(line)
        size += len(line)
    return "".join(out)[:chars]


def charrnn(*args: object, cwd: Path) -> None:
    cmd = [sys.executable, "-m", "charrnn", *map(str, args)]
    print("$ charrnn " + " ".join(shlex.quote(str(a)) for a in args), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "curves-example").resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "prose.txt").write_text(prose(200_000, 1), encoding="utf-8")
    (work / "ledger.txt").write_text(ledger(200_000, 2), encoding="utf-8")
    common = ["--steps", 600, "--eval-every", 50, "--log-every", 10, "--batch-size", 32, "--seq-len", 64,
              "--device", "cpu", "--threads", 1, "--sample-every", 100]
    charrnn("train", "prose.txt", "--hidden-size", 64, "--out", "runs/prose-h64", *common, cwd=work)
    charrnn("train", "prose.txt", "--hidden-size", 192, "--out", "runs/prose-h192", *common, cwd=work)
    charrnn("train", "ledger.txt", "--hidden-size", 64, "--out", "runs/ledger-h64", *common, cwd=work)
    charrnn("runs", cwd=work)
    runs = ["runs/prose-h64", "runs/prose-h192", "runs/ledger-h64"]
    charrnn("plot", *runs, "--out", "curves.png", cwd=work)
    charrnn("plot", *runs[:2], "--x", "time", "--out", "curves-time.png", cwd=work)
    charrnn("plot", *runs[:2], cwd=work)


if __name__ == "__main__":
    main()
