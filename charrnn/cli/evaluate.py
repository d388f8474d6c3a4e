"""charrnn eval: loss, bits per character and perplexity of a model on a text (default: its validation split)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from charrnn import checkpoint, devices, run
from charrnn.cli import reference
from charrnn.cli.common import (
    CheckpointOption,
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
from charrnn.cli.show import view as shown
from charrnn.cli.views import reading_view, say, scoring_view
from charrnn.corpus import Corpus, Progress, load_corpus
from charrnn.errors import CharRNNError, printable
from charrnn.evaluate import evaluate
from charrnn.surprisal_page import check_target
from charrnn.vocab import UnknownCharacters, describe_chars


@app.command(name="eval")
@user_errors
def eval_cmd(
    corpus: Annotated[Path | None, typer.Argument(help="Text to score. [default: the run's validation split]",
                                                  show_default=False)] = None,
    checkpoint_path: CheckpointOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    skip_unknown: Annotated[bool, typer.Option("--skip-unknown", help="Leave out characters the model has never "
                                               "seen (instead of stopping), and say how many.")] = False,
    baselines: Annotated[bool, typer.Option("--baselines", help="Also give the bits/char of a unigram and a "
                                            "Kneser-Ney n-gram model of the run's training split, of lzma and of "
                                            "a uniform guess on the same text.")] = False,
    device: DeviceOption = "auto",
    encoding: EncodingOption = "utf-8",
    errors: ErrorsOption = "strict",
    threads: ThreadsOption = None,
    show: Annotated[bool, typer.Option("--show", help="Print the text coloured by surprisal (the numbers then go "
                                       "to stderr).")] = False,
    html: Annotated[Path | None, typer.Option(help="Also write a page where hovering a character shows its "
                                              "probability and the model's top 5 guesses.", show_default=False)] = None,
) -> None:
    """Print loss (nats/char), bits per character and perplexity of a model on a text."""
    check_errors_policy(errors)
    if show and as_json:
        raise CharRNNError("--show and --json both print to the standard output: use one of them")
    if html is not None:
        check_target(html)
    devices.set_threads(threads)
    out = stdout()
    ckpt, model, dev = load(checkpoint_path, device)
    if html is not None:  # the text scored, or the run's own (which it needs to resume and to be evaluated)
        infos = [i for i in (ckpt.meta.corpus, ckpt.meta.validation) if i is not None]
        _not_a_text(html, [corpus] if corpus is not None else
                    [Path(p) for i in infos for p in (i.path, *i.inputs, *(f.path for f in i.files))])
    skipped = None
    with reading_view() as reading:
        if corpus is None:
            tokens, source = run.validation_split(ckpt, reading.update)
        else:
            text = _read(corpus, encoding, errors, ckpt, reading.update, skip_unknown)
            tokens, source, skipped = text.tokens, str(corpus), text.skipped
    if skipped is not None:
        say(f"left out {skipped.count:,} occurrence(s) of {skipped.distinct:,} character(s) the model has never "
            f"seen: {describe_chars(skipped.examples, total=skipped.distinct)}")
    if len(tokens) < 2:
        raise CharRNNError(f"{source} needs at least two characters to score")
    if show or html is not None:
        score = shown(model, tokens, ckpt.vocab, dev, out, show, html, f"surprisal of {printable(source)} under "
                      f"{printable(ckpt.path)} (step {ckpt.step})")
    else:
        with scoring_view() as scoring:
            score = evaluate(model, tokens, dev, progress=scoring.update)
    points = reference.compute(ckpt, tokens) if baselines else None
    if show:
        say(f"{score.bpc:.4f} bits/char (loss {score.loss:.4f} nats/char) over {score.chars:,} characters")
        if points:
            print(reference.table(score.bpc, points), file=out)
        return
    if as_json:
        numbers = {k: v if math.isfinite(v) else None for k, v in score.to_dict().items()}  # JSON has no NaN
        extra = {"baselines": points.to_dict()} if points else {}
        print(json.dumps({**numbers, "text": source, "checkpoint": str(ckpt.path), "step": ckpt.step,
                          "skipped": skipped.count if skipped else 0, **extra}, allow_nan=False), file=out)
        return
    print(f"text        {printable(source)}\ncheckpoint  {printable(ckpt.path)} (step {ckpt.step})\n"
          f"loss        {score.loss:.4f} nats/char\nbpc         {score.bpc:.4f} bits/char\n"
          f"perplexity  {score.perplexity:.4f}\nchars       {score.chars:,}", file=out)
    if points:
        print(reference.table(score.bpc, points), file=out)


def _read(path: Path, encoding: str, errors: str, ckpt: checkpoint.Checkpoint, progress: Progress,
          skip_unknown: bool) -> Corpus:
    try:
        return load_corpus(path, encoding, errors, ckpt.vocab, progress, skip_unknown=skip_unknown)
    except UnknownCharacters as e:
        raise e.reworded("remove them, pass --skip-unknown to score the text without them, or train on text that "
                         "contains them") from None


def _not_a_text(page: Path, texts: list[Path]) -> None:
    """An error if writing the page to ``page`` would replace one of ``texts`` (files, or folders of them)."""
    if not page.exists():
        return
    for text in texts:
        inside = text.is_dir() and page.resolve().is_relative_to(text.resolve())
        if inside or (text.is_file() and page.samefile(text)):
            raise CharRNNError(f"--html {printable(page)} is a text being scored or trained on: give the page "
                               "another name")
