"""Reading corpora: decoding in chunks, the vocabulary, and the cache of encoded token files.

A corpus of any size is read in fixed-size chunks (memory does not grow with the file), decoded with an
incremental decoder, and encoded once to a token file of uint8/uint16/uint32 ids that training reads on demand.
A file that is not a regular file (a pipe, ``<(cmd)``, a device) can be read only once: it is copied (at most
MAX_STREAM bytes) to a private temporary file first, and its encoding is not kept.

A corpus may also be several regular files (``load_corpus([a, b, ...])``, listed by sources.py): their texts one
after another, each followed by a newline if it does not end with one, cached as one entry and fingerprinted by
the list of their paths and SHA-256s. Characters outside a given vocabulary are an error, or with
``skip_unknown`` are left out while encoding and counted (in memory that does not grow with the text).

The cache (CHARRNN_CACHE_DIR, see ``cache_root``) must never make training or evaluation use text other than the
files'. An entry is keyed by the resolved path (or list of paths), the decoding settings, the vocabulary and
whether unknown characters are left out, and its meta.json (``CacheMeta``, validated on read) records what it
was made from. On every open:

- each source's size, mtime, ctime and inode must equal those recorded when encoding finished (restoring the
  mtime after an edit does not restore the ctime), and they are recorded only if they did not change while the
  file was read (else it is read again, up to ATTEMPTS times);
- an entry made less than RACY_NS after the file's last change (a later change could keep the same timestamps,
  as in git's "racily clean" index) re-hashes the file's bytes, then records that it checked;
- the vocabulary must equal the one asked for exactly (or, for a corpus's own vocabulary, be sorted and
  distinct); the token file must have exactly the recorded size;
- a CRC-32 of every BLOCK bytes of the token file is recorded at encode time. Opening checks SAMPLED_BLOCKS of
  them (first, last and evenly spaced: 16 MiB, a few milliseconds), not all: checking 1 GB on every run would
  cost about a second. ``load_corpus(..., verify=True)`` checks every block and re-hashes the source file's bytes
  instead of trusting the recorded SHA-256 (for eval and --resume, which must be certain it is the same
  text). Reads also check that every token id is below the vocabulary size, so a corrupt block that was not
  sampled gives a clear error rather than an out-of-range index.

Any problem with an entry means it is encoded again, never an error. Writing goes to a temporary directory
``.tmp-KEY-PID-RAND-HOST`` renamed into place; it is removed on any exception, KeyboardInterrupt and SystemExit
included, and those left by a killed process (dead pid on this host, or older than STALE_AGE) are removed the next
time the cache is used. A cache directory that cannot be written is a ``CacheError``, not a changed corpus.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from charrnn.errors import CharRNNError
from charrnn.vocab import Tally, UnknownCharacters, Unseen, Vocab, token_dtype

BOM = b"\xef\xbb\xbf"
CHUNK = 1 << 22  # bytes read at a time
CACHE_FORMAT = 3  # 3: several files, and entries with unknown characters left out
TOKENS = "tokens.bin"
META = "meta.json"
ERRORS = ("strict", "replace", "ignore")
BLOCK = 1 << 20  # token-file bytes per CRC-32
SAMPLED_BLOCKS = 16  # blocks checked on an ordinary open
RACY_NS = 2 * 10**9  # a file changed this close to its encoding is re-hashed when next opened
ATTEMPTS = 3  # reads of a file that keeps changing while being read
MAX_STREAM = 1 << 30  # bytes read from a pipe or device
STALE_AGE = 24 * 3600  # seconds after which any temporary cache directory is abandoned
PROBE = 1 << 13  # bytes of a file read to tell whether it looks like text (git looks at the first 8000)
NEWLINE = np.array([10], dtype=np.uint8)

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class CacheError(CharRNNError):
    """The corpus cache cannot be written: a problem with the cache directory, not with the corpus."""


READ_CHUNK = 1 << 30  # bytes a TokenFile asks the OS for at once


class TokenFile:
    """Token ids stored in a file, read on demand with ``os.pread``: sliced like a 1-D array, and indexed
    by integer arrays whose rows are windows (what batches and evaluation ask for).

    Unlike a memory map, the pages read do not stay mapped into this process: they live in the OS page
    cache (shared and reclaimable), so the process's memory does not grow with the corpus as training
    walks through it."""

    def __init__(self, path: Path, dtype: np.dtype, start: int = 0, stop: int | None = None,
                 vocab_size: int | None = None) -> None:
        self.path, self.dtype, self.vocab_size = path, np.dtype(dtype), vocab_size
        self._file = path.open("rb")
        self._fd = self._file.fileno()
        size = os.fstat(self._fd).st_size // self.dtype.itemsize
        self.start, self.stop = start, size if stop is None else stop

    def __len__(self) -> int:
        return self.stop - self.start

    def _read(self, lo: int, hi: int) -> np.ndarray:
        ids = np.empty(hi - lo, dtype=self.dtype)
        into, at = memoryview(ids).cast("B"), (self.start + lo) * self.dtype.itemsize
        done = 0
        while done < len(into):  # one read returns at most ~2 GiB on Linux
            raw = os.pread(self._fd, min(READ_CHUNK, len(into) - done), at + done)
            if not raw:
                raise CharRNNError(f"the corpus cache {self.path.parent} is cut short: delete that directory and run "
                                   "again")
            into[done : done + len(raw)] = raw
            done += len(raw)
        if self.vocab_size is not None and len(ids) and int(ids.max()) >= self.vocab_size:
            # a last line of defence (the cache checks sampled blocks on open): a clear error, not an IndexError
            raise CharRNNError(f"the corpus cache {self.path.parent} is corrupt (token id {int(ids.max())} is not "
                               f"below the vocabulary size {self.vocab_size}): delete that directory and run again")
        return ids

    def __getitem__(self, key: slice | int | np.ndarray) -> TokenFile | np.ndarray:
        n = len(self)
        if isinstance(key, slice):
            lo, hi, step = key.indices(n)
            if step != 1:
                raise IndexError("TokenFile slices take no step")
            view = TokenFile.__new__(TokenFile)
            view.path, view.dtype, view._file, view._fd = self.path, self.dtype, self._file, self._fd
            view.vocab_size = self.vocab_size
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


COUNT_BLOCK = 1 << 24  # tokens counted at a time


def token_counts(tokens: TokenFile | np.ndarray, vocab_size: int) -> np.ndarray:
    """How often each id occurs in ``tokens``: (vocab_size,) int64, read in blocks of bounded size."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for lo in range(0, len(tokens), COUNT_BLOCK):
        counts += np.bincount(np.asarray(tokens[lo : lo + COUNT_BLOCK]), minlength=vocab_size)[:vocab_size]
    return counts


@dataclass(frozen=True)
class Corpus:
    """A whole corpus as token ids (read from the cache on demand), with its vocabulary and a fingerprint: the
    SHA-256 of the file's bytes, or for a corpus of several files, of the list of their paths and SHA-256s."""

    tokens: TokenFile | np.ndarray
    vocab: Vocab
    path: Path  # the file, or what a corpus of several files was named by (its folder, or the first file)
    sha256: str
    encoding: str = "utf-8"
    errors: str = "strict"
    files: tuple[tuple[Path, str], ...] = ()  # a corpus of several files: each file (absolute) and its SHA-256
    given: tuple[Path, ...] = ()  # ... and the files and folders it was named by
    skipped: Unseen | None = None  # characters outside the vocabulary left out (``skip_unknown``)


def files_sha256(files: Iterable[tuple[Path, str]]) -> str:
    """The fingerprint of a corpus of several files: the SHA-256 of the list of their paths and SHA-256s."""
    listing = [[str(path), sha] for path, sha in files]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def cache_root() -> Path:
    """$CHARRNN_CACHE_DIR, else $XDG_CACHE_HOME/charrnn, else ~/.cache/charrnn."""
    if os.environ.get("CHARRNN_CACHE_DIR"):
        return Path(os.environ["CHARRNN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charrnn"


def _cache_error(e: OSError) -> CacheError:
    return CacheError(f"cannot write the corpus cache in {cache_root()}: {e.strerror or e}; set CHARRNN_CACHE_DIR "
                      "to a writable directory (with room for the encoded corpus)")


def _check_file(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CharRNNError(f"{path} does not exist: give the path of a text file") from None
    except OSError as e:
        raise CharRNNError(f"cannot read {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CharRNNError(f"{path} is a directory: give the path of a text file")
    return st


def _codec(encoding: str) -> codecs.CodecInfo:
    try:
        info = codecs.lookup(encoding)
    except (LookupError, ValueError, TypeError):
        raise CharRNNError(f"unknown encoding {encoding!r}: use a name Python knows, e.g. utf-8 or latin-1") from None
    if not info._is_text_encoding or info.incrementaldecoder is None:
        raise CharRNNError(f"{encoding!r} is not a text encoding (it does not turn bytes into text): use one like "
                           "utf-8 or latin-1")
    return info


def _decoder(encoding: str, errors: str) -> codecs.IncrementalDecoder:
    if errors not in ERRORS:
        raise CharRNNError(f"errors must be strict, replace or ignore, not {errors!r}")
    return _codec(encoding).incrementaldecoder(errors)


def _wide(encoding: str) -> bool:
    return _codec(encoding).name.startswith(("utf-16", "utf-32"))


def _looks_wide(head: bytes) -> str | None:
    """The encoding a file starting with ``head`` seems to be in, if it is UTF-16 or UTF-32."""
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "utf-32"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    even, odd = head[0:512:2], head[1:512:2]
    if len(odd) >= 4 and odd.count(0) == len(odd) and 0 not in even:
        return "utf-16-le"  # ASCII with a NUL after every letter
    if len(even) >= 4 and even.count(0) == len(even) and 0 not in odd[: len(even)]:
        return "utf-16-be"
    return None


def _wide_hint(what: str, head: bytes, encoding: str) -> str | None:
    guess = None if _wide(encoding) else _looks_wide(head)
    if guess is None:
        return None
    return f"{what} looks like {guess.upper()[:6]} text, not {encoding}: pass --encoding {guess}"


def _binary_error(what: str, head: bytes, encoding: str) -> CharRNNError:
    hint = _wide_hint(what, head, encoding)
    return CharRNNError(hint or f"{what} looks like a binary file (it contains NUL bytes): give a text file")


def _decode_error(what: str, e: UnicodeError, offset: int | None, head: bytes, encoding: str) -> CharRNNError:
    hint = _wide_hint(what, head, encoding)
    if hint:
        return CharRNNError(hint)
    if isinstance(e, UnicodeDecodeError) and offset is not None and isinstance(e.object, bytes) \
            and e.start < len(e.object):
        where = f"bad byte 0x{e.object[e.start]:02x} at byte offset {offset}"
    else:
        where = str(e.reason if isinstance(e, UnicodeDecodeError) else e)
    return CharRNNError(f"{what} is not valid {encoding}: {where}; convert the file, or pass --encoding (e.g. "
                        "latin-1) or --errors replace")


def _surrogates(points: np.ndarray, what: str, encoding: str, errors: str) -> np.ndarray:
    """Lone surrogates (which some decoders, e.g. utf-7, let through) are not characters: they cannot be
    written as UTF-8 (the checkpoint, the generated text). An error, or replaced or dropped per ``errors``."""
    lone = (points >= 0xD800) & (points < 0xE000)
    if not lone.any():
        return points
    if errors == "replace":
        return np.where(lone, np.uint32(0xFFFD), points)
    if errors == "ignore":
        return points[~lone]
    raise CharRNNError(f"{what} decoded as {encoding} contains a lone surrogate (U+{int(points[lone][0]):04X}), "
                       "which is not a character: fix the file, or pass --errors replace")


def _code_points(path: Path, encoding: str, errors: str, digest: hashlib._Hash | None,
                 progress: Progress | None, size: int, what: str | None = None) -> Iterator[np.ndarray]:
    """Yield the code points of the first ``size`` bytes of a file chunk by chunk (uint8 for ASCII chunks, else
    uint32), hashing those bytes into ``digest`` if one is given. Messages name the file ``what``.

    Exactly ``size`` bytes are read (or fewer if the file shrinks): a file that grows while it is read is not
    followed forever; the caller compares the file's stamp before and after."""
    what = what or str(path)
    decoder = _decoder(encoding, errors)
    utf8 = _codec(encoding).name == "utf-8"
    done, head = 0, b""
    try:
        f = path.open("rb")
    except OSError as e:
        raise CharRNNError(f"cannot read {what}: {e.strerror or e}") from None
    with f:
        while True:
            try:
                raw = f.read(min(CHUNK, size - done))
            except OSError as e:
                raise CharRNNError(f"cannot read {what}: {e.strerror or e}") from None
            if digest is not None:
                digest.update(raw)
            head = head or raw[:512]
            skip = len(BOM) if done == 0 and utf8 and raw.startswith(BOM) else 0
            pending = len(decoder.getstate()[0])
            if utf8 and not pending and raw.isascii():  # ASCII is valid UTF-8 as it stands: no decoding
                if b"\x00" in raw:
                    raise _binary_error(what, head, encoding)
                done += len(raw)
                if progress is not None:
                    progress(done, size)
                if not raw:
                    return
                yield np.frombuffer(raw, dtype=np.uint8)
                continue
            try:
                text = decoder.decode(raw[skip:], final=not raw)
            except UnicodeError as e:
                # for byte decoders, e.object is the decoder's buffer + this chunk
                offset = done + skip - pending + e.start if isinstance(e, UnicodeDecodeError) else None
                raise _decode_error(what, e, offset, head, encoding) from None
            if "\x00" in text:
                raise _binary_error(what, head, encoding)
            done += len(raw)
            if progress is not None:
                progress(done, size)
            if text:
                if text.isascii():
                    yield np.frombuffer(text.encode("ascii"), dtype=np.uint8)
                else:
                    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
                    yield _surrogates(points, what, encoding, errors)
            if not raw:
                return


def _points(parts: Sequence[tuple[Path, str, int]], encoding: str, errors: str,
            digests: Sequence[hashlib._Hash] | None, progress: Progress | None, joined: bool) -> Iterator[np.ndarray]:
    """The code points of several files one after another: ``parts`` holds each file, its name for messages, and
    how many of its bytes to read; ``digests``, one per file. With ``joined``, a newline follows each file whose
    text does not end with one (an empty file adds nothing)."""
    total, base = sum(size for _, _, size in parts), 0
    for i, (path, what, size) in enumerate(parts):
        step = None if progress is None else (lambda done, _, base=base: progress(base + done, total))
        last = None
        for points in _code_points(path, encoding, errors, None if digests is None else digests[i], step, size, what):
            last = points[-1] if len(points) else last
            yield points
        if joined and last is not None and last != 10:
            yield NEWLINE
        base += size


def _count(points: Iterable[np.ndarray], what: str) -> np.ndarray:
    """Occurrences of every code point (indexed by code point)."""
    counts = np.zeros(128, dtype=np.int64)
    for chunk in points:
        c = np.bincount(chunk)
        if len(c) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(c) - len(counts), dtype=np.int64)])
        counts[: len(c)] += c
    if not any(counts[p] and not chr(p).isspace() for p in np.flatnonzero(counts)):
        raise CharRNNError(f"{what} is empty or only whitespace: give a file with text to learn from")
    return counts


def _regular(path: Path) -> os.stat_result:
    st = _check_file(path)
    if not stat.S_ISREG(st.st_mode):
        raise CharRNNError(f"{path} is not a regular file (a pipe or a device) and can be read only once: save "
                           "it to a file first and give that file")
    return st


def scan(path: Path | Sequence[Path], encoding: str = "utf-8", errors: str = "strict",
         progress: Progress | None = None, name: Path | None = None) -> tuple[np.ndarray, str]:
    """Count every code point of a file, or of several files joined as ``load_corpus`` joins them: (counts indexed
    by code point, the corpus's fingerprint). ``name`` names several files in messages.

    Only for regular files: whoever scans reads the file again (``load_corpus``), and a pipe can be read once."""
    files, several = _as_files(path)
    _decoder(encoding, errors)
    parts = [(f, str(f), _regular(f).st_size) for f in files]
    digests = [hashlib.sha256() for _ in files]
    counts = _count(_points(parts, encoding, errors, digests, progress, several), str(name or files[0]))
    return counts, _fingerprint(files, [d.hexdigest() for d in digests], several)


def _as_files(path: Path | Sequence[Path]) -> tuple[tuple[Path, ...], bool]:
    """(the files, whether they are several) for a path or a list of paths."""
    if isinstance(path, Path):
        return (path,), False
    files = tuple(Path(p) for p in path)
    if not files:
        raise CharRNNError("no files to read: give a text file or a folder of text files")
    return files, True


def _fingerprint(files: Sequence[Path], hashes: Sequence[str], several: bool) -> str:
    return files_sha256(zip([f.absolute() for f in files], hashes, strict=True)) if several else hashes[0]


def text_problem(path: Path, encoding: str, errors: str) -> str | None:
    """Why a regular file does not look like text in ``encoding`` (judged by its first PROBE bytes: NUL bytes,
    UTF-16 or UTF-32 text, bytes that do not decode), or None. Reading the whole file finds any later problem."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # never waits, even if the file became a pipe
    except OSError as e:
        raise CharRNNError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "not a regular file"
        head = os.read(fd, PROBE)
    except OSError as e:
        raise CharRNNError(f"cannot read {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if _wide_hint(str(path), head, encoding):
        return f"{_looks_wide(head)} text"
    if b"\x00" in head and not _wide(encoding):
        return "binary"
    try:
        _decoder(encoding, errors).decode(head, final=False)
    except UnicodeError:
        return f"not {encoding}"
    return None


def vocab_of(counts: np.ndarray) -> Vocab:
    return Vocab.from_code_points(np.flatnonzero(counts))


class _BlockSums:
    """CRC-32 of every BLOCK bytes of a stream written in pieces of any size."""

    def __init__(self, block: int) -> None:
        self.block, self.sums, self.crc, self.fill = block, [], 0, 0

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view):
            take = min(self.block - self.fill, len(view))
            self.crc, self.fill, view = zlib.crc32(view[:take], self.crc), self.fill + take, view[take:]
            if self.fill == self.block:
                self.sums.append(self.crc)
                self.crc, self.fill = 0, 0

    def finish(self) -> list[int]:
        return self.sums + ([self.crc] if self.fill else [])


def _encode_to(points: Iterable[np.ndarray], vocab: Vocab, out: Path, what: str, sums: _BlockSums,
               skip: bool) -> tuple[int, Unseen | None]:
    """Write the token ids of ``points`` to ``out``: (the number of tokens, the characters outside the vocabulary).
    Those are an error, or with ``skip`` left out."""
    points_of = np.array([ord(c) for c in vocab.chars], dtype=np.int64)
    dtype = token_dtype(len(vocab))
    top = int(points_of.max()) + 2  # the last entry stands for every code point beyond the vocabulary
    lut = np.zeros(top, dtype=dtype)
    lut[points_of] = np.arange(len(vocab))
    known = np.zeros(top, dtype=bool)
    known[points_of] = True
    lut8, known8 = np.zeros(256, dtype=dtype), np.zeros(256, dtype=bool)  # for ASCII chunks: 256-entry tables
    small = points_of[points_of < 256]
    lut8[small], known8[small] = lut[small], True
    n, unknown = 0, Tally()
    with out.open("wb") as f:
        for chunk in points:
            if chunk.dtype == np.uint8:
                ok, ids = known8[chunk], lut8[chunk]
            else:
                clipped = np.minimum(chunk, np.uint32(top - 1))
                ok, ids = known[clipped], lut[clipped]
            if not ok.all():
                unknown.add(chunk[~ok])
                ids = ids[ok]
            if skip or not unknown.count:  # once one is found (and not skipped) the rest is only counted
                data = ids.tobytes()
                f.write(data)
                sums.update(data)
            n += len(ids)
        f.flush()
        os.fsync(f.fileno())
    unseen = unknown.result()
    if unseen is not None and not skip:
        raise UnknownCharacters(what, unseen)
    if n == 0 and unseen is not None:
        raise CharRNNError(f"{what} has only characters the model has never seen ({unseen.count:,} left out): "
                           "nothing is left to score")
    if n == 0:
        raise CharRNNError(f"{what} is empty or only whitespace: give a file with text to learn from")
    return n, unseen


@dataclass(frozen=True)
class CacheMeta:
    """What a cache entry was made from (meta.json). JSON escapes every non-ASCII character, so odd file
    names (undecodable bytes as lone surrogates) are stored and read back exactly."""

    sources: tuple[str, ...]  # the resolved paths of the files
    joined: bool  # several files, a newline after each (see _points)
    stamp: tuple[int, ...]  # each file's (size, mtime_ns, ctime_ns, inode) while it was read, one after another
    checked_ns: int  # when the files' contents were last known to match (time.time_ns())
    encoding: str  # the codec's canonical name
    errors: str
    skip_unknown: bool  # characters outside the vocabulary were left out
    tokens: int
    hashes: tuple[str, ...]  # SHA-256 of each file's bytes
    vocab: tuple[str, ...]
    block: int
    sums: tuple[int, ...]  # CRC-32 of each block of the token file
    unseen: tuple[int, int]  # characters left out: occurrences, distinct ones
    unseen_examples: tuple[str, ...]  # ... the first few of them
    format: int = CACHE_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CacheMeta:
        """Parse and check every field; anything unexpected is a ValueError (the entry is then re-made)."""
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("format") != CACHE_FORMAT or set(raw) != set(cls.__dataclass_fields__):
            raise ValueError("not a cache entry of this format")
        ints = [raw["checked_ns"], raw["tokens"], raw["block"], *raw["stamp"], *raw["sums"], *raw["unseen"]]
        strs = [*raw["sources"], raw["encoding"], raw["errors"], *raw["hashes"], *raw["vocab"], *raw["unseen_examples"]]
        if not all(type(v) is int for v in ints) or not all(type(v) is str for v in strs) \
                or type(raw["joined"]) is not bool or type(raw["skip_unknown"]) is not bool \
                or raw["block"] < 1 or raw["tokens"] < 1 or len(raw["unseen"]) != 2 \
                or len(raw["hashes"]) != len(raw["sources"]) or not raw["sources"]:
            raise ValueError("a cache entry field has the wrong type")
        return cls(**{**raw, **{k: tuple(raw[k]) for k in ("sources", "stamp", "hashes", "vocab", "sums", "unseen",
                                                            "unseen_examples")}})


@dataclass(frozen=True)
class _Ask:
    """What ``load_corpus`` was asked for."""

    files: tuple[Path, ...]
    several: bool  # a corpus of several files (joined, fingerprinted by their list), even if there is one
    encoding: str
    errors: str
    vocab: Vocab | None
    skip: bool
    given: tuple[Path, ...]

    @property
    def name(self) -> Path:
        return self.given[0] if self.several and self.given else self.files[0]

    def key(self) -> str:
        sources = [str(f.resolve()) for f in self.files] if self.several else str(self.files[0].resolve())
        ident = [CACHE_FORMAT, sources, _codec(self.encoding).name, self.errors,
                 None if self.vocab is None else "".join(self.vocab.chars), self.skip]
        return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:32]

    def corpus(self, tokens: TokenFile, vocab: Vocab, hashes: Sequence[str], unseen: Unseen | None,
               name: Path | None = None) -> Corpus:
        files = tuple(zip([f.absolute() for f in self.files], hashes, strict=True)) if self.several else ()
        return Corpus(tokens, vocab, name or self.name, _fingerprint(self.files, hashes, self.several), self.encoding,
                      self.errors, files, self.given if self.several else (), unseen)


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _stamps(sts: Sequence[os.stat_result]) -> tuple[int, ...]:
    return tuple(n for st in sts for n in _stamp(st))


def _file_sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of a file's bytes (None if it cannot be read)."""
    return _file_sha256(path)


def _blocks_ok(fd: int, meta: CacheMeta, everything: bool) -> bool:
    n = len(meta.sums)
    picks = range(n) if everything or n <= SAMPLED_BLOCKS else sorted(
        {round(i * (n - 1) / (SAMPLED_BLOCKS - 1)) for i in range(SAMPLED_BLOCKS)})
    return all(zlib.crc32(os.pread(fd, meta.block, i * meta.block)) == meta.sums[i] for i in picks)


def _open_cached(entry: Path, ask: _Ask, sts: Sequence[os.stat_result], verify: bool) -> Corpus | None:
    """The entry's corpus if it is exactly the files' text encoded as asked, else None."""
    try:
        meta = CacheMeta.from_json((entry / META).read_text(encoding="utf-8"))
        own = Vocab(list(meta.vocab))
    except (OSError, ValueError, KeyError, TypeError, CharRNNError):
        return None
    wanted = (tuple(str(f.resolve()) for f in ask.files), ask.several, _stamps(sts), _codec(ask.encoding).name,
              ask.errors, ask.skip)
    if (meta.sources, meta.joined, meta.stamp, meta.encoding, meta.errors, meta.skip_unknown) != wanted:
        return None
    if list(meta.vocab) != (sorted(set(meta.vocab)) if ask.vocab is None else ask.vocab.chars):
        return None
    dtype = token_dtype(len(own))
    try:
        tokens = TokenFile(entry / TOKENS, dtype, vocab_size=len(own))
        size = os.fstat(tokens._fd).st_size
        if size != meta.tokens * dtype.itemsize or len(meta.sums) != -(-size // meta.block) \
                or not _blocks_ok(tokens._fd, meta, verify):
            return None
    except OSError:
        return None
    changed = max(max(st.st_mtime_ns, st.st_ctime_ns) for st in sts)
    if verify or changed >= meta.checked_ns - RACY_NS:
        if [_file_sha256(f) for f in ask.files] != list(meta.hashes):
            return None
        _mark_checked(entry, meta, changed)
    unseen = Unseen(*meta.unseen, meta.unseen_examples) if meta.unseen[0] else None
    return ask.corpus(tokens, own, meta.hashes, unseen)


def _mark_checked(entry: Path, meta: CacheMeta, changed: int) -> None:
    """Record that the files' bytes were just seen to match, so that later opens need not re-hash them
    (best effort: a read-only cache re-hashes instead). ``changed``: the files' last change (ns)."""
    now = time.time_ns()
    if changed >= now - RACY_NS:
        return  # still too close to the last change to vouch for the timestamps
    tmp = entry / f".{META}.{os.getpid()}.tmp"
    try:
        tmp.write_text(CacheMeta(**{**asdict(meta), "checked_ns": now}).to_json(), encoding="utf-8")
        os.replace(tmp, entry / META)
    except OSError:
        tmp.unlink(missing_ok=True)


def _tmp_name(key: str) -> str:
    return f".tmp-{key}-{os.getpid()}-{secrets.token_hex(4)}-{socket.gethostname()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (owned by someone else)
    return True


def _newest_mtime(path: Path) -> float:
    try:
        return max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.iterdir()])
    except OSError:
        return time.time()


def clean_stale(root: Path) -> None:
    """Remove the temporary directories of encodings that never finished (a killed process): those of a
    process on this host that no longer exists, and any older than STALE_AGE. Best effort."""
    try:
        names = [n for n in os.listdir(root) if n.startswith(".tmp-")]
    except OSError:
        return
    host = socket.gethostname()
    for name in names:
        parts = name[len(".tmp-"):].split("-", 3)  # key, pid, random, host (which may contain '-')
        dead = len(parts) == 4 and parts[3] == host and parts[1].isdigit() and not _pid_alive(int(parts[1]))
        if dead or time.time() - _newest_mtime(root / name) > STALE_AGE:
            shutil.rmtree(root / name, ignore_errors=True)


def _make_tmp(root: Path, key: str) -> Path:
    tmp = root / _tmp_name(key)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise _cache_error(e) from None
    return tmp


def _encode_into(tmp: Path, parts: Sequence[tuple[Path, str, int]], ask: _Ask, progress: Progress | None,
                 what: str) -> tuple[Vocab, int, list[str], list[int], Unseen | None]:
    """Encode the files (their first bytes, see _points) into tmp/tokens.bin: (vocab, tokens, each file's SHA-256,
    block sums, characters left out). The bytes hashed are the bytes encoded."""
    vocab = ask.vocab
    if vocab is None:
        vocab = vocab_of(_count(_points(parts, ask.encoding, ask.errors, None, progress, ask.several), what))
    digests, sums = [hashlib.sha256() for _ in parts], _BlockSums(BLOCK)
    points = _points(parts, ask.encoding, ask.errors, digests, progress, ask.several)
    try:
        n, unseen = _encode_to(points, vocab, tmp / TOKENS, what, sums, ask.skip)
    except OSError as e:
        raise _cache_error(e) from None
    return vocab, n, [d.hexdigest() for d in digests], sums.finish(), unseen


def _fill(root: Path, ask: _Ask, progress: Progress | None) -> Corpus:
    """Encode regular files into a new cache entry and return it, reading them again if one changed while they
    were read."""
    key = ask.key()
    for _ in range(ATTEMPTS):
        before = [_check_file(f) for f in ask.files]
        tmp = _make_tmp(root, key)
        try:
            parts = [(f, str(f), st.st_size) for f, st in zip(ask.files, before, strict=True)]
            try:
                used, n, hashes, sums, unseen = _encode_into(tmp, parts, ask, progress, str(ask.name))
            except CacheError:
                raise
            except CharRNNError:
                if _stamps([_check_file(f) for f in ask.files]) != _stamps(before):
                    continue  # e.g. characters outside the vocabulary of a file being rewritten
                raise
            if _stamps([_check_file(f) for f in ask.files]) != _stamps(before):
                continue
            meta = CacheMeta(tuple(str(f.resolve()) for f in ask.files), ask.several, _stamps(before),
                             time.time_ns(), _codec(ask.encoding).name, ask.errors, ask.skip, n, tuple(hashes),
                             tuple(used.chars), BLOCK, tuple(sums), (unseen.count, unseen.distinct) if unseen
                             else (0, 0), unseen.examples if unseen else ())
            tokens = TokenFile(tmp / TOKENS, token_dtype(len(used)), vocab_size=len(used))  # stays readable
            try:
                (tmp / META).write_text(meta.to_json(), encoding="utf-8")
            except OSError as e:
                raise _cache_error(e) from None
            entry = root / key
            shutil.rmtree(entry, ignore_errors=True)  # a stale entry for these files
            try:
                tmp.rename(entry)
                tokens.path = entry / TOKENS
            except OSError:
                pass  # another process (a data-parallel worker) stored it first; ours is still open
            return ask.corpus(tokens, used, hashes, unseen)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    raise CharRNNError(f"{ask.name} changed while it was being read ({ATTEMPTS} times): wait until it is written "
                       "completely, then run again")


def _copy_stream(path: Path, out: Path, encoding: str) -> int:
    """Copy a pipe or device to ``out`` (at most MAX_STREAM bytes), stopping early on NUL bytes."""
    nul_is_binary = not _wide(encoding)
    size, head = 0, b""
    try:
        src = path.open("rb")
    except OSError as e:
        raise CharRNNError(f"cannot read {path}: {e.strerror or e}") from None
    with src, out.open("wb") as dst:
        while True:
            try:
                raw = src.read(min(CHUNK, MAX_STREAM + 1 - size))
            except OSError as e:
                raise CharRNNError(f"cannot read {path}: {e.strerror or e}") from None
            if not raw:
                return size
            head = head or raw[:512]
            if nul_is_binary and b"\x00" in raw:
                raise _binary_error(str(path), head, encoding)
            size += len(raw)
            if size > MAX_STREAM:
                raise _too_long(path)
            dst.write(raw)


def _load_stream(path: Path, ask: _Ask, progress: Progress | None) -> Corpus:
    """A corpus from a pipe or device, read once: copied to a private temporary file, then encoded like a
    file. Nothing is kept in the cache (the same path gives other text next time)."""
    root = cache_root() / "corpora"
    clean_stale(root)
    tmp = _make_tmp(root, "stream")
    try:
        copy = tmp / "source"
        try:
            size = _copy_stream(path, copy, ask.encoding)
        except OSError as e:
            raise _cache_error(e) from None
        used, _, hashes, _, unseen = _encode_into(tmp, [(copy, str(path), size)], ask, progress, str(path))
        tokens = TokenFile(tmp / TOKENS, token_dtype(len(used)), vocab_size=len(used))  # open after removal
        return ask.corpus(tokens, used, hashes, unseen, name=path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_corpus(path: Path | Sequence[Path], encoding: str = "utf-8", errors: str = "strict",
                vocab: Vocab | None = None, progress: Progress | None = None, verify: bool = False, *,
                skip_unknown: bool = False, given: Sequence[Path] = ()) -> Corpus:
    """A corpus encoded with its own vocabulary (the sorted set of its characters) or with a given one
    (characters outside it are an error that counts and shows them, or with ``skip_unknown`` are left out and
    counted in ``Corpus.skipped``), from the cache when unchanged.

    ``path`` is one file, or a list of regular files: a corpus of several files is their texts one after
    another, each followed by a newline if it does not end with one, fingerprinted by the list of their paths
    and SHA-256s (``files_sha256``); ``given`` names what the list was made from (its folders), for messages
    and the record.

    ``verify`` re-hashes the files and checks the whole cached token file instead of trusting the cache (for
    eval and --resume, which compare the SHA-256 with a checkpoint's). A cache directory that cannot be
    written raises ``CacheError``."""
    files, several = _as_files(path)
    sts = [_regular(f) if several else _check_file(f) for f in files]
    _decoder(encoding, errors)  # an unknown encoding is an error before anything else
    ask = _Ask(files, several, encoding, errors, vocab, skip_unknown, tuple(Path(g) for g in given))
    if not stat.S_ISREG(sts[0].st_mode):
        return _load_stream(files[0], ask, progress)
    root = cache_root() / "corpora"
    clean_stale(root)
    cached = _open_cached(root / ask.key(), ask, sts, verify)
    if cached is not None:
        return cached
    return _fill(root, ask, progress)


def read_code_points(path: Path, encoding: str = "utf-8", errors: str = "strict") -> Iterator[np.ndarray]:
    """The code points of a text file (or a pipe: at most MAX_STREAM bytes), chunk by chunk, in bounded memory,
    with the same errors as reading a corpus; for text that is not encoded with one vocabulary (``charrnn
    score``). The file is checked, and the encoding looked up, at once; the text is read as it is consumed."""
    st = _check_file(path)
    _decoder(encoding, errors)
    if stat.S_ISREG(st.st_mode):
        return _code_points(path, encoding, errors, None, None, st.st_size)

    def bounded(done: int, size: int) -> None:  # a byte past the bound is an error, not the end of the text
        if done > MAX_STREAM:
            raise _too_long(path)

    return _code_points(path, encoding, errors, None, bounded, MAX_STREAM + 1)


def _too_long(path: Path) -> CharRNNError:
    return CharRNNError(f"{path} is not a regular file (a pipe or a device) and gave more than {MAX_STREAM >> 20} "
                        "MiB: save the text to a file and give that file")
