"""Auto-sizing: the model for a time budget.

With ``--max-time`` and neither a config file nor ``--no-auto``, a new run's size, regularisation and learning
rate come from three numbers: the budget, the length of the training split, and this machine's speed, measured
at the start by timing a few steps of the reference model (a 2x256 of the run's cell at batch 32 x 64, the
corpus's own output layer).
What the budget buys is counted in updates of the reference model, ``U = seconds x chars/s / (32 x 64)``, and in
the passes it would make over the training split, ``P = seconds x chars/s / characters``:

- the model is 2x128, without dropout, while the budget is worth a few passes (P < ``FEW_PASSES``) and
  U < ``COMPUTE_BOUND_UPDATES``: compute, not text, is then what is short, and a smaller model makes ~2-2.6x the
  updates (at 100 s, 2x128 beat every 2x256 on the Chinese-like text at P = 2.0 and tiny shakespeare at 2.8),
  with the adaptive output layer, and in fp32 below ``SMALL_MODEL_UPDATES`` (above it, on a faster CPU, the 2x256
  without dropout won at 100 s). With a full softmax in bf16 autocast it is the 2x256, also without
  dropout: at 100 s in bf16 the 2x256 without dropout beat the 2x128 on tiny shakespeare (1.4349 against 1.4776)
  and Python (1.2876 against 1.2973), presumably because bf16's speed puts the 2x256 past the number of updates
  where the small model's extra ones pay; it stays without dropout up to ``FEW_PASSES_BF16``, since dropout
  slows its steps far more in bf16 than in fp32. With the adaptive layer in bf16 the 2x128 stays: as auto it scored
  5.5722 on the Chinese-like text (three runs) against the 2x256's 5.6036 (four; session 12);
  2x384 from ``LARGE_UPDATES`` on a training split of at least ``LARGE_CORPUS`` characters; 2x256 otherwise;
- the 2x256's and 2x384's dropout grows with P (``DROPOUT``): a model that sees its text many times over learns
  it by heart (at 100 s, 0.3 was the better one for the 2x256 on 100 KB of licences). P is counted for the
  reference model whatever the choice, as what the budget's compute is worth;
- the peak learning rate falls with the width (``LEARNING_RATE``): 2e-2 for 2x128, 1e-2 for 2x256, the default
  6e-3 for 2x384;
- validation during training costs ~0.5 % of the budget per evaluation, ``EVALUATIONS`` times (the defaults,
  250,000 characters every 250 steps, took ~20 % of a 100 s budget on a 10 MB corpus).

Everything else keeps the defaults (warmup, a cosine decay that ends with the budget, weight decay 0.1).
Settings given on the command line always win over the choice, and what follows from them follows them: a
width of the user's gets the learning rate of the nearest width tuned, and validation is paced by the steps of
the model that will train, at its batch shape. The rule and the measurements it was fitted to:
bench/RESULTS.md, "Defaults and auto-sizing" and "Auto-sizing chooses the learning rate" (bench/defaults.py).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

from charrnn import config
from charrnn.train import Trainer

REFERENCE = {"num_layers": 2, "hidden_size": 256, "batch_size": 32, "seq_len": 64}  # the shape the probe times
CHOSEN = ("hidden_size", "num_layers", "dropout", "lr", "batch_size", "seq_len")  # what the rule sets
PACING = ("eval_every", "eval_chars")  # ... and how often validation scores how much, which follows the choice
# training chars/s of 2x128 and 2x384 against 2x256 at batch 32 x 64, by precision and output layer. fp32: steps in
# the same 100 s on a 2-core Xeon with freed memory reused, 2.5-2.7x and 0.42x with a full softmax (Python source),
# 1.95-2.0x and 0.73x with the adaptive one, whose cost does not shrink with the recurrent layers (Chinese-like
# text; bench/results/grid-s9-100s.jsonl). bf16 autocast on a 2-core Xeon with AMX (bench/precision.py, twice;
# bench/results/precision-s12.jsonl): 1.6-1.9x and 0.36-0.47x with a full softmax, but 1.0x and 0.65x with the
# adaptive one, which bf16 does not speed up at that width (0.94x of fp32; not profiled)
RELATIVE_SPEED = {"fp32": {"full": {128: 2.6, 256: 1.0, 384: 0.45}, "adaptive": {128: 2.0, 256: 1.0, 384: 0.7}},
                  "bf16": {"full": {128: 1.8, 256: 1.0, 384: 0.45}, "adaptive": {128: 1.0, 256: 1.0, 384: 0.65}}}
FEW_PASSES = 4.0
# ... and with a full softmax in bf16 autocast, where dropout costs ~40 % of the 2x256's steps (~7 % in fp32), up to
# more passes: at 100 s on tiny shakespeare (5-7 passes) 2x256 d0 1.4283 against d0.1 1.4604, three runs each
FEW_PASSES_BF16 = 8.0
COMPUTE_BOUND_UPDATES = 6_000
# ... but in fp32 with a full softmax the 2x128 only below this many: at 100 s in fp32 the 2x256 without dropout lost
# where it made 1,148-1,339 steps (JSON by 0.06, Python by 0.01; tiny shakespeare a tie) and won where it made
# 1,548-1,874 (tiny shakespeare by 0.02-0.045, Python by 0.022-0.034; JSON at 1,604 steps 0.009 behind)
SMALL_MODEL_UPDATES = 1_600
LARGE_UPDATES = 16_000
LARGE_CORPUS = 2_000_000
DROPOUT = ((2.0, 0.0), (8.0, 0.1), (24.0, 0.2), (math.inf, 0.3))  # (passes below this, dropout)
# peak learning rate by width: the smaller model learns fastest at a higher one (bench/results/tuning-*.jsonl);
# 384 keeps the default, untuned
LEARNING_RATE = {128: 2e-2, 256: 1e-2, 384: 6e-3}
MIN_EVAL_CHARS, MAX_EVAL_CHARS = 20_000, 250_000
EVALUATIONS = 5  # evaluations during a timed run, besides the last
# ... or more, up to this many, where the validation split is smaller than one evaluation's share would score: on
# 100 KB a 600 s run overfits from ~15 passes on (session 10), and five evaluations miss the best weights by far
MAX_EVALUATIONS = 50
# of the budget, for each: at 1 % the fixed 2x128 paced as auto paces it scored 0.021 worse on the Chinese-like text
# at 100 s than unpaced (mean of three seeds), at 0.5 % as well as unpaced (bench/RESULTS.md, session 9)
EVAL_SHARE = 0.005
EVAL_SPEED = 3.0  # scoring chars/s against training chars/s (forward only), a cautious guess
PROBE_SECONDS, PROBE_SHARE = 1.0, 0.02  # the probe times steps for at most a second, and 2 % of a short budget


@dataclass(frozen=True)
class Choice:
    """The settings chosen for a budget, and the numbers they were chosen from."""

    settings: dict[str, Any]  # what the run will use: the rule's choice and the settings the user gave
    seconds: float
    chars_per_s: float
    train_chars: int
    updates: float
    passes: float
    yours: tuple[str, ...] = ()  # the chosen settings the user gave
    bf16: bool = False  # measured, and to be trained, in bf16 autocast
    steps: int | None = None  # the user's, where they end the run before the budget (``seconds`` is their time)

    def describe(self) -> str:
        """One line: the settings the run will use and why; those the user gave are named as theirs."""
        s = self.settings
        kept = f"; yours: {', '.join(self.yours)}" if self.yours else ""
        budget = f"your {self.steps:,} steps (~{self.seconds:.3g}s)" if self.steps is not None else f"{self.seconds:g}s"
        return (f"auto-sized for {budget}: {s['num_layers']}x{s['hidden_size']}, dropout {s['dropout']:g}, "
                f"lr {s['lr']:g}, batch {s['batch_size']}x{s['seq_len']}{kept} "
                f"(measured {self.chars_per_s / 1000:.1f}k chars/s{' in bf16' if self.bf16 else ''}: "
                f"~{self.updates:,.0f} updates of a 2x256 model, ~{self.passes:.1f} passes over "
                f"{self.train_chars:,} training characters; --no-auto keeps the defaults)")


def learning_rate(hidden: int) -> float:
    """The peak learning rate for a width: that of the nearest one tuned (of two as near, the wider's)."""
    return LEARNING_RATE[min(LEARNING_RATE, key=lambda width: (abs(width - hidden), -width))]


def choose(seconds: float, chars_per_s: float, train_chars: int, adaptive: bool = False,
           yours: dict[str, Any] | None = None, speed: float | None = None, val_chars: int | None = None,
           bf16: bool = False) -> Choice:
    """The settings for ``seconds`` of training at ``chars_per_s`` (the reference model's measured speed, at the
    run's batch shape, with the adaptive output layer if ``adaptive``, in bf16 autocast if ``bf16``). Those in
    ``yours`` (the user's) are kept, and what follows from them follows them: their ``steps``, where they end the
    run before the clock would, make the budget the time they take; their ``eval_chars`` sets how often validation
    fits its share. ``speed`` is the training chars/s of the model that will train where its width or depth is the
    user's (measured): the chosen width's is RELATIVE_SPEED's estimate. ``val_chars``, the validation split's size,
    paces validation where it is small."""
    given = yours or {}
    yours = {k: v for k, v in given.items() if k in CHOSEN}
    shape = {**REFERENCE, **yours}
    step_chars = shape["batch_size"] * shape["seq_len"]
    steps_given, pace = given.get("steps"), speed or chars_per_s  # the speed of the model that trains, or a guess
    if steps_given is not None and steps_given * step_chars < seconds * pace:  # the steps end it first
        seconds = steps_given * step_chars / pace
    else:
        steps_given = None
    updates = seconds * chars_per_s / (REFERENCE["batch_size"] * REFERENCE["seq_len"])
    passes = seconds * chars_per_s / max(train_chars, 1)
    relative = RELATIVE_SPEED["bf16" if bf16 else "fp32"]["adaptive" if adaptive else "full"]
    few = FEW_PASSES_BF16 if bf16 and not adaptive else FEW_PASSES
    compute_bound = passes < few and updates < COMPUTE_BOUND_UPDATES
    hidden = 256
    if updates >= LARGE_UPDATES and train_chars >= LARGE_CORPUS:
        hidden = 384
    elif compute_bound and (adaptive or not bf16 and updates < SMALL_MODEL_UPDATES):
        hidden = 128
    dropout = 0.0 if compute_bound else next(d for limit, d in DROPOUT if passes < limit)
    width = yours.get("hidden_size", hidden)
    s = {**shape, "hidden_size": hidden, "dropout": dropout, "lr": learning_rate(width), **yours}
    if speed is None:
        speed = chars_per_s * relative[hidden]
    steps = min(seconds * speed / step_chars, steps_given or math.inf)  # the run's, at its batch shape
    scored = EVAL_SHARE * EVAL_SPEED * steps * step_chars  # characters an evaluation scores in its share of the run
    per = min(scored, MAX_EVAL_CHARS)
    if "eval_chars" in given:  # theirs (0: the whole split): as many evaluations as fit in the same share
        each = min(given["eval_chars"] or math.inf, val_chars or math.inf)
        ratio = per / each if each < math.inf else 1.0
    else:  # a validation split smaller than the share is scored whole in less of it: evaluate as much more often
        ratio = max(1.0, per / (val_chars or math.inf))
    evaluations = min(MAX_EVALUATIONS, EVALUATIONS * ratio)
    evaluation = {"eval_every": int(min(config.LIMITS["eval_every"], max(10, steps / evaluations))),
                  "eval_chars": int(min(MAX_EVAL_CHARS, max(MIN_EVAL_CHARS, scored)))}
    return Choice({**s, **evaluation}, seconds, chars_per_s, train_chars, updates, passes, tuple(sorted(yours)),
                  bf16, steps_given)


def measure(trainer: Trainer, seconds: float = PROBE_SECONDS) -> float:
    """Training chars/s of ``trainer``'s model on this machine: two untimed steps (allocation, kernel choice),
    then steps for about ``seconds`` (at least five), each timed to its end; the median step counts, so that a
    stall of the machine in one step (another process, the hypervisor) does not make it look slow."""
    for _ in range(2):
        trainer.train_step(next(trainer.batches))
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < seconds:
        batch = next(trainer.batches)
        began = time.perf_counter()
        loss, _ = trainer.train_step(batch)
        loss.item()  # wait for the device, so that the clock measures its work
        times.append(time.perf_counter() - began)
    return batch.x.numel() / statistics.median(times)
