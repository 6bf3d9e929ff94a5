"""Beam search against a brute-force search of every text on a tiny vocabulary."""

import itertools

import numpy as np
import pytest

from charnn import layers, model
from charnn.beam import beam_search
from charnn.config import ModelConfig
from charnn.data import Vocab
from charnn.decoding import Decoding
from charnn.errors import CharnnError
from charnn.sample import generate

from conftest import random_params_and_state

VOCAB = Vocab("abc")


def tiny(rng, name="lstm"):
    config = ModelConfig(name, vocab_size=3, hidden_size=6, num_layers=2)
    params, _ = random_params_and_state(config, rng, 1)
    for p in params.values():
        p *= 3  # sharper distributions: the best texts are clearly apart
    return params, config


def brute_force(params, config, seed, length, stop=()):
    """The best text by log-probability per character, over every text of `length` characters,
    each cut at the first stop string it produces (scored with that stop string's characters,
    which it leaves out), each scored by a whole-sequence forward pass of its own."""
    best = None
    for ids in itertools.product(range(VOCAB.size), repeat=length):
        text = VOCAB.decode(ids)
        full = VOCAB.encode(seed + text)
        logits, _, _, _ = model.forward(params, config, full[:, None], model.zero_state(config, 1, "float64"))
        logp = layers.log_softmax(logits)[np.arange(len(seed) - 1, len(full) - 1), full[len(seed):]]  # (length,)
        n, kept = length, text
        for j in range(1, length + 1):
            hit = [s for s in stop if text[:j].endswith(s)]
            if hit:
                n, kept = j, text[:j - len(max(hit, key=len))]
                break
        score = logp[:n].sum() / n
        if best is None or score > best[0]:
            best = (score, kept)
    return best[1]


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("stop", [(), ("b",), ("ca", "bb")])
def test_a_beam_that_keeps_every_text_finds_the_best(rng, name, stop):
    """A width of V**(n-1) prunes nothing, so beam search must find the brute force's best text,
    length-normalised when stop strings end texts early."""
    params, config = tiny(rng, name)
    for seed in ("a", "cab"):
        assert beam_search(params, config, VOCAB, seed, 4, 27, stop) == brute_force(params, config, seed, 4, stop)


def test_a_beam_of_one_is_greedy_and_every_beam_is_deterministic(rng):
    params, config = tiny(rng)
    greedy = "".join(generate(params, config, VOCAB, "ab", 12, rng, Decoding(argmax=True)))
    assert beam_search(params, config, VOCAB, "ab", 12, 1) == greedy
    for width in (2, 5):
        assert beam_search(params, config, VOCAB, "ab", 12, width) == beam_search(params, config, VOCAB, "ab", 12, width)
    assert beam_search(params, config, VOCAB, "ab", 0, 3) == ""


def test_a_wider_beam_can_find_a_likelier_text_than_greedy(rng):
    """On some seed, the width-27 beam's text must score better than greedy's (else the search
    would be doing nothing greedy does not)."""
    params, config = tiny(rng)

    def score(seed, text):
        full = VOCAB.encode(seed + text)
        logits, _, _, _ = model.forward(params, config, full[:, None], model.zero_state(config, 1, "float64"))
        return layers.log_softmax(logits)[np.arange(len(seed) - 1, len(full) - 1), full[len(seed):]].mean()
    gains = [score(s, beam_search(params, config, VOCAB, s, 4, 27)) - score(s, beam_search(params, config, VOCAB, s, 4, 1))
             for s in ("a", "b", "c", "ab", "ba", "cc", "abc", "cab")]
    assert min(gains) >= -1e-12 and max(gains) > 0


def test_bad_widths(rng):
    params, config = tiny(rng)
    with pytest.raises(CharnnError, match="--beam must be at least 1"):
        beam_search(params, config, VOCAB, "a", 3, 0)
