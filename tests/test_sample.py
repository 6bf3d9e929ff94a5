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
    assert sample.default_seed(Vocab("ab"), rng) in "ab"


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_the_fast_stepper_equals_model_step(name, rng):
    from conftest import random_params_and_state
    config = ModelConfig(name, vocab_size=6, hidden_size=5, num_layers=3)
    params, state = random_params_and_state(config, rng, batch_size=1)
    stepper = sample.Stepper(params, config, {k: v.copy() for k, v in state.items()})
    for char_id in rng.integers(0, 6, size=12):
        expected, state = model.step(params, config, np.array([char_id]), state)
        np.testing.assert_allclose(stepper.step(int(char_id)), expected[0], rtol=1e-10, atol=1e-12)
    for k in state:
        np.testing.assert_allclose(stepper.state[k], state[k], rtol=1e-10, atol=1e-12)


def test_a_tiny_temperature_takes_the_most_likely(rng):
    """logits / 1e-308 overflows to +-inf; the most likely character must still be the one drawn."""
    logits = np.array([3.0, 1.0, 2.0, -1.0])
    assert all(sample.choose(logits, rng, temperature=1e-308) == 0 for _ in range(20))
