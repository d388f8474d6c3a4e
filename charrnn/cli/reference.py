"""``charrnn eval --baselines``: the reference points (baselines.py) for the text eval scored, as a small table
beside the model's own bits per character (and in ``--json``)."""

from __future__ import annotations

from typing import Any

from charrnn import baselines, checkpoint, run
from charrnn.cli.views import err, reading_view


def compute(ckpt: checkpoint.Checkpoint, text: Any) -> baselines.Baselines:
    """The baselines of ``text``, trained on the run's training split (an error if its corpus is gone or changed)."""
    with reading_view() as reading:
        train, corpus = run.training_split(ckpt, "--baselines", reading.update)
    with err.status("baselines") as status:
        return baselines.compute(train, text, corpus.vocab, lambda what: status.update(f"baselines: {what}"))


def table(model_bpc: float, b: baselines.Baselines) -> str:
    """The model's bits per character and each baseline's, one per line."""
    part = "" if b.lzma_chars > b.chars else f" (its first {b.lzma_chars:,} characters)"
    rows = [
        ("model", model_bpc, "this checkpoint"),
        ("n-gram", b.ngram, f"interpolated Kneser-Ney of order {b.order} (chosen on held-out training text), "
                            f"{b.counted:,} training chars"),
        ("lzma", b.lzma, f"xz -9e of the text itself{part}: a compressor, not a predictive model; for reference"),
        ("unigram", b.unigram, "character frequencies of the training split, add-one smoothed"),
        ("uniform", b.uniform, f"log2 {b.vocab_size}: a model that has learnt nothing"),
    ]
    lines = [f"\nbits/char on the same {b.chars:,} characters:"]
    lines += [f"  {name:<8} {bpc:7.4f}  {what}" for name, bpc, what in rows]
    return "\n".join(lines)
