"""The command line: parse, call the library, render with Rich; one small module per command. No tensor math
lives here.

Only the product goes to stdout (generated text, evaluation results); progress, notes and errors go to
stderr. Every CharRNNError becomes one ``Error: ...`` line and a non-zero exit code.
"""

# ruff: noqa: E402 - the environment is set before anything imports torch
from __future__ import annotations

import os
import sys

# `charrnn generate` is light and latency-bound, and often runs beside a training run on the same cores: its
# OpenMP threads sleep while they wait instead of spinning (libgomp reads this once, as torch loads), so that it
# does not slow the training down many times over. Training and eval keep OpenMP's default: waiting passively
# halved training's own speed (bench/contention.py).
if sys.argv[1:2] == ["generate"]:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from typing import Annotated

import typer

from charrnn import __version__, devices
from charrnn.cli import (  # noqa: F401 - each module registers its command on app
    evaluate,
    export,
    generate,
    plot,
    runs,
    score,
    serve,
    train,
)
from charrnn.cli.common import app


def _version(value: bool) -> None:
    if value:
        print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


def main() -> None:
    devices.reuse_freed_memory()  # every command: training ran up to 1.6x faster on a CPU (devices.py)
    app(prog_name="charrnn")
