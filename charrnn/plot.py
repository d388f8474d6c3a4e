"""Loss curves of one or several runs: a PNG drawn with matplotlib (the optional extra ``plot``), or a chart made of
text for the terminal (Unicode braille dots, no dependency).

Both show the training loss (a thin line) and the validation loss (a line with dots) of every run, in nats per
character with bits per character on the right-hand axis, against steps or seconds of training. Runs trained on
different texts or vocabularies cannot be compared loss for loss: their legend entries then name the corpus and
the title says so. The data comes from runs.py; nothing here reads a run directory.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from charrnn.errors import CharRNNError
from charrnn.runs import RunInfo
from charrnn.schema import MetricLine

Axis = Literal["step", "time"]
X_LABELS = {"step": "step", "time": "training time (s)"}
Y_LABEL = "loss (nats/char)"
BPC_LABEL = "bits/char"
LN2 = math.log(2)
LOG_FROM = 3.0  # the y axis is logarithmic when the losses shown span this factor or more


@dataclass(frozen=True)
class Curve:
    label: str
    train: list[tuple[float, float]]  # (x, loss)
    val: list[tuple[float, float]]


@dataclass(frozen=True)
class Figure:
    """What both renderings draw."""

    curves: list[Curve]
    title: str
    x: Axis

    @property
    def ylim(self) -> tuple[float, float]:
        """The loss range to show: every validation point and the training loss once past its first fall (the
        first few points, near ln V, would squash the part worth seeing)."""
        ys = [y for c in self.curves for _, y in c.val]
        for c in self.curves:
            ys += [y for _, y in c.train[len(c.train) // 20 + 1:]] or [y for _, y in c.train]
        lo, hi = min(ys), max(ys)
        if lo > 0 and hi / lo >= LOG_FROM:
            return lo / 1.05, hi * 1.05
        pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 0.1
        return lo - pad, hi + pad

    @property
    def log(self) -> bool:
        """A log scale when the losses span a factor of LOG_FROM or more: then the late, small improvements that
        tell runs apart are not squashed flat by the early fall."""
        lo, hi = self.ylim
        return lo > 0 and hi / lo >= LOG_FROM


def figure(runs: list[tuple[RunInfo, list[MetricLine]]], x: Axis = "step") -> Figure:
    """The curves of ``runs`` (each with its metrics), labelled so that runs of different corpora are told apart."""
    if x not in X_LABELS:
        raise CharRNNError(f"--x must be step or time, not {x!r}")
    texts = {(info.corpus_sha256, info.vocab_size) for info, _ in runs}
    same_text = len(texts) == 1 and None not in next(iter(texts))
    curves = []
    for info, lines in runs:
        if not any(math.isfinite(m.loss) for m in lines):
            raise CharRNNError(f"{info.path} has no losses logged yet: plot it once it has trained a few steps")
        label = info.name if same_text else f"{info.name} ({_corpus(info)})"
        points = {split: [(float(m.step if x == "step" else m.elapsed), m.loss) for m in lines
                          if m.split == split and math.isfinite(m.loss)] for split in ("train", "val")}
        curves.append(Curve(label, points["train"], points["val"]))
    if same_text:
        info = runs[0][0]
        title = f"loss on {info.corpus} ({info.vocab_size} distinct characters)"
    else:
        title = "loss on different texts or vocabularies: compare curves within a text only"
    return Figure(curves, title, x)


def _corpus(info: RunInfo) -> str:
    return "corpus unknown: no checkpoint" if info.corpus is None else f"{info.corpus}, {info.vocab_size} chars"


def save_png(fig: Figure, out: Path) -> None:
    """Draw ``fig`` into the PNG file ``out``, which appears complete or not at all."""
    if out.suffix.lower() != ".png":
        raise CharRNNError(f"--out {out} must name a .png file")
    if not out.parent.is_dir():
        raise CharRNNError(f"cannot write {out}: the directory {out.parent} does not exist")
    mpl = draw(fig)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        mpl.savefig(tmp, format="png")
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CharRNNError(f"cannot write {out}: {e.strerror}") from None


def draw(fig: Figure) -> Any:
    """``fig`` as a matplotlib Figure (drawn with Agg: no display needed)."""
    try:
        from matplotlib.figure import Figure as MplFigure  # a Figure without pyplot draws with Agg, headless
    except ImportError:
        raise CharRNNError("drawing a PNG needs matplotlib, which is not installed: pip install 'charrnn[plot]' "
                           "(without --out, charrnn plot draws in the terminal)") from None
    mpl = MplFigure(figsize=(8, 4.8), dpi=100, layout="constrained")
    ax = mpl.subplots()
    for i, c in enumerate(fig.curves):
        color = f"C{i % 10}"
        if c.train:
            ax.plot(*zip(*c.train, strict=True), color=color, linewidth=0.8, alpha=0.45)
        if c.val:
            ax.plot(*zip(*c.val, strict=True), color=color, linewidth=1.8, marker="o", markersize=3.5)
        ax.plot([], [], color=color, linewidth=1.8, label=_literal(c.label))  # one legend entry per run
    ax.plot([], [], color="0.4", linewidth=0.8, alpha=0.6, label="thin: training loss")
    ax.plot([], [], color="0.4", linewidth=1.8, marker="o", markersize=3.5, label="dots: validation loss")
    lo, hi = fig.ylim
    bpc = ax.twinx()  # the same curves in bits/char: the same scale, its limits divided by ln 2
    for axis, limits in ((ax, (lo, hi)), (bpc, (lo / LN2, hi / LN2))):
        if fig.log:
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            axis.set_yscale("log")  # plain numbers at 1, 2, ... 9 of each decade, not 4 x 10^-1
            axis.yaxis.set_major_locator(LogLocator(subs=tuple(range(1, 10))))
            axis.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.yaxis.set_minor_formatter(NullFormatter())
        axis.set_ylim(*limits)
    ax.set_xlabel(X_LABELS[fig.x])
    ax.set_ylabel(Y_LABEL + (", log scale" if fig.log else ""))
    bpc.set_ylabel(BPC_LABEL)
    ax.set_title(_literal(fig.title), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return mpl


def _literal(text: str) -> str:
    """``text`` as matplotlib shows it as written: a pair of $ would start its math notation, and a legend leaves
    out a label that starts with an underscore."""
    text = text.replace("$", r"\$")
    return " " + text if text.startswith("_") else text


# A text chart is lines of segments: (text, style); style is None for axes and labels, else (curve index, split).
Style = tuple[int, str] | None
Line = list[tuple[str, Style]]
BRAILLE = 0x2800
DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # [row][column] of a 2x4 braille cell


def text_chart(fig: Figure, width: int = 80, height: int = 20) -> list[Line]:
    """``fig`` as lines of text ``width`` characters wide: a plot area of braille dots ``height`` rows high with
    loss ticks on the left and bits/char ticks on the right, the x axis, and a legend."""
    scale, unscale = (math.log, math.exp) if fig.log else (float, float)
    lo, hi = (scale(y) for y in fig.ylim)
    points = [p for c in fig.curves for p in c.train + c.val]
    x0, x1 = min(x for x, _ in points), max(x for x, _ in points)
    x1 = x1 if x1 > x0 else x0 + 1
    cols, rows = max(10, width - 18), max(4, height)
    cells: dict[tuple[int, int], int] = {}  # (row, col) -> dot bits
    owner: dict[tuple[int, int], Style] = {}

    def dot(px: int, py: int, style: Style) -> None:
        if 0 <= px < 2 * cols and 0 <= py < 4 * rows:
            cell = (py // 4, px // 2)
            cells[cell] = cells.get(cell, 0) | DOTS[py % 4][px % 2]
            owner[cell] = style

    def to_dots(x: float, y: float) -> tuple[int, int]:
        return (round((x - x0) / (x1 - x0) * (2 * cols - 1)), round((hi - scale(y)) / (hi - lo) * (4 * rows - 1)))

    for split in ("train", "val"):  # validation drawn last: it wins a shared cell
        for i, c in enumerate(fig.curves):
            series = [to_dots(x, y) for x, y in (c.train if split == "train" else c.val)]
            for a, b in zip(series, series[1:], strict=False):
                for px, py in _segment(a, b):
                    dot(px, py, (i, split))
            for px, py in series[-1:] if len(series) == 1 else []:
                dot(px, py, (i, split))
    ticks = {row: unscale(hi - (hi - lo) * (row + 0.5) / rows) for row in (round(k * (rows - 1) / 4) for k in range(5))}
    y_label = Y_LABEL + (", log scale" if fig.log else "")
    lines: list[Line] = [[(fig.title[:width], None)], [(f"{y_label:<{cols + 9}}{BPC_LABEL}"[:width], None)]]
    for r in range(rows):
        left = f"{ticks[r]:7.3f} ┤" if r in ticks else " " * 8 + "│"
        line: Line = [(left, None)]
        for col in range(cols):
            bits = cells.get((r, col))
            line.append((" " if bits is None else chr(BRAILLE + bits), owner.get((r, col))))
        line.append(("├ " + f"{ticks[r] / LN2:.3f}" if r in ticks else "│", None))
        lines.append(line)
    lines.append([(" " * 8 + "└" + "─" * cols + "┘", None)])
    left, right = _number(x0), _number(x1)
    middle = X_LABELS[fig.x].center(max(0, cols - len(left) - len(right)))
    lines.append([(" " * 9 + left + middle + right, None)])
    for i, c in enumerate(fig.curves):
        lines.append([("  ", None), ("⣀⣀ train", (i, "train")), ("  ", None), ("⣿⣿ val", (i, "val")),
                      (f"  {c.label}", None)])
    return lines


def _segment(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    """The dots of a straight line from a to b (both ends included)."""
    n = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)
    return [(round(a[0] + (b[0] - a[0]) * k / n), round(a[1] + (b[1] - a[1]) * k / n)) for k in range(n + 1)]


def _number(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 10 or x == int(x) else f"{x:.1f}"
