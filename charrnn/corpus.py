"""Reading corpora: decoding in chunks, the vocabulary, and the cache of encoded token files.

A corpus of any size is read in fixed-size chunks (memory does not grow with the file), decoded with an
incremental decoder, and encoded once to a token file of uint8/uint16/uint32 ids that training reads on demand.
A file that is not a regular file (a pipe, ``<(cmd)``, a device) can be read only once: it is copied (at most
MAX_STREAM bytes) to a private temporary file first, and its encoding is not kept.

The cache (CHARRNN_CACHE_DIR, see ``cache_root``) must never make training or evaluation use text other than the
file's. An entry is keyed by the resolved path, the decoding settings and the vocabulary, and its meta.json
(``CacheMeta``, validated on read) records what it was made from. On every open:

- the source's size, mtime, ctime and inode must equal those recorded when encoding finished (restoring the
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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab, token_dtype, unknown_error

BOM = b"\xef\xbb\xbf"
CHUNK = 1 << 22  # bytes read at a time
CACHE_FORMAT = 2
TOKENS = "tokens.bin"
META = "meta.json"
ERRORS = ("strict", "replace", "ignore")
BLOCK = 1 << 20  # token-file bytes per CRC-32
SAMPLED_BLOCKS = 16  # blocks checked on an ordinary open
RACY_NS = 2 * 10**9  # a file changed this close to its encoding is re-hashed when next opened
ATTEMPTS = 3  # reads of a file that keeps changing while being read
MAX_STREAM = 1 << 30  # bytes read from a pipe or device
STALE_AGE = 24 * 3600  # seconds after which any temporary cache directory is abandoned

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class CacheError(CharRNNError):
    """The corpus cache cannot be written: a problem with the cache directory, not with the corpus."""


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
        size = self.dtype.itemsize
        raw = os.pread(self._fd, (hi - lo) * size, (self.start + lo) * size)
        ids = np.frombuffer(raw, dtype=self.dtype)
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


def _count(path: Path, encoding: str, errors: str, progress: Progress | None, size: int, what: str,
           digest: hashlib._Hash | None = None) -> np.ndarray:
    """Occurrences of every code point (indexed by code point) in the first ``size`` bytes."""
    counts = np.zeros(128, dtype=np.int64)
    for points in _code_points(path, encoding, errors, digest, progress, size, what):
        c = np.bincount(points)
        if len(c) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(c) - len(counts), dtype=np.int64)])
        counts[: len(c)] += c
    if not any(counts[p] and not chr(p).isspace() for p in np.flatnonzero(counts)):
        raise CharRNNError(f"{what} is empty or only whitespace: give a file with text to learn from")
    return counts


def scan(path: Path, encoding: str = "utf-8", errors: str = "strict",
         progress: Progress | None = None) -> tuple[np.ndarray, str]:
    """Count every code point of a file: (counts indexed by code point, sha256 of the bytes).

    Only for regular files: whoever scans reads the file again (``load_corpus``), and a pipe can be read once."""
    st = _check_file(path)
    _decoder(encoding, errors)
    if not stat.S_ISREG(st.st_mode):
        raise CharRNNError(f"{path} is not a regular file (a pipe or a device) and can be read only once: save "
                           "it to a file first and give that file")
    digest = hashlib.sha256()
    counts = _count(path, encoding, errors, progress, st.st_size, str(path), digest)
    return counts, digest.hexdigest()


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


def _encode_to(path: Path, vocab: Vocab, encoding: str, errors: str, out: Path, progress: Progress | None,
               digest: hashlib._Hash | None, size: int, what: str, sums: _BlockSums) -> int:
    """Write the token ids of the first ``size`` bytes of the file to ``out``; returns the number of tokens."""
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
    n, unknown, examples = 0, 0, {}
    with out.open("wb") as f:
        for points in _code_points(path, encoding, errors, digest, progress, size, what):
            if points.dtype == np.uint8:
                ok, ids = known8[points], lut8[points]
            else:
                clipped = np.minimum(points, np.uint32(top - 1))
                ok, ids = known[clipped], lut[clipped]
            if not ok.all():
                unknown += int((~ok).sum())
                _, first = np.unique(points[~ok], return_index=True)  # each new character once, in text order
                examples.update(dict.fromkeys(chr(p) for p in points[~ok][np.sort(first)]))
            elif not unknown:
                data = ids.tobytes()
                f.write(data)
                sums.update(data)
            n += len(ids)
        f.flush()
        os.fsync(f.fileno())
    if unknown:
        raise unknown_error(what, unknown, examples)
    if n == 0:
        raise CharRNNError(f"{what} is empty or only whitespace: give a file with text to learn from")
    return n


@dataclass(frozen=True)
class CacheMeta:
    """What a cache entry was made from (meta.json). JSON escapes every non-ASCII character, so odd file
    names (undecodable bytes as lone surrogates) are stored and read back exactly."""

    source: str  # the resolved path
    stamp: tuple[int, ...]  # the file's (size, mtime_ns, ctime_ns, inode) while it was read
    checked_ns: int  # when the file's contents were last known to match (time.time_ns())
    encoding: str  # the codec's canonical name
    errors: str
    tokens: int
    sha256: str  # of the file's bytes
    vocab: tuple[str, ...]
    block: int
    sums: tuple[int, ...]  # CRC-32 of each block of the token file
    format: int = CACHE_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CacheMeta:
        """Parse and check every field; anything unexpected is a ValueError (the entry is then re-made)."""
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("format") != CACHE_FORMAT or set(raw) != set(cls.__dataclass_fields__):
            raise ValueError("not a cache entry of this format")
        ints = [raw["checked_ns"], raw["tokens"], raw["block"], *raw["stamp"], *raw["sums"]]
        strs = [raw["source"], raw["encoding"], raw["errors"], raw["sha256"], *raw["vocab"]]
        if not all(type(v) is int for v in ints) or not all(type(v) is str for v in strs) \
                or raw["block"] < 1 or raw["tokens"] < 1:
            raise ValueError("a cache entry field has the wrong type")
        return cls(**{**raw, "stamp": tuple(raw["stamp"]), "vocab": tuple(raw["vocab"]), "sums": tuple(raw["sums"])})


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _cache_key(path: Path, encoding: str, errors: str, vocab: Vocab | None) -> str:
    ident = [CACHE_FORMAT, str(path.resolve()), _codec(encoding).name, errors,
             None if vocab is None else "".join(vocab.chars)]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:32]


def _file_sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _blocks_ok(fd: int, meta: CacheMeta, everything: bool) -> bool:
    n = len(meta.sums)
    picks = range(n) if everything or n <= SAMPLED_BLOCKS else sorted(
        {round(i * (n - 1) / (SAMPLED_BLOCKS - 1)) for i in range(SAMPLED_BLOCKS)})
    return all(zlib.crc32(os.pread(fd, meta.block, i * meta.block)) == meta.sums[i] for i in picks)


def _open_cached(entry: Path, path: Path, st: os.stat_result, encoding: str, errors: str, vocab: Vocab | None,
                 verify: bool) -> Corpus | None:
    """The entry's corpus if it is exactly the file's text encoded as asked, else None."""
    try:
        meta = CacheMeta.from_json((entry / META).read_text(encoding="utf-8"))
        own = Vocab(list(meta.vocab))
    except (OSError, ValueError, KeyError, TypeError, CharRNNError):
        return None
    wanted = (str(path.resolve()), _stamp(st), _codec(encoding).name, errors)
    if (meta.source, meta.stamp, meta.encoding, meta.errors) != wanted:
        return None
    if list(meta.vocab) != (sorted(set(meta.vocab)) if vocab is None else vocab.chars):
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
    if verify or max(st.st_mtime_ns, st.st_ctime_ns) >= meta.checked_ns - RACY_NS:
        if _file_sha256(path) != meta.sha256:
            return None
        _mark_checked(entry, meta, st)
    return Corpus(tokens, own, path, meta.sha256, encoding, errors)


def _mark_checked(entry: Path, meta: CacheMeta, st: os.stat_result) -> None:
    """Record that the file's bytes were just seen to match, so that later opens need not re-hash them
    (best effort: a read-only cache re-hashes instead)."""
    now = time.time_ns()
    if max(st.st_mtime_ns, st.st_ctime_ns) >= now - RACY_NS:
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


def _encode_into(tmp: Path, source: Path, what: str, encoding: str, errors: str, vocab: Vocab | None,
                 progress: Progress | None, size: int) -> tuple[Vocab, int, str, list[int]]:
    """Encode ``source`` (its first ``size`` bytes) into tmp/tokens.bin: (vocab, tokens, sha256, block sums).
    The bytes hashed are the bytes encoded."""
    if vocab is None:
        vocab = vocab_of(_count(source, encoding, errors, progress, size, what))
    digest, sums = hashlib.sha256(), _BlockSums(BLOCK)
    try:
        n = _encode_to(source, vocab, encoding, errors, tmp / TOKENS, progress, digest, size, what, sums)
    except OSError as e:
        raise _cache_error(e) from None
    return vocab, n, digest.hexdigest(), sums.finish()


def _fill(root: Path, key: str, path: Path, encoding: str, errors: str, vocab: Vocab | None,
          progress: Progress | None) -> Corpus:
    """Encode a regular file into a new cache entry and return it, reading the file again if it changed
    while it was read."""
    for _ in range(ATTEMPTS):
        before = _check_file(path)
        tmp = _make_tmp(root, key)
        try:
            try:
                used, n, sha, sums = _encode_into(tmp, path, str(path), encoding, errors, vocab, progress,
                                                  before.st_size)
            except CacheError:
                raise
            except CharRNNError:
                if _stamp(_check_file(path)) != _stamp(before):
                    continue  # e.g. characters outside the vocabulary of a file being rewritten
                raise
            if _stamp(_check_file(path)) != _stamp(before):
                continue
            meta = CacheMeta(str(path.resolve()), _stamp(before), time.time_ns(), _codec(encoding).name, errors,
                             n, sha, tuple(used.chars), BLOCK, tuple(sums))
            tokens = TokenFile(tmp / TOKENS, token_dtype(len(used)), vocab_size=len(used))  # stays readable
            try:
                (tmp / META).write_text(meta.to_json(), encoding="utf-8")
            except OSError as e:
                raise _cache_error(e) from None
            entry = root / key
            shutil.rmtree(entry, ignore_errors=True)  # a stale entry for this path
            try:
                tmp.rename(entry)
                tokens.path = entry / TOKENS
            except OSError:
                pass  # another process (a data-parallel worker) stored it first; ours is still open
            return Corpus(tokens, used, path, sha, encoding, errors)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    raise CharRNNError(f"{path} changed while it was being read ({ATTEMPTS} times): wait until it is written "
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
                raise CharRNNError(f"{path} is not a regular file (a pipe or a device) and gave more than "
                                   f"{MAX_STREAM >> 20} MiB: save the text to a file and give that file")
            dst.write(raw)


def _load_stream(path: Path, encoding: str, errors: str, vocab: Vocab | None, progress: Progress | None) -> Corpus:
    """A corpus from a pipe or device, read once: copied to a private temporary file, then encoded like a
    file. Nothing is kept in the cache (the same path gives other text next time)."""
    root = cache_root() / "corpora"
    clean_stale(root)
    tmp = _make_tmp(root, "stream")
    try:
        copy = tmp / "source"
        try:
            size = _copy_stream(path, copy, encoding)
        except OSError as e:
            raise _cache_error(e) from None
        used, _, sha, _ = _encode_into(tmp, copy, str(path), encoding, errors, vocab, progress, size)
        tokens = TokenFile(tmp / TOKENS, token_dtype(len(used)), vocab_size=len(used))  # open after removal
        return Corpus(tokens, used, path, sha, encoding, errors)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_corpus(path: Path, encoding: str = "utf-8", errors: str = "strict", vocab: Vocab | None = None,
                progress: Progress | None = None, verify: bool = False) -> Corpus:
    """A corpus encoded with its own vocabulary (the sorted set of its characters) or with a given one
    (characters outside it are an error that counts and shows them), from the cache when unchanged.

    ``verify`` re-hashes the file and checks the whole cached token file instead of trusting the cache (for
    eval and --resume, which compare the SHA-256 with a checkpoint's). A cache directory that cannot be
    written raises ``CacheError``."""
    st = _check_file(path)
    _decoder(encoding, errors)  # an unknown encoding is an error before anything else
    if not stat.S_ISREG(st.st_mode):
        return _load_stream(path, encoding, errors, vocab, progress)
    root = cache_root() / "corpora"
    clean_stale(root)
    key = _cache_key(path, encoding, errors, vocab)
    cached = _open_cached(root / key, path, st, encoding, errors, vocab, verify)
    if cached is not None:
        return cached
    return _fill(root, key, path, encoding, errors, vocab, progress)


def read_code_points(path: Path, encoding: str = "utf-8", errors: str = "strict") -> Iterator[np.ndarray]:
    """The code points of a text file (or a pipe: at most MAX_STREAM bytes), chunk by chunk, in bounded memory,
    with the same errors as reading a corpus; for text that is not encoded with one vocabulary (``charrnn
    score``). The file is checked, and the encoding looked up, at once; the text is read as it is consumed."""
    st = _check_file(path)
    _decoder(encoding, errors)
    return _code_points(path, encoding, errors, None, None, st.st_size if stat.S_ISREG(st.st_mode) else MAX_STREAM)
