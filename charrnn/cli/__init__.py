"""The command line: parse, call the library, render with Rich; one small module per command. No tensor math
lives here.

Only the product goes to stdout (generated text, evaluation results); progress, notes and errors go to
stderr. Every CharRNNError becomes one ``Error: ...`` line and a non-zero exit code.
"""

from __future__ import annotations

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
