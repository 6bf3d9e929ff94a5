"""The decoding rules on known logits: what each may draw, and with which frequencies."""

import numpy as np
import pytest

from charnn.decoding import Decoding, distribution, draw, generators
from charnn.errors import CharnnError

# Probabilities chosen so every cut below falls clear of a boundary; sorted: 1 (0.4), 3 (0.3),
# 4 (0.15), 2 (0.1), 0 (0.05).
P = np.array([0.05, 0.4, 0.1, 0.3, 0.15])
LOGITS = np.log(P)


def drawn(logits, decoding, rng, n=4000):
    """n draws from one row of logits, one generator: the counts of each id."""
    rows = np.broadcast_to(logits, (n, len(logits)))
    return np.bincount(draw(rows, [rng] * n, decoding), minlength=len(logits))


def test_argmax_and_top_1_take_the_most_likely(rng):
    logits = np.array([[0.1, 2.0, -1.0, 1.9]])
    assert draw(logits, [rng], Decoding(argmax=True)) == [1]
    assert drawn(logits[0], Decoding(top_k=1), rng, 50)[1] == 50


def test_draws_follow_softmax_with_temperature(rng):
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    for temperature in (1.0, 0.5):
        p = np.exp(logits / temperature)
        p /= p.sum()
        counts = drawn(logits, Decoding(temperature), rng, 20000)
        np.testing.assert_allclose(counts / 20000, p, atol=0.015)


def test_top_k_never_draws_outside_the_k_most_likely(rng):
    counts = drawn(np.array([3.0, 0.0, 2.9, 0.1, 2.8]), Decoding(temperature=5.0, top_k=3), rng, 2000)
    assert set(np.flatnonzero(counts)) == {0, 2, 4}


@pytest.mark.parametrize("top_p,nucleus", [(0.3, {1}), (0.5, {1, 3}), (0.75, {1, 3, 4}), (0.9, {1, 3, 4, 2}),
                                           (1.0, {0, 1, 2, 3, 4})])
def test_top_p_draws_only_from_the_nucleus_in_proportion(rng, top_p, nucleus):
    """The nucleus is the fewest most likely characters whose probability reaches p: 0.4 < 0.5 needs
    two (0.7), 0.7 < 0.75 three, 0.85 < 0.9 four. Over many draws every one of them appears, no
    other ever does, and each as often as its probability renormalised within the nucleus."""
    counts = drawn(LOGITS, Decoding(top_p=top_p), rng, 8000)
    assert set(np.flatnonzero(counts)) == nucleus
    inside = sorted(nucleus)
    np.testing.assert_allclose(counts[inside] / 8000, P[inside] / P[inside].sum(), atol=0.02)


def test_top_p_comes_after_temperature_and_top_k(rng):
    """Temperature 0.5 squares the probabilities: 0.0025, 0.16, 0.01, 0.09, 0.0225 (over 0.285);
    top-k 3 keeps ids 1, 3, 4: 0.16, 0.09, 0.0225 over 0.2725, i.e. 0.587, 0.330, 0.083; the
    nucleus of 0.9 is then ids 1 and 3 (0.917 >= 0.9 before id 4 is needed), drawn 0.64 : 0.36.
    Each cut alone would leave more: without top-k the third id is needed (0.561 + 0.316 = 0.877
    < 0.9), and at temperature 1 too (0.4 + 0.3 over 0.85 = 0.82 < 0.9)."""
    both = drawn(LOGITS, Decoding(temperature=0.5, top_k=3, top_p=0.9), rng, 8000)
    assert set(np.flatnonzero(both)) == {1, 3}
    np.testing.assert_allclose(both[[1, 3]] / 8000, [0.64, 0.36], atol=0.02)
    assert set(np.flatnonzero(drawn(LOGITS, Decoding(temperature=0.5, top_p=0.9), rng))) == {1, 3, 4}
    assert set(np.flatnonzero(drawn(LOGITS, Decoding(top_k=3, top_p=0.9), rng))) == {1, 3, 4}
    weights = distribution(LOGITS[None], Decoding(temperature=0.5, top_k=3, top_p=0.9))[0]
    np.testing.assert_allclose(weights, [0, 0.16 / 0.2725, 0, 0.09 / 0.2725, 0], rtol=1e-12)  # not renormalised after top-p


def test_a_batch_draws_what_its_rows_draw_alone(rng):
    """Row b of a batch uses generator b alone: the same ids as B separate single-row draws."""
    logits = rng.standard_normal((6, 9))
    for decoding in (Decoding(), Decoding(0.7, 5, 0.8)):
        together = draw(logits, generators(3, 6), decoding)
        alone = [draw(logits[b:b + 1], [g], decoding)[0] for b, g in enumerate(generators(3, 6))]
        assert list(together) == alone


def test_the_highest_draw_takes_the_last_allowed_character():
    """The largest uniform draw, 1 - 2**-53, times the row's total stays below the total, so the id
    taken is the last with weight, never a cut one after it."""
    class Top:
        def random(self):
            return np.nextafter(1.0, 0.0)
    logits = np.log(np.array([[0.2, 0.5, 0.3, 0.0001]]))
    for decoding, expected in ((Decoding(top_k=3), 2), (Decoding(top_p=0.6), 2), (Decoding(), 3)):
        assert draw(logits, [Top()], decoding)[0] == expected


def test_per_sample_generators_do_not_depend_on_how_many():
    first = [g.random(4) for g in generators(5, 3)]
    again = [g.random(4) for g in generators(5, 2)]
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(generators(6, 1)[0].random(4), first[0])


def test_a_tiny_temperature_takes_the_most_likely(rng):
    """logits / 1e-308 overflows to +-inf; the most likely character must still be the one drawn."""
    assert drawn(np.array([3.0, 1.0, 2.0, -1.0]), Decoding(temperature=1e-308), rng, 20)[0] == 20


@pytest.mark.parametrize("decoding,message", [
    (Decoding(temperature=0), "--temperature must be above 0"),
    (Decoding(temperature=-1.0), "--temperature must be above 0"),
    (Decoding(top_k=0), "--top-k must be at least 1"),
    (Decoding(top_p=0), "--top-p must be above 0 and at most 1"),
    (Decoding(top_p=1.5), "--top-p must be above 0 and at most 1"),
])
def test_bad_rules(decoding, message):
    with pytest.raises(CharnnError, match=message):
        decoding.check()
