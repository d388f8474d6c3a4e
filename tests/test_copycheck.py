"""The copying check: spans and shares on constructed samples, the cached index (built once, reused, rebuilt when
damaged, temporary files of killed builds removed), and ``charrnn generate --check-copy`` end to end."""

import json
import shutil
import socket
import zlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from charrnn import copycheck
from charrnn.cli import app
from charrnn.corpus import cache_root, load_corpus
from charrnn.data import split
from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab
from tests.helpers import synthetic_text, tiny_run

runner = CliRunner()
TRAIN = "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat by the door"


def index_of(text: str, extra: str = "XYZ") -> copycheck.CopyIndex:
    vocab = Vocab.from_text(text + extra)
    return copycheck.CopyIndex.in_memory(vocab.encode(text), vocab)


def test_longest_span_and_copied_share_of_constructed_samples():
    index = index_of(TRAIN)
    copy_a, copy_b = TRAIN[4:29], TRAIN[40:70]  # 25 and 30 characters, from two places
    r = index.check(copy_a + "XYZXYZXYZX" + copy_b)
    assert (r.chars, r.longest, r.at, r.span, r.copied) == (65, 30, 35, copy_b, 55)
    assert TRAIN[r.source_at: r.source_at + r.longest] == copy_b
    assert r.share == pytest.approx(55 / 65)


def test_spans_shorter_than_the_minimum_do_not_count_and_overlaps_count_once():
    index = index_of(TRAIN)
    nineteen = index.check("X" + TRAIN[10:29] + "X")
    assert (nineteen.longest, nineteen.copied) == (19, 0)
    twenty = index.check("X" + TRAIN[10:30] + "X")
    assert (twenty.longest, twenty.at, twenty.copied) == (20, 1, 20)
    # two copied spans that overlap in the sample: 30 characters in all, not 20 + 20
    overlap = index.check(TRAIN[0:20] + TRAIN[20:30])
    assert overlap.copied == 30 and overlap.share == 1.0
    assert index.check("").to_dict() == {"chars": 0, "longest": 0, "at": 0, "source_at": 0, "span": "",
                                         "copied": 0, "min_span": 20, "share": 0.0}
    assert index.check("XYZ").longest == 0


@pytest.fixture
def train_split(tmp_path: Path):
    path = tmp_path / "corpus.txt"
    path.write_text(synthetic_text(5000), encoding="utf-8")
    corpus = load_corpus(path)
    train, _ = split(corpus.tokens, 0.1)
    return train, corpus


def open_counting(train, corpus) -> tuple[copycheck.CopyIndex, list[int]]:
    builds = []
    return copycheck.open_index(train, corpus, on_build=builds.append), builds


def test_the_index_is_built_once_then_reused(train_split):
    train, corpus = train_split
    text = corpus.vocab.decode(np.asarray(train))
    sample = text[1000:1100] + "é" + text[3000:3040]
    first, builds = open_counting(train, corpus)
    with first:
        expected = first.check(sample)
    again, rebuilt = open_counting(train, corpus)
    with again:
        assert again.check(sample) == expected
    assert builds == [len(train)] and rebuilt == []
    assert expected.longest >= 100 and expected.copied >= 140
    (entry,) = (cache_root() / "indexes").iterdir()
    assert sorted(p.name for p in entry.iterdir()) == ["meta.json", "sa.bin"]


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "garbage meta", "claim another block size",
                                    "claim another text"])
def test_a_damaged_index_is_rebuilt(train_split, damage: str):
    train, corpus = train_split
    sample = corpus.vocab.decode(np.asarray(train[2000:2100]))
    with open_counting(train, corpus)[0] as index:
        expected = index.check(sample)
    (entry,) = (cache_root() / "indexes").iterdir()
    sa, meta = entry / "sa.bin", entry / "meta.json"
    if damage == "flip a byte":
        data = bytearray(sa.read_bytes())
        data[len(data) // 2] ^= 0x01
        sa.write_bytes(bytes(data))
    elif damage == "truncate":
        sa.write_bytes(sa.read_bytes()[:-4])
    elif damage == "garbage meta":
        meta.write_text("{not json")
    else:
        raw = json.loads(meta.read_text())
        raw.update({"block": 1 << 40} if damage == "claim another block size" else {"tokens": raw["tokens"] + 1})
        meta.write_text(json.dumps(raw))
    index, builds = open_counting(train, corpus)
    with index:
        assert index.check(sample) == expected
    assert builds == [len(train)]
    assert open_counting(train, corpus)[1] == []  # the rebuilt index is good


@pytest.mark.parametrize("entry", [-1, 10**6])
def test_an_index_made_to_look_whole_is_refused_not_followed(train_split, entry: int):
    """Positions outside the text under correct CRC-32s (a hand-made file, or a bug): a clear error, no crash."""
    train, corpus = train_split
    copycheck.open_index(train, corpus).close()
    (entry_dir,) = (cache_root() / "indexes").iterdir()
    sa = np.fromfile(entry_dir / "sa.bin", np.int32)
    sa[len(sa) // 3:] = entry
    (entry_dir / "sa.bin").write_bytes(sa.tobytes())
    meta = json.loads((entry_dir / "meta.json").read_text())
    meta["sums"] = [zlib.crc32(sa.tobytes()[i: i + meta["block"]]) for i in range(0, sa.nbytes, meta["block"])]
    (entry_dir / "meta.json").write_text(json.dumps(meta))
    index, builds = open_counting(train, corpus)
    assert builds == []
    with index, pytest.raises(CharRNNError, match=r"the copy index is damaged \(a position outside the training "
                                                  r"split\): delete .*indexes and run again"):
        index.check(corpus.vocab.decode(np.asarray(train[:300])))


def test_temporary_directories_of_killed_builds_are_removed(train_split):
    train, corpus = train_split
    root = cache_root() / "indexes"
    dead = root / f".tmp-abc-99999999-0000-{socket.gethostname()}"  # no such pid
    dead.mkdir(parents=True)
    (dead / "sa.bin").write_bytes(b"half")
    open_counting(train, corpus)[0].close()
    assert not dead.exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp-")] == []


def test_a_build_that_fails_leaves_nothing(train_split, monkeypatch: pytest.MonkeyPatch):
    train, corpus = train_split

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(copycheck.suffixarray, "build", fail)
    with pytest.raises(KeyboardInterrupt):
        copycheck.open_index(train, corpus)
    assert list((cache_root() / "indexes").iterdir()) == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny run for this module's command-line tests: (run directory, corpus)."""
    return tiny_run(tmp_path_factory.mktemp("copyrun"))


def longest_in(sample: str, text: str) -> int:
    """The longest substring of ``sample`` that occurs in ``text``, by brute force."""
    best = 0
    for i in range(len(sample)):
        while i + best < len(sample) and sample[i: i + best + 1] in text:
            best += 1
    return best


def test_generate_check_copy_reports_each_sample_on_stderr(trained, tmp_path: Path):
    run_dir, corpus = trained
    report = tmp_path / "copies.jsonl"
    result = runner.invoke(app, ["generate", "--checkpoint", str(run_dir), "--check-copy", "--prefix", "machine",
                                 "--length", "300", "--seed", "3", "--num-samples", "2", "--temperature", "0.5",
                                 "--copy-report", str(report), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    size = len("machine") + 300
    samples = [result.stdout[:size], result.stdout[size + 2: 2 * size + 2]]  # a blank line between samples
    assert result.stdout == f"{samples[0]}\n\n{samples[1]}\n"  # only the text on stdout
    assert all(s.startswith("machine") for s in samples)
    lines = [line for line in result.stderr.splitlines() if line.startswith("copy check")]
    assert [line.split(":")[0] for line in lines] == ["copy check, sample 1", "copy check, sample 2"]
    assert "indexing the training split (5,400 characters)" in result.stderr
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    training = corpus.read_text()[:5400]
    for row, sample in zip(rows, samples, strict=True):
        generated = sample.removeprefix("machine")  # the prefix is the user's: not checked
        assert row["chars"] == 300 == len(generated)
        assert row["longest"] == longest_in(generated, training) > 0
        assert row["span"] == generated[row["at"]: row["at"] + row["longest"]]
        assert training[row["source_at"]: row["source_at"] + row["longest"]] == row["span"]
        assert f"the longest common span is {row['longest']} characters" in lines[row["sample"] - 1]
    assert set(rows[0]) == {"sample", "chars", "longest", "at", "source_at", "span", "copied", "min_span", "share"}


def assert_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""  # the check is ready before any text is written
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert message in line and "Traceback" not in result.stderr


def test_check_copy_errors(trained, tmp_path: Path):
    run_dir, corpus = trained
    args = ["generate", "--checkpoint", str(run_dir), "--length", "20", "--device", "cpu"]
    for flags in (["--check-copy"], ["--copy-report", str(tmp_path / "r.jsonl")]):  # the loop checks nothing yet
        assert_error(runner.invoke(app, [*args, "--interactive", *flags]),
                     "--check-copy and --copy-report do not work with --interactive yet: leave them out")
    assert_error(runner.invoke(app, [*args, "--copy-report", str(tmp_path / "no" / "r.jsonl")]),
                 f"--copy-report {tmp_path / 'no' / 'r.jsonl'}: the directory {tmp_path / 'no'} does not exist")
    (tmp_path / "taken").mkdir()
    result = runner.invoke(app, [*args, "--copy-report", str(tmp_path / "taken")])
    assert result.exit_code == 2 and result.stdout  # the text was written; the report, at the end, could not be
    assert f"Error: cannot write --copy-report {tmp_path / 'taken'}: Is a directory" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temporary file left behind
    saved = tmp_path / "saved.txt"
    shutil.copy2(corpus, saved)
    try:
        corpus.write_text(corpus.read_text() + "more", encoding="utf-8")
        assert_error(runner.invoke(app, [*args, "--check-copy"]),
                     f"the run's corpus {corpus} has changed since training: --check-copy needs the text the run "
                     "was trained on")
        corpus.unlink()
        assert_error(runner.invoke(app, [*args, "--check-copy"]),
                     f"the run's corpus {corpus} is gone: --check-copy needs the text the run was trained on")
    finally:
        shutil.copy2(saved, corpus)
