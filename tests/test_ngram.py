"""Interpolated Kneser-Ney: probabilities computed by hand from the formulas, a proper distribution at every
context, chunked scoring, and the order chosen on text of known structure."""

import math

import numpy as np
import pytest

from charrnn import ngram
from charrnn.ngram import KneserNey, select_order

CHARS = "abcder"  # 'e' is in the vocabulary but never in the training text
A, B, C, D, E, R = range(6)
ABRACADABRA = np.array([CHARS.index(c) for c in "abracadabra"])


def test_bigram_probabilities_match_the_hand_computed_ones():
    """abracadabra, V = 6, D = 0.75. Bigrams: ab 2, br 2, ra 2, ac 1, ca 1, ad 1, da 1 (7 distinct).
    Continuation counts N1+(.w): a 3 (after r, c, d), b 1, c 1, d 1, r 1, e 0; N1+(..) = 7; 5 characters seen.
      P'(w) = max(N1+(.w) - 0.75, 0) / 7 + 0.75 * 5/7 * 1/6, where the uniform share 0.75 * 5/7 / 6 = 5/56:
      P'(a) = 2.25/7 + 5/56 = 23/56,  P'(b) = P'(c) = P'(d) = P'(r) = 0.25/7 + 5/56 = 1/8,  P'(e) = 5/56.
    Context a: c(a.) = 4 (ab 2, ac 1, ad 1), N1+(a.) = 3, so the back-off weight is 0.75 * 3/4 = 0.5625:
      P(b | a) = 1.25/4 + 0.5625 * 1/8 = 0.3828125,  P(e | a) = 0.5625 * 5/56,  P(a | a) = 0.5625 * 23/56.
    Context r: c(r.) = 2 (ra 2), N1+(r.) = 1: weight 0.75 * 1/2 = 0.375:
      P(a | r) = 1.25/2 + 0.375 * 23/56,  P(b | r) = 0.375 * 1/8.
    Context e, never seen: P(w | e) = P'(w)."""
    model = KneserNey.fit(ABRACADABRA, 6, order=2, discount=0.75)
    after_a, after_r, after_e = (model.distribution([c]) for c in (A, R, E))
    assert after_a[B] == pytest.approx(0.3828125)
    assert after_a[E] == pytest.approx(0.5625 * 5 / 56)
    assert after_a[A] == pytest.approx(0.5625 * 23 / 56)
    assert after_r[A] == pytest.approx(1.25 / 2 + 0.375 * 23 / 56)
    assert after_r[B] == pytest.approx(0.375 / 8)
    assert after_e == pytest.approx([23 / 56, 1 / 8, 1 / 8, 1 / 8, 5 / 56, 1 / 8])


def test_trigram_probabilities_match_the_hand_computed_ones():
    """The order-3 model adds the trigrams abr 2, bra 2, rac 1, aca 1, cad 1, ada 1, dab 1. The middle order uses
    continuation counts: each bigram follows one distinct character, so N1+(.br) = 1 and N1+(.b.) = 1; the order 1
    below is the P' of the bigram test.
      P'(r | b) = max(1 - 0.75, 0)/1 + 0.75 * 1/1 * P'(r) = 0.25 + 0.75/8 = 0.34375
      P'(a | b) = 0 + 0.75 * P'(a) = 0.75 * 23/56
    Context ab: c(ab.) = 2 (abr 2), N1+(ab.) = 1: weight 0.75 * 1/2 = 0.375:
      P(r | ab) = 1.25/2 + 0.375 * 0.34375 = 0.75390625,  P(a | ab) = 0.375 * 0.75 * 23/56."""
    model = KneserNey.fit(ABRACADABRA, 6, order=3, discount=0.75)
    after_ab = model.distribution([A, B])
    assert after_ab[R] == pytest.approx(0.75390625)
    assert after_ab[A] == pytest.approx(0.375 * 0.75 * 23 / 56)
    assert model.distribution([E, B])[R] == pytest.approx(0.34375)  # context eb never seen: back off to b
    assert model.distribution([])[A] == pytest.approx(23 / 56)  # the text's first character: no context at all


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_every_context_gives_a_proper_distribution(order: int):
    rng = np.random.default_rng(order)
    text = rng.choice(7, size=3000, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.05, 0.0])  # character 6 never occurs
    text[1::3] = (text[::3][: len(text[1::3])] + 1) % 6  # some structure: repeated n-grams of every order
    model = KneserNey.fit(text, 7, order)  # discounts estimated from the counts
    contexts = [list(text[i: i + order - 1]) for i in range(0, 300, 7)]  # seen
    contexts += [list(rng.integers(0, 7, order - 1)) for _ in range(30)]  # mostly never seen, some with char 6
    contexts += [list(text[:k]) for k in range(order - 1)]  # shorter, as at the start of a text
    for context in contexts:
        p = model.distribution(context)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert (p > 0).all()  # never a zero, even for the character never seen in training


def test_chunked_scoring_equals_one_pass(monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(0)
    train, text = rng.integers(0, 5, 2000), rng.integers(0, 5, 500)
    model = KneserNey.fit(train, 5, 4)
    whole = -np.log2(model.probabilities(text)).sum()
    monkeypatch.setattr(ngram, "SCORE_CHUNK", 7)
    assert model.bits(text) == pytest.approx(whole)
    assert model.bits_per_char(text) == pytest.approx(whole / 499)


def order3_process(n: int, vocab: int, keep: float, seed: int) -> np.ndarray:
    """Each character is a fixed function of the two before it with probability ``keep`` (else uniform)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, n)
    follow = rng.random(n) < keep
    for i in range(2, n):
        if follow[i]:
            x[i] = (3 * x[i - 1] + 2 * x[i - 2] + 1) % vocab
    return x


def test_the_order_chosen_on_held_out_text_is_the_process_order():
    vocab, keep = 5, 0.8
    chosen = select_order(order3_process(20_000, vocab, keep, seed=1), vocab)
    p, q = keep + (1 - keep) / vocab, (1 - keep) / vocab  # of the character the process picks, of each other
    entropy = -(p * math.log2(p) + (vocab - 1) * q * math.log2(q))
    assert chosen.order == 3
    assert sorted(chosen.held_out) == list(range(1, 9))
    assert chosen.held_out[2] > chosen.held_out[3] + 1  # two characters of context are needed
    assert chosen.held_out[3] == pytest.approx(entropy, abs=0.05)  # close to the best any model can do


def test_orders_are_limited_to_what_fits_64_bits():
    assert ngram.max_order(65) == 8 and ngram.max_order(256) == 8
    assert ngram.max_order(5000) == 4 and ngram.max_order(1 << 20) == 3
    with pytest.raises(ValueError, match="order must be 1..4"):
        KneserNey.fit(np.arange(10), 5000, 5)
    assert select_order(np.arange(3000) % 4000, 4000, held_out=0.1).order <= 4
