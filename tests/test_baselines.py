"""The baselines against a naive reference (Python dicts and loops), known answers, the order
lowering for large vocabularies, and tiny shakespeare."""

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from charnn import baselines as bl
from charnn import data, textfile

SHAKESPEARE = Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare.txt"


def reference_probs(train, val, V, order):
    """P(val[t] | up to order-1 val characters before it) for every t: interpolated Witten-Bell
    written straight from the formula, one character at a time (tiny texts only)."""
    train, val = [int(c) for c in train], [int(c) for c in val]
    unigram = Counter(train)
    counts = Counter()  # c(h w), h of 1 .. order-1 characters
    for n in range(2, order + 1):
        for i in range(len(train) - n + 1):
            counts[tuple(train[i:i + n])] += 1
    c_h, n1 = Counter(), Counter()  # c(h) = sum_w c(h w); N1+(h .) = #{w : c(h w) > 0}
    for hw, c in counts.items():
        c_h[hw[:-1]] += c
        n1[hw[:-1]] += 1

    def prob(h, w):
        if not h:
            return (unigram[w] + 1) / (len(train) + V)
        lower = prob(h[1:], w)  # h' drops the oldest character
        if c_h[h] == 0:
            return lower
        return (counts[h + (w,)] + n1[h] * lower) / (c_h[h] + n1[h])

    return np.array([prob(tuple(val[max(0, t - order + 1):t]), val[t]) for t in range(len(val))]), prob


def ids_of(text, dtype=np.uint8):
    return np.frombuffer(text.encode("ascii"), np.uint8).astype(dtype) - np.array(ord("a"), dtype)


def random_ids(rng, n, V, dtype, alphabet=None):
    alphabet = np.arange(V) if alphabet is None else np.asarray(alphabet)
    return alphabet[rng.integers(0, len(alphabet), n)].astype(dtype)


def cases():
    """(name, train, val, V): small random and structured texts, awkward dtypes and lengths."""
    rng = np.random.default_rng(7)
    abra = ids_of("abracadabra" * 20)
    yield "random V=3", random_ids(rng, 300, 3, np.uint8), random_ids(rng, 80, 3, np.uint8), 3
    yield "random V=6", random_ids(rng, 400, 6, np.uint8), random_ids(rng, 100, 6, np.uint8), 6
    yield "abracadabra, val unseen contexts", abra, ids_of("abracadabradcbaddd"), 26
    yield "val shorter than the order", abra, ids_of("ba"), 26
    yield "train shorter than the order", ids_of("abc"), ids_of("abcabcaab"), 3
    yield "empty train", ids_of(""), ids_of("abcab"), 4
    yield "signed int64 ids", ids_of("abracadabra" * 5, np.int64), ids_of("abracadabrr", np.int64), 26
    # ids near 255 in uint8: key * V would wrap if ids were not cast first.
    yield "uint8 ids up to 255", *(random_ids(rng, n, 256, np.uint8, [0, 1, 254, 255]) for n in (300, 80)), 256
    yield "uint16, V=300", *(random_ids(rng, n, 300, np.uint16, [3, 150, 299]) for n in (300, 80)), 300
    # V = 2**16: order 4 keys reach 2**64 - 1 exactly (ids all 65535).
    yield "uint16, V=65536", *(random_ids(rng, n, 65536, np.uint16, [0, 65534, 65535]) for n in (300, 80)), 65536


CASES = list(cases())


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name, train, val, V", CASES, ids=[c[0] for c in CASES])
def test_ngram_matches_the_naive_reference(name, train, val, V, order):
    model = bl.fit_ngram(train, V, order)
    assert model.order == min(order, bl.max_order(V))
    expected, _ = reference_probs(train, val, V, model.order)
    np.testing.assert_allclose(bl.ngram_probs(model, val), expected, rtol=1e-12, atol=0)
    bits, used = bl.ngram_bits(train, val, V, order)
    assert used == model.order
    assert bits == pytest.approx(-np.mean(np.log2(expected)), rel=1e-12)


@pytest.mark.parametrize("name, train, val, V", CASES[:5], ids=[c[0] for c in CASES[:5]])
def test_next_char_probs_sum_to_one_and_agree_with_the_scores(name, train, val, V):
    model = bl.fit_ngram(train, V, 5)
    _, reference = reference_probs(train, val, V, 5)
    scored = bl.ngram_probs(model, val)
    for t in range(len(val) + 1):  # every history, from empty to the whole of val
        p = bl.next_char_probs(model, val[:t])  # (V,)
        assert p.shape == (V,) and (p > 0).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        h = tuple(int(c) for c in val[max(0, t - 4):t])
        np.testing.assert_allclose(p, [reference(h, w) for w in range(V)], rtol=1e-12, atol=0)
        if t < len(val):
            assert p[val[t]] == pytest.approx(scored[t], rel=1e-12)


def test_a_periodic_text_is_almost_free_to_predict():
    train, val = ids_of("ab" * 500), ids_of("ab" * 50)
    bits, order = bl.ngram_bits(train, val, 2)
    assert order == 5
    # The first val character is scored by the unigram (1 bit); after it, "a" always follows "b".
    assert bits < 0.015
    assert bl.unigram_bits(train, val, 2) == pytest.approx(1.0)


def test_a_uniform_text_costs_log2_V_under_the_unigram():
    V = 40
    train = np.tile(np.arange(V, dtype=np.uint8), 50)  # every character equally often
    val = np.random.default_rng(0).integers(0, V, 1000).astype(np.uint8)
    assert bl.unigram_bits(train, val, V) == pytest.approx(math.log2(V), rel=1e-12)
    # Uniform random text: the unigram is about log2 V and no context helps much.
    train = np.random.default_rng(1).integers(0, V, 20000).astype(np.uint8)
    assert bl.unigram_bits(train, val, V) == pytest.approx(math.log2(V), abs=0.02)
    assert bl.ngram_bits(train, val, V, 1).bits == bl.unigram_bits(train, val, V)


def test_an_empty_training_split_gives_the_uniform_distribution():
    val = ids_of("abcd")
    assert bl.unigram_bits(ids_of(""), val, 8) == pytest.approx(3.0)
    assert bl.ngram_bits(ids_of(""), val, 8).bits == pytest.approx(3.0)


def test_max_order():
    assert bl.max_order(2) == 64  # 2**64 fits exactly
    assert bl.max_order(65) == 10  # 65**10 ~ 1.3e19 <= 2**64 < 65**11
    assert bl.max_order(256) == 8
    assert bl.max_order(65536) == 4
    assert bl.max_order(70000) == 3
    assert bl.max_order(2 ** 32) == 2
    assert bl.max_order(0x110000) == 3  # the largest vocabulary still gets trigrams


def test_a_huge_vocabulary_lowers_the_order_and_still_works():
    V = 70000  # 70000**5 and 70000**4 overflow 64 bits; 70000**3 does not
    rng = np.random.default_rng(3)
    alphabet = [0, 1, 12345, 69998, 69999]
    train, val = random_ids(rng, 400, V, np.uint32, alphabet), random_ids(rng, 100, V, np.uint32, alphabet)
    bits, order = bl.ngram_bits(train, val, V, order=5)
    assert order == 3
    expected, _ = reference_probs(train, val, V, 3)
    assert bits == pytest.approx(-np.mean(np.log2(expected)), rel=1e-12)
    result = bl.baselines(train, val, V, pieces=data.pieces(len(val), streams=1))  # one piece: val[1:] scored
    assert result["ngram_order"] == 3
    assert result["ngram_bits"] == pytest.approx(-np.mean(np.log2(expected[1:])), rel=1e-12)


def test_baselines_is_plain_json():
    train, val = ids_of("abracadabra" * 20), ids_of("abracadabra")
    result = bl.baselines(train, val, 26)
    assert json.loads(json.dumps(result)) == result
    assert set(result) == {"unigram_bits", "ngram_bits", "ngram_order", "fit_chars", "scored_chars"}
    assert type(result["ngram_order"]) is int and type(result["ngram_bits"]) is float
    assert result["ngram_bits"] < result["unigram_bits"]


def test_ids_outside_the_vocabulary_are_refused():
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        bl.unigram_bits(ids_of("abcd"), ids_of("abc"), 3)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        bl.ngram_bits(ids_of("abc"), np.array([0, -1]), 3)
    with pytest.raises(ValueError, match="order is at least 1"):
        bl.ngram_bits(ids_of("abc"), ids_of("abc"), 3, order=0)


@pytest.mark.parametrize("max_predicted", [None, 40, 7])
def test_baselines_score_the_pieces_each_from_its_own_start(max_predicted):
    """The characters scored are the pieces' predictions, each piece's context starting at its own
    first character (as the model starts each piece from a zero state); fitted on fit_chars."""
    rng = np.random.default_rng(5)
    train, val = random_ids(rng, 500, 4, np.uint8), random_ids(rng, 120, 4, np.uint8)
    pieces = data.pieces(len(val), max_predicted, streams=5)
    calls = []
    result = bl.baselines(train, val, 4, order=3, pieces=pieces, fit_chars=300, progress=calls.append)
    logs = []
    for start, length in zip(pieces.starts, pieces.lengths):
        probs, _ = reference_probs(train[:300], val[start:start + length + 1], 4, 3)
        logs.append(np.log2(probs[1:]))
    assert result["ngram_bits"] == pytest.approx(-np.concatenate(logs).mean(), rel=1e-12)
    assert result["fit_chars"] == 300 and result["scored_chars"] == pieces.predicted == sum(map(len, logs))
    assert len(calls) == bl.work_units(4, 3) == 3  # orders 2 and 3, then the scoring
    assert bl.baselines(train, val, 4, order=3, pieces=pieces, fit_chars=10**9)["fit_chars"] == 500


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="needs the bundled data/tinyshakespeare.txt")
def test_tiny_shakespeare():
    """The README's figures: fitted on the whole training split (it is under FIT_CHARS), scored on
    every validation character after the first, as the model is."""
    _, ids = textfile.read_ids(str(SHAKESPEARE))
    train, val = data.split(ids, 0.1)
    assert len(train) <= bl.FIT_CHARS
    result = bl.baselines(train, val, 65, pieces=data.pieces(len(val), 200_000))
    assert f"{result['unigram_bits']:.3f}" == "4.829" and f"{result['ngram_bits']:.3f}" == "2.408"
    assert result["ngram_order"] == 5 and result["scored_chars"] == len(val) - 1
