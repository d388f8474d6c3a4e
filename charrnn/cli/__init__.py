"""The command line: parse, call the library, render with Rich; one small module per command. No tensor math
lives here.

Only the product goes to stdout (generated text, evaluation results); progress, notes and errors go to
stderr. Every CharRNNError becomes one ``Error: ...`` line and a non-zero exit code.
"""

# ruff: noqa: E402 - the environment is set before anything imports torch
from __future__ import annotations

import os

# Let OpenMP threads that wait for work sleep instead of spinning (libgomp reads this once, as torch loads): two
# spinning torch processes on the same cores, e.g. `charrnn generate` beside a training run, slow each other
# down many times over (bench/contention.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from typing import Annotated

import typer

from charrnn import __version__
from charrnn.cli import evaluate, generate, train  # noqa: F401 - each module registers its command on app
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
    app(prog_name="charrnn")
