"""charrnn generate: continue a prefix with a trained model; only the text goes to stdout."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, TextIO

import torch
import typer

from charrnn import config, devices
from charrnn.cli import interactive as prompt_loop
from charrnn.cli.common import CheckpointOption, DeviceOption, app, load, stdout, user_errors
from charrnn.cli.copying import CopyChecker
from charrnn.errors import CharRNNError
from charrnn.sample import Sampling, generate, generate_chunks
from charrnn.session import Session
from charrnn.stop import StopMatcher, check_stops, cut_at_stop, unescape

FLUSH_EVERY = 0.05  # seconds between flushes of streamed text


@app.command(name="generate")
@user_errors
def generate_cmd(
    prefix: Annotated[str, typer.Option(help="Text to continue (printed first). [default: a newline]",
                                        show_default=False)] = "",
    length: Annotated[int, typer.Option(help="Characters to generate after the prefix.")] = 500,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (> 0); lower is more conservative.")] = 1.0,
    greedy: Annotated[bool, typer.Option("--greedy", help="Always take the most likely character.")] = False,
    top_k: Annotated[int | None, typer.Option(help="Sample only from the k most likely characters.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Sample from the smallest set reaching this probability.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; the same seed gives the same text.")] = None,
    num_samples: Annotated[int, typer.Option(help="Independent samples, generated as one batch.")] = 1,
    stop: Annotated[list[str] | None, typer.Option(
        "--stop", metavar="STRING", show_default=False,
        help="End each sample at the first occurrence of this string, which is left out; repeatable. "
        "\\n, \\t and \\\\ stand for a newline, a tab and a backslash.")] = None,
    prefix_file: Annotated[Path | None, typer.Option(help="Read the prefix from this UTF-8 file (- for standard "
                                                     "input) instead of --prefix.", show_default=False)] = None,
    check_copy: Annotated[bool, typer.Option("--check-copy", help="Say on stderr, for each sample, how much of it "
                                             "also occurs in the run's training split.")] = False,
    copy_report: Annotated[Path | None, typer.Option(help="Write what --check-copy finds to this file as JSON "
                                                     "lines (implies --check-copy).", show_default=False)] = None,
    checkpoint_path: CheckpointOption = None,
    device: DeviceOption = "auto",
    threads: Annotated[int | None, typer.Option(
        help="CPU threads torch may use. [default: 1 for one sample (as fast as more: each step is small), "
             "else one per core]", show_default=False)] = None,
    interactive: Annotated[bool, typer.Option("--interactive", help="A prompt loop: each line typed is continued "
                                              "(--length characters), keeping the text so far; /help in it lists "
                                              "its commands. Ctrl-D leaves.")] = False,
) -> None:
    """Continue PREFIX with a trained model; only the text goes to stdout."""
    how = Sampling(temperature, top_k, top_p, greedy)
    if length < 0:
        raise CharRNNError(f"--length must be >= 0, not {length}")
    if num_samples < 1:
        raise CharRNNError(f"--num-samples must be at least 1, not {num_samples}")
    if seed is not None:
        config.check_seed(seed, "--seed")
    stops = check_stops([unescape(s) for s in stop or []], "--stop")
    if interactive:
        prompt_loop.check_options(prefix, prefix_file, num_samples)
        if stops:
            raise CharRNNError("--stop does not work with --interactive yet: leave it out")
        if check_copy or copy_report is not None:
            raise CharRNNError("--check-copy and --copy-report do not work with --interactive yet: leave them out")
    if prefix_file is not None:
        if prefix:
            raise CharRNNError("give the prefix with --prefix or with --prefix-file, not both")
        prefix = _read_prefix(prefix_file)
    devices.set_threads(1 if threads is None and num_samples == 1 else threads)
    ckpt, model, dev = load(checkpoint_path, device)
    copies = CopyChecker(ckpt, copy_report) if check_copy or copy_report is not None else None
    vocab = ckpt.vocab
    if interactive:
        return prompt_loop.loop(Session(model, vocab, how, length, seed), stdout())
    start = prefix or ("\n" if "\n" in vocab else vocab.chars[0])
    ids = torch.from_numpy(vocab.encode(start, "the prefix").astype("int64"))
    seed = seed if seed is not None else time.time_ns() % 2**63
    out = stdout()
    if num_samples == 1:
        out.write(prefix)
        last_flush, matcher = time.monotonic(), StopMatcher(stops)
        text: list[str] | None = [] if copies else None  # kept only to be checked
        for token in generate(model, ids, length, how, torch.Generator(dev).manual_seed(seed)):
            shown, stopped = matcher.feed(vocab.chars[int(token)])
            out.write(shown)
            if text is not None:
                text.append(shown)
            if stopped:
                break
            if time.monotonic() - last_flush > FLUSH_EVERY:
                out.flush()
                last_flush = time.monotonic()
        held = matcher.flush()
        out.write(held + "\n")
        _check(copies, out, "".join(text or ()) + held)
    else:
        separator = ""
        for chunk in generate_chunks(model, ids, length, how, seed, num_samples):  # (n, length): bounded memory
            for row in chunk.tolist():
                sample, _ = cut_at_stop(vocab.decode(row), stops)
                out.write(f"{separator}{prefix}{sample}\n")
                separator = "\n"  # samples are separated by a blank line
                _check(copies, out, sample)
    out.flush()
    if copies:
        copies.finish()


def _check(copies: CopyChecker | None, out: TextIO, generated: str) -> None:
    """--check-copy: a line on stderr after the sample (the prefix is the user's, not checked)."""
    if copies:
        out.flush()
        copies.add(generated)


def _read_prefix(path: Path) -> str:
    try:
        raw = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
        return raw.decode("utf-8").removeprefix("\ufeff")
    except OSError as e:
        raise CharRNNError(f"cannot read the prefix from {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise CharRNNError(f"the prefix in {path} is not valid UTF-8 (bad byte at offset {e.start})") from None
