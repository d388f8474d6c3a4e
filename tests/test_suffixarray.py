"""The suffix array and matching statistics against brute force, in memory and read from files."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn import suffixarray as sx

texts = st.lists(st.integers(0, 3), min_size=1, max_size=80)  # few letters: many long repeats


def brute_suffix_array(t: list[int]) -> list[int]:
    return sorted(range(len(t)), key=lambda i: t[i:])


def brute_longest(query: list[int], t: list[int]) -> list[int]:
    """For each position of the query, the longest prefix of the rest that occurs in t."""
    text = "".join(map(chr, t))
    out = []
    for i in range(len(query)):
        n = 0
        while i + n < len(query) and "".join(map(chr, query[i: i + n + 1])) in text:
            n += 1
        out.append(n)
    return out


@settings(max_examples=150, deadline=None)
@given(t=texts, chunk=st.sampled_from([1, 2, 3, 7, sx.CHUNK]), packed=st.sampled_from([1, 2, 3, None]))
def test_suffix_array_sorts_every_suffix(t, chunk, packed):
    original = sx.CHUNK
    sx.CHUNK = chunk  # tiny chunks: groups are sorted a few at a time, and ranks change between chunks
    try:
        sa = sx.build(np.array(t, np.uint8), packed=packed)  # few packed: many doubling rounds
    finally:
        sx.CHUNK = original
    assert sa.dtype == np.int32
    assert sa.tolist() == brute_suffix_array(t)


def test_suffix_array_of_one_repeated_character_and_of_wide_ids():
    assert sx.build(np.zeros(1000, np.uint8)).tolist() == list(range(999, -1, -1))  # the worst case: log n rounds
    t = np.random.default_rng(0).integers(0, 70_000, 300).astype(np.uint32)  # few characters fit one key
    t[150:200] = t[:50]
    assert sx.build(t).tolist() == brute_suffix_array(t.tolist())


@settings(max_examples=150, deadline=None)
@given(t=texts, query=st.lists(st.integers(0, 4), max_size=40), batch=st.sampled_from([1, 3, sx.BATCH]))
def test_matching_statistics_equal_brute_force(t, query, batch):
    text = np.array(t, np.uint8)
    original = sx.BATCH
    sx.BATCH = batch
    try:
        sa = sx.build(text, packed=1)
        lengths, where = sx.matches(np.array(query), sx.Rows(text, len(t)), sx.Rows(sa, len(t)))
    finally:
        sx.BATCH = original
    assert lengths.tolist() == brute_longest(query, t)
    for i, n in enumerate(lengths):
        assert t[where[i]: where[i] + n] == query[i: i + n]  # it occurs where it says


@pytest.mark.parametrize("width", [1, sx.WINDOW, 3 * sx.WINDOW + 5])
def test_files_read_with_pread_give_the_same_answers(tmp_path: Path, width: int):
    rng = np.random.default_rng(width)
    t = rng.integers(0, 5, 3000).astype(np.uint16)
    t[2000: 2000 + width] = t[100: 100 + width]  # a copy longer than a comparison window
    full = np.concatenate([t, rng.integers(0, 5, 50).astype(np.uint16)])  # the text is a prefix of its file
    (tmp_path / "t.bin").write_bytes(full.tobytes())
    sa = sx.build(t)
    (tmp_path / "sa.bin").write_bytes(sa.tobytes())
    query = np.concatenate([t[100: 100 + width], [9], t[-40:]])  # a copy, a character not in t, the text's end
    expected = sx.matches(query, sx.Rows(t, len(t)), sx.Rows(sa, len(t)))
    with (tmp_path / "t.bin").open("rb") as tf, (tmp_path / "sa.bin").open("rb") as sf:
        got = sx.matches(query, sx.Rows(tf.fileno(), len(t), t.dtype), sx.Rows(sf.fileno(), len(t), sa.dtype))
    assert [a.tolist() for a in got] == [a.tolist() for a in expected]
    assert got[0][0] == width and got[0][width] == 0 and got[0][width + 1] == 40
