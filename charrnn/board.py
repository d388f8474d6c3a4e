"""TensorBoard (``charrnn train --tensorboard``): the scalars of metrics.jsonl and the samples of samples.jsonl,
written with ``torch.utils.tensorboard`` into ``RUN/tensorboard/``. The ``tensorboard`` package is optional
(``pip install 'charrnn[tensorboard]'``); nothing here imports it until a run asks for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charrnn.errors import CharRNNError
from charrnn.schema import SampleLine
from charrnn.train import Event

DIR = "tensorboard"


def require() -> Any:
    """TensorBoard's SummaryWriter class, or an error saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises it when the tensorboard package is missing
        raise CharRNNError("--tensorboard needs the tensorboard package, which is not installed: "
                           "pip install 'charrnn[tensorboard]' (or train without --tensorboard)") from None
    return SummaryWriter


class Board:
    """Writes a run's events and samples for TensorBoard; ``purge_step`` hides what an earlier process of the same
    run logged from that step on (a resumed run logs it again)."""

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        self.writer = require()(log_dir=str(run_dir / DIR), purge_step=purge_step)

    def event(self, e: Event) -> None:
        self.writer.add_scalar(f"loss/{e.split}", e.loss, e.step)
        self.writer.add_scalar(f"bpc/{e.split}", e.bpc, e.step)
        if e.split == "train":
            self.writer.add_scalar("lr", e.lr, e.step)
            if e.chars_per_s is not None:
                self.writer.add_scalar("chars_per_s", e.chars_per_s, e.step)

    def sample(self, s: SampleLine) -> None:
        # TensorBoard renders text as Markdown: indented, it is shown as it is, line breaks included
        self.writer.add_text("sample", "\n".join("    " + line for line in s.text.split("\n")), s.step)

    def close(self) -> None:
        self.writer.close()
