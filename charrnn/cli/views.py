"""Rich views on stderr: reading a corpus, training progress, warnings."""

from __future__ import annotations

import json
from collections.abc import Iterable

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from charrnn.schema import SampleLine
from charrnn.train import Event

err = Console(stderr=True, highlight=False)


def say(line: str) -> None:
    """One plain line on stderr (no markup, no wrapping)."""
    err.print(line, markup=False, soft_wrap=True)


def warn(warnings: list[str] | tuple[str, ...], suffix: str = "") -> None:
    for w in warnings:
        say(f"Warning: {w}{suffix}")


class BarView:
    """A progress bar for a long job that reports (done, total); jobs smaller than ``show_from`` finish before it
    would be worth showing, so it never appears for them."""

    def __init__(self, show_from: int, *columns: ProgressColumn, transient: bool = False) -> None:
        self.show_from, self.columns, self.transient = show_from, columns, transient
        self.progress: Progress | None = None

    def update(self, done: int, total: int) -> None:
        if total < self.show_from:
            return
        if self.progress is None:
            self.progress = Progress(*self.columns, console=err, transient=self.transient)
            self.task = self.progress.add_task("", total=total)
            self.progress.start()
        self.progress.update(self.task, completed=done)

    def __enter__(self) -> BarView:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def reading_view() -> BarView:
    """Reading and encoding a corpus of 64 MiB or more."""
    return BarView(64 << 20, TextColumn("reading corpus"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn())


def scoring_view() -> BarView:
    """Scoring a text of a million characters or more with ``charrnn eval``."""
    return BarView(1_000_000, TextColumn("scoring"), BarColumn(),
                   TextColumn("{task.completed:,.0f}/{task.total:,.0f} chars"), TimeRemainingColumn(), transient=True)


class _BarAndSample(Progress):
    """A progress bar with the latest sample under it."""

    sample: RenderableType | None = None

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        if self.sample is not None:
            yield self.sample


class ProgressView:
    """Draws training progress on stderr: a live bar on a terminal, plain lines otherwise. The bar says where the
    run is (step of steps, or seconds of --max-time) and what it is doing: starting, training or evaluating; the
    latest sample (--sample-every) shows under it."""

    SAMPLE_LINES = 6  # of the latest sample, under the bar

    PLAIN_EVERY = 5.0  # seconds between plain lines for train windows
    STARTING = "starting: the first steps"

    def __init__(self, steps: int, max_time: float | None = None) -> None:
        self.live = err.is_terminal
        self.last_plain = 0.0
        self.steps, self.max_time = steps, max_time
        self.loss, self.val, self.speed = "", "val -", ""
        self.progress = _BarAndSample(
            SpinnerColumn(),
            TextColumn("{task.fields[where]}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[state]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self.task = self.progress.add_task("train", total=1.0, where=self._where(0, 0.0), state=self.STARTING)

    def _where(self, step: int, elapsed: float) -> str:
        if self.max_time is None:
            return f"step {step}/{self.steps}"
        return f"step {step}, {elapsed:.0f}s/{self.max_time:g}s"

    def on_sample(self, s: SampleLine) -> None:
        """A sample written at step ``s.step``: under the bar on a terminal, one line (JSON-quoted) otherwise."""
        if not self.live:
            err.print(f"sample at step {s.step}: {json.dumps(s.text, ensure_ascii=False)}", markup=False,
                      highlight=False, soft_wrap=True)
            return
        width = max(20, err.width - 2)
        shown = "".join(c if c == "\n" or c.isprintable() else "·" for c in s.text)  # no control codes
        lines = [line[:width] for line in shown.split("\n")][-self.SAMPLE_LINES:]
        text = Text(f"sample at step {s.step}:\n", style="dim")
        text.append("\n".join("  " + line for line in lines))
        self.progress.sample = text
        self.progress.refresh()

    def on_evaluate(self, done: int, total: int) -> None:
        """An evaluation in progress (done of total characters)."""
        state = f"evaluating {100 * done // max(total, 1)}% of {total:,} chars  {self.val}"
        self.progress.update(self.task, state=state)

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
        else:
            self.loss, self.speed = f"loss {e.loss:.4f}", f"{e.chars_per_s / 1000:.1f}k chars/s"
        state = f"{self.loss}  {self.val}  {self.speed}" if self.loss else self.STARTING
        self.progress.update(self.task, completed=min(1.0, e.progress), where=self._where(e.step, e.elapsed),
                             state=state)
        if not self.live and (e.split == "val" or e.elapsed - self.last_plain >= self.PLAIN_EVERY):
            self.last_plain = e.elapsed
            if e.split == "val":
                line = f"step {e.step} {self.val}"
            else:
                line = f"step {e.step} {self.loss} lr {e.lr:.2e} {self.speed}"
            err.print(f"{line} [{e.elapsed:.0f}s, {100 * min(1.0, e.progress):.0f}%]", soft_wrap=True)
        if e.note:  # on a terminal too, above the bar: the rate dropped, or the run ends
            err.print(f"step {e.step}: {e.note}", soft_wrap=True, highlight=False)
