"""Every fast layer's backward against float64 finite differences, the embedding gradient's fast
forms against np.add.at, the gated cells' projection layout, and dropout. tests/test_reference.py
compares every fast layer, forward and backward, with the plain equations in charnn.reference."""

import numpy as np
import pytest

from charnn import layers, reference
from charnn.gradcheck import THRESHOLD, numerical_gradient, relative_error

T, B, V, D, H = 4, 3, 6, 5, 4


def check(f_forward, backward_grads, inputs, rng):
    """f_forward() -> output array; backward_grads(dout) -> dict name -> gradient.
    Checks d sum(out * R) / d input for every named input against finite differences."""
    R = rng.standard_normal(f_forward().shape)  # a random projection makes the loss a scalar
    analytic = backward_grads(R)
    for name, x in inputs.items():
        numeric = numerical_gradient(lambda: float(np.sum(f_forward() * R)), x)
        assert relative_error(analytic[name], numeric) < THRESHOLD, name


def test_embedding(rng):
    ids = rng.integers(0, V, size=(T, B))
    W, b = rng.standard_normal((V, D)), rng.standard_normal(D)
    out, cache = layers.embedding_forward(ids, W, b)
    np.testing.assert_allclose(out, reference.embedding_forward(ids, W, b)[0])  # the row lookup is the one-hot product

    def grads(dout):
        dW, db = layers.embedding_backward(dout, layers.embedding_forward(ids, W, b)[1])
        return {"W": dW, "b": db}
    check(lambda: layers.embedding_forward(ids, W, b)[0], grads, {"W": W, "b": b}, rng)


@pytest.mark.parametrize("vocab", [7, layers.ONEHOT_MAX_VOCAB, layers.ONEHOT_MAX_VOCAB + 1, 5000])
def test_embedding_gradient_equals_np_add_at(rng, vocab):
    """Both fast forms, the one-hot product (small V) and the sorted segment sums (large V), equal
    np.add.at, the plain statement of the math; ids that never occur get zero rows."""
    ids = rng.integers(0, min(vocab, 300), size=(20, 8))  # most of a large vocabulary unused
    dout = rng.standard_normal((20, 8, D)).astype(np.float32)
    dW, db = layers.embedding_backward(dout, (ids, vocab))
    expected = np.zeros((vocab, D), np.float32)
    np.add.at(expected, ids.reshape(-1), dout.reshape(-1, D))
    assert dW.shape == (vocab, D)
    np.testing.assert_allclose(dW, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db, dout.sum(axis=(0, 1)), rtol=1e-5)


def test_affine(rng):
    x, W, b = rng.standard_normal((7, D)), rng.standard_normal((D, H)), rng.standard_normal(H)

    def grads(dout):
        dx, dW, db = layers.affine_backward(dout, layers.affine_forward(x, W, b)[1])
        return {"x": dx, "W": dW, "b": db}
    check(lambda: layers.affine_forward(x, W, b)[0], grads, {"x": x, "W": W, "b": b}, rng)


def test_rnn(rng):
    xw, h0, Whh = rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((H, H)) * 0.5

    def grads(dout):
        dxw, dh0, dWhh = layers.rnn_backward(dout, layers.rnn_forward(xw, h0, Whh)[1])
        return {"xw": dxw, "h0": dh0, "Whh": dWhh}
    check(lambda: layers.rnn_forward(xw, h0, Whh)[0][1:], grads, {"xw": xw, "h0": h0, "Whh": Whh}, rng)


def lstm_forward(xw, h0, c0, Whh):
    """layers.lstm_forward on a (T, B, 4H) projection given as rows."""
    return layers.lstm_forward(layers.gates_from_rows(xw, layers.LSTM_SCALE), h0, c0, Whh)


def test_lstm(rng):
    xw = rng.standard_normal((T, B, 4 * H))
    h0, c0, Whh = rng.standard_normal((B, H)), rng.standard_normal((B, H)), rng.standard_normal((H, 4 * H)) * 0.5

    def forward():
        hs, cs, _ = lstm_forward(xw, h0, c0, Whh)
        return hs[1:]

    def grads(dout):
        dxw, dh0, dc0, dWhh = layers.lstm_backward(dout, lstm_forward(xw, h0, c0, Whh)[2])
        return {"xw": dxw, "h0": dh0, "c0": dc0, "Whh": dWhh}
    check(forward, grads, {"xw": xw, "h0": h0, "c0": c0, "Whh": Whh}, rng)


@pytest.mark.parametrize("one_hot", [True, False])
@pytest.mark.parametrize("scale", [layers.LSTM_SCALE, layers.GRU_SCALE])
def test_gate_projection(rng, one_hot, scale):
    """A gated cell's projection is the plain one (embedding or affine) in the cells' layout, and
    its cache serves the plain backward."""
    G = len(scale)
    W, b = rng.standard_normal((V if one_hot else D, G * H)), rng.standard_normal(G * H)
    if one_hot:
        x = rng.integers(0, V, size=(T, B))
        rows, cache = layers.embedding_forward(x, W, b)
    else:
        x = rng.standard_normal((T, B, D))
        rows, cache = layers.affine_forward(x.reshape(T * B, D), W, b)
    xw, gated_cache = layers.gate_projection(x, W, b, scale)
    assert xw.shape == (G, T, B, H)
    np.testing.assert_allclose(xw, layers.gates_from_rows(rows.reshape(T, B, G * H), scale), rtol=1e-12)
    np.testing.assert_allclose(xw[:, 0, 0], rows.reshape(T, B, G, H)[0, 0] * np.array(scale)[:, None])
    dout = rng.standard_normal((T * B, G * H))
    backward = layers.embedding_backward if one_hot else layers.affine_backward
    for ours, plain in zip(backward(dout.reshape(T, B, -1) if one_hot else dout, gated_cache),
                           backward(dout.reshape(T, B, -1) if one_hot else dout, cache)):
        np.testing.assert_array_equal(ours, plain)


def gru_forward(xw, h0, Whh, bhn):
    """layers.gru_forward on a (T, B, 3H) projection given as rows."""
    return layers.gru_forward(layers.gates_from_rows(xw, layers.GRU_SCALE), h0, Whh, bhn)


def gru_inputs(rng):
    """xw: (T, B, 3H), h0: (B, H), Whh: (H, 3H), bhn: (H,)."""
    return (rng.standard_normal((T, B, 3 * H)), rng.standard_normal((B, H)),
            rng.standard_normal((H, 3 * H)) * 0.5, rng.standard_normal(H))


def test_gru(rng):
    xw, h0, Whh, bhn = gru_inputs(rng)

    def grads(dout):
        dxw, dh0, dWhh, dbhn = layers.gru_backward(dout, gru_forward(xw, h0, Whh, bhn)[1])
        return {"xw": dxw, "h0": dh0, "Whh": dWhh, "bhn": dbhn}
    check(lambda: gru_forward(xw, h0, Whh, bhn)[0][1:], grads,
          {"xw": xw, "h0": h0, "Whh": Whh, "bhn": bhn}, rng)


def test_dropout_mask_keeps_1_minus_p_and_scales():
    p = 0.3
    x = np.ones((200, 50, 10), np.float32)
    out, mask = layers.dropout_forward(x, p, np.random.default_rng(5))
    assert out.dtype == mask.dtype == np.float32
    assert set(np.unique(mask)) == {np.float32(0), np.float32(1 / (1 - p))}
    kept = float(np.mean(mask > 0))
    assert abs(kept - (1 - p)) < 0.01  # 100,000 units: the standard deviation is 0.0015
    assert abs(float(out.mean(dtype=np.float64)) - 1) < 0.02  # inverted: the expected value is kept
    again, _ = layers.dropout_forward(x, p, np.random.default_rng(5))
    np.testing.assert_array_equal(again, out)  # the Generator is the only source of randomness


def test_dropout_with_a_fixed_mask(rng):
    x = rng.standard_normal((T, B, H))
    _, mask = layers.dropout_forward(x, 0.5, rng)
    assert 0 < np.count_nonzero(mask) < mask.size
    out, cache = layers.dropout_forward(x, 0.5, mask)  # the mask injected: the same output again
    np.testing.assert_array_equal(out, x * mask)

    def grads(dout):
        return {"x": layers.dropout_backward(dout, cache)}
    check(lambda: layers.dropout_forward(x, 0.5, mask)[0], grads, {"x": x}, rng)


def test_softmax_cross_entropy(rng):
    logits, targets = rng.standard_normal((8, V)), rng.integers(0, V, size=8)
    loss, dlogits = layers.softmax_cross_entropy(logits, targets)
    ref_loss, ref_dlogits = reference.softmax_cross_entropy(logits, targets)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(dlogits, ref_dlogits, rtol=1e-10, atol=1e-14)
    numeric = numerical_gradient(lambda: layers.softmax_cross_entropy(logits, targets)[0], logits)
    assert relative_error(dlogits, numeric) < THRESHOLD


def test_cross_entropy_without_gradient_is_the_summed_loss(rng):
    logits, targets = rng.standard_normal((8, V)), rng.integers(0, V, size=8)
    assert layers.cross_entropy(logits, targets) == pytest.approx(8 * layers.softmax_cross_entropy(logits, targets)[0])
    assert layers.cross_entropy(np.array([[1000.0, 0.0]], np.float32), np.array([1])) == pytest.approx(1000.0)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32)
    loss, dlogits = layers.softmax_cross_entropy(logits, np.array([1]))
    assert loss == pytest.approx(1000.0) and np.isfinite(dlogits).all()
