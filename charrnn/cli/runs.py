"""charrnn runs: a table of every run under runs/ (or DIR), most recently active first; --json for scripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from charrnn import run, runs
from charrnn.cli.common import app, stdout, user_errors
from charrnn.cli.views import say
from charrnn.errors import printable

STATE_STYLES = {"running": "cyan", "finished": "green", "stopped": "yellow", "crashed": "red", "empty": "dim"}


@app.command(name="runs")
@user_errors
def runs_cmd(
    directory: Annotated[Path, typer.Argument(help="A directory of runs, or one run directory.")] = run.RUNS_ROOT,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per run, one per line.")] = False,
) -> None:
    """List runs: corpus, model, progress, best validation loss, and whether each finished, stopped, crashed or is
    still running."""
    out = stdout()
    found = runs.list_runs(directory)
    if not found:
        say(f"no runs under {printable(directory)}")
        return
    if as_json:
        for info in found:
            print(json.dumps(info.to_dict(), ensure_ascii=False), file=out)
        return
    console = Console(file=out, highlight=False, width=None if out.isatty() else 200)
    console.print(table(found))


def table(found: list[runs.RunInfo]) -> Table:
    notes = any(r.problems for r in found)
    t = Table(box=None, header_style="bold", pad_edge=False)
    for name in ["run", "corpus", "model", "params", "steps", "time", "best val loss", "state"] + ["notes"] * notes:
        t.add_column(name, justify="right" if name in ("params", "steps", "time") else "left",
                     overflow="fold", no_wrap=name != "notes")
    for r in found:
        model = "?" if r.cell is None else f"{r.cell} {r.num_layers}x{r.hidden_size}"
        best = "-" if r.best_loss is None else f"{r.best_loss:.4f} ({r.best_bpc:.3f} bpc) @{r.best_step}"
        row = [Text(printable(r.name)), Text(printable(r.corpus or "?")), model, _count(r.parameters), _steps(r),
               _time(r), best, Text(_state(r), style=STATE_STYLES[r.state])]
        t.add_row(*row, *[Text(printable("; ".join(r.problems)), style="dim")] * notes)
    return t


def _state(r: runs.RunInfo) -> str:
    if r.state in ("stopped", "crashed"):
        return f"{r.state} — {'resumable' if r.resumable else 'not resumable'}"
    return "not a run" if r.state == "empty" else r.state


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _steps(r: runs.RunInfo) -> str:
    done = "?" if r.step is None else f"{r.step:,}"
    return done if r.steps is None else f"{done}/{r.steps:,}"


def _time(r: runs.RunInfo) -> str:
    spent = "?" if r.elapsed is None else _duration(r.elapsed)
    return spent if r.max_time is None else f"{spent}/{_duration(r.max_time)}"


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
