"""The fast layers: forward/backward pairs (the CS231n `rnn_layers.py` shape), `x_forward(...) ->
(out, cache)` and `x_backward(dout, cache) -> gradients`. A learner should read charnn/reference.py
first: it is the same math written as the equations, and tests/test_reference.py checks every
function here against it. What this file adds is speed, and each trick says in one line why it is
there (docs/fast-layers.md has the measurements behind them).

No state, no I/O, no RNG of their own (dropout draws from a np.random.Generator passed in), and no
argument is modified except these, on purpose: lstm_forward and gru_forward overwrite their `xw`
with the activated gates, which their cache keeps for backward (no second (G, T, B, H) array);
rnn_step writes its `out`; lstm_cell and gru_cell work in place on the buffers they are given.
The recurrent forwards keep the states they return (hs, cs) in their cache, and affine_forward
its x and W: change those before the backward and the gradients are wrong.

Dimensions: T time steps, B batch (parallel streams), V vocabulary, D input width, H hidden units,
G gate blocks (RNN 1, LSTM 4, GRU 3), N = T*B rows. Sequences are time-major, (T, B, ...), because
the recurrence walks time: h[t] is then one contiguous (B, H) block. Rows multiply weights from
the left (`x @ W`, batch-first rows).

The recurrent layers take `xw`, the input projection `x_t W_xh + b` of every step, made before the
time loop by one product (affine_forward) or one row lookup (embedding_forward); the gated cells
take it gate-major, (G, T, B, H), with the sigmoid blocks halved, from gate_projection (or
gates_from_rows, from plain rows). Inside the loop only the recurrent product `h_{t-1} W_hh`
remains, and their backward returns `dxw` as plain rows (T, B, G*H), the gradient at the unhalved
projection, so the weight gradients are again one product over all N rows after the loop.
"""

from __future__ import annotations

import numpy as np

# The embedding gradient dW[ids[n]] += rows[n] (np.add.at, slow, is the tests' reference) is a one-hot
# product up to this V and sorted segment sums above: the product's cost grows with V, the sums' does not.
ONEHOT_MAX_VOCAB = 512


# ---------------------------------------------------------------------------------------------
# Input projections


def embedding_forward(ids, W, b):
    """One-hot input times W, as a row lookup.

    ids: (T, B) integer ids < V;  W: (V, D);  b: (D,)
    out: (T, B, D) = W[ids] + b, which equals onehot(ids) @ W + b without building the one-hot.
    """
    out = W[ids]
    out += b
    return out, (ids, W.shape[0])


def embedding_backward(dout, cache):
    """dout: (T, B, D) -> dW: (V, D), db: (D,). Row v of dW sums dout over the steps whose id is v."""
    ids, V = cache
    D = dout.shape[-1]
    rows = dout.reshape(-1, D)  # (N, D)
    flat = ids.reshape(-1)  # (N,)
    if V <= ONEHOT_MAX_VOCAB:
        onehot = np.zeros((flat.size, V), dout.dtype)  # (N, V)
        onehot[np.arange(flat.size), flat] = 1
        dW = onehot.T @ rows
    else:
        order = np.argsort(flat, kind="stable")  # (N,) rows grouped by id
        ids = flat[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])  # first row of each id's run
        dW = np.zeros((V, D), dout.dtype)
        dW[ids[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return dW, rows.sum(axis=0)


def affine_forward(x, W, b):
    """x: (N, D);  W: (D, M);  b: (M,)  ->  out: (N, M) = x @ W + b."""
    out = x @ W
    out += b
    return out, (x, W)


def affine_backward(dout, cache):
    """dout: (N, M) -> dx: (N, D), dW: (D, M), db: (M,)."""
    x, W = cache
    return dout @ W.T, x.T @ dout, dout.sum(axis=0)


# ---------------------------------------------------------------------------------------------
# Vanilla RNN:  h_t = tanh(x_t W_xh + h_{t-1} W_hh + b_h)   (min-char-rnn, Karpathy 2015)


def rnn_step(xw, h, Whh, out=None):
    """One step. xw: (B, H) = x_t W_xh + b_h;  h: (B, H) = h_{t-1};  Whh: (H, H)  ->  h_t: (B, H)."""
    out = np.matmul(h, Whh, out=out)
    out += xw
    return np.tanh(out, out=out)


def rnn_forward(xw, h0, Whh):
    """The whole sequence. xw: (T, B, H);  h0: (B, H);  Whh: (H, H).

    Returns hs: (T+1, B, H) with hs[0] = h0 and hs[t] = h_t, and the cache.
    """
    T, B, H = xw.shape
    hs = np.empty((T + 1, B, H), xw.dtype)  # hidden states, hs[0] = h0
    hs[0] = h0
    for t in range(T):
        rnn_step(xw[t], hs[t], Whh, out=hs[t + 1])
    return hs, (hs, Whh)


def rnn_backward(dhs, cache):
    """dhs: (T, B, H), the loss gradient w.r.t. h_1..h_T from the layers above.

    Returns dxw: (T, B, H), dh0: (B, H), dWhh: (H, H). Backprop through time: from the last step to
    the first, adding the gradient that h_t receives through h_{t+1}.
    """
    hs, Whh = cache
    T, B, H = dhs.shape
    # dxw, the gradient at the pre-activation a_t, is (dhs[t] + dh) * tanh'(a_t); tanh'(a_t) = 1 - h_t^2
    # does not depend on the recurrence, so it is made for all t before the loop: two calls, not 2T.
    dxw = np.multiply(hs[1:], hs[1:])
    np.subtract(1, dxw, out=dxw)
    dh = np.zeros((B, H), dhs.dtype)  # gradient reaching h_t from step t+1 (none after the last)
    total = np.empty((B, H), dhs.dtype)  # scratch: the total gradient at h_t
    # A contiguous copy of W_hh^T: the per-step product with the transposed view is slower.
    WhhT = np.ascontiguousarray(Whh.T)  # (H, H)
    for t in range(T - 1, -1, -1):
        da = dxw[t]
        np.add(dhs[t], dh, out=total)
        da *= total
        np.matmul(da, WhhT, out=dh)
    dWhh = hs[:-1].reshape(T * B, H).T @ dxw.reshape(T * B, H)
    return dxw, dh, dWhh


# ---------------------------------------------------------------------------------------------
# Gated cells (LSTM, GRU): their weights keep G gate blocks side by side in (., G*H) columns, and
# inside the sequence loops their activations are gate-major, (G, B, H): element-wise calls then run
# on contiguous (B, H) blocks, much faster than on strided slices of (B, G*H) rows. The forwards make
# those blocks directly with batched products, x (N, D) @ W (G, D, H) -> (G, N, H); the backwards
# copy each step's gradient back to (B, G*H) rows for one product with W_hh^T.
#
# sigmoid(x) = (1 + tanh(x / 2)) / 2: it cannot overflow (1 / (1 + exp(-x)) overflows exp for x < -88
# in float32), and with the halving folded into the sigmoid blocks of W_xh, b and W_hh (exact in
# floating point) one tanh call per step activates all the gates.

LSTM_SCALE = (0.5, 0.5, 0.5, 1.0)  # per block of [o i f g]: what the pre-activations are multiplied by
GRU_SCALE = (0.5, 0.5, 1.0)  # per block of [r z n]
GATE_SCALE = {"lstm": LSTM_SCALE, "gru": GRU_SCALE}


def gate_scale(scale, H: int, dtype) -> np.ndarray:
    """The per-block scale as one factor per column: (G*H,) (the single-step cells use it on rows)."""
    return np.repeat(np.array(scale, dtype), H)


def gate_major(a, G: int):
    """(..., B, G*H) gates side by side -> a (..., G, B, H) view, one block per gate (no copy)."""
    *lead, B, GH = a.shape
    return np.moveaxis(a.reshape(*lead, B, G, GH // G), -2, -3)


def _scaled(W, scale):
    """W: (D, G*H) -> (G, D, H), gate-major, block k times scale[k] (a new array)."""
    return np.multiply(gate_major(W, len(scale)), np.array(scale, W.dtype)[:, None, None])


def gate_projection(x, W, b, scale):
    """The input projection x_t W + b of all T steps, laid out for lstm_forward and gru_forward.

    x: (T, B) integer ids (layer 0's one-hot input: a row lookup, as embedding_forward) or
    (T, B, D);  W: (V or D, G*H);  b: (G*H,);  scale: LSTM_SCALE or GRU_SCALE
    Returns xw: (G, T, B, H), gate-major with the sigmoid blocks halved, and the cache of
    embedding_backward or affine_backward, which make the gradients from the cell's dxw rows.
    Made directly in this layout (halving the small weights, not the big result): reordering and
    halving the rows afterwards would be one more pass through memory.
    """
    G = len(scale)
    Wg, bg = _scaled(W, scale), _scaled(b[None], scale)[:, None]  # (G, D, H), (G, 1, 1, H)
    if x.ndim == 2:
        Wg += bg[:, 0]  # the bias added to the table's V rows: fewer than the T*B rows looked up
        return Wg[:, x], (x, W.shape[0])  # (G, T, B, H)
    T, B, D = x.shape
    rows = x.reshape(T * B, D)
    xw = np.matmul(rows, Wg).reshape(G, T, B, -1)
    xw += bg
    return xw, (rows, W)


def gates_from_rows(xw, scale):
    """(T, B, G*H) input projection as rows -> (G, T, B, H) as gate_projection makes it, sigmoid
    blocks halved (a copy): for callers (and tests) that have the plain rows."""
    return _scaled(xw.reshape(-1, xw.shape[-1]), scale).reshape(len(scale), *xw.shape[:-1], -1)


# ---------------------------------------------------------------------------------------------
# LSTM (Hochreiter & Schmidhuber 1997, with a forget gate, Gers et al. 2000):
#   [o i f] = sigmoid(a[:, :3H]), g = tanh(a[:, 3H:]),  a = x_t W_xh + h_{t-1} W_hh + b
#   c_t = f * c_{t-1} + i * g        (keep some of the old memory, write some new)
#   h_t = o * tanh(c_t)              (read some of it out)
# Gate order [o i f g]: the three sigmoids adjacent, so one call finishes them (also in backward).


def lstm_cell(a, c_prev, c, tanh_c, h, tmp):
    """One step, in place (out-parameters, so the sequence loop allocates nothing).
    a: (4, B, H) gate-major pre-activations [o i f g] with the sigmoid blocks halved, in; the
    activated gates, out.  c_prev: (B, H);  writes c, tanh_c, h: (B, H);  tmp: (B, H) scratch."""
    np.tanh(a, out=a)  # tanh(a/2) for o, i, f (halved already), tanh(a) for g: one call
    sig = a[:3]
    sig *= 0.5
    sig += 0.5  # (1 + tanh(a/2)) / 2 = sigmoid(a)
    o, i, f, g = a
    np.multiply(f, c_prev, out=c)
    np.multiply(i, g, out=tmp)
    c += tmp
    np.tanh(c, out=tanh_c)
    np.multiply(o, tanh_c, out=h)


def lstm_forward(xw, h0, c0, Whh):
    """The whole sequence. xw: (4, T, B, H) from gate_projection (or gates_from_rows), OVERWRITTEN:
    it becomes the activated gates [o i f g], kept for backward;  h0, c0: (B, H);  Whh: (H, 4H).

    Returns hs: (T+1, B, H), cs: (T+1, B, H) (index 0 is the initial state) and the cache.
    """
    _, T, B, H = xw.shape
    hs = np.empty((T + 1, B, H), xw.dtype)  # hidden states, hs[0] = h0
    cs = np.empty((T + 1, B, H), xw.dtype)  # cell states, cs[0] = c0
    tanh_cs = np.empty((T, B, H), xw.dtype)  # tanh(c_t), kept for backward
    W = _scaled(Whh, LSTM_SCALE)  # (4, H, H): gate-major and halved once per window, not per step
    rec = np.empty((4, B, H), xw.dtype)  # h_{t-1} W_hh of one step
    tmp = np.empty((B, H), xw.dtype)  # the cell's scratch
    hs[0], cs[0] = h0, c0
    for t in range(T):
        a = xw[:, t]  # (4, B, H): this step's pre-activations, then its activated gates
        np.matmul(hs[t], W, out=rec)
        a += rec
        lstm_cell(a, cs[t], cs[t + 1], tanh_cs[t], hs[t + 1], tmp)
    return hs, cs, (hs, cs, tanh_cs, xw, Whh)


def lstm_backward(dhs, cache):
    """dhs: (T, B, H), the loss gradient w.r.t. h_1..h_T from the layers above.

    Returns dxw: (T, B, 4H) (at the unhalved pre-activations), dh0: (B, H), dc0: (B, H), dWhh: (H, 4H).

    Step by step, each step's (B, H) arrays small enough to stay in cache: making the factors for
    all T steps in big passes means fewer numpy calls but more trips through memory, and is slower.
    """
    hs, cs, tanh_cs, gates, Whh = cache
    T, B, H = dhs.shape
    dxw = np.empty((T, B, 4 * H), dhs.dtype)  # gradient at the gates' pre-activations, as rows
    d = np.empty((4, B, H), dhs.dtype)  # the same for one step, gate-major
    dh = np.zeros((B, H), dhs.dtype)  # gradient reaching h_t: from step t+1, then in all
    dc = np.zeros((B, H), dhs.dtype)  # gradient reaching c_t: from step t+1, then in all
    tmp = np.empty((B, H), dhs.dtype)  # scratch
    tmp3 = np.empty((3, B, H), dhs.dtype)  # scratch for the three sigmoid derivatives at once
    WhhT = np.ascontiguousarray(Whh.T)  # (4H, H), as in rnn_backward
    do, di, df, dg = d
    dxw_steps = gate_major(dxw, 4)  # (T, 4, B, H) view of the rows, made once outside the loop
    for t in range(T - 1, -1, -1):
        act, tc = gates[:, t], tanh_cs[t]
        o, i, f, g = act
        dh += dhs[t]  # total gradient at h_t
        np.multiply(dh, tc, out=do)  # h = o * tanh(c)
        np.multiply(tc, tc, out=tmp)
        np.subtract(1, tmp, out=tmp)
        tmp *= o
        tmp *= dh
        dc += tmp  # ... and through tanh(c) into c: the total gradient at c_t
        np.multiply(dc, g, out=di)  # c = f * c_prev + i * g
        np.multiply(dc, cs[t], out=df)
        np.multiply(dc, i, out=dg)
        dc *= f  # the gradient c_{t-1} receives
        sig = act[:3]
        np.subtract(1, sig, out=tmp3)
        tmp3 *= sig
        d[:3] *= tmp3  # sigmoid' = s (1 - s), for o, i, f at once
        np.multiply(g, g, out=tmp)
        np.subtract(1, tmp, out=tmp)
        dg *= tmp  # tanh' = 1 - tanh^2
        dxw_steps[t] = d  # back to (B, 4H) rows
        np.matmul(dxw[t], WhhT, out=dh)  # the gradient h_{t-1} receives
    dWhh = hs[:-1].reshape(T * B, H).T @ dxw.reshape(T * B, 4 * H)
    return dxw, dh, dc, dWhh


# ---------------------------------------------------------------------------------------------
# GRU (Cho et al. 2014), in the form of cuDNN and PyTorch's nn.GRU ("reset after"):
#   [r z] = sigmoid(x_t W_x[rz] + b[rz] + h_{t-1} W_hh[rz])     reset and update gates
#   n     = tanh(x_t W_xn + b_n + r * (h_{t-1} W_hn + b_hn))      candidate
#   h_t   = (1 - z) * n + z * h_{t-1}  =  n + z * (h_{t-1} - n)   z near 1 keeps the old state
# Gate order [r z n], as PyTorch's weight_ih_l0 / weight_hh_l0, the two sigmoids adjacent so one
# call activates both. r applied after the product (not to h before it, as Cho et al.) lets one fused
# (H, 3H) product per step make all three recurrent blocks, at the price of the bias b_hn; the
# README's "How it works" says why cuDNN, PyTorch and Keras chose this form.


def gru_cell(a, rec, bhn, h_prev, hn, h):
    """One step, in place (out-parameters, so the sequence loop allocates nothing).
    a: (3, B, H) gate-major input projection x_t W_xh + b with the r and z blocks halved, in; the
    activated [r z n], out.  rec: (3, B, H) = h_prev W_hh, halved the same
    way (used up as scratch);  bhn: (H,);  h_prev: (B, H);  writes hn: (B, H) = h_prev W_hn + b_hn
    (backward needs it) and h: (B, H), which may be h_prev itself (it is read before h is written)."""
    np.add(rec[2], bhn, out=hn)
    rz = a[:2]
    rz += rec[:2]
    np.tanh(rz, out=rz)  # tanh(a/2) of r and z at once; the two calls below make it sigmoid(a)
    rz *= 0.5
    rz += 0.5
    r, z, n = a
    np.multiply(r, hn, out=rec[2])
    n += rec[2]
    np.tanh(n, out=n)
    np.subtract(h_prev, n, out=h)
    h *= z
    h += n


def gru_forward(xw, h0, Whh, bhn):
    """The whole sequence. xw: (3, T, B, H) from gate_projection (or gates_from_rows), OVERWRITTEN:
    it becomes the activated gates [r z n], kept for backward;  h0: (B, H);  Whh: (H, 3H);  bhn: (H,).

    Returns hs: (T+1, B, H) with hs[0] = h0, and the cache.
    """
    _, T, B, H = xw.shape
    hs = np.empty((T + 1, B, H), xw.dtype)  # hidden states, hs[0] = h0
    hns = np.empty((T, B, H), xw.dtype)  # h_{t-1} W_hn + b_hn, what r multiplies, kept for backward
    W = _scaled(Whh, GRU_SCALE)  # (3, H, H): gate-major and halved once per window, not per step
    rec = np.empty((3, B, H), xw.dtype)  # h_{t-1} W_hh of one step
    hs[0] = h0
    for t in range(T):
        np.matmul(hs[t], W, out=rec)
        gru_cell(xw[:, t], rec, bhn, hs[t], hns[t], hs[t + 1])
    return hs, (hs, hns, xw, Whh)


def gru_backward(dhs, cache):
    """dhs: (T, B, H), the loss gradient w.r.t. h_1..h_T from the layers above.

    Returns dxw: (T, B, 3H) (at the unhalved projection), dh0: (B, H), dWhh: (H, 3H), dbhn: (H,).
    """
    hs, hns, gates, Whh = cache
    T, B, H = dhs.shape
    dxw = np.empty((T, B, 3 * H), dhs.dtype)  # gradient at the input projection x_t W_xh + b, rows
    dhw = np.empty((T, B, 3 * H), dhs.dtype)  # gradient at the recurrent product h_{t-1} W_hh (+ b_hn
    # in the n block), rows; equal to dxw in the [r z] blocks, but r sits between it and the
    # candidate's pre-activation in n
    d = np.empty((3, B, H), dhs.dtype)  # dxw of one step, gate-major
    dwn = np.empty((B, H), dhs.dtype)  # dhw's n block of one step
    dh = np.zeros((B, H), dhs.dtype)  # gradient reaching h_t from step t+1
    tmp = np.empty((B, H), dhs.dtype)  # scratch
    tmp2 = np.empty((2, B, H), dhs.dtype)  # scratch for the two sigmoid derivatives at once
    back = np.empty((B, H), dhs.dtype)  # the part of h_{t-1}'s gradient that passes through W_hh
    WhhT = np.ascontiguousarray(Whh.T)  # (3H, H), as in rnn_backward
    dr, dz, dn = d
    dxw_steps, dhw_steps = gate_major(dxw, 3), gate_major(dhw, 3)  # (T, 3, B, H) views, made once
    for t in range(T - 1, -1, -1):
        act = gates[:, t]
        r, z, n = act
        dh += dhs[t]  # total gradient at h_t
        np.subtract(hs[t], n, out=tmp)  # h = n + z * (h_prev - n)
        np.multiply(dh, tmp, out=dz)
        np.subtract(1, z, out=tmp)
        np.multiply(dh, tmp, out=dn)
        np.multiply(n, n, out=tmp)
        np.subtract(1, tmp, out=tmp)
        dn *= tmp  # tanh' = 1 - tanh^2: now the gradient at n's pre-activation
        np.multiply(dn, hns[t], out=dr)  # pre-activation = xw_n + r * hn
        np.multiply(dn, r, out=dwn)
        rz = act[:2]
        np.subtract(1, rz, out=tmp2)
        tmp2 *= rz
        d[:2] *= tmp2  # sigmoid' = s (1 - s)
        dxw_steps[t] = d  # back to rows
        dhw_steps[t, :2] = d[:2]
        dhw_steps[t, 2] = dwn
        np.matmul(dhw[t], WhhT, out=back)
        dh *= z  # the gradient h_{t-1} receives: directly through z * h_{t-1} ...
        dh += back  # ... and through the three gates
    dWhh = hs[:-1].reshape(T * B, H).T @ dhw.reshape(T * B, 3 * H)
    return dxw, dh, dWhh, dhw[:, :, 2 * H:].sum(axis=(0, 1))


# ---------------------------------------------------------------------------------------------
# Dropout (Srivastava et al. 2014), inverted: at training time each unit is kept with probability
# 1 - p and the kept ones are scaled by 1 / (1 - p), so the expected value of every unit is
# unchanged and evaluation uses the same weights with no dropout and no rescaling. The model uses it
# on the non-recurrent connections only (Zaremba et al. 2014, as char-rnn does).


def dropout_forward(x, p, rng_or_mask):
    """x: (...) any shape;  p: drop probability, 0 <= p < 1;  rng_or_mask: a np.random.Generator to
    draw a fresh mask from, or a mask made before (an array of x's shape holding 0 and 1 / (1 - p)),
    so that a gradient check can run every evaluation with the same mask.

    Returns out = x * mask, and the mask as the cache.
    """
    if isinstance(rng_or_mask, np.random.Generator):
        mask = rng_or_mask.random(x.shape, dtype=x.dtype)  # uniform in [0, 1)
        np.greater_equal(mask, p, out=mask)  # 1.0 where kept: probability 1 - p
        mask *= 1 / (1 - p)
    else:
        mask = rng_or_mask
    return x * mask, mask


def dropout_backward(dout, cache):
    """dout: (...) -> dx: (...), the same shape. out = x * mask, so dx = dout * mask."""
    return dout * cache


# ---------------------------------------------------------------------------------------------
# Output. Both forms are stable (CS231n): each row's max is subtracted before exp, so exp cannot
# overflow and the largest term of every sum is 1.


def log_softmax(logits, with_softmax=False):
    """log softmax(logits) along the last axis. logits: (..., V)  ->  (..., V), in logits' dtype.

    with_softmax: also return softmax(logits) from the same exp pass (the loss's gradient needs
    both), as (log_p, p)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)  # (..., V), each row's max 0
    e = np.exp(shifted)  # (..., V)
    sums = e.sum(axis=-1, keepdims=True)
    shifted -= np.log(sums)
    if not with_softmax:
        return shifted
    e /= sums
    return shifted, e


def softmax(logits, temperature=1.0):
    """softmax(logits / temperature) along the last axis, in float64 (sampling sums its tail).

    logits: (..., V)  ->  (..., V), each row summing to 1. The max is subtracted before dividing,
    so a tiny temperature sends the others to -inf (probability 0) instead of overflowing to inf.
    """
    p = np.subtract(logits, logits.max(axis=-1, keepdims=True), dtype=np.float64)  # (..., V)
    if temperature != 1:
        with np.errstate(over="ignore"):
            p /= temperature
    np.exp(p, out=p)
    p /= p.sum(axis=-1, keepdims=True)
    return p


def cross_entropy(logits, targets):
    """The summed cross-entropy of softmax(logits) against the target ids, without the gradient
    (evaluation). logits: (N, V);  targets: (N,) ids  ->  nats (float64)."""
    log_p = log_softmax(logits)  # (N, V)
    return -float(log_p[np.arange(len(targets)), targets].sum(dtype=np.float64))


def softmax_cross_entropy(logits, targets):
    """Mean cross-entropy of softmax(logits) against the target ids, and its gradient.

    logits: (N, V);  targets: (N,) ids  ->  loss (float, nats per row), dlogits: (N, V).
    The loss is summed in float64; the gradient is softmax(logits) - onehot(targets), over N.
    """
    N = logits.shape[0]
    rows = np.arange(N)
    log_p, probs = log_softmax(logits, with_softmax=True)  # each (N, V)
    loss = -float(log_p[rows, targets].sum(dtype=np.float64)) / N
    probs[rows, targets] -= 1
    probs /= N
    return loss, probs
