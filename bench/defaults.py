"""Defaults and auto-sizing against a grid and the hand-written loop: validation loss after a fixed wall-clock
budget, on several corpora, one run at a time.

    python bench/corpora.py /tmp/corpora --sizes python=10000000,licences=100000,logs=3000000,chinese=1000000 \
        --jieba-dict PATH/TO/jieba/dict.txt
    python bench/defaults.py /tmp/corpora/*.txt ../shared/data/tinyshakespeare.txt --seconds 100 \
        --out bench/results/defaults-100s.jsonl [--only auto,baseline]
    python bench/defaults.py --table bench/results/defaults-100s.jsonl     # the markdown table of a results file

For every corpus and configuration: `charrnn train CORPUS --max-time SECONDS --device cpu FLAGS` through the
real command line ("auto" is no flags at all: what a new user gets), or the hand-written loop of
bench/quality.py ("baseline"). Every run's final weights are scored by the same function on the whole
validation split (the last 10 %). Results are appended as JSON lines; a (corpus, seconds, config) already in
--out is skipped, so an interrupted sweep continues where it stopped. Never run two of these at once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import tomllib
import torch
from quality import auto_line, run_baseline, train_cli

import charrnn
from charrnn.autosize import CHOSEN
from charrnn.checkpoint import best_of, latest_of
from charrnn.corpus import load_corpus
from charrnn.data import split
from charrnn.devices import cpu_flags
from charrnn.evaluate import evaluate

# From session 7, fixed configurations validate only at the end (on 20,000 characters), so that they train for
# the whole budget; auto spends ~5 % of it on five evaluations. Before, they scored 250,000 characters every 250
# steps: 25 times in 600 s on tiny shakespeare, ~9-15 % of the budget, which flattered auto.
EVAL_AT_END = ["--eval-every", "1000000", "--eval-chars", "20000"]
# Each configuration spells out every setting it depends on, so that it means the same whatever the defaults are.
SCHEDULE = ["--steps", "1000000", "--lr", "6e-3", "--warmup-steps", "100", "--min-lr-ratio", "0.02",
            "--weight-decay", "0.1", "--batch-size", "32", "--seq-len", "64", "--num-layers", "2",
            "--embedding-size", "64", *EVAL_AT_END]
GRID = {
    "old-defaults": ["--steps", "1000000", "--hidden-size", "256", "--dropout", "0", "--lr", "3e-3",
                     "--warmup-steps", "50", "--min-lr-ratio", "0.05", "--weight-decay", "0.1", "--batch-size", "32",
                     "--seq-len", "64", "--num-layers", "2", "--embedding-size", "64", *EVAL_AT_END],
    "h128-d0": [*SCHEDULE, "--hidden-size", "128", "--dropout", "0"],
    "h256-d0": [*SCHEDULE, "--hidden-size", "256", "--dropout", "0"],
    "h256-d0.1": [*SCHEDULE, "--hidden-size", "256", "--dropout", "0.1"],  # configs/shakespeare.toml
    "h256-d0.3": [*SCHEDULE, "--hidden-size", "256", "--dropout", "0.3"],
    "h384-d0.2": [*SCHEDULE, "--hidden-size", "384", "--dropout", "0.2"],
}
# learning rate, batch and depth around the small model (session 6: the choice of learning rate and batch);
# run with --only, not part of the default sweep (later flags override earlier ones)
TUNING = {
    "h128-d0-lr3e-3": [*GRID["h128-d0"], "--lr", "3e-3"],
    "h128-d0-lr1e-2": [*GRID["h128-d0"], "--lr", "1e-2"],
    "h128-d0-lr2e-2": [*GRID["h128-d0"], "--lr", "2e-2"],
    "h128-d0-lr3e-2": [*GRID["h128-d0"], "--lr", "3e-2"],
    "h128-d0-b16": [*GRID["h128-d0"], "--batch-size", "16"],
    "h128-d0-b64-lr1e-2": [*GRID["h128-d0"], "--batch-size", "64", "--lr", "1e-2"],
    "h128-d0-s32": [*GRID["h128-d0"], "--seq-len", "32", "--batch-size", "64"],
    "h128x3-d0": [*GRID["h128-d0"], "--num-layers", "3"],
    "h256-d0-lr1e-2": [*GRID["h256-d0"], "--lr", "1e-2"],
    "h256-d0.1-lr1e-2": [*GRID["h256-d0.1"], "--lr", "1e-2"],
    "h256-d0.2-lr1e-2": [*GRID["h256-d0"], "--dropout", "0.2", "--lr", "1e-2"],
    "h256-d0.3-lr1e-2": [*GRID["h256-d0.3"], "--lr", "1e-2"],
    "h384-d0.2-lr1e-2": [*GRID["h384-d0.2"], "--lr", "1e-2"],
    "h384-d0.3-lr1e-2": [*GRID["h384-d0.2"], "--dropout", "0.3", "--lr", "1e-2"],
    # the 600 s grids of session 11: a little dropout for the small model, and less for the large one
    "h128-d0.1-lr2e-2": [*GRID["h128-d0"], "--dropout", "0.1", "--lr", "2e-2"],
    "h384-d0.1-lr1e-2": [*GRID["h384-d0.2"], "--dropout", "0.1", "--lr", "1e-2"],
    # longer windows, the same characters per step (session 8: lines of the logs are longer than 64 characters)
    "h256-d0-lr1e-2-s128": [*GRID["h256-d0"], "--lr", "1e-2", "--seq-len", "128", "--batch-size", "16"],
    "h256-d0-lr1e-2-s256": [*GRID["h256-d0"], "--lr", "1e-2", "--seq-len", "256", "--batch-size", "8"],
    "h256-d0.1-lr1e-2-s256": [*GRID["h256-d0.1"], "--lr", "1e-2", "--seq-len", "256", "--batch-size", "8"],
}
# checks, not configurations to beat (run with --only): auto and a fixed configuration with other seeds (other
# initial weights and batches), how far apart two runs of one configuration land, the noise under every gap in
# the tables; and the fixed 2x128 validating as auto paces it on a 3 MB text at 100 s
AUTO_SEEDS = {f"auto-seed{n}": ["--seed", str(n)] for n in (1, 2)}
# auto without the learning rate's drop when validation rises (--lr-drop 1): what the drop costs or buys
NO_DROP = {"auto-no-drop": ["--lr-drop", "1"]}
# auto's precision forced either way (on a CPU with native bf16 auto is bf16 autocast, elsewhere fp32): each sizes
# the model by the speed its own probe measures
PRECISION = {"auto-bf16": ["--precision", "bf16"], "auto-fp32": ["--precision", "fp32"]}
# auto with the window of 256 characters (8 x 256, the characters of a 32 x 64 step): the logs' lines are 86 long
WINDOW = {"auto-s256": ["--seq-len", "256", "--batch-size", "8"]}
# ... and fp32 on a CPU with native bf16: the fp32 cells measured on the machine at hand (session 16)
FP32 = {f"{name}-fp32{seed}": [*TUNING[name], "--precision", "fp32", *flags]
        for name in ("h128-d0-lr2e-2", "h256-d0-lr1e-2")
        for seed, flags in [("", []), *((f"-seed{n}", ["--seed", str(n)]) for n in range(1, 5))]}
CHECKS = {**AUTO_SEEDS, **NO_DROP, **PRECISION, **FP32, **WINDOW,
          **{f"{name}-seed{n}": [*flags, "--seed", str(n)] for name, flags in PRECISION.items() for n in range(1, 5)},
          **{f"{name}-seed{n}": [*TUNING[name], "--seed", str(n)]
             for name in ("h128-d0-lr2e-2", "h256-d0-lr1e-2") for n in (1, 2)},
          "h128-d0-lr2e-2-paced": [*TUNING["h128-d0-lr2e-2"], "--eval-every", "586", "--eval-chars", "180000"],
          # ... and as auto paced it on the Chinese-like text at 100 s in session 9, three seeds
          **{f"h128-d0-lr2e-2-paced374{light}{seed}": [*TUNING["h128-d0-lr2e-2"], "--eval-every", "374",
                                                         "--eval-chars", chars, *flags]
             for light, chars in (("", "115000"), ("-half", "57500"))  # and with half the characters scored
             for seed, flags in [("", []), *((f"-seed{n}", ["--seed", str(n)]) for n in range(1, 5))]}}
# auto-sizing with the full softmax instead of the adaptive one (the comparison for large vocabularies)
CONFIGS = {"auto": [], **GRID, "baseline": None, "auto-full-softmax": ["--softmax", "full"], **TUNING, **CHECKS}
SWEEP = [n for n in CONFIGS if n not in TUNING and n not in CHECKS]
NOT_GRID = ("auto", "auto-full-softmax", "baseline", *CHECKS)  # every other configuration is a fixed setting to beat


def cpu_name() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    extras = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in cpu_flags(info)]
    return f"{model} ({', '.join(extras) or 'no AVX-512'})"


def cpu_times() -> list[int]:
    """The machine's CPU time counters (user, nice, system, idle, iowait, irq, softirq, steal, ...)."""
    stat = Path("/proc/stat")
    return [int(n) for n in stat.read_text().split("\n", 1)[0].split()[1:]] if stat.exists() else [0] * 10


def score(checkpoint: Path, val: np.ndarray) -> float:
    """A checkpoint's loss on the whole validation split ``val``."""
    return evaluate(charrnn.load(checkpoint, device="cpu").network, val, torch.device("cpu")).loss


def run_charrnn(corpus: Path, seconds: float, flags: list[str]) -> dict:
    with train_cli(corpus, seconds, ["--device", "cpu", *flags]) as (out, done, wall):
        settings = tomllib.loads((out / "config.toml").read_text())
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        steps = max(m["step"] for m in lines)
        speeds = [m["chars_per_s"] for m in lines if m["split"] == "train" and m.get("chars_per_s")]
        quarter = max(1, len(speeds) // 4)  # training speed early and late: a run that slows down shows here
        speed = {"first_quarter": round(sum(speeds[:quarter]) / quarter), "last_quarter":
                 round(sum(speeds[-quarter:]) / quarter)} if speeds else {}
        chosen = {k: settings[k] for k in CHOSEN}
        # the final weights, and the checkpoint `charrnn eval` and `generate` load by default (the best on the
        # validation slice the run scored), where that is an earlier one
        final, best = latest_of(out), best_of(out)
        _, val = split(load_corpus(corpus).tokens, 0.1)
        curve = [[m["step"], round(m["loss"], 4)] for m in lines if m["split"] == "val"]
        return {"steps": steps, "val_loss": score(final.path, val), "wall_s": round(wall, 1), "chars_per_s": speed,
                "chosen": chosen, "val_curve": curve,
                **({"best_step": best.step, "best_val_loss": score(best.path, val)} if best.path != final.path
                   else {}),
                **auto_line(done)}


def table(path: Path) -> str:
    """Validation loss per corpus and configuration (the best configuration tried in bold), and how far auto is
    from it and ahead of the hand-written loop."""
    results = [json.loads(line) for line in path.read_text().splitlines()]
    keys = list(dict.fromkeys((r["corpus"], r["seconds"]) for r in results))
    names = [n for n in CONFIGS if any(r["config"] == n for r in results)]
    head = ["corpus", "chars", "distinct", "budget", *names, "auto, every seed", "auto's best checkpoint",
            "auto − best tried",
            "baseline − auto", "auto chose"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for corpus, seconds in keys:
        runs = {r["config"]: r for r in results if (r["corpus"], r["seconds"]) == (corpus, seconds)}
        grid = [r["val_loss"] for n, r in runs.items() if n not in NOT_GRID]
        best = min(grid, default=float("nan"))
        cells = ["" if n not in runs else f"**{runs[n]['val_loss']:.4f}**"
                 if n not in NOT_GRID and runs[n]["val_loss"] == best else f"{runs[n]['val_loss']:.4f}" for n in names]
        auto = runs.get("auto")
        seeds = [runs[n]["val_loss"] for n in ("auto", *AUTO_SEEDS) if n in runs]
        spread = f"{statistics.mean(seeds):.4f} ({min(seeds):.4f}-{max(seeds):.4f})" if len(seeds) > 1 else ""
        # the checkpoint `charrnn eval` and `generate` load: the best on the validation slice, where not the last
        kept = f"{auto.get('best_val_loss', auto['val_loss']):.4f}" if auto and "val_curve" in auto else ""
        gap = f"{auto['val_loss'] - best:+.4f}" if auto and grid else ""
        ahead = f"{runs['baseline']['val_loss'] - auto['val_loss']:+.4f}" if auto and "baseline" in runs else ""
        chose = ""
        if auto:
            c = auto["chosen"]
            rate = f" lr {c['lr']:g}" if "lr" in c else ""  # recorded since session 6
            chose = f"{c['num_layers']}x{c['hidden_size']} d{c['dropout']:g}{rate}"
        any_run = next(iter(runs.values()))
        lines.append(f"| {corpus} | {any_run['chars']:,} | {any_run['distinct']:,} | {seconds:g} s | "
                     + " | ".join(cells) + f" | {spread} | {kept} | {gap} | {ahead} | {chose} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpora", type=Path, nargs="*")
    p.add_argument("--seconds", type=float, default=100)
    p.add_argument("--out", type=Path)
    p.add_argument("--only", default=",".join(SWEEP), help=f"comma-separated subset of {', '.join(CONFIGS)}")
    p.add_argument("--table", type=Path, help="print the markdown table of this results file and stop")
    args = p.parse_args()
    if args.table:
        print(table(args.table))
        return
    if not args.corpora or args.out is None:
        sys.exit("give the corpora and --out (or --table RESULTS)")
    names = args.only.split(",")
    unknown = set(names) - set(CONFIGS)
    if unknown:
        sys.exit(f"unknown configurations: {', '.join(sorted(unknown))}")
    done = set()
    if args.out.exists():
        done = {(r["corpus"], r["seconds"], r["config"]) for r in map(json.loads, args.out.read_text().splitlines())}
    cpu = cpu_name()
    for corpus in args.corpora:
        text = load_corpus(corpus)
        for name in names:
            if (corpus.name, args.seconds, name) in done:
                continue
            flags = CONFIGS[name]
            before = cpu_times()
            result = run_baseline(corpus, args.seconds, torch.device("cpu")) if flags is None else \
                run_charrnn(corpus, args.seconds, flags)
            result.pop("impl", None)
            after = cpu_times()
            busy = [b - a for a, b in zip(before, after, strict=True)]
            result["steal"] = round(busy[7] / max(1, sum(busy)), 3)  # time the hypervisor gave to other machines
            line = {"bench": "defaults", "corpus": corpus.name, "chars": len(text.tokens), "distinct": len(text.vocab),
                    "seconds": args.seconds, "config": name, **result, "flags": " ".join(flags or []), "cpu": cpu,
                    "torch": torch.__version__}
            print(json.dumps(line), flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
