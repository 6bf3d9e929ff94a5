"""The model's equations, written plainly: read this file first.

Everything charnn trains is here as the math is written in the README's "How it works": the RNN,
LSTM and GRU cells, their backward, backpropagation through time, the one-hot input, the output
layer, the loss, and the whole stacked model. charnn/layers.py and charnn/model.py are the fast
version of the same computation (in place, the sigmoid as a halved tanh, gate-major buffers);
tests/test_reference.py checks them against this module in float64, so what this file says is
what they compute.

No speed tricks: sigmoid(x) = 1 / (1 + exp(-x)), one time step at a time, nothing overwritten,
each step's cache a small tuple. It works in float64 (give it float64 arrays; its one-hot and
identity matrices are float64): it is for reading and checking, not training. Each layer is a forward/backward pair (CS231n):
`x_forward(...) -> (out, cache)` and `x_backward(dout, cache) -> gradients`.

Dimensions: T time steps, B batch (parallel streams), V vocabulary, D input width, H hidden
units, G gate blocks (RNN 1, LSTM 4, GRU 3), L layers. Sequences are time-major, (T, B, ...),
and rows multiply weights from the left, `x @ W`, so every formula holds for the B rows at once.
The parameters are model.py's: W_xh (D, G*H), W_hh (H, G*H), b (G*H,) with the gates side by
side, LSTM [o i f g], GRU [r z n] plus b_hn (H,). `xw` is a layer's input projection x_t W_xh + b
of every step, (T, B, G*H), made before the time loop.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x):
    """x: any shape -> the logistic function, element-wise, in (0, 1)."""
    return 1 / (1 + np.exp(-x))


# ---------------------------------------------------------------------------------------------
# Input and output layers


def embedding_forward(ids, W, b):
    """ids: (T, B) integer ids < V;  W: (V, D);  b: (D,)  ->  out: (T, B, D) = onehot(ids) @ W + b."""
    onehot = np.eye(W.shape[0])[ids]  # (T, B, V): row v of the identity for id v
    return onehot @ W + b, onehot


def embedding_backward(dout, cache):
    """dout: (T, B, D) -> dW: (V, D), db: (D,). The affine layer's dW = x^T dout, with x one-hot."""
    onehot = cache
    V, D = onehot.shape[-1], dout.shape[-1]
    return onehot.reshape(-1, V).T @ dout.reshape(-1, D), dout.sum(axis=(0, 1))


def affine_forward(x, W, b):
    """x: (N, D);  W: (D, M);  b: (M,)  ->  out: (N, M) = x @ W + b."""
    return x @ W + b, (x, W)


def affine_backward(dout, cache):
    """dout: (N, M) -> dx: (N, D) = dout W^T, dW: (D, M) = x^T dout, db: (M,) = sum of the rows."""
    x, W = cache
    return dout @ W.T, x.T @ dout, dout.sum(axis=0)


def softmax_cross_entropy(logits, targets):
    """logits: (N, V);  targets: (N,) ids  ->  loss: mean of -log p[target], dlogits: (N, V).

    p = softmax(logits) row by row; d loss / d logits = (p - onehot(targets)) / N.
    """
    N, V = logits.shape
    e = np.exp(logits - logits.max(axis=1, keepdims=True))  # shifted: softmax is unchanged, exp cannot overflow
    p = e / e.sum(axis=1, keepdims=True)  # (N, V)
    loss = -np.mean(np.log(p[np.arange(N), targets]))
    return loss, (p - np.eye(V)[targets]) / N


# ---------------------------------------------------------------------------------------------
# Vanilla RNN:  h_t = tanh(x_t W_xh + h_{t-1} W_hh + b)


def rnn_step_forward(xw, h_prev, Whh):
    """xw: (B, H) = x_t W_xh + b;  h_prev: (B, H);  Whh: (H, H)  ->  h: (B, H), cache."""
    h = np.tanh(xw + h_prev @ Whh)
    return h, (h_prev, h, Whh)


def rnn_step_backward(dh, cache):
    """dh: (B, H), the total gradient at h_t -> dxw: (B, H), dh_prev: (B, H), dWhh: (H, H)."""
    h_prev, h, Whh = cache
    da = dh * (1 - h**2)  # tanh'(a) = 1 - tanh(a)^2, at the pre-activation a = xw + h_prev W_hh
    return da, da @ Whh.T, h_prev.T @ da


# ---------------------------------------------------------------------------------------------
# LSTM, gates [o i f g] from a = x_t W_xh + h_{t-1} W_hh + b:
#   o, i, f = sigmoid(a_o), sigmoid(a_i), sigmoid(a_f);  g = tanh(a_g)
#   c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)


def lstm_step_forward(xw, h_prev, c_prev, Whh):
    """xw: (B, 4H);  h_prev, c_prev: (B, H);  Whh: (H, 4H)  ->  h: (B, H), c: (B, H), cache."""
    a = xw + h_prev @ Whh  # (B, 4H)
    a_o, a_i, a_f, a_g = np.split(a, 4, axis=1)  # each (B, H)
    o, i, f, g = sigmoid(a_o), sigmoid(a_i), sigmoid(a_f), np.tanh(a_g)
    c = f * c_prev + i * g  # keep some of the old memory, write some new
    h = o * np.tanh(c)  # read some of it out
    return h, c, (h_prev, c_prev, o, i, f, g, c, Whh)


def lstm_step_backward(dh, dc, cache):
    """dh: (B, H), the total gradient at h_t;  dc: (B, H), the gradient c_t receives from step t+1
    -> dxw: (B, 4H), dh_prev: (B, H), dc_prev: (B, H), dWhh: (H, 4H)."""
    h_prev, c_prev, o, i, f, g, c, Whh = cache
    tanh_c = np.tanh(c)
    do = dh * tanh_c  # h = o * tanh(c)
    dc = dc + dh * o * (1 - tanh_c**2)  # ... and through tanh(c) into c
    df, di, dg = dc * c_prev, dc * g, dc * i  # c = f * c_prev + i * g
    dc_prev = dc * f
    da = np.concatenate([do * o * (1 - o),  # sigmoid'(a) = s (1 - s)
                         di * i * (1 - i),
                         df * f * (1 - f),
                         dg * (1 - g**2)], axis=1)  # tanh'(a) = 1 - tanh(a)^2;  (B, 4H)
    return da, da @ Whh.T, dc_prev, h_prev.T @ da


# ---------------------------------------------------------------------------------------------
# GRU, "reset after" (cuDNN, PyTorch's nn.GRU), gates [r z n]:
#   r = sigmoid(x_t W_xr + b_r + h_{t-1} W_hr);  z = sigmoid(x_t W_xz + b_z + h_{t-1} W_hz)
#   n = tanh(x_t W_xn + b_n + r * (h_{t-1} W_hn + b_hn))
#   h_t = (1 - z) * n + z * h_{t-1}


def gru_step_forward(xw, h_prev, Whh, bhn):
    """xw: (B, 3H);  h_prev: (B, H);  Whh: (H, 3H);  bhn: (H,)  ->  h: (B, H), cache."""
    x_r, x_z, x_n = np.split(xw, 3, axis=1)  # each (B, H)
    h_r, h_z, h_n = np.split(h_prev @ Whh, 3, axis=1)
    r = sigmoid(x_r + h_r)  # reset gate
    z = sigmoid(x_z + h_z)  # update gate: z near 1 keeps the old state
    hn = h_n + bhn  # what r multiplies
    n = np.tanh(x_n + r * hn)  # candidate
    h = (1 - z) * n + z * h_prev
    return h, (h_prev, r, z, n, hn, Whh)


def gru_step_backward(dh, cache):
    """dh: (B, H), the total gradient at h_t
    -> dxw: (B, 3H), dh_prev: (B, H), dWhh: (H, 3H), dbhn: (H,)."""
    h_prev, r, z, n, hn, Whh = cache
    dn = dh * (1 - z)  # h = (1 - z) * n + z * h_prev
    dz = dh * (h_prev - n)
    da_n = dn * (1 - n**2)  # at n's pre-activation x_n + r * hn
    dr = da_n * hn
    dhn = da_n * r  # at hn = h_prev W_hn + b_hn
    da_r, da_z = dr * r * (1 - r), dz * z * (1 - z)
    dxw = np.concatenate([da_r, da_z, da_n], axis=1)  # (B, 3H), at x_t W_xh + b
    drec = np.concatenate([da_r, da_z, dhn], axis=1)  # (B, 3H), at h_prev W_hh: r sits between in n
    dh_prev = dh * z + drec @ Whh.T  # directly through z * h_prev, and through the three products
    return dxw, dh_prev, h_prev.T @ drec, dhn.sum(axis=0)


# ---------------------------------------------------------------------------------------------
# Whole sequences. Forward walks t = 0 .. T-1; backward (backpropagation through time) walks back
# from T-1 to 0, and the gradient at h_t is what comes from above, dhs[t], plus what h_{t+1} sends
# back. Signatures as in charnn/layers.py, but xw is plain rows (T, B, G*H).


def rnn_forward(xw, h0, Whh):
    """xw: (T, B, H);  h0: (B, H);  Whh: (H, H)  ->  hs: (T+1, B, H) with hs[0] = h0, cache."""
    hs, caches = [h0], []
    for t in range(xw.shape[0]):
        h, cache = rnn_step_forward(xw[t], hs[-1], Whh)
        hs.append(h)
        caches.append(cache)
    return np.stack(hs), caches


def rnn_backward(dhs, caches):
    """dhs: (T, B, H) gradients at h_1..h_T from above -> dxw: (T, B, H), dh0: (B, H), dWhh: (H, H)."""
    T = dhs.shape[0]
    dxw, dh, dWhh = [None] * T, np.zeros_like(dhs[0]), 0
    for t in reversed(range(T)):
        dxw[t], dh, dWhh_t = rnn_step_backward(dhs[t] + dh, caches[t])
        dWhh = dWhh + dWhh_t  # W_hh is used at every step: its gradient is the sum over steps
    return np.stack(dxw), dh, dWhh


def lstm_forward(xw, h0, c0, Whh):
    """xw: (T, B, 4H);  h0, c0: (B, H);  Whh: (H, 4H)  ->  hs, cs: (T+1, B, H) (index 0: h0, c0), cache."""
    hs, cs, caches = [h0], [c0], []
    for t in range(xw.shape[0]):
        h, c, cache = lstm_step_forward(xw[t], hs[-1], cs[-1], Whh)
        hs.append(h)
        cs.append(c)
        caches.append(cache)
    return np.stack(hs), np.stack(cs), caches


def lstm_backward(dhs, caches):
    """dhs: (T, B, H) -> dxw: (T, B, 4H), dh0: (B, H), dc0: (B, H), dWhh: (H, 4H)."""
    T = dhs.shape[0]
    dxw, dh, dc, dWhh = [None] * T, np.zeros_like(dhs[0]), np.zeros_like(dhs[0]), 0
    for t in reversed(range(T)):
        dxw[t], dh, dc, dWhh_t = lstm_step_backward(dhs[t] + dh, dc, caches[t])
        dWhh = dWhh + dWhh_t
    return np.stack(dxw), dh, dc, dWhh


def gru_forward(xw, h0, Whh, bhn):
    """xw: (T, B, 3H);  h0: (B, H);  Whh: (H, 3H);  bhn: (H,)  ->  hs: (T+1, B, H), cache."""
    hs, caches = [h0], []
    for t in range(xw.shape[0]):
        h, cache = gru_step_forward(xw[t], hs[-1], Whh, bhn)
        hs.append(h)
        caches.append(cache)
    return np.stack(hs), caches


def gru_backward(dhs, caches):
    """dhs: (T, B, H) -> dxw: (T, B, 3H), dh0: (B, H), dWhh: (H, 3H), dbhn: (H,)."""
    T = dhs.shape[0]
    dxw, dh, dWhh, dbhn = [None] * T, np.zeros_like(dhs[0]), 0, 0
    for t in reversed(range(T)):
        dxw[t], dh, dWhh_t, dbhn_t = gru_step_backward(dhs[t] + dh, caches[t])
        dWhh, dbhn = dWhh + dWhh_t, dbhn + dbhn_t
    return np.stack(dxw), dh, dWhh, dbhn


# ---------------------------------------------------------------------------------------------
# The whole model, as charnn/model.py stacks it (without dropout):
#   ids --embedding--> layer 0 --> layer 1 --> ... --> layer L-1 --affine--> logits --> loss


def loss_and_grads(params, config, inputs, targets, state):
    """params: model.py's dict of named arrays;  config: a ModelConfig;  inputs, targets: (T, B) ids;
    state: {"h": (L, B, H)} (and "c" for the LSTM), the carried state, a constant.

    Returns (loss in mean nats per character, grads: a dict with params' names, the final state).
    """
    T, B = inputs.shape
    H, L, kind = config.hidden_size, config.num_layers, config.model
    caches, final = [], {name: [] for name in state}
    x = None  # (T, B, H): the hidden states of the layer below
    for l in range(L):
        Wxh, Whh, bh = params[f"l{l}.Wxh"], params[f"l{l}.Whh"], params[f"l{l}.bh"]
        if l == 0:
            xw, in_cache = embedding_forward(inputs, Wxh, bh)  # (T, B, G*H)
        else:
            xw, in_cache = affine_forward(x.reshape(T * B, H), Wxh, bh)
            xw = xw.reshape(T, B, -1)
        if kind == "lstm":
            hs, cs, rec_cache = lstm_forward(xw, state["h"][l], state["c"][l], Whh)
            final["c"].append(cs[-1])
        elif kind == "gru":
            hs, rec_cache = gru_forward(xw, state["h"][l], Whh, params[f"l{l}.bhn"])
        else:
            hs, rec_cache = rnn_forward(xw, state["h"][l], Whh)
        final["h"].append(hs[-1])
        caches.append((in_cache, rec_cache))
        x = hs[1:]  # (T, B, H), the input of the layer above
    logits, out_cache = affine_forward(x.reshape(T * B, H), params["Why"], params["by"])  # (T*B, V)
    loss, dlogits = softmax_cross_entropy(logits, targets.reshape(-1))

    # Backward: the forward in reverse, layer by layer from the top.
    grads = {}
    dx, grads["Why"], grads["by"] = affine_backward(dlogits, out_cache)
    dhs = dx.reshape(T, B, H)  # gradient at the top layer's hidden states
    for l in reversed(range(L)):
        in_cache, rec_cache = caches[l]
        if kind == "lstm":
            dxw, _, _, grads[f"l{l}.Whh"] = lstm_backward(dhs, rec_cache)
        elif kind == "gru":
            dxw, _, grads[f"l{l}.Whh"], grads[f"l{l}.bhn"] = gru_backward(dhs, rec_cache)
        else:
            dxw, _, grads[f"l{l}.Whh"] = rnn_backward(dhs, rec_cache)
        # The carried state is a constant: the gradients at h0 (and c0) go no further.
        if l == 0:
            grads["l0.Wxh"], grads["l0.bh"] = embedding_backward(dxw, in_cache)
        else:
            dx, grads[f"l{l}.Wxh"], grads[f"l{l}.bh"] = affine_backward(dxw.reshape(T * B, -1), in_cache)
            dhs = dx.reshape(T, B, H)
    return loss, grads, {name: np.stack(s) for name, s in final.items()}
