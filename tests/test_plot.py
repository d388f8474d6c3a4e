"""charrnn plot: the PNG (a real PNG, labelled, runs of other texts told apart), the chart drawn in the terminal,
and its errors."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charrnn import plot, runs
from charrnn.cli import app
from charrnn.runs import RunInfo
from charrnn.schema import MetricLine
from tests.helpers import train

runner = CliRunner()


def lines(n: int, start: float = 3.0) -> list[MetricLine]:
    """A made-up log: a training loss every step, a validation loss every 5, falling like a real one."""
    out = []
    for step in range(1, n + 1):
        out.append(MetricLine("train", step, start / step**0.3, step * 0.5))
        if step % 5 == 0:
            out.append(MetricLine("val", step, start / step**0.3 + 0.05, step * 0.5))
    return out


def info(name: str, corpus: str = "a.txt", sha: str = "aa", vocab: int = 30) -> RunInfo:
    return RunInfo(Path("runs") / name, "finished", False, corpus=corpus, corpus_sha256=sha, vocab_size=vocab)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny runs on one text, under root/runs."""
    root = tmp_path_factory.mktemp("plot")
    (root / "corpus.txt").write_text("the keeper mends the narrow bridge.\n" * 180, encoding="utf-8")
    train(root, "runs/a", steps=10)
    train(root, "runs/b", steps=10, hidden_size=16)
    return root


def test_runs_of_one_text_share_a_title_and_others_are_labelled_with_their_corpus():
    same = plot.figure([(info("a"), lines(20)), (info("b"), lines(30))])
    assert [c.label for c in same.curves] == ["a", "b"] and same.title == "loss on a.txt (30 distinct characters)"
    assert len(same.curves[1].train) == 30 and same.curves[1].val[0] == (5.0, lines(30)[5].loss)
    mixed = plot.figure([(info("a"), lines(20)), (info("c", "b.txt", "bb", 40), lines(20))], "time")
    assert [c.label for c in mixed.curves] == ["a (a.txt, 30 chars)", "c (b.txt, 40 chars)"]
    assert "different texts or vocabularies" in mixed.title and mixed.curves[0].train[0] == (0.5, 3.0)
    other_vocab = plot.figure([(info("a"), lines(20)), (info("d", vocab=31), lines(20))])
    assert other_vocab.curves[1].label == "d (a.txt, 31 chars)"
    unknown = plot.figure([(info("a"), lines(20)), (info("e", None, None, None), lines(20))])
    assert unknown.curves[1].label == "e (corpus unknown: no checkpoint)"


def test_the_png_is_labelled_and_sane(tmp_path: Path):
    pytest.importorskip("matplotlib")
    fig = plot.figure([(info("a"), lines(40)), (info("c", "b.txt", "bb", 40), lines(60))])
    mpl = plot.draw(fig)
    ax = mpl.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("step", "loss (nats/char)", fig.title)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["a (a.txt, 30 chars)", "c (b.txt, 40 chars)", "thin: training loss", "dots: validation loss"]
    bpc = mpl.axes[1]  # the same curves in bits/char
    assert bpc.get_ylabel() == "bits/char" and bpc.get_ylim() == pytest.approx([y / 0.6931472 for y in ax.get_ylim()])
    lo, hi = ax.get_ylim()
    assert lo < min(m.loss for m in lines(60)) and hi < 3.0  # the first fall from ln V is cut off, not the rest
    out = tmp_path / "curves.png"
    plot.save_png(fig, out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (800, 480)
    assert 10_000 < len(data) < 300_000
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file left


def test_the_terminal_chart(trained: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(trained)
    result = runner.invoke(app, ["plot", "runs/a", "runs/b", "--x", "time"])
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[0] == "loss on corpus.txt (19 distinct characters)"
    assert out[1].startswith("loss (nats/char)") and out[1].endswith("bits/char")
    assert sum(any("\u2800" < ch <= "\u28ff" for ch in line) for line in out) >= 10  # braille dots drawn
    assert "training time (s)" in out[-3] and out[-2].endswith("  a") and out[-1].endswith("  b")
    assert "\x1b[" not in result.stdout  # no colour codes when not on a terminal
    latest = runner.invoke(app, ["plot"])  # the latest run: b
    assert latest.exit_code == 0 and latest.stdout.splitlines()[-1].endswith("  b")


def test_plot_cli_png_and_errors(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(trained)
    wrote = runner.invoke(app, ["plot", "runs/a", "--out", str(tmp_path / "a.png")])
    assert wrote.exit_code == 0 and (tmp_path / "a.png").stat().st_size > 1000 and wrote.stdout == ""
    cases = [
        (["plot", "runs/nope"], "Error: there is no run runs/nope"),
        (["plot", "runs"], "Error: runs is not a run directory: give runs that `charrnn runs` lists"),
        (["plot", "runs/a", "--x", "chars"], "Error: --x must be step or time, not 'chars'"),
        (["plot", "runs/a", "--out", "a.svg"], "Error: --out a.svg must name a .png file"),
        (["plot", "runs/a", "--out", "no/such/dir/a.png"], "Error: cannot write no/such/dir/a.png: the directory"),
    ]
    (trained / "runs" / "fresh").mkdir()
    (trained / "runs" / "fresh" / "metrics.jsonl").write_text("")
    cases.append((["plot", "runs/fresh"], "Error: runs/fresh has no losses logged yet"))
    (trained / "runs" / "unreadable" / "metrics.jsonl").mkdir(parents=True)  # not "no losses yet": unreadable
    cases.append((["plot", "runs/unreadable"], "Error: cannot read runs/unreadable/metrics.jsonl: Is a directory"))
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.stderr.startswith(message), (args, result.output)
        assert "Traceback" not in result.output
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    missing = runner.invoke(app, ["plot", "runs/a", "--out", "a.png"])
    assert missing.exit_code == 2 and "pip install 'charrnn[plot]'" in missing.stderr
    assert not (trained / "a.png").exists()
    monkeypatch.chdir(tmp_path)
    none = runner.invoke(app, ["plot"])
    assert none.exit_code == 2 and none.stderr.startswith("Error: no run with logged losses under runs/")


def test_damaged_metrics_lines_are_skipped_with_a_warning(trained: Path, tmp_path: Path):
    import shutil

    copy = shutil.copytree(trained / "runs" / "a", tmp_path / "a")
    with (copy / "metrics.jsonl").open("a") as f:
        f.write('{"split": "val", "step": 11, "lo\n')
        for bad in ('"step": 12, "loss": 1.0, "elapsed": NaN', '"step": 12, "loss": 1e308, "elapsed": 9.0',
                    '"step": 1' + "0" * 400 + ', "loss": 1.0, "elapsed": 9.0', '"step": 12, "loss": -1, "elapsed": 9.0',
                    '"step": 12, "loss": 1' + "0" * 400 + ', "elapsed": 9.0'):  # numbers no run writes
            f.write('{"split": "train", ' + bad + '}\n')
    for x in ("step", "time"):
        result = runner.invoke(app, ["plot", str(copy), "--x", x])
        assert result.exit_code == 0, result.output
        assert "Warning: a: 6 damaged line(s) in metrics.jsonl skipped" in result.stderr
    assert len(runs.read_metrics(copy)[0]) == len(runs.read_metrics(trained / "runs" / "a")[0])


def test_names_are_shown_as_they_are(trained: Path, tmp_path: Path):
    """A run named with bytes that are not UTF-8 is drawn with U+FFFD; in the PNG, names are not matplotlib's
    markup (a pair of $ is not math, a leading underscore does not hide the legend entry)."""
    import os
    import shutil

    odd = shutil.copytree(trained / "runs" / "a", tmp_path / os.fsdecode(b"caf\xe9"))
    result = runner.invoke(app, ["plot", str(odd)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].endswith("  caf\ufffd")
    pytest.importorskip("matplotlib")
    fig = plot.figure([(info("_baseline"), lines(20)), (info("cost_$5_$10"), lines(20))])
    legend = [t.get_text() for t in plot.draw(fig).axes[0].get_legend().get_texts()]
    assert legend[:2] == [" _baseline", r"cost_\$5_\$10"]
    plot.save_png(fig, tmp_path / "names.png")  # drawn: "$5_$" is not parsed as math
    assert (tmp_path / "names.png").stat().st_size > 1000
