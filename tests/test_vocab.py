import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab, token_dtype

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
    with pytest.raises(CharRNNError, match=r"2 character\(s\) the model has never seen \(3 times in all\): 'x' \(U\+0078\), 'é' \(U\+00E9\)"):
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
