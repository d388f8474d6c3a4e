"""charrnn plot: training and validation loss curves of runs, as a PNG (--out) or drawn in the terminal."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from charrnn import plot, run, runs
from charrnn.cli.common import app, stdout, user_errors
from charrnn.cli.views import say, warn
from charrnn.errors import CharRNNError, printable

COLORS = ("blue", "red", "green", "magenta", "cyan", "yellow", "bright_blue", "bright_red", "bright_green",
          "bright_magenta")


@app.command(name="plot")
@user_errors
def plot_cmd(
    run_dirs: Annotated[list[Path] | None, typer.Argument(
        metavar="[RUN]...", help="Run directories to plot together. [default: the latest run]",
        show_default=False)] = None,
    x: Annotated[str, typer.Option("--x", help="What the x axis counts: step or time (seconds of training).")]
    = "step",
    out: Annotated[Path | None, typer.Option(help="Write a PNG here instead of drawing in the terminal.",
                                             show_default=False)] = None,
) -> None:
    """Plot the training and validation loss of one or several runs."""
    if x not in plot.X_LABELS:
        raise CharRNNError(f"--x must be step or time, not {x!r}")
    for d in run_dirs or []:
        if not d.is_dir():
            raise CharRNNError(f"there is no run {printable(d)}")
        if not runs.looks_like_run(d):
            raise CharRNNError(f"{printable(d)} is not a run directory: give runs that `charrnn runs` lists")
    data = [(runs.read(d), runs.read_metrics(d)[0]) for d in run_dirs or [_latest()]]
    for info, lines in data:
        if not lines:  # nothing logged yet, or a log that cannot be read (which is not the same advice)
            _readable(info.path / run.METRICS)
        warn([f"{printable(info.name)}: {p}" for p in info.problems if "damaged line" in p])
    fig = plot.figure(data, x)  # type: ignore[arg-type]
    fig = dataclasses.replace(fig, title=printable(fig.title),  # a run or corpus named in bytes that are not UTF-8
                              curves=[dataclasses.replace(c, label=printable(c.label)) for c in fig.curves])
    if out is not None:
        plot.save_png(fig, out)
        say(f"wrote {printable(out)}")
        return
    console = Console(file=stdout(), highlight=False)
    for line in plot.text_chart(fig, min(console.width, 120), max(8, min(console.height - 8, 24))):
        text = Text()
        for segment, style in line:
            text.append(segment, "" if style is None else _style(style))
        console.print(text, soft_wrap=True)


def _readable(path: Path) -> None:
    try:
        path.open("rb").close()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise CharRNNError(f"cannot read {printable(path)}: {e.strerror}") from None


def _style(style: tuple[int, str]) -> str:
    color = COLORS[style[0] % len(COLORS)]
    return f"bold {color}" if style[1] == "val" else f"dim {color}"


def _latest() -> Path:
    """The most recently active run under runs/ that has logged anything."""
    for info in runs.list_runs(run.RUNS_ROOT) if run.RUNS_ROOT.is_dir() else []:
        if (info.path / run.METRICS).exists():
            return info.path
    raise CharRNNError(f"no run with logged losses under {run.RUNS_ROOT}/: run `charrnn train CORPUS` first, or "
                       "name the runs to plot")
