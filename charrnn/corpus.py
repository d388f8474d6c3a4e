"""Reading corpora: decoding in chunks, the vocabulary, and the cache of encoded token files.

A corpus of any size is read in fixed-size chunks (memory does not grow with the file), decoded with an
incremental decoder, and encoded once to a token file of uint8/uint16/uint32 ids that training
memory-maps. The cache entry is keyed by the file's path, size, modification time, the decoding settings
and the vocabulary, so an edited corpus is encoded again and an unchanged one is reused at once.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab, describe_chars, token_dtype

BOM = b"\xef\xbb\xbf"
CHUNK = 1 << 24  # bytes read at a time
CACHE_FORMAT = 1
TOKENS = "tokens.bin"
META = "meta.json"

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


@dataclass(frozen=True)
class Corpus:
    """A whole corpus as token ids (usually memory-mapped), with its vocabulary and a fingerprint."""

    tokens: np.ndarray
    vocab: Vocab
    path: Path
    sha256: str
    encoding: str = "utf-8"
    errors: str = "strict"


def cache_root() -> Path:
    """$CHARRNN_CACHE_DIR, else $XDG_CACHE_HOME/charrnn, else ~/.cache/charrnn."""
    if os.environ.get("CHARRNN_CACHE_DIR"):
        return Path(os.environ["CHARRNN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charrnn"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CharRNNError(f"{path} does not exist: give the path of a text file")
    if path.is_dir():
        raise CharRNNError(f"{path} is a directory: give the path of a text file")


def _code_points(path: Path, encoding: str, errors: str, digest: hashlib._Hash,
                 progress: Progress | None) -> Iterator[np.ndarray]:
    """Yield the file's code points chunk by chunk (uint8 for ASCII chunks, else uint32), hashing its bytes."""
    _check_file(path)
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors)
    except LookupError:
        raise CharRNNError(f"unknown encoding {encoding!r}: use a name Python knows, e.g. utf-8 or latin-1") from None
    utf8 = codecs.lookup(encoding).name == "utf-8"
    total, done = path.stat().st_size, 0
    try:
        f = path.open("rb")
    except OSError as e:
        raise CharRNNError(f"cannot read {path}: {e.strerror}") from None
    with f:
        while True:
            try:
                raw = f.read(CHUNK)
            except OSError as e:
                raise CharRNNError(f"cannot read {path}: {e.strerror}") from None
            digest.update(raw)
            skip = len(BOM) if done == 0 and utf8 and raw.startswith(BOM) else 0
            if done == 0 and utf8 and b"\x00" in raw[: 1 << 16]:
                raise CharRNNError(f"{path} looks like a binary file (it contains NUL bytes): give a text file")
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(raw[skip:], final=not raw)
            except UnicodeDecodeError as e:
                offset = done + skip - pending + e.start  # e.object is the decoder's buffer + this chunk
                bad = e.object[e.start]
                raise CharRNNError(
                    f"{path} is not valid {encoding}: bad byte 0x{bad:02x} at byte offset {offset}; convert "
                    "the file, or pass --encoding (e.g. latin-1) or --errors replace"
                ) from None
            done += len(raw)
            if progress is not None:
                progress(done, total)
            if text:
                if text.isascii():
                    yield np.frombuffer(text.encode("ascii"), dtype=np.uint8)
                else:
                    yield np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            if not raw:
                return


def scan(path: Path, encoding: str = "utf-8", errors: str = "strict",
         progress: Progress | None = None) -> tuple[np.ndarray, str]:
    """Count every code point of a file: (counts indexed by code point, sha256 of the bytes)."""
    digest = hashlib.sha256()
    counts = np.zeros(128, dtype=np.int64)
    for points in _code_points(path, encoding, errors, digest, progress):
        c = np.bincount(points)
        if len(c) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(c) - len(counts), dtype=np.int64)])
        counts[: len(c)] += c
    if not any(counts[p] and not chr(p).isspace() for p in np.flatnonzero(counts)):
        raise CharRNNError(f"{path} is empty or only whitespace: give a file with text to learn from")
    return counts, digest.hexdigest()


def vocab_of(counts: np.ndarray) -> Vocab:
    return Vocab.from_code_points(np.flatnonzero(counts))


def _encode_to(path: Path, vocab: Vocab, encoding: str, errors: str, out: Path,
               progress: Progress | None) -> tuple[int, str]:
    """Write the file's token ids to ``out``; returns (number of tokens, sha256 of the file)."""
    points_of = np.array([ord(c) for c in vocab.chars], dtype=np.int64)
    lut = np.full(int(points_of.max()) + 2, -1, dtype=np.int64)  # the last entry stands for "beyond"
    lut[points_of] = np.arange(len(vocab))
    dtype = token_dtype(len(vocab))
    digest, n, unknown, examples = hashlib.sha256(), 0, 0, {}
    with out.open("wb") as f:
        for points in _code_points(path, encoding, errors, digest, progress):
            ids = lut[np.minimum(points, np.uint32(len(lut) - 1))]
            bad = ids < 0
            if bad.any():
                unknown += int(bad.sum())
                if len(examples) < 5:
                    examples.update(dict.fromkeys(chr(p) for p in points[bad][:1000]))
                continue
            if not unknown:
                f.write(ids.astype(dtype).tobytes())
            n += len(ids)
        f.flush()
        os.fsync(f.fileno())
    if unknown:
        raise CharRNNError(f"{path} has {unknown} character(s) the model has never seen: "
                           f"{describe_chars(examples)}; remove them, or train on text that contains them")
    if n == 0:
        raise CharRNNError(f"{path} is empty or only whitespace: give a file with text to learn from")
    return n, digest.hexdigest()


def _cache_key(path: Path, encoding: str, errors: str, vocab: Vocab | None) -> str:
    st = path.stat()
    ident = [CACHE_FORMAT, str(path.resolve()), st.st_size, st.st_mtime_ns, codecs.lookup(encoding).name, errors,
             None if vocab is None else "".join(vocab.chars)]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:32]


def _open_cached(entry: Path, path: Path, encoding: str, errors: str) -> Corpus | None:
    try:
        meta = json.loads((entry / META).read_text(encoding="utf-8"))
        vocab = Vocab(meta["vocab"])
        tokens = np.memmap(entry / TOKENS, dtype=token_dtype(len(vocab)), mode="r")
        if len(tokens) != meta["tokens"]:
            return None
    except (OSError, ValueError, KeyError, CharRNNError):
        return None
    return Corpus(tokens, vocab, path, meta["sha256"], encoding, errors)


def load_corpus(path: Path, encoding: str = "utf-8", errors: str = "strict", vocab: Vocab | None = None,
                progress: Progress | None = None) -> Corpus:
    """A corpus encoded with its own vocabulary (the sorted set of its characters) or with a given one
    (characters outside it are an error that counts and shows them), from the cache when unchanged."""
    _check_file(path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise CharRNNError(f"unknown encoding {encoding!r}: use a name Python knows, e.g. utf-8 or latin-1") from None
    key = _cache_key(path, encoding, errors, vocab)
    entry = cache_root() / "corpora" / key
    cached = _open_cached(entry, path, encoding, errors)
    if cached is not None:
        return cached
    digest = None
    if vocab is None:
        counts, digest = scan(path, encoding, errors, progress)
        vocab = vocab_of(counts)
    tmp = entry.with_name(f".tmp-{key}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        n, digest2 = _encode_to(path, vocab, encoding, errors, tmp / TOKENS, progress)
        meta = {"format": CACHE_FORMAT, "source": str(path.resolve()), "tokens": n, "sha256": digest or digest2,
                "vocab": vocab.chars}
        (tmp / META).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        shutil.rmtree(entry, ignore_errors=True)
        tmp.rename(entry)
    except OSError as e:
        raise CharRNNError(f"cannot write the corpus cache in {cache_root()}: {e.strerror}; "
                           "set CHARRNN_CACHE_DIR to a writable directory") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    opened = _open_cached(entry, path, encoding, errors)
    assert opened is not None
    return opened
