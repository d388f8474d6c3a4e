import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab, describe_chars, token_dtype

# Any code point Python can hold in a str that UTF-8 can carry (no lone surrogates).
unicode_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1)


@given(unicode_text)
def test_round_trip_on_arbitrary_unicode(text: str):
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert len(ids) == len(text)
    assert int(ids.max()) < len(vocab)


@given(unicode_text)
def test_vocabulary_is_the_sorted_set_of_code_points(text: str):
    assert Vocab.from_text(text).chars == sorted(set(text))


def test_unknown_characters_are_counted_and_named():
    vocab = Vocab.from_text("abc")
    unseen = r"2 character\(s\) the model has never seen \(3 times in all\): 'x' \(U\+0078\), 'é' \(U\+00E9\)"
    with pytest.raises(CharRNNError, match=unseen):
        vocab.encode("axbxé", "the prefix")


def test_unordered_vocabulary_keeps_its_ids():
    vocab = Vocab(["b", "a", "日"])
    assert vocab.encode("ab日").tolist() == [1, 0, 2]
    assert vocab.decode([2, 0]) == "日b"


def test_token_dtype_fits_vocabulary():
    assert token_dtype(256) == np.uint8
    assert token_dtype(257) == np.uint16
    assert token_dtype(70000) == np.uint32


def test_invalid_vocabularies():
    with pytest.raises(CharRNNError):
        Vocab([])
    with pytest.raises(CharRNNError):
        Vocab(["a", "a"])


def test_lone_surrogates_round_trip():
    """What ``--errors surrogateescape`` decodes undecodable bytes to."""
    text = "a\udcff b\udc80"
    vocab = Vocab.from_text(text)
    assert vocab.decode(vocab.encode(text)) == text and "\udcff" in vocab


def test_token_dtype_limits():
    assert token_dtype(1 << 16) == np.uint16
    assert token_dtype((1 << 16) + 1) == np.uint32


def test_describe_chars_shows_five_then_counts_the_rest():
    assert describe_chars("abcde") == "'a' (U+0061), 'b' (U+0062), 'c' (U+0063), 'd' (U+0064), 'e' (U+0065)"
    assert describe_chars("abcdefg").endswith("'e' (U+0065) and 2 more")
    assert describe_chars("abc", limit=2) == "'a' (U+0061), 'b' (U+0062) and 1 more"


def test_membership_and_equality():
    vocab = Vocab(["b", "a"])
    assert "a" in vocab and "c" not in vocab
    assert vocab == Vocab(["b", "a"])
    assert vocab != Vocab(["a", "b"])
    assert vocab != ["b", "a"]


def test_an_entry_must_be_one_character():
    with pytest.raises(CharRNNError, match="not a single character"):
        Vocab(["a", "bc"])
