import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
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
    unseen = r"has 2 character\(s\) the model has never seen \(3 times in all\): '✓' \(U\+2713\)"
    with pytest.raises(CharRNNError, match=unseen):
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


def test_a_token_file_reads_in_chunks_and_refuses_one_cut_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """One read returns at most ~2 GiB on Linux (and fails above 2 GiB on macOS): a split as large as that is read
    in pieces, here of 7 bytes; a file shorter than its length says is an error, not a shorter array."""
    monkeypatch.setattr(cp, "READ_CHUNK", 7)
    data = np.arange(1000, dtype=np.uint16)
    path = tmp_path / "t.bin"
    data.tofile(path)
    tokens = cp.TokenFile(path, np.uint16)
    assert np.array_equal(np.asarray(tokens[3:]), data[3:])
    path.write_bytes(path.read_bytes()[:1000])  # cut short after it was opened
    with pytest.raises(CharRNNError, match="the corpus cache .* is cut short"):
        np.asarray(tokens[3:])


# Hardening, round two (issue 10) ----------------------------------------------------------------------------

def entry_of(cache: Path) -> Path:
    (entry,) = [p for p in (cache / "corpora").iterdir() if not p.name.startswith(".")]
    return entry


def temp_dirs(cache: Path) -> list[str]:
    root = cache / "corpora"
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".tmp-")) if root.exists() else []


def no_reencode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cp, "_encode_to", lambda *a, **k: pytest.fail("the corpus was encoded again"))


def finishes(fn, timeout: float = 30.0):
    """fn() run in a daemon thread: its result, or a failure (not a hung test) if it does not return."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still reading after {timeout} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_a_file_name_that_is_not_utf8_trains_and_comes_from_the_cache(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / os.fsdecode(b"caf\xe9 \xff.txt")  # undecodable bytes become lone surrogates
    path.write_text("caf\u00e9 au lait\n", encoding="utf-8")
    first = load_corpus(path)
    assert text_of(first) == "caf\u00e9 au lait\n" and first.path == path
    no_reencode(monkeypatch)
    assert load_corpus(path, verify=True).sha256 == first.sha256


def test_lone_surrogates_are_an_error_or_replaced_or_dropped(tmp_path: Path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"hi +2D0- there")  # UTF-7 for a lone high surrogate
    with pytest.raises(CharRNNError, match=r"lone surrogate \(U\+D83D\).*--errors replace"):
        load_corpus(path, encoding="utf-7")
    assert text_of(load_corpus(path, encoding="utf-7", errors="replace")) == "hi \ufffd there"
    assert text_of(load_corpus(path, encoding="utf-7", errors="ignore")) == "hi  there"


def edit_keeping_size_and_mtime(path: Path, text: str) -> None:
    st = path.stat()
    time.sleep(0.02)  # past the clock tick of the last write, so that the ctime moves
    path.write_text(text, encoding="utf-8")
    assert path.stat().st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_same_size_edit_with_the_mtime_restored_is_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cp, "RACY_NS", -(10**18))  # no re-hash for recent files: the stamp alone must see it
    path = tmp_path / "t.txt"
    path.write_text("old text here\n", encoding="utf-8")
    old = load_corpus(path)
    edit_keeping_size_and_mtime(path, "new text here\n")
    new = load_corpus(path)
    assert text_of(new) == "new text here\n" and new.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert new.sha256 != old.sha256


def coarse_stamps(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system whose stamps cannot tell the edit apart (no ctime, no inode)."""
    monkeypatch.setattr(cp, "_stamp", lambda st: (st.st_size, st.st_mtime_ns))


def test_an_edit_the_stamps_miss_is_caught_by_the_racy_rehash_and_by_verify(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    coarse_stamps(monkeypatch)
    path = tmp_path / "t.txt"
    path.write_text("old text here\n", encoding="utf-8")
    load_corpus(path)
    edit_keeping_size_and_mtime(path, "new text here\n")
    assert text_of(load_corpus(path)) == "new text here\n"  # the entry was made just after a change: re-hashed
    monkeypatch.setattr(cp, "RACY_NS", -(10**18))
    edit_keeping_size_and_mtime(path, "old text here\n")
    assert text_of(load_corpus(path)) == "new text here\n"  # what the cheap checks cannot see ...
    checked = load_corpus(path, verify=True)  # ... verify sees: it hashes the file's bytes
    assert text_of(checked) == "old text here\n"
    assert checked.sha256 == hashlib.sha256(b"old text here\n").hexdigest()


def test_a_recent_entry_is_rehashed_until_it_is_old_enough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "t.txt"
    path.write_text("some text\n", encoding="utf-8")
    load_corpus(path)
    hashed = []
    real = cp._file_sha256
    later = time.time_ns() + 10 * cp.RACY_NS
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cp, "_file_sha256", lambda p: hashed.append(p) or real(p))
        load_corpus(path)
        assert len(hashed) == 1  # just written: the timestamps cannot vouch for it yet
        patch.setattr(cp.time, "time_ns", lambda: later)
        load_corpus(path)  # re-hashed once more, and marked as checked
        assert len(hashed) == 2
    monkeypatch.setattr(cp, "_file_sha256", lambda p: pytest.fail("re-hashed a file checked long after its change"))
    no_reencode(monkeypatch)
    load_corpus(path)


def test_a_file_changing_while_it_is_encoded_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cp, "CHUNK", 64)
    path = tmp_path / "t.txt"
    path.write_text("abcdefgh " * 100, encoding="utf-8")
    calls = []

    def truncate_once(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3:
            path.write_text("xyz " * 50, encoding="utf-8")

    c = load_corpus(path, progress=truncate_once)
    assert text_of(c) == "xyz " * 50
    assert c.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert text_of(load_corpus(path, verify=True)) == "xyz " * 50


def test_a_file_that_never_stops_changing_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cp, "CHUNK", 64)
    path = tmp_path / "t.txt"
    path.write_text("abcdefgh " * 100, encoding="utf-8")

    def keep_appending(done: int, total: int) -> None:
        with path.open("a", encoding="utf-8") as f:
            f.write("more ")

    with pytest.raises(CharRNNError, match="changed while it was being read"):
        load_corpus(path, progress=keep_appending)
    assert temp_dirs(Path(os.environ["CHARRNN_CACHE_DIR"])) == []


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("damage", ["in range", "out of range", "truncated", "meta garbage", "meta permuted vocab",
                                    "meta wrong count", "meta missing field"])
def test_a_damaged_cache_entry_is_encoded_again(corpus: Path, corpus_cache: Path, damage: str, verify: bool):
    expected = corpus.read_text(encoding="utf-8")
    load_corpus(corpus)
    entry = entry_of(corpus_cache)
    tokens, meta_path = entry / cp.TOKENS, entry / cp.META
    meta = json.loads(meta_path.read_text())
    data = bytearray(tokens.read_bytes())
    if damage == "in range":
        data[100], data[101] = data[101] ^ 1 if data[101] ^ 1 < len(meta["vocab"]) else 0, data[100]
        data[100:110] = bytes(reversed(data[100:110]))
        tokens.write_bytes(bytes(data))
    elif damage == "out of range":
        data[5] = 255
        tokens.write_bytes(bytes(data))
    elif damage == "truncated":
        tokens.write_bytes(bytes(data[:-3]))
    elif damage == "meta garbage":
        meta_path.write_text("{not json")
    elif damage == "meta permuted vocab":
        meta["vocab"] = meta["vocab"][1:] + meta["vocab"][:1]
        meta_path.write_text(json.dumps(meta))
    elif damage == "meta wrong count":
        meta["tokens"] -= 1
        meta_path.write_text(json.dumps(meta))
    else:
        del meta["sums"]
        meta_path.write_text(json.dumps(meta))
    assert text_of(load_corpus(corpus, verify=verify)) == expected
    assert text_of(load_corpus(corpus)) == expected  # and the entry was replaced by a good one


def test_a_given_vocabulary_must_match_the_cached_one_exactly(corpus: Path, corpus_cache: Path):
    own = load_corpus(corpus).vocab
    permuted = Vocab(own.chars[::-1])
    entry = entry_of(corpus_cache)
    meta = json.loads((entry / cp.META).read_text())
    c = load_corpus(corpus, vocab=permuted)
    assert c.vocab == permuted and text_of(c) == corpus.read_text(encoding="utf-8")
    # an entry stored under the permuted vocabulary's key but holding the sorted one is not used
    key = [p for p in (corpus_cache / "corpora").iterdir() if p != entry][0]
    (key / cp.META).write_text(json.dumps(meta))
    shutil.copy(entry / cp.TOKENS, key / cp.TOKENS)
    c = load_corpus(corpus, vocab=permuted)
    assert c.vocab == permuted and text_of(c) == corpus.read_text(encoding="utf-8")


def test_corruption_in_a_block_not_sampled_is_found_by_verify_or_on_reading(
        tmp_path: Path, corpus_cache: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cp, "BLOCK", 16)
    monkeypatch.setattr(cp, "SAMPLED_BLOCKS", 3)  # blocks 0, 31 and 62 of 63
    path = tmp_path / "t.txt"
    path.write_text("abcd" * 250, encoding="utf-8")
    load_corpus(path)
    tokens = entry_of(corpus_cache) / cp.TOKENS
    data = bytearray(tokens.read_bytes())
    data[16 * 5 + 3] = 200  # block 5: not sampled, and out of range
    tokens.write_bytes(bytes(data))
    cheap = load_corpus(path)
    with pytest.raises(CharRNNError, match="corpus cache .* is corrupt .*delete that directory"):
        np.asarray(cheap.tokens)
    assert text_of(load_corpus(path, verify=True)) == "abcd" * 250


def test_an_unwritable_cache_is_its_own_error(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(blocker))
    with pytest.raises(cp.CacheError, match="cannot write the corpus cache in .*set CHARRNN_CACHE_DIR"):
        load_corpus(corpus)
    with pytest.raises(cp.CacheError):
        load_corpus(corpus, verify=True)


def test_a_failed_write_inside_the_cache_is_a_cache_error(corpus: Path, corpus_cache: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cp.os, "fsync", full)
    with pytest.raises(cp.CacheError, match="No space left on device; set CHARRNN_CACHE_DIR"):
        load_corpus(corpus)
    assert temp_dirs(corpus_cache) == []


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_directories_are_removed(corpus: Path, corpus_cache: Path):
    root = corpus_cache / "corpora"
    host = socket.gethostname()
    names = {
        "dead": f".tmp-{'a' * 32}-{dead_pid()}-0badf00d-{host}",
        "alive": f".tmp-{'b' * 32}-{os.getpid()}-0badf00d-{host}",
        "old elsewhere": f".tmp-{'c' * 32}-1-0badf00d-other-host.example",
        "new elsewhere": f".tmp-{'d' * 32}-1-0badf00d-other-host.example",
    }
    for name in names.values():
        (root / name).mkdir(parents=True)
        (root / name / cp.TOKENS).write_bytes(b"\0" * 100)
    old = time.time() - cp.STALE_AGE - 60
    for p in (root / names["old elsewhere"], root / names["old elsewhere"] / cp.TOKENS):
        os.utime(p, (old, old))
    load_corpus(corpus)
    assert temp_dirs(corpus_cache) == sorted([names["alive"], names["new elsewhere"]])


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_while_encoding_leaves_no_temporary_directory(corpus: Path, corpus_cache: Path, exc):
    def interrupt(done: int, total: int) -> None:
        assert temp_dirs(corpus_cache)  # the temporary directory exists now ...
        raise exc

    with pytest.raises(exc):
        load_corpus(corpus, progress=interrupt)
    assert temp_dirs(corpus_cache) == []  # ... and is gone


def test_a_process_killed_by_sigterm_while_encoding_is_cleaned_up_next_time(corpus: Path, corpus_cache: Path):
    script = ("import sys, time; from pathlib import Path; from charrnn.corpus import load_corpus\n"
              "def hang(done, total):\n    print('encoding', flush=True); time.sleep(60)\n"
              "load_corpus(Path(sys.argv[1]), progress=hang)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.Popen([sys.executable, "-c", script, str(corpus)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "encoding\n"
        assert temp_dirs(corpus_cache)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.stdout.close()
    assert temp_dirs(corpus_cache)  # SIGTERM runs no finally: the directory stays ...
    load_corpus(corpus)
    assert temp_dirs(corpus_cache) == []  # ... until the cache is next used


def write_in_thread(path: str, data: bytes) -> threading.Thread:
    def write():
        try:
            with open(path, "wb") as f:
                f.write(data)
        except BrokenPipeError:
            pass

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_a_fifo_is_read_once(tmp_path: Path, corpus_cache: Path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    text = "streamed text, read once\n" * 50
    write_in_thread(str(fifo), text.encode())
    c = finishes(lambda: load_corpus(fifo))
    assert text_of(c) == text and c.path == fifo
    assert c.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert temp_dirs(corpus_cache) == [] and list((corpus_cache / "corpora").iterdir()) == []


def test_process_substitution_is_read_once(tmp_path: Path):
    r, w = os.pipe()

    def write():
        with os.fdopen(w, "wb") as f:
            f.write(b"from a pipe\n" * 10)

    threading.Thread(target=write, daemon=True).start()
    try:
        assert text_of(finishes(lambda: load_corpus(Path(f"/dev/fd/{r}")))) == "from a pipe\n" * 10
    finally:
        os.close(r)


def test_a_pipe_is_refused_by_scan_and_bounded_by_load(tmp_path: Path, corpus_cache: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(CharRNNError, match="not a regular file .*save it to a file first"):
        scan(fifo)  # refused before opening: nothing blocks
    monkeypatch.setattr(cp, "MAX_STREAM", 1000)
    write_in_thread(str(fifo), b"endless " * 1000)
    with pytest.raises(CharRNNError, match="not a regular file .*more than .*save the text to a file"):
        finishes(lambda: load_corpus(fifo))
    assert temp_dirs(corpus_cache) == []
    for size, ok in ((1000, True), (1001, False)):  # `charrnn score` reads a pipe as it goes, within the same bound
        write_in_thread(str(fifo), b"x" * size)
        if ok:
            assert sum(len(part) for part in finishes(lambda: list(cp.read_code_points(fifo)))) == size
        else:
            with pytest.raises(CharRNNError, match="not a regular file .*more than .*save the text to a file"):
                finishes(lambda: list(cp.read_code_points(fifo)))


def test_random_bytes_from_a_device_are_refused_at_once():
    with pytest.raises(CharRNNError, match="binary file"):
        finishes(lambda: load_corpus(Path("/dev/urandom"), encoding="latin-1"))


@pytest.mark.parametrize("encoding", ["rot13", "hex", "base64", "zlib"])
def test_only_text_encodings_are_accepted(tmp_path: Path, encoding: str):
    path = tmp_path / "t.txt"
    path.write_text("68656c6c6f")
    with pytest.raises(CharRNNError, match=f"'{encoding}' is not a text encoding"):
        load_corpus(path, encoding=encoding)


def test_an_encoding_that_cannot_decode_anything_is_a_clean_error(tmp_path: Path):
    path = tmp_path / "t.txt"
    path.write_text("hello")
    with pytest.raises(CharRNNError, match="is not valid undefined"):
        load_corpus(path, encoding="undefined")
    with pytest.raises(CharRNNError, match="errors must be strict, replace or ignore, not 'surrogateescape'"):
        load_corpus(path, errors="surrogateescape")


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_a_nul_byte_anywhere_is_binary(tmp_path: Path, encoding: str):
    path = tmp_path / "t.txt"
    path.write_bytes(b"plain text " * 20000 + b"\x00 and more")  # past the first 64 KB and 4 MB chunk-free
    with pytest.raises(CharRNNError, match="binary file"):
        load_corpus(path, encoding=encoding)
    path.write_bytes("caf\u00e9 ".encode() * 20000 + b"\x00")  # in a chunk that is decoded
    with pytest.raises(CharRNNError, match="binary file"):
        load_corpus(path, encoding=encoding)


@pytest.mark.parametrize(("data", "encoding", "guess"), [
    ("hello world\n".encode("utf-16"), "utf-8", "utf-16"),
    ("hello world\n".encode("utf-16-le"), "utf-8", "utf-16-le"),
    ("hello world\n".encode("utf-16-be"), "latin-1", "utf-16-be"),
    ("hello world\n".encode("utf-16"), "latin-1", "utf-16"),
    ("\u65e5\u672c\u8a9e\u306e\u6587".encode("utf-16"), "utf-8", "utf-16"),  # no NUL bytes at all
    ("hello world\n".encode("utf-32"), "utf-8", "utf-32"),
])
def test_utf16_and_utf32_are_recognised(tmp_path: Path, data: bytes, encoding: str, guess: str):
    path = tmp_path / "t.txt"
    path.write_bytes(data)
    with pytest.raises(CharRNNError, match=f"looks like UTF-[0-9]+ text, not {encoding}: pass --encoding {guess}$"):
        load_corpus(path, encoding=encoding)
    assert text_of(load_corpus(path, encoding=guess)) == data.decode(guess)
