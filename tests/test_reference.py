"""charnn.reference, the plain equations: its gradients against finite differences, then the fast
layers (charnn.layers) and the whole fast model (charnn.model) against it, in float64.

The fast gated cells take their input projection gate-major, (G, T, B, H), with the sigmoid blocks
halved (layers.gates_from_rows makes it from the reference's (T, B, G*H) rows) and overwrite it;
everything else is compared array for array, to about 1e-10 relative to each array's largest
element. test_a_wrong_fast_gradient_fails_the_comparison shows that the comparison is not vacuous.
"""

import numpy as np
import pytest

from charnn import layers, model, reference
from charnn.config import MODELS, ModelConfig
from charnn.gradcheck import THRESHOLD, numerical_gradient, relative_error

from conftest import random_params_and_state

T, B, V, D, H = 4, 3, 6, 5, 4
TOLERANCE = 1e-10  # fast vs reference: the same math in another order, float64 rounding apart


def difference(fast, ref) -> float:
    """max |fast - ref| relative to ref's largest element (so near-zero elements do not count as large)."""
    fast, ref = np.asarray(fast, np.float64), np.asarray(ref, np.float64)
    assert fast.shape == ref.shape, (fast.shape, ref.shape)
    return float(np.max(np.abs(fast - ref)) / max(np.max(np.abs(ref)), 1e-300))


def assert_same(fast: dict, ref: dict):
    errors = {name: difference(fast[name], ref[name]) for name in ref}
    assert set(fast) == set(ref)
    assert max(errors.values()) < TOLERANCE, errors


def fd_check(forward, backward, inputs, rng):
    """forward() -> an array; backward(dout) -> dict name -> gradient. d sum(out * R) / d input for
    every named input against finite differences (R random, so the loss is a scalar)."""
    R = rng.standard_normal(forward().shape)
    analytic = backward(R)
    for name, x in inputs.items():
        numeric = numerical_gradient(lambda: float(np.sum(forward() * R)), x)
        assert relative_error(analytic[name], numeric) < THRESHOLD, name


def cell_inputs(rng, G):
    """xw: (T, B, G*H) rows, h0 and c0: (B, H) non-zero, Whh: (H, G*H), bhn: (H,)."""
    return (rng.standard_normal((T, B, G * H)), rng.uniform(-0.9, 0.9, (B, H)), rng.uniform(-0.9, 0.9, (B, H)),
            rng.standard_normal((H, G * H)) * 0.5, rng.standard_normal(H))


# ---------------------------------------------------------------------------------------------
# The reference's own gradients


def test_reference_sigmoid_is_the_logistic_function():
    x = np.array([-3.0, 0.0, 2.0])
    np.testing.assert_allclose(reference.sigmoid(x), [1 / (1 + np.e**3), 0.5, np.e**2 / (1 + np.e**2)], rtol=1e-15)


def test_reference_embedding_and_affine(rng):
    ids = rng.integers(0, V, size=(T, B))
    W, b = rng.standard_normal((V, D)), rng.standard_normal(D)
    np.testing.assert_allclose(reference.embedding_forward(ids, W, b)[0], W[ids] + b, rtol=1e-15)
    fd_check(lambda: reference.embedding_forward(ids, W, b)[0],
             lambda d: dict(zip("Wb", reference.embedding_backward(d, reference.embedding_forward(ids, W, b)[1]))),
             {"W": W, "b": b}, rng)
    x, W, b = rng.standard_normal((7, D)), rng.standard_normal((D, H)), rng.standard_normal(H)
    fd_check(lambda: reference.affine_forward(x, W, b)[0],
             lambda d: dict(zip("xWb", reference.affine_backward(d, reference.affine_forward(x, W, b)[1]))),
             {"x": x, "W": W, "b": b}, rng)


def test_reference_softmax_cross_entropy(rng):
    logits, targets = rng.standard_normal((8, V)), rng.integers(0, V, size=8)
    loss, dlogits = reference.softmax_cross_entropy(logits, targets)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(8), targets])), rel=1e-14)
    numeric = numerical_gradient(lambda: reference.softmax_cross_entropy(logits, targets)[0], logits)
    assert relative_error(dlogits, numeric) < THRESHOLD


def test_reference_rnn(rng):
    xw, h0, _, Whh, _ = cell_inputs(rng, 1)
    fd_check(lambda: reference.rnn_forward(xw, h0, Whh)[0][1:],
             lambda d: dict(zip(["xw", "h0", "Whh"], reference.rnn_backward(d, reference.rnn_forward(xw, h0, Whh)[1]))),
             {"xw": xw, "h0": h0, "Whh": Whh}, rng)


def test_reference_lstm(rng):
    xw, h0, c0, Whh, _ = cell_inputs(rng, 4)
    fd_check(lambda: reference.lstm_forward(xw, h0, c0, Whh)[0][1:],
             lambda d: dict(zip(["xw", "h0", "c0", "Whh"],
                                reference.lstm_backward(d, reference.lstm_forward(xw, h0, c0, Whh)[2]))),
             {"xw": xw, "h0": h0, "c0": c0, "Whh": Whh}, rng)


def test_reference_gru(rng):
    xw, h0, _, Whh, bhn = cell_inputs(rng, 3)
    fd_check(lambda: reference.gru_forward(xw, h0, Whh, bhn)[0][1:],
             lambda d: dict(zip(["xw", "h0", "Whh", "bhn"],
                                reference.gru_backward(d, reference.gru_forward(xw, h0, Whh, bhn)[1]))),
             {"xw": xw, "h0": h0, "Whh": Whh, "bhn": bhn}, rng)


@pytest.mark.parametrize("name", MODELS)
def test_reference_model_gradients(name, rng):
    """Two layers, so both inputs (the embedding, and the affine from the layer below) are checked."""
    config = ModelConfig(name, vocab_size=5, hidden_size=3, num_layers=2).validate()
    params, state = random_params_and_state(config, rng, batch_size=2)
    inputs, targets = rng.integers(0, 5, size=(3, 2)), rng.integers(0, 5, size=(3, 2))
    _, grads, _ = reference.loss_and_grads(params, config, inputs, targets, state)
    assert set(grads) == set(params)
    for p in params:
        numeric = numerical_gradient(lambda: reference.loss_and_grads(params, config, inputs, targets, state)[0], params[p])
        assert relative_error(grads[p], numeric) < THRESHOLD, p


# ---------------------------------------------------------------------------------------------
# The fast layers against the reference


def assert_layer_matches(layer, args, dout, names):
    """layers.<layer>_forward / _backward against reference.<layer>_forward / _backward: the output
    and each gradient (given these names, in the order backward returns them)."""
    out, cache = getattr(layers, f"{layer}_forward")(*args)
    ref_out, ref_cache = getattr(reference, f"{layer}_forward")(*args)
    assert difference(out, ref_out) < TOLERANCE
    assert_same(dict(zip(names, getattr(layers, f"{layer}_backward")(dout, cache))),
                dict(zip(names, getattr(reference, f"{layer}_backward")(dout, ref_cache))))


@pytest.mark.parametrize("vocab", [V, layers.ONEHOT_MAX_VOCAB + 1])  # both backward paths
def test_embedding_matches_reference(rng, vocab):
    ids = rng.integers(0, vocab, size=(T, B))
    W, b = rng.standard_normal((vocab, D)), rng.standard_normal(D)
    assert_layer_matches("embedding", (ids, W, b), rng.standard_normal((T, B, D)), ["dW", "db"])


def test_affine_matches_reference(rng):
    x, W, b = rng.standard_normal((7, D)), rng.standard_normal((D, H)), rng.standard_normal(H)
    assert_layer_matches("affine", (x, W, b), rng.standard_normal((7, H)), ["dx", "dW", "db"])


def test_rnn_matches_reference(rng):
    xw, h0, _, Whh, _ = cell_inputs(rng, 1)
    assert_layer_matches("rnn", (xw, h0, Whh), rng.standard_normal((T, B, H)), ["dxw", "dh0", "dWhh"])


def test_lstm_matches_reference(rng):
    xw, h0, c0, Whh, _ = cell_inputs(rng, 4)
    dhs = rng.standard_normal((T, B, H))
    gates = layers.gates_from_rows(xw, layers.LSTM_SCALE)  # (4, T, B, H), sigmoid blocks halved
    hs, cs, cache = layers.lstm_forward(gates, h0, c0, Whh)
    ref_hs, ref_cs, ref_cache = reference.lstm_forward(xw, h0, c0, Whh)
    assert_same({"hs": hs, "cs": cs}, {"hs": ref_hs, "cs": ref_cs})
    # lstm_forward overwrote its input with the activated gates [o i f g] (its docstring says so)
    ref_gates = np.array([[step[k] for step in ref_cache] for k in (2, 3, 4, 5)])  # (4, T, B, H)
    assert difference(gates, ref_gates) < TOLERANCE
    names = ["dxw", "dh0", "dc0", "dWhh"]
    assert_same(dict(zip(names, layers.lstm_backward(dhs, cache))), dict(zip(names, reference.lstm_backward(dhs, ref_cache))))


def test_gru_matches_reference(rng):
    xw, h0, _, Whh, bhn = cell_inputs(rng, 3)
    dhs = rng.standard_normal((T, B, H))
    gates = layers.gates_from_rows(xw, layers.GRU_SCALE)  # (3, T, B, H), r and z blocks halved
    hs, cache = layers.gru_forward(gates, h0, Whh, bhn)
    ref_hs, ref_cache = reference.gru_forward(xw, h0, Whh, bhn)
    assert difference(hs, ref_hs) < TOLERANCE
    # gru_forward overwrote its input with the activated [r z n] (its docstring says so)
    ref_gates = np.array([[step[k] for step in ref_cache] for k in (1, 2, 3)])  # (3, T, B, H)
    assert difference(gates, ref_gates) < TOLERANCE
    names = ["dxw", "dh0", "dWhh", "dbhn"]
    assert_same(dict(zip(names, layers.gru_backward(dhs, cache))), dict(zip(names, reference.gru_backward(dhs, ref_cache))))


# ---------------------------------------------------------------------------------------------
# The whole fast model against the reference


def model_differences(name, num_layers, rng):
    """difference() of the fast model's loss, every gradient and the final state from the reference's."""
    config = ModelConfig(name, vocab_size=V, hidden_size=H, num_layers=num_layers).validate()
    params, state = random_params_and_state(config, rng, batch_size=B)
    inputs, targets = rng.integers(0, V, size=(T, B)), rng.integers(0, V, size=(T, B))
    loss, grads, final = model.loss_and_grads(params, config, inputs, targets, state)
    ref_loss, ref_grads, ref_final = reference.loss_and_grads(params, config, inputs, targets, state)
    assert set(grads) == set(ref_grads) == set(params) and set(final) == set(ref_final)
    out = {"loss": difference(loss, ref_loss)}
    out.update({p: difference(grads[p], ref_grads[p]) for p in params})
    out.update({"state." + s: difference(final[s], ref_final[s]) for s in final})
    return out


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_model_matches_reference(name, num_layers, rng):
    errors = model_differences(name, num_layers, rng)
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.parametrize("name", MODELS)
def test_a_wrong_fast_gradient_fails_the_comparison(name, rng, monkeypatch):
    """Not vacuous: a recurrent weight gradient off by one part in a million is caught."""
    real = getattr(layers, f"{name}_backward")

    def wrong(dhs, cache):
        grads = list(real(dhs, cache))
        grads[-2 if name == "gru" else -1] = grads[-2 if name == "gru" else -1] * (1 + 1e-6)  # dWhh
        return tuple(grads)
    monkeypatch.setattr(layers, f"{name}_backward", wrong)
    errors = model_differences(name, 2, rng)
    assert errors["l0.Whh"] > TOLERANCE and errors["l1.Whh"] > TOLERANCE
    assert errors["loss"] < TOLERANCE  # the forward is untouched
