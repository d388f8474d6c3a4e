from pathlib import Path

import numpy as np
import pytest

from charrnn import corpus as cp
from charrnn.corpus import load_corpus, scan
from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab


def text_of(c: cp.Corpus) -> str:
    return c.vocab.decode(np.asarray(c.tokens))


def test_bom_is_stripped(tmp_path: Path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbfhello")
    assert text_of(load_corpus(path)) == "hello"


def test_invalid_utf8_names_the_byte_offset(tmp_path: Path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"hello \xff world")
    with pytest.raises(CharRNNError, match="bad byte 0xff at byte offset 6"):
        load_corpus(path)
    assert text_of(load_corpus(path, errors="replace")) == "hello \ufffd world"
    assert text_of(load_corpus(path, encoding="latin-1")) == "hello \xff world"


def test_offsets_and_characters_survive_chunk_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cp, "CHUNK", 7)  # splits multi-byte characters between reads
    text = "naïve café — 日本語 ok " * 9
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert text_of(load_corpus(path)) == text
    bad = text.encode()[:40] + b"\xe9" + text.encode()[40:]
    path.write_bytes(bad)
    with pytest.raises(CharRNNError, match="bad byte 0xe9 at byte offset 40"):
        load_corpus(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty or only whitespace"), (b" \n\t\n", "empty or only whitespace"),
     (b"\x00\x01\x02binary", "binary file")],
)
def test_unusable_files(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    with pytest.raises(CharRNNError, match=message):
        load_corpus(path)


def test_missing_file_directory_and_encoding(tmp_path: Path):
    with pytest.raises(CharRNNError, match="does not exist"):
        load_corpus(tmp_path / "nope.txt")
    with pytest.raises(CharRNNError, match="is a directory"):
        load_corpus(tmp_path)
    path = tmp_path / "t.txt"
    path.write_text("hi")
    with pytest.raises(CharRNNError, match="unknown encoding"):
        load_corpus(path, encoding="klingon")


def test_encodes_every_character_into_the_smallest_dtype(corpus: Path, tmp_path: Path):
    c = load_corpus(corpus)
    assert text_of(c) == corpus.read_text(encoding="utf-8")
    assert isinstance(c.tokens, cp.TokenFile) and c.tokens.dtype == np.uint8
    wide = tmp_path / "wide.txt"
    wide.write_text("".join(chr(0x4E00 + i) for i in range(300)), encoding="utf-8")
    assert load_corpus(wide).tokens.dtype == np.uint16


def test_cache_is_reused_and_invalidated(corpus: Path, monkeypatch: pytest.MonkeyPatch):
    first = load_corpus(corpus)
    monkeypatch.setattr(cp, "_encode_to", lambda *a, **k: pytest.fail("an unchanged corpus was encoded again"))
    again = load_corpus(corpus)
    assert again.sha256 == first.sha256 and np.array_equal(again.tokens, first.tokens)
    monkeypatch.undo()
    corpus.write_text(corpus.read_text(encoding="utf-8") + "Zz", encoding="utf-8")
    edited = load_corpus(corpus)
    assert edited.sha256 != first.sha256 and "Z" in edited.vocab


def test_a_given_vocabulary_counts_and_shows_unknown_characters(tmp_path: Path):
    path = tmp_path / "t.txt"
    path.write_text("abc ✓ abc ✓ Ω")
    with pytest.raises(CharRNNError, match=r"has 3 character\(s\) the model has never seen: '✓' \(U\+2713\)"):
        load_corpus(path, vocab=Vocab(list(" abc")))
    ids = load_corpus(path, vocab=Vocab(list(" abc✓Ω"))).tokens
    assert list(ids[:4]) == [1, 2, 3, 0]


def test_scan_counts_code_points(tmp_path: Path):
    path = tmp_path / "t.txt"
    path.write_text("aab日", encoding="utf-8")
    counts, digest = scan(path)
    assert counts[ord("a")] == 2 and counts[ord("日")] == 1 and len(digest) == 64


def test_token_file_reads_like_an_array(tmp_path: Path):
    data = np.arange(1000, dtype=np.uint16)
    path = tmp_path / "t.bin"
    data.tofile(path)
    tokens = cp.TokenFile(path, np.uint16)
    assert len(tokens) == 1000 and tokens[5] == 5 and tokens[-1] == 999
    tail = tokens[900:]
    assert len(tail) == 100 and tail[0] == 900 and np.array_equal(np.asarray(tail), data[900:])
    idx = np.array([[3, 4, 5], [10, 11, 11], [0, 1, 2]])
    assert np.array_equal(tail[idx], data[900:][idx])
    assert np.array_equal(tokens[:-100][np.array([1, 2])], data[[1, 2]])
