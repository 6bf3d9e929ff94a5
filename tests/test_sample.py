import numpy as np
import pytest

from charnn import model, sample
from charnn.config import ModelConfig
from charnn.data import Vocab
from charnn.errors import CharnnError


def test_argmax_and_top_1_take_the_most_likely(rng):
    logits = np.array([0.1, 2.0, -1.0, 1.9])
    assert sample.choose(logits, rng, argmax=True) == 1
    assert all(sample.choose(logits, rng, top_k=1) == 1 for _ in range(50))


def test_draws_follow_softmax_with_temperature(rng):
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    for temperature in (1.0, 0.5):
        p = np.exp(logits / temperature)
        p /= p.sum()
        counts = np.bincount([sample.choose(logits, rng, temperature) for _ in range(20000)], minlength=3)
        np.testing.assert_allclose(counts / 20000, p, atol=0.015)


def test_top_k_never_draws_outside_the_k_most_likely(rng):
    logits = np.array([3.0, 0.0, 2.9, 0.1, 2.8])
    drawn = {sample.choose(logits, rng, temperature=5.0, top_k=3) for _ in range(2000)}
    assert drawn == {0, 2, 4}


def make(rng):
    vocab = Vocab("\nabc")
    config = ModelConfig("lstm", vocab_size=4, hidden_size=8, num_layers=2)
    return model.init_params(config, rng), config, vocab


def test_generate_is_reproducible_and_counts_only_new_characters(rng):
    params, config, vocab = make(rng)
    a = "".join(sample.generate(params, config, vocab, "ab", 40, np.random.default_rng(5)))
    b = "".join(sample.generate(params, config, vocab, "ab", 40, np.random.default_rng(5)))
    c = "".join(sample.generate(params, config, vocab, "ab", 40, np.random.default_rng(6)))
    assert a == b and a != c and len(a) == 40 and set(a) <= set(vocab.chars)


def test_generate_primes_with_the_whole_seed(rng):
    """The first draw comes from the logits after the last seed character."""
    params, config, vocab = make(rng)
    state = model.zero_state(config, 1)
    for ch in "abca":
        logits, state = model.step(params, config, vocab.encode(ch).astype(np.intp), state)
    first = next(sample.generate(params, config, vocab, "abca", 1, rng, argmax=True))
    assert first == vocab.chars[int(np.argmax(logits[0]))]


def test_bad_options_and_seeds(rng):
    params, config, vocab = make(rng)
    with pytest.raises(CharnnError, match=r"never saw: 'xz'"):
        list(sample.generate(params, config, vocab, "abzx", 5, rng))
    for t in (0, -1.0):
        with pytest.raises(CharnnError, match="--temperature must be above 0"):
            list(sample.generate(params, config, vocab, "a", 5, rng, temperature=t))
    with pytest.raises(CharnnError, match="--top-k"):
        list(sample.generate(params, config, vocab, "a", 5, rng, top_k=0))
    with pytest.raises(CharnnError, match="seed text is empty"):
        list(sample.generate(params, config, vocab, "", 5, rng))


def test_default_seed(rng):
    assert sample.default_seed(Vocab("\nab"), rng) == "\n"
    seeds = {sample.default_seed(Vocab("ab"), np.random.default_rng(k)) for k in range(20)}
    assert seeds == {"a", "b"}  # one random character, either of them


def test_a_tiny_temperature_takes_the_most_likely(rng):
    """logits / 1e-308 overflows to +-inf; the most likely character must still be the one drawn."""
    logits = np.array([3.0, 1.0, 2.0, -1.0])
    assert all(sample.choose(logits, rng, temperature=1e-308) == 0 for _ in range(20))


def test_softmax_and_log_softmax(rng):
    from charnn import layers
    z = rng.standard_normal((4, 7))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(layers.softmax(z), p, rtol=1e-12)
    np.testing.assert_allclose(layers.log_softmax(z), np.log(p), rtol=1e-12)
    q = np.exp(z / 0.3) / np.exp(z / 0.3).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(layers.softmax(z, 0.3), q, rtol=1e-10)
    huge = np.array([1000.0, 0.0, -1000.0], np.float32)  # exp(1000) overflows: the max comes off first
    np.testing.assert_array_equal(layers.softmax(huge), [1, 0, 0])
    np.testing.assert_allclose(layers.log_softmax(huge), [0, -1000, -2000])
    assert layers.softmax(huge).dtype == np.float64 and layers.log_softmax(huge).dtype == np.float32
