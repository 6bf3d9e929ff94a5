"""The whole model: BPTT gradients (also with dropout), stepping vs the sequence forward, carried
state, the fresh loss, the seed's "hello" example learned and recalled, and dropout only where and
when it belongs."""

import math

import numpy as np
import pytest

import charnn
from charnn import gradcheck, model, optim
from charnn.config import MODELS, ModelConfig
from charnn.data import Vocab

from conftest import random_params_and_state


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("layers", [1, 2])
def test_whole_model_gradients(name, layers):
    errors = gradcheck.check_model(name, num_layers=layers, hidden_size=5, seq_length=5, batch_size=3, vocab_size=7)
    per_layer = ("Wxh", "Whh", "bh", "bhn") if name == "gru" else ("Wxh", "Whh", "bh")
    assert set(errors) == {f"l{l}.{p}" for l in range(layers) for p in per_layer} | {"Why", "by"}
    assert max(errors.values()) < gradcheck.THRESHOLD, errors


@pytest.mark.parametrize("name", MODELS)
def test_whole_model_gradients_with_dropout(name):
    """Two layers, so both places are checked: between the layers and before the output layer."""
    errors = gradcheck.check_model(name, num_layers=2, hidden_size=5, seq_length=4, batch_size=3,
                                   vocab_size=7, dropout=0.5)
    assert max(errors.values()) < gradcheck.THRESHOLD, errors


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    """The check is not vacuous: a backward that drops the recurrent term of dh fails it."""
    from charnn import layers as L

    real = L.rnn_backward

    def wrong(dhs, cache):
        dxw, dh0, dWhh = real(dhs, cache)
        return dxw, dh0, dWhh * 1.001
    monkeypatch.setattr(L, "rnn_backward", wrong)
    errors = gradcheck.check_model("rnn", num_layers=1)
    assert errors["l0.Whh"] > gradcheck.THRESHOLD


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("B", [1, 3])
def test_stepping_equals_the_sequence_forward(name, num_layers, B, rng):
    """The Stepper, one character at a time on B streams from a carried state, gives the logits and
    the final state of model.forward over the whole sequence."""
    config = ModelConfig(name, vocab_size=6, hidden_size=5, num_layers=num_layers)
    params, state = random_params_and_state(config, rng, batch_size=B)
    inputs = rng.integers(0, 6, size=(7, B))  # (T, B)
    logits, _, final, _ = model.forward(params, config, inputs, state)
    stepper = model.Stepper(params, config, B, state)
    for t in range(7):
        step_logits = stepper.step(int(inputs[t, 0]) if B == 1 else inputs[t])
        assert step_logits.shape == ((6,) if B == 1 else (B, 6))
        np.testing.assert_allclose(step_logits.reshape(B, 6), logits[t * B:(t + 1) * B], rtol=1e-10, atol=1e-12)
    assert stepper.state.keys() == final.keys()
    for k in final:
        np.testing.assert_allclose(stepper.state[k], final[k], rtol=1e-10, atol=1e-12)
    stepper.reset()
    for k, s in stepper.state.items():
        np.testing.assert_array_equal(s, 0)


@pytest.mark.parametrize("name", MODELS)
def test_model_step_is_one_step_of_the_sequence_forward(name, rng):
    config = ModelConfig(name, vocab_size=6, hidden_size=5, num_layers=2)
    params, state = random_params_and_state(config, rng, batch_size=3)
    ids = np.array([1, 5, 0])
    logits, _, final, _ = model.forward(params, config, ids[None], state)
    step_logits, new_state = model.step(params, config, ids, state)
    np.testing.assert_allclose(step_logits, logits, rtol=1e-10, atol=1e-12)
    for k in final:
        np.testing.assert_allclose(new_state[k], final[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_carried_state_continues_the_sequence(name, rng):
    """Two windows with the state carried give the outputs of one window twice as long."""
    config = ModelConfig(name, vocab_size=6, hidden_size=5, num_layers=2)
    params, state = random_params_and_state(config, rng, batch_size=2)
    inputs = rng.integers(0, 6, size=(8, 2))
    whole, _, _, _ = model.forward(params, config, inputs, state)
    first, _, mid, _ = model.forward(params, config, inputs[:5], state)
    second, _, _, _ = model.forward(params, config, inputs[5:], mid)
    np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=1e-12, atol=1e-14)


def test_forward_does_not_modify_the_given_state(rng):
    config = ModelConfig("lstm", vocab_size=6, hidden_size=5, num_layers=2)
    params, state = random_params_and_state(config, rng, batch_size=2)
    before = {k: v.copy() for k, v in state.items()}
    model.forward(params, config, rng.integers(0, 6, size=(3, 2)), state)
    model.step(params, config, np.array([1, 2]), state)
    for k in state:
        np.testing.assert_array_equal(state[k], before[k])


@pytest.mark.parametrize("name", MODELS)
def test_fresh_model_loss_is_about_ln_v(name, rng):
    V = 65
    config = ModelConfig(name, vocab_size=V, hidden_size=64, num_layers=2)
    params = model.init_params(config, rng)
    inputs, targets = rng.integers(0, V, size=(32, 8)), rng.integers(0, V, size=(32, 8))
    _, loss, _, _ = model.forward(params, config, inputs, model.zero_state(config, 8), targets)
    assert abs(loss - math.log(V)) < 0.05 * math.log(V)


def test_init_is_float32_with_forget_bias_one(rng):
    config = ModelConfig("lstm", vocab_size=10, hidden_size=4, num_layers=2)
    params = model.init_params(config, rng)
    assert all(p.dtype == np.float32 for p in params.values())
    for l in range(2):
        np.testing.assert_array_equal(params[f"l{l}.bh"], [0] * 8 + [1] * 4 + [0] * 4)  # gates o i f g
    np.testing.assert_array_equal(params["by"], 0)  # V > H: the forget block is not in the output bias
    assert {n: p.shape for n, p in params.items()} == {
        "l0.Wxh": (10, 16), "l0.Whh": (4, 16), "l0.bh": (16,),
        "l1.Wxh": (4, 16), "l1.Whh": (4, 16), "l1.bh": (16,), "Why": (4, 10), "by": (10,)}
    assert list(params) == list(model.param_shapes(config))  # the fixed order checkpoints use


def test_gru_parameters_and_init(rng):
    config = ModelConfig("gru", vocab_size=10, hidden_size=4, num_layers=2)
    params = model.init_params(config, rng)
    assert {n: p.shape for n, p in params.items()} == {
        "l0.Wxh": (10, 12), "l0.Whh": (4, 12), "l0.bh": (12,), "l0.bhn": (4,),
        "l1.Wxh": (4, 12), "l1.Whh": (4, 12), "l1.bh": (12,), "l1.bhn": (4,), "Why": (4, 10), "by": (10,)}
    for name in ("l0.bh", "l0.bhn", "l1.bh", "l1.bhn", "by"):
        np.testing.assert_array_equal(params[name], 0)
    assert model.state_names(config) == ("h",)


@pytest.mark.parametrize("name", MODELS)
def test_dropout_only_in_training(name, rng):
    """No Generator (evaluation, sampling): the model with dropout is exactly the model without it.
    With one (training): the outputs change, but the recurrence and layer 0's input are never
    dropped, so layer 0's final state is unchanged, and layer 1's (its input was dropped) is not."""
    plain = ModelConfig(name, vocab_size=6, hidden_size=5, num_layers=2, dropout=0.0)
    dropped = ModelConfig(name, vocab_size=6, hidden_size=5, num_layers=2, dropout=0.5)
    params, state = random_params_and_state(plain, rng, batch_size=3)
    inputs, targets = rng.integers(0, 6, size=(5, 3)), rng.integers(0, 6, size=(5, 3))
    ref_logits, ref_loss, ref_state, _ = model.forward(params, plain, inputs, state, targets)
    logits, loss, _, _ = model.forward(params, dropped, inputs, state, targets)
    np.testing.assert_array_equal(logits, ref_logits)
    assert loss == ref_loss
    logits, _, _, _ = model.forward(params, plain, inputs, state, targets, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(logits, ref_logits)  # dropout 0 with a Generator: nothing dropped

    training = np.random.default_rng(0)
    logits, _, final, _ = model.forward(params, dropped, inputs, state, targets, rng=training)
    assert not np.allclose(logits, ref_logits)
    for k in final:
        np.testing.assert_array_equal(final[k][0], ref_state[k][0])
        assert not np.allclose(final[k][1], ref_state[k][1])
    again = model.forward(params, dropped, inputs, state, targets, rng=np.random.default_rng(0))[0]
    np.testing.assert_array_equal(again, logits)  # the Generator is the only source of randomness


@pytest.mark.parametrize("name", MODELS)
def test_hello_is_learned_and_recalled(name):
    """The seed's example: vocabulary h, e, l, o; "hello" is four training examples. After
    training, the model continues "h" with "ello", which needs memory: after the first "l" comes
    "l", after the second "o"."""
    vocab = Vocab("ehlo")
    ids = vocab.encode("hello")
    inputs, targets = ids[:-1, None], ids[1:, None]  # (T=4, B=1)
    config = ModelConfig(name, vocab_size=4, hidden_size=16, num_layers=1)
    params = model.init_params(config, np.random.default_rng(0))
    opt = optim.init_state("adam", params)
    for t in range(1, 201):
        loss, grads, _ = model.loss_and_grads(params, config, inputs, targets, model.zero_state(config, 1))
        optim.clip_by_global_norm(grads, 5.0)
        optim.update("adam", params, grads, opt, 0.02, t)
    assert loss < 0.05
    m = charnn.Model(params, config, vocab)
    assert m.generate("h", length=4, argmax=True) == "ello"
    probs = m.step("h")  # the step API: the state stays inside
    assert vocab.chars[probs.argmax()] == "e" and probs.sum() == pytest.approx(1.0)
    for expected, ch in zip("llo", "el"):
        assert vocab.chars[m.step(ch).argmax()] == expected
    assert vocab.chars[m.step("l").argmax()] == "o"
