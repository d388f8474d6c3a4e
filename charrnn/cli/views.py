"""Rich views on stderr: reading a corpus, training progress, warnings."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from charrnn.train import Event

err = Console(stderr=True, highlight=False)


def say(line: str) -> None:
    """One plain line on stderr (no markup, no wrapping)."""
    err.print(line, markup=False, soft_wrap=True)


def warn(warnings: list[str] | tuple[str, ...], suffix: str = "") -> None:
    for w in warnings:
        say(f"Warning: {w}{suffix}")


class ReadingView:
    """A progress bar for reading and encoding a large corpus (small ones are done before it would show)."""

    SHOW_FROM = 64 << 20  # bytes

    def __init__(self) -> None:
        self.progress: Progress | None = None

    def update(self, done: int, total: int) -> None:
        if total < self.SHOW_FROM:
            return
        if self.progress is None:
            self.progress = Progress(TextColumn("reading corpus"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(), console=err)
            self.task = self.progress.add_task("read", total=total)
            self.progress.start()
        self.progress.update(self.task, completed=done)

    def __enter__(self) -> ReadingView:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class ProgressView:
    """Draws training progress on stderr: a live bar on a terminal, plain lines otherwise."""

    PLAIN_EVERY = 5.0  # seconds between plain lines for train windows

    def __init__(self) -> None:
        self.live = err.is_terminal
        self.last_plain = 0.0
        self.val = "val -"
        self.progress = Progress(
            TextColumn("step {task.fields[step]:>6}"),
            BarColumn(bar_width=24),
            TextColumn("loss {task.fields[loss]}  {task.fields[val]}  {task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self.task = self.progress.add_task("train", total=1.0, step=0, loss="-", val=self.val, speed="")

    def __enter__(self) -> ProgressView:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def on_event(self, e: Event) -> None:
        if e.split == "val":
            self.val = f"val {e.loss:.4f} ppl {e.perplexity:.2f} bpc {e.bpc:.3f}"
        fields: dict[str, Any] = {"step": e.step, "val": self.val}
        if e.split == "train":
            fields.update(loss=f"{e.loss:.4f}", speed=f"{e.chars_per_s / 1000:.1f}k chars/s")
        self.progress.update(self.task, completed=min(1.0, e.progress), **fields)
        if not self.live and (e.split == "val" or e.elapsed - self.last_plain >= self.PLAIN_EVERY):
            self.last_plain = e.elapsed
            if e.split == "val":
                line = f"step {e.step} {self.val}"
            else:
                line = f"step {e.step} loss {e.loss:.4f} lr {e.lr:.2e} {fields['speed']}"
            err.print(f"{line} [{e.elapsed:.0f}s, {100 * min(1.0, e.progress):.0f}%]", soft_wrap=True)
