"""Reading corpora: decoding in chunks, the vocabulary, and the cache of encoded token files.

A corpus of any size is read in fixed-size chunks (memory does not grow with the file), decoded with an
incremental decoder, and encoded once to a token file of uint8/uint16/uint32 ids that training
reads on demand. The cache entry is keyed by the file's path, size, modification time, the decoding settings
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
from charrnn.vocab import Vocab, token_dtype, unknown_error

BOM = b"\xef\xbb\xbf"
CHUNK = 1 << 22  # bytes read at a time
CACHE_FORMAT = 1
TOKENS = "tokens.bin"
META = "meta.json"

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class TokenFile:
    """Token ids stored in a file, read on demand with ``os.pread``: sliced like a 1-D array, and indexed
    by integer arrays whose rows are windows (what batches and evaluation ask for).

    Unlike a memory map, the pages read do not stay mapped into this process: they live in the OS page
    cache (shared and reclaimable), so the process's memory does not grow with the corpus as training
    walks through it."""

    def __init__(self, path: Path, dtype: np.dtype, start: int = 0, stop: int | None = None) -> None:
        self.path, self.dtype = path, np.dtype(dtype)
        self._file = path.open("rb")
        self._fd = self._file.fileno()
        size = os.fstat(self._fd).st_size // self.dtype.itemsize
        self.start, self.stop = start, size if stop is None else stop

    def __len__(self) -> int:
        return self.stop - self.start

    def _read(self, lo: int, hi: int) -> np.ndarray:
        size = self.dtype.itemsize
        raw = os.pread(self._fd, (hi - lo) * size, (self.start + lo) * size)
        return np.frombuffer(raw, dtype=self.dtype)

    def __getitem__(self, key: slice | int | np.ndarray) -> TokenFile | np.ndarray:
        n = len(self)
        if isinstance(key, slice):
            lo, hi, step = key.indices(n)
            if step != 1:
                raise IndexError("TokenFile slices take no step")
            view = TokenFile.__new__(TokenFile)
            view.path, view.dtype, view._file, view._fd = self.path, self.dtype, self._file, self._fd
            view.start, view.stop = self.start + lo, self.start + max(lo, hi)
            return view
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"token {key} out of range for {n} tokens")
            return self._read(i, i + 1)[0]
        idx = np.asarray(key)
        rows = idx.reshape(-1, idx.shape[-1]) if idx.ndim else idx.reshape(1, 1)
        out = np.empty(rows.shape, dtype=self.dtype)
        for r, row in enumerate(rows):  # one read per window
            lo, hi = int(row.min()), int(row.max()) + 1
            out[r] = self._read(lo, hi)[row - lo]
        return out.reshape(idx.shape)

    def __iter__(self) -> Iterator[np.integer]:
        return iter(np.asarray(self))

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        arr = self._read(0, len(self))
        return arr if dtype is None else arr.astype(dtype)


@dataclass(frozen=True)
class Corpus:
    """A whole corpus as token ids (read from the cache on demand), with its vocabulary and a fingerprint."""

    tokens: TokenFile | np.ndarray
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


def _decoder(encoding: str, errors: str) -> codecs.IncrementalDecoder:
    try:
        return codecs.getincrementaldecoder(encoding)(errors)
    except LookupError:
        raise CharRNNError(f"unknown encoding {encoding!r}: use a name Python knows, e.g. utf-8 or latin-1") from None


def _code_points(path: Path, encoding: str, errors: str, digest: hashlib._Hash | None,
                 progress: Progress | None) -> Iterator[np.ndarray]:
    """Yield the file's code points chunk by chunk (uint8 for ASCII chunks, else uint32), hashing its
    bytes into ``digest`` if one is given."""
    _check_file(path)
    decoder = _decoder(encoding, errors)
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
            if digest is not None:
                digest.update(raw)
            skip = len(BOM) if done == 0 and utf8 and raw.startswith(BOM) else 0
            if done == 0 and utf8 and b"\x00" in raw[: 1 << 16]:
                raise CharRNNError(f"{path} looks like a binary file (it contains NUL bytes): give a text file")
            pending = len(decoder.getstate()[0])
            if utf8 and not pending and raw.isascii():  # ASCII is valid UTF-8 as it stands: no decoding
                done += len(raw)
                if progress is not None:
                    progress(done, total)
                if not raw:
                    return
                yield np.frombuffer(raw, dtype=np.uint8)
                continue
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
               progress: Progress | None, digest: hashlib._Hash | None) -> int:
    """Write the file's token ids to ``out``; returns the number of tokens."""
    points_of = np.array([ord(c) for c in vocab.chars], dtype=np.int64)
    dtype = token_dtype(len(vocab))
    size = int(points_of.max()) + 2  # the last entry stands for every code point beyond the vocabulary
    lut = np.zeros(size, dtype=dtype)
    lut[points_of] = np.arange(len(vocab))
    known = np.zeros(size, dtype=bool)
    known[points_of] = True
    lut8, known8 = np.zeros(256, dtype=dtype), np.zeros(256, dtype=bool)  # for ASCII chunks: 256-entry tables
    small = points_of[points_of < 256]
    lut8[small], known8[small] = lut[small], True
    n, unknown, examples = 0, 0, {}
    with out.open("wb") as f:
        for points in _code_points(path, encoding, errors, digest, progress):
            if points.dtype == np.uint8:
                ok, ids = known8[points], lut8[points]
            else:
                clipped = np.minimum(points, np.uint32(size - 1))
                ok, ids = known[clipped], lut[clipped]
            if not ok.all():
                unknown += int((~ok).sum())
                if len(examples) < 5:
                    examples.update(dict.fromkeys(chr(p) for p in points[~ok][:1000]))
            elif not unknown:
                f.write(ids.tobytes())
            n += len(ids)
        f.flush()
        os.fsync(f.fileno())
    if unknown:
        raise unknown_error(str(path), unknown, examples)
    if n == 0:
        raise CharRNNError(f"{path} is empty or only whitespace: give a file with text to learn from")
    return n


def _cache_key(path: Path, encoding: str, errors: str, vocab: Vocab | None) -> str:
    st = path.stat()
    ident = [CACHE_FORMAT, str(path.resolve()), st.st_size, st.st_mtime_ns, codecs.lookup(encoding).name, errors,
             None if vocab is None else "".join(vocab.chars)]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:32]


def _open_cached(entry: Path, path: Path, encoding: str, errors: str) -> Corpus | None:
    try:
        meta = json.loads((entry / META).read_text(encoding="utf-8"))
        vocab = Vocab(meta["vocab"])
        tokens = TokenFile(entry / TOKENS, token_dtype(len(vocab)))
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
    _decoder(encoding, errors)  # an unknown encoding is an error before anything else
    key = _cache_key(path, encoding, errors, vocab)
    entry = cache_root() / "corpora" / key
    cached = _open_cached(entry, path, encoding, errors)
    if cached is not None:
        return cached
    digest = None
    if vocab is None:
        counts, digest = scan(path, encoding, errors, progress)
        vocab = vocab_of(counts)
    hasher = hashlib.sha256() if digest is None else None  # hash in whichever pass reads the file first
    tmp = entry.with_name(f".tmp-{key}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        n = _encode_to(path, vocab, encoding, errors, tmp / TOKENS, progress, hasher)
        meta = {"format": CACHE_FORMAT, "source": str(path.resolve()), "tokens": n,
                "sha256": digest or hasher.hexdigest(), "vocab": vocab.chars}
        (tmp / META).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        if _open_cached(entry, path, encoding, errors) is None:  # absent or stale
            shutil.rmtree(entry, ignore_errors=True)
            try:
                tmp.rename(entry)
            except OSError:
                pass  # another process (a data-parallel worker) stored the same encoding first
    except OSError as e:
        raise CharRNNError(f"cannot write the corpus cache in {cache_root()}: {e.strerror}; "
                           "set CHARRNN_CACHE_DIR to a writable directory") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    opened = _open_cached(entry, path, encoding, errors)
    assert opened is not None
    return opened
