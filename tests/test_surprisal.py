"""Per-character surprisal, the surprisal page, and `charrnn eval --show / --html`."""

from __future__ import annotations

import dataclasses
import errno
import html
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charrnn import evaluate as ev
from charrnn import run, surprisal_page
from charrnn.cli import app, show
from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.surprisal import PALETTE, Block, colour_bin, surprisal
from charrnn.vocab import Vocab
from tests.helpers import synthetic_text

CPU = torch.device("cpu")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TEXT = "machine river <script>alert('café & \"bread\"')</script>\nsalt\tstone.\n"


def flat(blocks):
    """(positions, tokens, bits, guesses, probs) of a list of blocks, joined."""
    cat = np.concatenate
    return (cat([b.start + np.arange(len(b)) for b in blocks]), cat([b.tokens for b in blocks]),
            cat([b.bits for b in blocks]), cat([b.guesses for b in blocks]), cat([b.probs for b in blocks]))


@pytest.fixture
def model() -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=7, hidden_size=16, embedding_size=4))


def test_every_character_against_one_naive_pass(model: CharRNN):
    tokens = np.random.default_rng(0).integers(0, 7, 300)
    pos, toks, bits, guesses, probs = flat(list(surprisal(model, tokens, CPU, top=5)))
    assert (pos == np.arange(300)).all() and (toks == tokens).all()
    assert math.isnan(bits[0]) and (guesses[0] == -1).all()  # the first character: no prediction
    with torch.no_grad():
        logp = model.eval()(torch.from_numpy(tokens[:-1])[None])[0][0].log_softmax(-1)  # (T, V)
    want = -logp.gather(1, torch.from_numpy(tokens[1:])[:, None])[:, 0] / math.log(2)
    np.testing.assert_allclose(bits[1:], want.numpy(), rtol=1e-5)
    top = logp.topk(5, dim=-1)
    assert (guesses[1:] == top.indices.numpy()).all()
    np.testing.assert_allclose(probs[1:], top.values.exp().numpy(), rtol=1e-5)


def test_mean_surprisal_is_evaluates_bits_per_char(model: CharRNN, monkeypatch: pytest.MonkeyPatch):
    # many streams, each read from CONTEXT characters before its share, and chunks of 50 columns
    monkeypatch.setattr(ev, "MIN_STREAM_LEN", 100)
    monkeypatch.setattr(ev, "CONTEXT", 40)
    monkeypatch.setattr(ev, "ACTIVATION_BUDGET", (7 + 4 * 16) * 50)
    tokens = np.random.default_rng(1).integers(0, 7, 1200)
    heard = []
    blocks = list(surprisal(model, tokens, CPU, progress=lambda done, total: heard.append((done, total))))
    pos, _, bits, _, _ = flat(blocks)
    assert (pos == np.arange(1200)).all() and len(blocks) > 12
    assert np.nanmean(bits) == pytest.approx(ev.evaluate(model, tokens, CPU).bpc, rel=1e-6)
    assert heard[0] == (0, 1199) and heard[-1] == (1199, 1199)
    assert [b for b in surprisal(model, tokens[:1], CPU)][0].bits.shape == (1,)
    assert list(surprisal(model, tokens[:0], CPU)) == []


def test_colour_scale():
    assert [colour_bin(b) for b in (0.0, 0.99, 1.0, 7.99, 8.0, 30.0, float("nan"))] == [0, 0, 1, 7, 8, 8, -1]
    assert len(PALETTE) == 9


# --- the command line, on one tiny model trained once for this module -------------------------------------------

runner = CliRunner()


def cli(*args: object, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("surprisal")
    corpus = root / "corpus.txt"
    corpus.write_text(synthetic_text(3000) + TEXT * 4, encoding="utf-8")
    cfg = TrainConfig(hidden_size=16, embedding_size=8, num_layers=1, batch_size=4, seq_len=16, steps=20,
                      eval_every=20, log_every=10, warmup_steps=5, device="cpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARRNN_CACHE_DIR", str(root / "cache"))
        setup = run.prepare(corpus, flags=dataclasses.asdict(cfg), out=root / "run")
        run.fit(run.build_trainer(setup), setup)
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    return root


def spans(page: str) -> list[str]:
    """The characters of the page's text, in order, unescaped."""
    body = page.split('<div id="text">', 1)[1].split("</div>", 1)[0]
    return [html.unescape(c) for c in re.findall(r"<span class=\"[^\"]*\"(?: data-d=\"[^\"]*\")?>(.*?)</span>",
                                                 body, flags=re.S)]


def test_show_prints_the_text_in_colour(trained: Path):
    text = trained / "text.txt"
    result = cli("eval", text, "--show", "--checkpoint", trained / "run")
    assert result.exit_code == 0, result.output
    assert ANSI.sub("", result.stdout) == TEXT  # every character, in order, newlines kept
    assert result.stdout.count("\x1b[") > 10 and "48;5;" in result.stdout  # background colours (256)
    legend, bpc = result.stderr.splitlines()[1:]
    assert legend.startswith("surprisal (bits, −log₂ p): ") and "8+" in legend
    plain = json.loads(cli("eval", text, "--json", "--checkpoint", trained / "run").stdout)
    assert bpc == (f"{plain['bpc']:.4f} bits/char (loss {plain['loss']:.4f} nats/char) over {plain['chars']:,} "
                   "characters")
    no_colour = cli("eval", text, "--show", "--checkpoint", trained / "run", env={"NO_COLOR": "1"})
    assert no_colour.stdout == TEXT


def test_html_page_is_escaped_and_self_contained(trained: Path):
    text, out = trained / "text.txt", trained / "page.html"
    result = cli("eval", text, "--html", out, "--checkpoint", trained / "run")
    assert result.exit_code == 0, result.output
    assert result.stdout == cli("eval", text, "--checkpoint", trained / "run").stdout  # eval's numbers as ever
    page = out.read_text(encoding="utf-8")
    assert spans(page) == list(TEXT)
    assert page.count("data-d=") == len(TEXT) - 1  # every character but the first has its numbers
    assert "<script>alert" not in page and ">&lt;</span>" in page and ">&amp;</span>" in page
    assert page.count("<script") == 2 and not re.search(r"https?://|src=|href=|@import|url\(", page)
    vocab = json.loads(re.search(r'<script type="application/json" id="vocab">(.*?)</script>', page).group(1))
    assert "<" in vocab and "&" in vocab  # the JSON is escaped, and still decodes to the characters
    assert [p.name for p in trained.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_html_errors_leave_nothing_behind(trained: Path, monkeypatch: pytest.MonkeyPatch):
    text = trained / "text.txt"
    missing = trained / "nowhere" / "page.html"
    result = cli("eval", text, "--html", missing)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.splitlines() == [f"Error: cannot write the page to {missing}: the directory "
                                          f"{missing.parent} does not exist; create it first or choose another path"]
    assert "it is a directory" in cli("eval", text, "--html", trained).stderr
    assert "use one of them" in cli("eval", text, "--show", "--json").stderr

    out = trained / "kept.html"
    out.write_text("the old page")

    def interrupted(self, block):
        raise KeyboardInterrupt

    monkeypatch.setattr(surprisal_page.Page, "add", interrupted)
    result = cli("eval", text, "--html", out, "--checkpoint", trained / "run")
    assert result.exit_code == 130 and out.read_text() == "the old page"
    assert [p.name for p in trained.iterdir() if p.name.startswith(".")] == []


def test_html_on_a_full_disk_says_so_and_leaves_nothing_behind(trained: Path, monkeypatch: pytest.MonkeyPatch):
    """The page is ~60-90 bytes a character: a disk that fills while it is written gets an error naming the page,
    and its temporary file goes although closing it (which flushes) fails again."""
    text, out = trained / "text.txt", trained / "full.html"
    out.write_text("the old page")
    opened = surprisal_page.Page.__init__

    class FullDisk:
        def __init__(self, real):
            self.real = real

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.real.close()
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_after_the_header(self, *args):
        opened(self, *args)
        self.file = FullDisk(self.file)

    monkeypatch.setattr(surprisal_page.Page, "__init__", full_after_the_header)
    result = cli("eval", text, "--html", out, "--checkpoint", trained / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.splitlines()[-1] == f"Error: cannot write the page to {out}: No space left on device"
    assert out.read_text() == "the old page"
    assert [p.name for p in trained.iterdir() if p.name.startswith(".")] == []


def test_html_keeps_carriage_returns_and_nul(tmp_path: Path):
    """An HTML parser turns a raw CR into a line feed (a CRLF text would be double-spaced) and drops a NUL."""
    vocab = Vocab(["a", "\r", "\n", "\0"])
    n = 4
    block = Block(0, np.arange(n), np.array([np.nan, 1.0, 2.0, 3.0]), np.full((n, 2), -1), np.full((n, 2), np.nan))
    with surprisal_page.Page(tmp_path / "p.html", vocab, "t") as page:
        page.add(block)
        page.finish("done")
    written = (tmp_path / "p.html").read_text(encoding="utf-8")
    assert "\r" not in written and "\0" not in written
    assert spans(written) == ["a", "\r", "\n", "\u2400"]  # the CR as a character reference, NUL as its symbol


def test_eval_html_will_not_overwrite_the_text_and_show_scores_as_eval(trained: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    text = trained / "text.txt"
    result = cli("eval", text, "--html", text, "--checkpoint", trained / "run")
    assert result.exit_code == 2 and text.read_text(encoding="utf-8") == TEXT
    refused = "is a text being scored or trained on: give the page another name"
    assert result.stderr.splitlines()[-1] == f"Error: --html {text} {refused}"
    corpus, before = trained / "corpus.txt", (trained / "corpus.txt").read_text(encoding="utf-8")
    result = cli("eval", "--html", corpus, "--checkpoint", trained / "run")  # its validation split, of this text
    assert result.exit_code == 2 and result.stderr.splitlines()[-1] == f"Error: --html {corpus} {refused}"
    assert corpus.read_text(encoding="utf-8") == before
    result = cli("eval", trained, "--html", corpus, "--checkpoint", trained / "run")  # a folder with it in it
    assert result.exit_code == 2 and result.stderr.splitlines()[-1] == f"Error: --html {corpus} {refused}"
    plain = json.loads(cli("eval", text, "--json", "--checkpoint", trained / "run").stdout)
    real = show.surprisal

    def diverged(*args, **kwargs):  # a model that gives NaN somewhere: eval's mean is NaN over the same characters
        for block in real(*args, **kwargs):
            block.bits[len(block) // 2] = np.nan
            yield block

    monkeypatch.setattr(show, "surprisal", diverged)
    bpc = cli("eval", text, "--show", "--checkpoint", trained / "run").stderr.splitlines()[-1]
    assert bpc == f"nan bits/char (loss nan nats/char) over {plain['chars']:,} characters"


def test_a_page_whose_first_write_fails_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def full(self, text):
        raise CharRNNError("cannot write the page: No space left on device")

    monkeypatch.setattr(surprisal_page.Page, "_write", full)
    with pytest.raises(CharRNNError):
        surprisal_page.Page(tmp_path / "p.html", Vocab(["a", "b"]), "t")
    assert list(tmp_path.iterdir()) == []
