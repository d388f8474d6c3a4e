"""Auto-sizing: the model for a time budget.

With ``--max-time`` and neither a config file nor ``--no-auto``, a new run's size and regularisation come from
three numbers: the budget, the length of the training split, and this machine's speed, measured at the start by
timing a few steps of the reference model (a 2x256 LSTM at batch 32 x 64, the corpus's own output layer).
What the budget buys is counted in updates of the reference model, ``U = seconds x chars/s / (32 x 64)``, and in
the passes it would make over the training split, ``P = seconds x chars/s / characters``:

- the model is 2x128 while the text outlasts the budget (P < ``FEW_PASSES``) and U < ``COMPUTE_BOUND_UPDATES``:
  compute, not text, is then what is short, and a smaller model makes ~2.5x the updates; 2x384 from
  ``LARGE_UPDATES`` on a training split of at least ``LARGE_CORPUS`` characters; 2x256 otherwise;
- dropout grows with the passes the chosen model makes over the training split (``DROPOUT``): a model that
  sees its text many times over learns it by heart;
- validation during training costs ~1 % of the budget per evaluation, ``EVALUATIONS`` times (the defaults,
  250,000 characters every 250 steps, took ~20 % of a 100 s budget on a 10 MB corpus).

Everything else keeps the defaults (lr 6e-3 with warmup and a cosine decay that ends with the budget, weight
decay 0.1). Settings given on the command line always win over the choice. The rule and the measurements it
was fitted to: bench/RESULTS.md, "Defaults and auto-sizing" (bench/defaults.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from charrnn.train import Trainer

REFERENCE = {"num_layers": 2, "hidden_size": 256, "batch_size": 32, "seq_len": 64}  # the shape the probe times
CHOSEN = ("hidden_size", "num_layers", "dropout", "batch_size", "seq_len")  # what the rule sets
# training chars/s of 2x128 and 2x384 against 2x256 at batch 32 x 64: steps in the same 100 s on a 2-core Xeon,
# 2.7-3.0x and 0.48-0.52x with a full softmax, 1.8x and 0.49x with the adaptive one (bench/defaults.py)
RELATIVE_SPEED = {128: 2.5, 256: 1.0, 384: 0.5}
FEW_PASSES = 2.0
COMPUTE_BOUND_UPDATES = 6_000
LARGE_UPDATES = 16_000
LARGE_CORPUS = 2_000_000
DROPOUT = ((2.0, 0.0), (8.0, 0.1), (24.0, 0.2), (math.inf, 0.3))  # (passes below this, dropout)
MIN_EVAL_CHARS, MAX_EVAL_CHARS = 20_000, 250_000
EVALUATIONS = 5  # evaluations during a timed run, besides the last
EVAL_SHARE = 0.01  # of the budget, for each
EVAL_SPEED = 3.0  # scoring chars/s against training chars/s (forward only), a cautious guess
PROBE_SECONDS = 1.0


@dataclass(frozen=True)
class Choice:
    """The settings chosen for a budget, and the numbers they were chosen from."""

    settings: dict[str, Any]
    seconds: float
    chars_per_s: float
    train_chars: int
    updates: float
    passes: float

    def describe(self, explicit: set[str] = frozenset()) -> str:
        """One line: what was chosen and why; settings the user gave are named as theirs."""
        s = self.settings
        kept = f"; yours: {', '.join(sorted(explicit & set(CHOSEN)))}" if explicit & set(CHOSEN) else ""
        return (f"auto-sized for {self.seconds:g}s: {s['num_layers']}x{s['hidden_size']}, dropout {s['dropout']:g}, "
                f"batch {s['batch_size']}x{s['seq_len']}{kept} (measured {self.chars_per_s / 1000:.1f}k chars/s: "
                f"~{self.updates:,.0f} updates of a 2x256 model, ~{self.passes:.1f} passes over "
                f"{self.train_chars:,} training characters; --no-auto keeps the defaults)")


def choose(seconds: float, chars_per_s: float, train_chars: int) -> Choice:
    """The model for ``seconds`` of training at ``chars_per_s`` (the reference model's measured speed)."""
    updates = seconds * chars_per_s / (REFERENCE["batch_size"] * REFERENCE["seq_len"])
    hidden = 256
    if updates >= LARGE_UPDATES and train_chars >= LARGE_CORPUS:
        hidden = 384
    elif seconds * chars_per_s < FEW_PASSES * train_chars and updates < COMPUTE_BOUND_UPDATES:
        hidden = 128
    passes = seconds * chars_per_s * RELATIVE_SPEED[hidden] / max(train_chars, 1)
    dropout = next(d for limit, d in DROPOUT if passes < limit)
    speed = chars_per_s * RELATIVE_SPEED[hidden]  # the chosen model's
    scored = EVAL_SHARE * seconds * EVAL_SPEED * speed  # characters one evaluation scores in its share
    evaluation = {"eval_every": max(10, int(updates * RELATIVE_SPEED[hidden] / EVALUATIONS)),
                  "eval_chars": int(min(MAX_EVAL_CHARS, max(MIN_EVAL_CHARS, scored)))}
    settings = {**REFERENCE, "hidden_size": hidden, "dropout": dropout, **evaluation}
    return Choice(settings, seconds, chars_per_s, train_chars, updates, passes)


def measure(trainer: Trainer, seconds: float = PROBE_SECONDS) -> float:
    """Training chars/s of ``trainer``'s model on this machine: two untimed steps (allocation, kernel choice),
    then steps for about ``seconds`` (at least three)."""
    for _ in range(2):
        trainer.train_step(next(trainer.batches))
    steps, chars = 0, 0
    start = time.perf_counter()
    while steps < 3 or time.perf_counter() - start < seconds:
        batch = next(trainer.batches)
        loss, _ = trainer.train_step(batch)
        steps, chars = steps + 1, chars + batch.x.numel()
        if steps % 4 == 0:
            loss.item()  # wait for the device now and then, so that the clock measures its work
    loss.item()
    return chars / (time.perf_counter() - start)
