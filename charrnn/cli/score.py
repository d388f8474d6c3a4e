"""charrnn score: bits per character of every line, paragraph or file under one or several models, as JSON
lines; with several models, which one compresses each item best."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from charrnn import checkpoint, devices
from charrnn.cli.common import (
    DeviceOption,
    EncodingOption,
    ErrorsOption,
    ThreadsOption,
    app,
    check_errors_policy,
    load,
    stdout,
    user_errors,
)
from charrnn.cli.views import say
from charrnn.corpus import read_code_points
from charrnn.errors import CharRNNError, printable
from charrnn.items import BY, pieces
from charrnn.score import ItemScore, ModelScorer, most_surprising, score_items


def _line(s: ItemScore, names: list[str]) -> str:
    record = {"item": s.item, "line": s.line, "text": s.head, "chars": s.chars,
              "bpc": {n: round(b, 4) for n, b in zip(names, s.bpc, strict=True)},
              "unseen": dict(zip(names, s.unseen, strict=True))}
    if len(names) > 1:
        record["best"] = names[s.best]
    return json.dumps(record, ensure_ascii=False)


@app.command(name="score")
@user_errors
def score_cmd(
    text: Annotated[Path, typer.Argument(help="Text whose items to score.", show_default=False)],
    checkpoints: Annotated[list[Path] | None, typer.Option(
        "--checkpoint", metavar="<path>", help="Run directory or checkpoint; repeat it to compare models (each item "
        "is labelled with the one that compresses it best). [default: best checkpoint of the latest run]",
        show_default=False)] = None,
    by: Annotated[str, typer.Option(help="Score every line, every paragraph (separated by blank lines), or the "
                                    "whole file.")] = "line",
    top: Annotated[int | None, typer.Option(help="Print only the N most surprising items, most surprising first.",
                                            show_default=False)] = None,
    device: DeviceOption = "auto",
    encoding: EncodingOption = "utf-8",
    errors: ErrorsOption = "strict",
    threads: ThreadsOption = None,
) -> None:
    """Print bits per character of every item of TEXT as JSON lines."""
    check_errors_policy(errors)
    if by not in BY:
        raise CharRNNError(f"--by must be line, paragraph or file, not {by!r}")
    if top is not None and top < 1:
        raise CharRNNError(f"--top must be at least 1, not {top}")
    given = [printable(p) for p in checkpoints or []]
    for name in given:
        if given.count(name) > 1:
            raise CharRNNError(f"--checkpoint {name} is given twice: give each model once")
    devices.set_threads(threads)
    out = stdout()
    chunks = read_code_points(text, encoding, errors)
    read = 0  # characters

    def counted_chunks() -> Iterator[np.ndarray]:
        nonlocal read
        for chunk in chunks:
            read += len(chunk)
            yield chunk

    scorers, names = [], []
    for path in checkpoints or [None]:
        ckpt, model, dev = load(path, device)
        scorers.append(ModelScorer(model, ckpt.vocab, dev))
        names.append(printable(path) if path is not None else printable(checkpoint_run(ckpt.path)))
    scores = score_items(scorers, pieces(counted_chunks(), by))
    counted, chars, best = 0, 0, [0] * len(names)
    bits = [0.0] * len(names)

    def tally(s: ItemScore) -> ItemScore:
        nonlocal counted, chars
        counted, chars = counted + 1, chars + s.chars
        best[s.best] += 1
        for k, b in enumerate(s.bits):
            bits[k] += b
        return s

    shown = most_surprising(map(tally, scores), top) if top is not None else map(tally, scores)
    for s in shown:
        print(_line(s, names), file=out)
    if not counted:
        if not read:
            raise CharRNNError(f"{text} is empty: give a text to score")
        if by == "file":
            raise CharRNNError(f"{text} is only whitespace: give a text to score")
        raise CharRNNError(f"{text} has no {by}s to score: every one is blank")
    mean = ", ".join(f"{n} {b / chars:.4f}" for n, b in zip(names, bits, strict=True))
    wins = ", ".join(f"{n} {w:,}" for n, w in zip(names, best, strict=True))
    items = f"{counted:,} {by}{'' if counted == 1 else 's'}"
    say(f"scored {items}, {chars:,} characters; bits/char over all of them: {mean}"
        + (f"; best for: {wins}" if len(names) > 1 else ""))


def checkpoint_run(path: Path) -> Path:
    """The run directory a checkpoint belongs to (its name for the model that no --checkpoint named)."""
    return path.parent.parent if path.parent.name == checkpoint.CHECKPOINTS else path
