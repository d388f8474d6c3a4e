"""Classification by per-class language models with ``charrnn score``: train one small model per class, label
held-out items with the model that compresses them best, report accuracy and the confusion matrix.

    python bench/classify.py [--task language|code] [--seconds 55] [--per-class 300] [--work /tmp/charrnn-classify]

Tasks, from text already on a Debian machine (read where it lies at run time; nothing is copied into the
repository):
  language  English, French and German: the messages of the gettext catalogs under /usr/share/locale (msgid for
            English, the fr and de translations). Catalogs are split by name: about a quarter of them are held
            out, and a test message must also not occur in any training text. Items are single messages of
            20-200 characters, one per line (``--by line``).
  code      Python, C and shell: /usr/lib/python3*/**/*.py, /usr/include/**/*.h, and scripts starting with
            #!/bin/sh or #!/bin/bash under /usr/bin, /usr/sbin, /usr/lib, /usr/share and /etc. Files are split by
            a hash of their path (about a quarter held out); items are blank-line-separated blocks of 3+ lines and
            40-600 characters (``--by paragraph``).

Each class's training text is capped at --train-chars characters; each model (an LSTM of one layer of
--hidden-size) trains for --seconds, one at a time, on --threads threads. Runs already in --work are reused
(delete it, or pass --retrain). Prints one JSON line with the accuracy, the confusion matrix (rows: true class,
columns: label given), the accuracy of items with and without characters unseen by some model, and that of a
character-unigram classifier on the same split for reference.
"""

from __future__ import annotations

import argparse
import collections
import gettext
import json
import math
import random
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

# A small, fast model: in under a minute on a shared 2-core CPU it gets through ~900 steps (a 2x256 LSTM, ~50).
MODEL = ["--num-layers", "1", "--embedding-size", "16", "--batch-size", "32", "--seq-len", "64", "--dropout", "0",
         "--lr", "3e-3", "--warmup-steps", "20", "--eval-every", "200", "--eval-chars", "20000"]


def held_out(name: str) -> bool:
    return zlib.crc32(name.encode()) % 4 == 0


def clean(message: str) -> str:
    return re.sub(r"\s+", " ", message).strip()


def language_task() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(train, test) messages per class, test catalogs disjoint from training ones."""
    train: dict[str, set[str]] = collections.defaultdict(set)
    test: dict[str, set[str]] = collections.defaultdict(set)
    for lang in ("fr", "de"):
        for mo in sorted(Path(f"/usr/share/locale/{lang}/LC_MESSAGES").glob("*.mo")):
            if mo.stem.startswith(("iso_", "xkeyboard")):  # lists of names, not sentences
                continue
            try:
                with mo.open("rb") as f:
                    catalog = gettext.GNUTranslations(f)._catalog
            except (OSError, UnicodeDecodeError, ValueError, KeyError, IndexError):
                continue
            side = test if held_out(mo.stem) else train
            for key, translated in catalog.items():
                if not isinstance(key, str) or not key:
                    continue  # plural forms and the header
                source, translated = clean(key), clean(translated)
                if source and translated and source != translated:
                    side["en"].add(source)
                    side[lang].add(translated)
    return {c: sorted(v) for c, v in train.items()}, {c: sorted(v) for c, v in test.items()}


def _files(pattern_roots: list[tuple[str, str]]) -> list[Path]:
    out = []
    for root, pattern in pattern_roots:
        out += [p for p in Path(root).glob(pattern) if p.is_file() and not p.is_symlink()]
    return sorted(set(out))


def _shell_scripts() -> list[Path]:
    found = []
    for root in ("/usr/bin", "/usr/sbin", "/usr/lib", "/usr/share", "/etc"):
        for p in Path(root).rglob("*"):
            try:
                if p.is_file() and not p.is_symlink() and p.stat().st_size < 1 << 20:
                    with p.open("rb") as f:
                        head = f.read(32)
                    if head.startswith((b"#!/bin/sh", b"#!/bin/bash", b"#! /bin/sh", b"#!/usr/bin/env bash")):
                        found.append(p)
            except OSError:
                continue
    return sorted(found)


def _blocks(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [b.strip("\n") for b in re.split(r"\n[ \t]*\n", text) if b.strip()]


def code_task() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    sources = {
        "python": _files([(str(p), "**/*.py") for p in sorted(Path("/usr/lib").glob("python3*"))]),
        "c": _files([("/usr/include", "**/*.h")]),
        "shell": _shell_scripts(),
    }
    train: dict[str, list[str]] = {}
    test: dict[str, list[str]] = {}
    for cls, files in sources.items():
        train[cls], test[cls] = [], []
        for path in files:
            (test if held_out(str(path)) else train)[cls].extend(_blocks(path))
    return train, test


def unigram_accuracy(train: dict[str, str], items: list[str], labels: list[str]) -> float:
    """A character-unigram classifier (add-one smoothing over all characters seen) on the same items."""
    alphabet = set("".join(train.values())) | set("".join(items))
    logp = {}
    for cls, text in train.items():
        counts = collections.Counter(text)
        total = len(text) + len(alphabet)
        logp[cls] = {c: math.log((counts[c] + 1) / total) for c in alphabet}
    right = sum(max(logp, key=lambda c, item=item: sum(logp[c][ch] for ch in item)) == label
                for item, label in zip(items, labels, strict=True))
    return right / len(items)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("language", "code"), default="language")
    parser.add_argument("--seconds", type=float, default=55.0, help="training time of each model")
    parser.add_argument("--per-class", type=int, default=300, help="held-out items per class")
    parser.add_argument("--train-chars", type=int, default=400_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/charrnn-classify"))
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training and scoring")
    a = parser.parse_args()
    work = a.work / a.task
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    train, test = language_task() if a.task == "language" else code_task()
    by = "line" if a.task == "language" else "paragraph"

    seen = set().union(*train.values())
    texts: dict[str, str] = {}
    for cls, messages in sorted(train.items()):
        messages = list(messages)
        rng.shuffle(messages)
        text, size = [], 0
        for m in messages:
            if size >= a.train_chars:
                break
            text.append(m)
            size += len(m) + 1 + (a.task == "code")
        texts[cls] = ("\n\n" if a.task == "code" else "\n").join(text) + "\n"
        (work / f"train-{cls}.txt").write_text(texts[cls], encoding="utf-8")

    def fits(item: str) -> bool:
        if a.task == "language":
            return 20 <= len(item) <= 200
        return 40 <= len(item) <= 600 and item.count("\n") >= 2

    items, labels = [], []
    for cls, candidates in sorted(test.items()):
        pool = sorted({c for c in candidates if fits(c) and c not in seen})
        rng.shuffle(pool)
        for item in pool[:a.per_class]:
            items.append(item)
            labels.append(cls)
    order = list(range(len(items)))
    rng.shuffle(order)
    items, labels = [items[i] for i in order], [labels[i] for i in order]
    separator = "\n\n" if a.task == "code" else "\n"
    (work / "test.txt").write_text(separator.join(items) + "\n", encoding="utf-8")

    classes = sorted(texts)
    for cls in classes:
        run = work / "runs" / cls
        if run.exists() and not a.retrain:
            continue
        shutil.rmtree(run, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "charrnn", "train", str(work / f"train-{cls}.txt"), *MODEL,
                        "--hidden-size", str(a.hidden_size), "--max-time", str(a.seconds), "--out", str(run),
                        "--threads", str(a.threads)], check=True, stdout=subprocess.DEVNULL)
    args = [sys.executable, "-m", "charrnn", "score", str(work / "test.txt"), "--by", by, "--threads", str(a.threads)]
    for cls in classes:
        args += ["--checkpoint", str(work / "runs" / cls)]
    scored = subprocess.run(args, check=True, capture_output=True, text=True)
    records = [json.loads(line) for line in scored.stdout.splitlines()]
    if len(records) != len(items):
        sys.exit(f"expected {len(items)} items, scored {len(records)}")
    names = {str(work / "runs" / cls): cls for cls in classes}
    given = [names[r["best"]] for r in records]
    confusion = {t: {g: 0 for g in classes} for t in classes}
    for t, g in zip(labels, given, strict=True):
        confusion[t][g] += 1
    right = [t == g for t, g in zip(labels, given, strict=True)]
    with_unseen = [any(r["unseen"].values()) for r in records]

    def share(mask: list[bool]) -> float | None:
        chosen = [r for r, m in zip(right, mask, strict=True) if m]
        return round(sum(chosen) / len(chosen), 4) if chosen else None

    result = {
        "task": a.task, "classes": classes, "by": by, "train_chars": {c: len(texts[c]) for c in classes},
        "seconds_each": a.seconds, "items": len(items), "accuracy": round(sum(right) / len(right), 4),
        "confusion": confusion, "items_with_unseen": sum(with_unseen),
        "accuracy_with_unseen": share(with_unseen), "accuracy_without_unseen": share([not u for u in with_unseen]),
        "unigram_accuracy": round(unigram_accuracy(texts, items, labels), 4),
        "val_bpc": {c: _val_bpc(work / "runs" / c) for c in classes},
    }
    print(json.dumps(result))
    for t, g, item in zip(labels, given, items, strict=True):
        if t != g:
            print(f"  {t} labelled {g}: {item[:100]!r}", file=sys.stderr)
    return 0


def _val_bpc(run: Path) -> float | None:
    best = None
    for line in (run / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        if m.get("split") == "val" and (best is None or m["bpc"] < best):
            best = m["bpc"]
    return None if best is None else round(best, 4)


if __name__ == "__main__":
    sys.exit(main())
