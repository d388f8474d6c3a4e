"""``charrnn eval --show / --html``: one pass of per-character surprisal that colours the text on the terminal
and/or writes the surprisal page, and gives eval's score (the mean surprisal is eval's bits per character).

On the terminal each character gets the background colour of its surprisal bin (surprisal.PALETTE: 0-1 bits
pale blue ... 8 or more bits red) with black text; the first character (no prediction) and newlines (a
background there would paint the rest of the line) are left plain. ``--show`` always writes the colours, even
into a pipe or a file (``| less -R`` keeps them): asking for the view is asking for colours. NO_COLOR (any
value) turns them off. 24-bit colour where COLORTERM says so, else the 256-colour palette.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from rich.color import ColorSystem
from rich.style import Style

from charrnn.cli.views import err, scoring_view
from charrnn.evaluate import Score
from charrnn.model import CharRNN
from charrnn.surprisal import PALETTE, SCALE_MAX, Block, colour_bin, surprisal
from charrnn.surprisal_page import Page
from charrnn.vocab import Vocab

STYLES = tuple(Style(color="black", bgcolor=c) for c in PALETTE)


def colour_system() -> ColorSystem | None:
    if "NO_COLOR" in os.environ:
        return None
    truecolor = os.environ.get("COLORTERM", "").lower() in ("truecolor", "24bit")
    return ColorSystem.TRUECOLOR if truecolor else ColorSystem.EIGHT_BIT


def legend() -> str:
    """The one-line legend, in Rich markup, for stderr."""
    cells = " ".join(f"[black on {c}] {b}{'+' if b == SCALE_MAX else ' '}[/]" for b, c in enumerate(PALETTE))
    return f"surprisal (bits, −log₂ p): {cells}  [dim](first character and newlines uncoloured)[/]"


class TerminalText:
    """Writes the text with ANSI background colours, run by run of equal colour."""

    def __init__(self, out: TextIO, chars: list[str]) -> None:
        self.out, self.chars, self.system = out, chars, colour_system()
        self.last = ""

    def add(self, block: Block) -> None:
        text = "".join(self.chars[int(t)] for t in block.tokens)
        bins = np.array([colour_bin(b) for b in block.bits.tolist()])
        bins[np.array([c == "\n" for c in text], dtype=bool)] = -1
        cuts = [0, *(np.flatnonzero(np.diff(bins)) + 1).tolist(), len(text)]
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            b = int(bins[lo])
            plain = b < 0 or self.system is None
            self.out.write(text[lo:hi] if plain else STYLES[b].render(text[lo:hi], color_system=self.system))
        if text:
            self.last = text[-1]

    def finish(self) -> None:
        if self.last != "\n":
            self.out.write("\n")
        self.out.flush()


def view(model: CharRNN, tokens: np.ndarray, vocab: Vocab, device: torch.device, out: TextIO, show: bool,
         html: Path | None, title: str) -> Score:
    """Colour the text on ``out`` (with ``show``) and/or write the page to ``html``, in one pass; eval's score."""
    terminal = TerminalText(out, vocab.chars) if show else None
    if show:
        err.print(legend(), soft_wrap=True, highlight=False)
    total, counted = 0.0, 0
    with contextlib.ExitStack() as stack:
        page = stack.enter_context(Page(html, vocab, title)) if html is not None else None
        with scoring_view() as scoring:
            for block in surprisal(model, tokens, device, progress=None if show else scoring.update):
                scored = block.bits[1:] if block.start == 0 else block.bits  # all but the first character, as eval
                total, counted = total + float(scored.sum()), counted + len(scored)
                if terminal is not None:
                    terminal.add(block)
                if page is not None:
                    page.add(block)
        score = Score(loss=total * math.log(2) / counted if counted else float("nan"), chars=counted)
        if page is not None:
            page.finish(f"{score.bpc:.4f} bits/char on average (loss {score.loss:.4f} nats/char, perplexity "
                        f"{score.perplexity:.4f}) over {score.chars:,} predicted characters")
    if terminal is not None:
        terminal.finish()
    return score
