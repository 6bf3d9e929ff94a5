"""The Python API: charnn.load, Model.step, Model.reset (the scores `charnn eval` prints: test_evaluate.py)."""

import numpy as np
import pytest

import charnn
from charnn import checkpoint

from test_checkpoint import make_checkpoint


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_load_step_and_reset(tmp_path, rng, name):
    """A saved checkpoint loaded: stepping gives distributions that depend on what came before, and
    reset() goes back to the zero state, so the same characters give the same probabilities again."""
    ckpt = make_checkpoint(rng, name)
    checkpoint.save(str(tmp_path / "c.npz"), ckpt)
    m = charnn.load(str(tmp_path / "c.npz"))
    assert isinstance(m, charnn.Model) and m.vocab.chars == ckpt.vocab.chars
    first = [m.step(ch).copy() for ch in "abz"]
    for p in first:
        assert p.shape == (5,) and p.dtype == np.float64 and p.sum() == pytest.approx(1.0, abs=1e-12)
        assert (p > 0).all()
    assert not np.allclose(m.step("a"), first[0])  # the state carries "abz"
    m.reset()
    for ch, p in zip("abz", first):
        np.testing.assert_array_equal(m.step(ch), p)
    for k, s in m.state.items():
        assert s.shape == (2, 1, 4)


def test_step_probabilities_are_the_softmax_of_the_forward(tmp_path, rng):
    ckpt = make_checkpoint(rng, "lstm", "float64")
    m = charnn.Model(ckpt.params, ckpt.model_config, ckpt.vocab)
    ids = ckpt.vocab.encode("ab€a")
    logits, _, _, _ = charnn._model.forward(ckpt.params, ckpt.model_config, ids[:, None],
                                            charnn._model.zero_state(ckpt.model_config, 1, "float64"))
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for t, ch in enumerate("ab€a"):
        np.testing.assert_allclose(m.step(ch), expected[t], rtol=1e-10)
    with pytest.raises(charnn.CharnnError, match="one character"):
        m.step("ab")
