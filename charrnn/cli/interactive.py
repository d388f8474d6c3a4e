"""charrnn generate --interactive: a prompt loop around a Session. Each line typed is continued, the state and
settings are kept between lines, and lines starting with / change the settings. Ctrl-D or Ctrl-C leaves (exit 0).

The continuations go to stdout, one line each; prompts and replies to commands go to stderr, and prompts only
when the input is a terminal (lines can be piped in too).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from charrnn.cli.views import say
from charrnn.errors import CharRNNError
from charrnn.session import Session

PROMPT = "> "
HELP = """\
Type text and press Enter: the model continues it, and the next line continues the whole text so far
(what you typed and what it wrote, back to back; an empty line continues it further). Commands:
  /temp T      sampling temperature (> 0)          /greedy      always the most likely character
  /top_k K     only the K most likely (off: all)   /top_p P     nucleus sampling, 0 < P <= 1 (off: all)
  /length N    characters per continuation         /seed S      restart the random generator from S
  /reset       start a fresh text (settings stay)  /help        this help and the settings
A line starting with // is text that starts with /. Ctrl-D or Ctrl-C leaves."""


def check_options(prefix: str, prefix_file: Path | None, num_samples: int) -> None:
    if prefix or prefix_file is not None:
        raise CharRNNError("--interactive reads the text to continue from the terminal: leave out --prefix and "
                           "--prefix-file")
    if num_samples != 1:
        raise CharRNNError("--interactive continues one text: leave out --num-samples")


def settings(session: Session) -> str:
    how = session.how
    sampling = "greedy" if how.greedy else f"temperature {how.temperature:g}, top_k {how.top_k or 'off'}, " \
                                           f"top_p {how.top_p or 'off'}"
    seed = "random" if session.seed is None else session.seed
    return f"settings: {sampling}, length {session.length}, seed {seed}"


def _number(kind: Callable[[str], object], name: str, value: str, off: bool = False) -> object:
    if off and value == "off":
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = " or off" if off else ""
        raise CharRNNError(f"/{name} takes a {'whole ' if kind is int else ''}number{allowed}, not {value!r}") \
            from None


def command(session: Session, line: str) -> str:
    """Carry out one /command; the reply to show. Bad commands and values are CharRNNErrors (nothing changes)."""
    name, _, value = line[1:].strip().partition(" ")
    value = value.strip()
    if name in ("help", "reset", "greedy") and value:
        raise CharRNNError(f"/{name} takes no value")
    if name == "help":
        return f"{HELP}\n{settings(session)}"
    if name == "reset":
        session.reset()
        return "fresh text: the model remembers nothing of what came before"
    if name == "greedy":
        session.configure(greedy=True)
    elif name in ("temp", "temperature", "top_k", "top_p", "length", "seed"):
        if not value:
            raise CharRNNError(f"/{name} takes a value, e.g. /{name} {EXAMPLES[name]}")
        if name in ("temp", "temperature"):
            temperature = _number(float, name, value)
            if not temperature > 0:  # Sampling's own message names the command-line flag
                raise CharRNNError(f"/{name} must be > 0, not {temperature} (use /greedy for the most likely text)")
            session.configure(temperature=temperature, greedy=False)
        elif name == "top_k":
            session.configure(top_k=_number(int, name, value, off=True))
        elif name == "top_p":
            session.configure(top_p=_number(float, name, value, off=True))
        elif name == "length":
            session.configure(length=_number(int, name, value))
        else:
            session.reseed(_number(int, name, value))
    else:
        raise CharRNNError(f"unknown command /{name}: /help lists the commands")
    return settings(session)


EXAMPLES = {"temp": "0.8", "temperature": "0.8", "top_k": "40", "top_p": "0.9", "length": "200", "seed": "7"}


def _read_line(terminal: bool) -> str:
    """The next line without its newline; EOFError at the end of the input (Ctrl-D)."""
    if sys.stdin is None:  # closed (<&-): no lines at all
        raise EOFError
    if terminal and sys.stdout.isatty():
        return input(PROMPT)  # with readline's line editing and history, where Python has it
    if terminal:
        sys.stderr.write(PROMPT)
        sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.removesuffix("\n").removesuffix("\r")


def loop(session: Session, out: TextIO) -> None:
    """Read lines until the input ends or Ctrl-C, continuing each one; returns normally (exit 0) either way."""
    terminal = sys.stdin is not None and sys.stdin.isatty()
    if terminal:
        try:
            import readline  # noqa: F401 - input() edits lines and keeps history once it is loaded
        except ImportError:
            pass
        say("Type text and press Enter: the model continues it. /help lists the commands; Ctrl-D leaves.")
    writing = False
    try:
        while True:
            try:
                line = _read_line(terminal)
            except UnicodeDecodeError as e:
                say(f"the line is not valid {e.encoding} (byte {e.object[e.start:e.start + 1]!r}): type it again")
                continue
            try:
                if line.startswith("/") and not line.startswith("//"):
                    say(command(session, line))
                    continue
                text = line[1:] if line.startswith("//") else line
                for char in session.turn(text):
                    writing = True
                    out.write(char)
                    out.flush()
                out.write("\n")
                out.flush()
                writing = False
            except CharRNNError as e:
                say(str(e))
    except (EOFError, KeyboardInterrupt):
        if writing:
            out.write("\n")  # the continuation cut short still ends its line
    if terminal:
        sys.stderr.write("\n")  # the shell's prompt starts on a line of its own
