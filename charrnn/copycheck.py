"""Is a generated text copied from the training text? For a sample: the longest substring that also occurs in
the run's training split (its length, text, and where in both), and the share of the sample's characters that
lie inside copied spans of MIN_SPAN characters or more (each character counts once, however many spans hold it).

The index is a suffix array of the training split (suffixarray.py), built once and kept beside the corpus cache
(see corpus.py), in CACHE/indexes/KEY/:

    sa.bin     the suffix array, int32 (int64 beyond 2**31 characters): 4 bytes per character
    meta.json  what it was built from (``IndexMeta``, validated on read) and a CRC-32 of every BLOCK bytes

KEY is made of the corpus file's SHA-256, its decoding settings, the vocabulary and the split's length: the same
text encoded the same way. Opening an index checks every field, the file's exact size and every block's CRC-32 (a
full read of sa.bin, like the re-hash of the corpus that finding the training split already does); any problem
means it is built again, never trusted. It is written to a temporary directory renamed into place, removed on any
exception; those left by a killed process are cleaned up with the corpus cache's (``corpus.clean_stale``).

Building holds the training split's tokens and about 12 bytes per character (suffix array, ranks, the list of
suffixes still tied) plus bounded work arrays; checking a sample reads only the few hundred windows of the text
and the index that its binary searches touch, with ``pread``, so it costs no memory for the corpus's size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from charrnn import suffixarray
from charrnn.corpus import (  # the cache's conventions, shared with corpus.py
    BLOCK,
    Corpus,
    TokenFile,
    _BlockSums,
    _cache_error,
    _make_tmp,
    cache_root,
    clean_stale,
)
from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab

INDEX_FORMAT = 1
SA = "sa.bin"
META = "meta.json"
MIN_SPAN = 20  # characters: a shorter common substring is likely to be a common phrase, not a copy
WRITE_CHUNK = 1 << 22  # suffix-array entries written at a time

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class IndexMeta:
    """What a copy index was built from (meta.json)."""

    sha256: str  # of the corpus file's bytes
    encoding: str
    errors: str
    vocab: tuple[str, ...]
    tokens: int  # characters in the training split
    dtype: str  # of the suffix-array entries
    block: int
    sums: tuple[int, ...]  # CRC-32 of each block of sa.bin
    format: int = INDEX_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> IndexMeta:
        """Parse and check every field; anything unexpected is a ValueError (the index is then rebuilt)."""
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("format") != INDEX_FORMAT or set(raw) != set(cls.__dataclass_fields__):
            raise ValueError("not a copy index of this format")
        ints = [raw["tokens"], raw["block"], *raw["sums"]]
        strs = [raw["sha256"], raw["encoding"], raw["errors"], raw["dtype"], *raw["vocab"]]
        if not all(type(v) is int for v in ints) or not all(type(v) is str for v in strs) \
                or raw["block"] < 1 or raw["tokens"] < 1 or raw["dtype"] not in ("int32", "int64"):
            raise ValueError("a copy index field has the wrong type")
        return cls(**{**raw, "vocab": tuple(raw["vocab"]), "sums": tuple(raw["sums"])})


@dataclass(frozen=True)
class CopyReport:
    """What of a sample also occurs in the training split."""

    chars: int  # characters checked
    longest: int  # length of the longest substring that also occurs in the training split
    at: int  # where it starts in the sample
    source_at: int  # where it occurs in the training split (character offset; one occurrence of several)
    span: str  # its text
    copied: int  # characters of the sample inside copied spans of min_span or more
    min_span: int

    @property
    def share(self) -> float:
        return self.copied / self.chars if self.chars else 0.0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "share": self.share}


class CopyIndex:
    """A training split and its suffix array, ready to check samples against."""

    def __init__(self, text: TokenFile | np.ndarray, vocab: Vocab, sa: np.ndarray | int,
                 sa_dtype: np.dtype | None = None) -> None:
        self.vocab, self._fds = vocab, []
        if isinstance(text, TokenFile):
            fd = os.dup(text._fd)  # the token file's own descriptor: its path may be a temporary one, now gone
            self._fds.append(fd)
            self.text = suffixarray.Rows(fd, len(text), text.dtype, text.start)
        else:
            self.text = suffixarray.Rows(np.asarray(text), len(text))
        if isinstance(sa, int):
            self._fds.append(sa)
        self.sa = suffixarray.Rows(sa, len(text), sa_dtype, bound=len(text))

    @classmethod
    def in_memory(cls, text: np.ndarray, vocab: Vocab) -> CopyIndex:
        """An index built now and kept in memory (no cache): for small texts and tests."""
        return cls(text, vocab, suffixarray.build(np.asarray(text)))

    def check(self, sample: str, min_span: int = MIN_SPAN) -> CopyReport:
        """The longest substring of ``sample`` found in the training split, and the characters of ``sample`` in
        spans of at least ``min_span`` characters found there. ``sample`` must use only the vocabulary's
        characters (a generated text always does)."""
        query = self.vocab.encode(sample, "the sample").astype(np.int64)
        try:
            lengths, where = suffixarray.matches(query, self.text, self.sa)
        except suffixarray.OutOfRange:  # its CRC-32s were right: made to look whole, or written by a bug
            raise CharRNNError("the copy index is damaged (a position outside the training split): delete "
                               f"{cache_root() / 'indexes'} and run again") from None
        if not len(query) or lengths.max() == 0:
            return CopyReport(len(query), 0, 0, 0, "", 0, min_span)
        at = int(np.argmax(lengths))
        longest = int(lengths[at])
        edges = np.zeros(len(query) + 1, np.int64)  # +1 where a copied span starts, -1 where it ends
        starts = np.flatnonzero(lengths >= min_span)
        np.add.at(edges, starts, 1)
        np.add.at(edges, starts + lengths[starts], -1)
        copied = int((np.cumsum(edges[:-1]) > 0).sum())
        return CopyReport(len(query), longest, at, int(where[at]), sample[at: at + longest], copied, min_span)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self) -> CopyIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _key(corpus: Corpus, tokens: int) -> str:
    ident = [INDEX_FORMAT, corpus.sha256, corpus.encoding, corpus.errors, "".join(corpus.vocab.chars), tokens]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:32]


def _wanted(corpus: Corpus, tokens: int) -> tuple[object, ...]:
    return (corpus.sha256, corpus.encoding, corpus.errors, tuple(corpus.vocab.chars), tokens,
            suffixarray.index_dtype(tokens).name)


def _open_cached(entry: Path, corpus: Corpus, tokens: int) -> int | None:
    """A file descriptor of the entry's suffix array if it is exactly the one asked for, intact; else None."""
    try:
        meta = IndexMeta.from_json((entry / META).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (meta.sha256, meta.encoding, meta.errors, meta.vocab, meta.tokens, meta.dtype) != _wanted(corpus, tokens) \
            or meta.block != BLOCK:  # a block size is never trusted: each block is read whole
        return None
    try:
        fd = os.open(entry / SA, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size == tokens * np.dtype(meta.dtype).itemsize and len(meta.sums) == -(-size // meta.block) and all(
                zlib.crc32(os.pread(fd, meta.block, i * meta.block)) == s for i, s in enumerate(meta.sums)):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _build_into(tmp: Path, text: TokenFile | np.ndarray, corpus: Corpus, progress: Progress | None) -> int:
    """Build the suffix array of ``text`` into tmp/ (sa.bin, then meta.json); returns an open descriptor of sa.bin,
    which stays readable whatever happens to the directory."""
    sa = suffixarray.build(np.asarray(text), progress)
    sums = _BlockSums(BLOCK)
    try:
        with (tmp / SA).open("wb") as f:
            for i in range(0, len(sa), WRITE_CHUNK):
                data = sa[i: i + WRITE_CHUNK].tobytes()
                f.write(data)
                sums.update(data)
            f.flush()
            os.fsync(f.fileno())
        del sa
        meta = IndexMeta(corpus.sha256, corpus.encoding, corpus.errors, tuple(corpus.vocab.chars), len(text),
                         suffixarray.index_dtype(len(text)).name, BLOCK, tuple(sums.finish()))
        (tmp / META).write_text(meta.to_json(), encoding="utf-8")
        return os.open(tmp / SA, os.O_RDONLY)
    except OSError as e:
        raise _cache_error(e) from None


def open_index(text: TokenFile | np.ndarray, corpus: Corpus, progress: Progress | None = None,
               on_build: Callable[[int], None] | None = None) -> CopyIndex:
    """The copy index of ``text``, the training split of ``corpus`` (its first len(text) tokens): from the cache
    when it is intact, else built now (``on_build`` hears the split's length first) and stored. A cache
    directory that cannot be written raises ``CacheError``."""
    root = cache_root() / "indexes"
    clean_stale(root)
    key = _key(corpus, len(text))
    entry = root / key
    fd = _open_cached(entry, corpus, len(text))
    if fd is None:
        if on_build is not None:
            on_build(len(text))
        tmp = _make_tmp(root, key)
        try:
            fd = _build_into(tmp, text, corpus, progress)
            shutil.rmtree(entry, ignore_errors=True)  # a damaged or stale index
            try:
                tmp.rename(entry)
            except OSError:
                pass  # another process stored it first; ours is still open
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return CopyIndex(text, corpus.vocab, fd, suffixarray.index_dtype(len(text)))
