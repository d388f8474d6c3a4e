"""Cutting texts into items, scoring items under several models (unseen characters costed), and `charrnn score`."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charrnn import items, run, score
from charrnn.cli import app
from charrnn.config import ModelConfig, TrainConfig
from charrnn.model import CharRNN
from charrnn.vocab import Vocab

CPU = torch.device("cpu")


def points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def chunked(text: str, size: int) -> list[np.ndarray]:
    return [points(text[i:i + size]) for i in range(0, len(text), size)]


def split(text: str, by: str, size: int = 1 << 20) -> list[tuple[int, int, str]]:
    """(item, line, text) of every item, its pieces joined; checks that pieces come in order."""
    out: list[list] = []
    for p in items.pieces(chunked(text, size), by):
        assert p.first == (not out or out[-1][0] != p.item)
        if p.first:
            out.append([p.item, p.line, ""])
        out[-1][2] += items.text_of(p.points)
    return [tuple(i) for i in out]


TEXT = "first line\r\nsecond\n\n \t\nthird para\nstill third\r\n\n\nlast, no newline"


@pytest.mark.parametrize("size", [1, 2, 7, 1 << 20])
def test_items_by_line_paragraph_and_file(size: int, monkeypatch: pytest.MonkeyPatch):
    assert split(TEXT, "line", size) == [(0, 1, "first line"), (1, 2, "second"), (2, 5, "third para"),
                                         (3, 6, "still third"), (4, 9, "last, no newline")]
    assert split(TEXT, "paragraph", size) == [(0, 1, "first line\nsecond"), (1, 5, "third para\nstill third"),
                                              (2, 9, "last, no newline")]
    assert split(TEXT, "file", size) == [(0, 1, TEXT)]
    assert split("a\r", "line", size) == [(0, 1, "a\r")]  # a \r not before \n is text
    monkeypatch.setattr(items, "LONG", 4)  # long items arrive in several pieces, and join up the same
    assert split(TEXT, "paragraph", size)[1] == (1, 5, "third para\nstill third")
    assert split(TEXT, "line", size)[4] == (4, 9, "last, no newline")
    assert split(" \n\t\n", "line", size) == split("", "file", size) == split("  ", "file", size) == []


@pytest.fixture
def scorer() -> score.ModelScorer:
    torch.manual_seed(0)
    vocab = Vocab(list("\n abxy"))
    return score.ModelScorer(CharRNN(ModelConfig(vocab_size=6, hidden_size=16, embedding_size=4)), vocab, CPU)


def bits_after_newline(scorer: score.ModelScorer, text: str) -> float:
    """The bits of every character of ``text`` in one naive pass after a newline."""
    ids = [scorer.model.config.vocab_size and "\n abxy".index(c) for c in "\n" + text]
    with torch.no_grad():
        logp = scorer.model(torch.tensor(ids[:-1])[None])[0][0].log_softmax(-1)
    return -logp.gather(1, torch.tensor(ids[1:])[:, None]).sum().item() / math.log(2)


def test_an_item_costs_its_bits_after_a_newline(scorer: score.ModelScorer):
    (s,) = score.score_items([scorer], items.pieces([points("abba xy")], "line"))
    assert s.chars == 7 and s.unseen == (0,)  # the first character is predicted too
    assert s.bits[0] == pytest.approx(bits_after_newline(scorer, "abba xy"), rel=1e-6)


def test_unseen_characters_cost_a_fixed_price_and_start_afresh(scorer: score.ModelScorer):
    assert score.UNSEEN_BITS == pytest.approx(math.log2(1_112_064))
    lines = ["ab✓✓xa", "ab", "xa", "✓"]
    s = list(score.score_items([scorer], items.pieces([points("\n".join(lines))], "line")))
    assert [x.unseen for x in s] == [(2,), (0,), (0,), (1,)] and [x.chars for x in s] == [6, 2, 2, 1]
    assert s[0].bits[0] == pytest.approx(s[1].bits[0] + s[2].bits[0] + 2 * score.UNSEEN_BITS, rel=1e-6)
    assert s[3].bits == (score.UNSEEN_BITS,)


def test_long_items_stream_to_the_same_bits(scorer: score.ModelScorer, monkeypatch: pytest.MonkeyPatch):
    text = "abab xy✓ baba\nxyxy ab\n\nba ✓✓ ab abba\n" * 3
    whole = list(score.score_items([scorer, scorer], items.pieces([points(text)], "paragraph")))
    monkeypatch.setattr(items, "LONG", 5)
    streamed = list(score.score_items([scorer, scorer], items.pieces(chunked(text, 3), "paragraph")))
    assert [(s.item, s.line, s.head, s.chars, s.unseen) for s in whole] == \
        [(s.item, s.line, s.head, s.chars, s.unseen) for s in streamed]
    np.testing.assert_allclose([s.bits for s in whole], [s.bits for s in streamed], rtol=1e-6)


def test_most_surprising():
    scores = [score.ItemScore(i, i + 1, "", 2, bits, (0, 0)) for i, bits in
              enumerate([(4.0, 2.0), (9.0, 8.0), (1.0, 6.0), (6.0, 6.0)])]
    assert [s.item for s in score.most_surprising(scores, 3)] == [1, 3, 0]  # by the best model's bpc, ties in order
    assert scores[0].best == 1 and scores[2].best == 0 and scores[3].best == 0


# --- the command line, on two tiny models trained once for this module: one on 'ab ab ...', one on 'xy xy ...'

runner = CliRunner()


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("score")
    cfg = TrainConfig(hidden_size=16, embedding_size=8, num_layers=1, batch_size=4, seq_len=16, steps=20,
                      eval_every=20, log_every=10, warmup_steps=5, device="cpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARRNN_CACHE_DIR", str(root / "cache"))
        for name, main, other in (("ab", "ab", "xy"), ("xy", "xy", "ab")):
            corpus = root / f"{name}.txt"
            corpus.write_text(f"{main} " * 800 + f"{other}\n", encoding="utf-8")  # the same characters, mostly main
            setup = run.prepare(corpus, flags=dataclasses.asdict(cfg), out=root / "runs" / name)
            run.fit(run.build_trainer(setup), setup)
    return root


def records(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_each_model_labels_its_own_text(models: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(models)
    (models / "mixed.txt").write_text("ab ab ab ab\nxy xy xy\n\nab ab ✓\nxy ✓ ✓ xy xy\n", encoding="utf-8")
    result = cli("score", "mixed.txt", "--checkpoint", "runs/ab", "--checkpoint", "runs/xy")
    got = records(result)
    assert [r["best"] for r in got] == ["runs/ab", "runs/xy", "runs/ab", "runs/xy"]
    assert [(r["item"], r["line"], r["text"], r["chars"]) for r in got] == [
        (0, 1, "ab ab ab ab", 11), (1, 2, "xy xy xy", 8), (2, 4, "ab ab ✓", 7), (3, 5, "xy ✓ ✓ xy xy", 12)]
    ab, xy = "runs/ab", "runs/xy"
    assert [r["unseen"] for r in got] == [{ab: 0, xy: 0}] * 2 + [{ab: 1, xy: 1}, {ab: 2, xy: 2}]
    assert all(set(r["bpc"]) == {ab, xy} and r["bpc"][ab] > 0 for r in got)
    assert got[2]["bpc"][ab] > score.UNSEEN_BITS / 7  # the unseen character is paid for
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("scored 4 lines, 38 characters; bits/char over all of them: runs/ab ")
    assert lines[-1].endswith("; best for: runs/ab 2, runs/xy 2")

    top = records(cli("score", "mixed.txt", "--checkpoint", "runs/ab", "--checkpoint", "runs/xy", "--top", "2"))
    best = sorted(got, key=lambda r: -min(r["bpc"].values()))[:2]
    assert [r["item"] for r in top] == [r["item"] for r in best]
    paragraphs = records(cli("score", "mixed.txt", "--checkpoint", "runs/ab", "--by", "paragraph"))
    assert [(r["line"], r["chars"]) for r in paragraphs] == [(1, 20), (4, 20)] and "best" not in paragraphs[0]
    (whole,) = records(cli("score", "mixed.txt", "--by", "file"))  # the latest run, named by its directory
    assert whole["chars"] == 43 and list(whole["bpc"]) == [xy]


@pytest.mark.parametrize(("content", "args", "message"), [
    ("", (), "empty.txt is empty: give a text to score"),
    ("\n  \n\t\n", (), "empty.txt has no lines to score: every one is blank"),
    ("\n  \n", ("--by", "paragraph"), "empty.txt has no paragraphs to score: every one is blank"),
    ("\n  \n", ("--by", "file"), "empty.txt is only whitespace: give a text to score"),
    ("ab", ("--top", "0"), "--top must be at least 1, not 0"),
    ("ab", ("--by", "word"), "--by must be line, paragraph or file, not 'word'"),
    ("ab", ("--checkpoint", "runs/ab", "--checkpoint", "runs/ab/"),
     "--checkpoint runs/ab is given twice: give each model once"),
])
def test_score_errors(models: Path, monkeypatch: pytest.MonkeyPatch, content: str, args: tuple, message: str):
    monkeypatch.chdir(models)
    (models / "empty.txt").write_text(content)
    result = cli("score", "empty.txt", *args)
    assert result.exit_code == 2 and result.stdout == "" and "Traceback" not in result.output
    assert result.stderr.splitlines()[-1] == f"Error: {message}"
