"""The reference points of ``charrnn eval --baselines``: each number by hand or by its definition, the caps, and
the command's table, JSON and errors."""

import json
import lzma
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from charrnn import baselines, ngram
from charrnn.cli import app
from charrnn.vocab import Vocab
from tests.helpers import synthetic_text, tiny_run

runner = CliRunner()


def test_unigram_is_add_one_smoothed_over_the_vocabulary():
    vocab = Vocab(list("abc"))  # 'c' never occurs in training: it costs 1 / (N + V), not infinity
    train, text = vocab.encode("aab"), vocab.encode("abca")  # predicted: b, c, a (not the first a)
    expected = -(math.log2(2 / 6) + math.log2(1 / 6) + math.log2(3 / 6)) / 3
    assert baselines.unigram_bits(train, text, 3) == pytest.approx(expected)


def test_lzma_is_xz_9e_of_the_utf8_text(monkeypatch: pytest.MonkeyPatch):
    text = synthetic_text(3000)
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    size = len(lzma.compress(text.encode(), preset=9 | lzma.PRESET_EXTREME, check=lzma.CHECK_NONE))
    assert baselines.lzma_bits(ids, vocab) == (8 * size / 3000, 3000)
    monkeypatch.setattr(baselines, "LZMA_CHARS", 1000)
    monkeypatch.setattr(baselines, "CHUNK", 300)
    size = len(lzma.compress(text[:1000].encode(), preset=9 | lzma.PRESET_EXTREME, check=lzma.CHECK_NONE))
    assert baselines.lzma_bits(ids, vocab) == (8 * size / 1000, 1000)


def test_compute_counts_at_most_max_chars_and_scores_every_character_after_the_first(
        monkeypatch: pytest.MonkeyPatch):
    text = synthetic_text(8000)
    vocab = Vocab.from_text(text + "Z")
    train, val = vocab.encode(text[:7000]), vocab.encode(text[7000:])
    monkeypatch.setattr(baselines, "MAX_CHARS", 5000)
    monkeypatch.setattr(baselines, "CHUNK", 333)  # reading in chunks changes nothing
    b = baselines.compute(train, val, vocab)
    chosen = ngram.select_order(train[:5000], len(vocab))
    assert (b.chars, b.counted, b.order, b.held_out) == (999, 5000, chosen.order, chosen.held_out)
    assert b.ngram == pytest.approx(ngram.KneserNey.fit(train[:5000], len(vocab), b.order).bits_per_char(val))
    assert b.unigram == pytest.approx(baselines.unigram_bits(train, val, len(vocab)))
    assert b.uniform == math.log2(len(vocab)) and b.vocab_size == len(vocab)
    assert b.ngram < b.lzma < b.unigram < b.uniform  # on this very regular text
    assert set(json.loads(json.dumps(b.to_dict()))["held_out"]) == {str(k) for k in range(1, 9)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny run for this module's command-line tests: (run directory, corpus)."""
    return tiny_run(tmp_path_factory.mktemp("baselinerun"))


def test_eval_baselines_table_and_json(trained, tmp_path: Path):
    run_dir, corpus = trained
    args = ["eval", "--checkpoint", str(run_dir), "--baselines", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    table = result.stdout.split("\n\n")[1].splitlines()
    assert table[0] == "bits/char on the same 599 characters:"
    assert [line.split()[0] for line in table[1:]] == ["model", "n-gram", "lzma", "unigram", "uniform"]
    assert "a compressor, not a predictive model" in table[3]
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    out = json.loads(as_json.stdout)
    b = out["baselines"]
    assert set(b) == {"chars", "unigram", "ngram", "order", "held_out", "counted", "lzma", "lzma_chars", "uniform",
                      "vocab_size"}
    assert (b["chars"], b["counted"], b["lzma_chars"]) == (out["chars"], 5400, 600)
    assert b["uniform"] == pytest.approx(math.log2(b["vocab_size"]))
    assert b["held_out"][str(b["order"])] == min(b["held_out"].values())
    for line, (key, value) in zip(table[1:], [("bpc", out["bpc"]), ("ngram", b["ngram"]), ("lzma", b["lzma"]),
                                              ("unigram", b["unigram"]), ("uniform", b["uniform"])], strict=True):
        assert line.split()[1] == f"{value:.4f}", key

    shown = runner.invoke(app, [*args, "--show"])  # the text as the model saw it, then the same table
    assert shown.exit_code == 0 and shown.stdout.rstrip("\n").split("\n\n")[-1].splitlines() == table

    other = tmp_path / "other.txt"
    other.write_text(synthetic_text(800, seed=5), encoding="utf-8")
    on_file = json.loads(runner.invoke(app, [*args, "--json", str(other)]).stdout)
    assert on_file["baselines"]["chars"] == on_file["chars"] == 799
    assert on_file["baselines"]["counted"] == 5400  # still trained on the run's training split


def assert_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert message in line and "Traceback" not in result.stderr


def test_eval_baselines_needs_the_runs_training_split(trained, tmp_path: Path):
    run_dir, corpus = trained
    other = tmp_path / "other.txt"
    other.write_text(synthetic_text(800, seed=5), encoding="utf-8")
    args = ["eval", str(other), "--checkpoint", str(run_dir), "--baselines", "--device", "cpu"]
    saved = tmp_path / "saved.txt"
    shutil.copy2(corpus, saved)
    try:
        corpus.write_text(corpus.read_text() + "more", encoding="utf-8")
        assert_error(runner.invoke(app, args), f"the run's corpus {corpus} has changed since training: --baselines "
                                               "needs the text the run was trained on")
        corpus.unlink()
        assert_error(runner.invoke(app, args), f"the run's corpus {corpus} is gone: --baselines needs the text the "
                                               "run was trained on")
        assert runner.invoke(app, args[:-3] + ["--device", "cpu"]).exit_code == 0  # without --baselines, no need
    finally:
        shutil.copy2(saved, corpus)
    assert np.isfinite(json.loads(runner.invoke(app, [*args, "--json"]).stdout)["baselines"]["ngram"])
