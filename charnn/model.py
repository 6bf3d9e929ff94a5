"""The character model: parameters, their initialisation, the loss and its gradients over a batch
by full backpropagation through time, and the Stepper, which advances B streams one character
at a time for generation.

    x_t  --embedding-->  layer 0  -->  layer 1  --> ... -->  layer L-1  --affine-->  logits y_t
                         (RNN, LSTM or GRU, each reading the hidden state of the one below)

Parameters live in one dict of named arrays; gradients and optimizer state use the same names:
    l{l}.Wxh  (D_l, G*H)   input weights of layer l (D_0 = V: one-hot characters; D_l = H above)
    l{l}.Whh  (H, G*H)     recurrent weights
    l{l}.bh   (G*H,)       bias
    l{l}.bhn  (H,)         GRU only: the recurrent bias of the candidate, inside r * (h W_hn + b_hn)
    Why       (H, V)       output weights
    by        (V,)         output bias
with G = 1 for the RNN, 4 for the LSTM (gates o, i, f, g side by side) and 3 for the GRU (r, z, n).

The recurrent state is a dict: "h" (L, B, H) for every model and "c" (L, B, H) for the LSTM. A
batch starts from the state it is given and returns its final state; no gradient flows into the
given state (it is a constant: backprop runs through the T steps of this batch and no further).

Dropout (config.dropout = p > 0, and only when forward is given a Generator: training) zeroes
units of each layer's output, i.e. the input of the layer above and, for the top layer, the input
of the output layer: the non-recurrent connections only, as Zaremba et al. 2014 ("Recurrent neural
network regularization") and char-rnn do. The recurrence h_{t-1} -> h_t is never dropped, so the
state carries its memory intact, and layer 0's one-hot input is not dropped either (char-rnn).
"""

from __future__ import annotations

import math

import numpy as np

from charnn import layers
from charnn.config import ModelConfig


GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def gates(config: ModelConfig) -> int:
    """G: blocks of H columns in each layer's fused weights (the LSTM's four gates, the GRU's three)."""
    return GATES[config.model]


def state_names(config: ModelConfig) -> tuple[str, ...]:
    return ("h", "c") if config.model == "lstm" else ("h",)


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, in a fixed order (init, checkpoints and tests use it)."""
    V, H, L, G = config.vocab_size, config.hidden_size, config.num_layers, gates(config)
    shapes = {}
    for l in range(L):
        shapes[f"l{l}.Wxh"] = (V if l == 0 else H, G * H)
        shapes[f"l{l}.Whh"] = (H, G * H)
        shapes[f"l{l}.bh"] = (G * H,)
        if config.model == "gru":
            shapes[f"l{l}.bhn"] = (H,)
    shapes["Why"] = (H, V)
    shapes["by"] = (V,)
    return shapes


def init_params(config: ModelConfig, rng: np.random.Generator, dtype="float32") -> dict[str, np.ndarray]:
    """Weights uniform in +-1/sqrt(H), as PyTorch's nn.RNN/nn.LSTM/nn.Linear start, except layer 0's
    input weights; zero biases except the LSTM's forget gate.

    Layer 0's input is one-hot, so `x_t W_xh` is one row of W_xh: a fan-in of 1, not V. Its rows
    are an embedding table and start as nn.Embedding does, N(0, 1), so each character moves the
    gates from the first step (rows of +-1/sqrt(H) barely move them, and learn more slowly).
    The forget gate's bias starts at 1 so the cell keeps its memory at first (Jozefowicz et al. 2015).
    The GRU's biases all start at zero, as Keras starts them: its update gate z then keeps about half
    the state at each step at first (a positive z bias, the analogue of the forget bias, is not
    known to help).
    """
    H = config.hidden_size
    params = {}
    for name, shape in param_shapes(config).items():
        if name == "by" or name.endswith((".bh", ".bhn")):
            p = np.zeros(shape, dtype)
            if config.model == "lstm" and name.endswith(".bh"):
                p[2 * H:3 * H] = 1.0  # the forget gate's block of [o i f g]
        elif name == "l0.Wxh":
            p = rng.standard_normal(size=shape).astype(dtype)
        else:
            bound = 1.0 / math.sqrt(H)
            p = rng.uniform(-bound, bound, size=shape).astype(dtype)
        params[name] = p
    return params


def zero_state(config: ModelConfig, batch_size: int, dtype="float32") -> dict[str, np.ndarray]:
    L, H = config.num_layers, config.hidden_size
    return {name: np.zeros((L, batch_size, H), dtype) for name in state_names(config)}


def forward(params, config: ModelConfig, inputs, state, targets=None, rng=None, masks=None):
    """Run the model over a batch of windows.

    inputs: (T, B) ids;  state: the dict above, each (L, B, H);  targets: (T, B) ids or None;
    rng: a np.random.Generator when training, to draw the dropout masks from (used only when
    config.dropout > 0); or masks: (L, T, B, H) masks made before (masks.dropout_masks: the
    training loop's, the same whichever process owns a stream); neither, to evaluate or sample:
    no dropout, whatever config.dropout says.
    Returns (logits (T*B, V) with row t*B + b for step t of stream b, loss (mean nats per character,
    None without targets), the final state, and the cache for backward).
    """
    T, B = inputs.shape
    H = config.hidden_size
    p = config.dropout if rng is not None or masks is not None else 0.0
    new_state = {name: np.empty_like(s) for name, s in state.items()}  # each (L, B, H), like state
    caches = []  # one (input cache, recurrent cache, dropout mask or None) per layer
    x = None  # (T, B, H): the outputs of the layer below
    for l in range(config.num_layers):
        Wxh, Whh, bh = params[f"l{l}.Wxh"], params[f"l{l}.Whh"], params[f"l{l}.bh"]
        if config.model in layers.GATE_SCALE:  # gated cells take it gate-major, (G, T, B, H)
            xw, in_cache = layers.gate_projection(inputs if l == 0 else x, Wxh, bh, layers.GATE_SCALE[config.model])
        elif l == 0:
            xw, in_cache = layers.embedding_forward(inputs, Wxh, bh)  # (T, B, G*H)
        else:
            xw, in_cache = layers.affine_forward(x.reshape(T * B, H), Wxh, bh)
            xw = xw.reshape(T, B, -1)
        if config.model == "lstm":
            hs, cs, rec_cache = layers.lstm_forward(xw, state["h"][l], state["c"][l], Whh)
            new_state["c"][l] = cs[-1]
        elif config.model == "gru":
            hs, rec_cache = layers.gru_forward(xw, state["h"][l], Whh, params[f"l{l}.bhn"])
        else:
            hs, rec_cache = layers.rnn_forward(xw, state["h"][l], Whh)
        new_state["h"][l] = hs[-1]  # the carried state is never dropped
        x = hs[1:]  # (T, B, H), a contiguous view
        mask = None
        if p > 0:  # on the way up (to layer l+1, or to the output layer), not along time
            x, mask = layers.dropout_forward(x, p, rng if masks is None else masks[l])
        caches.append((in_cache, rec_cache, mask))
    logits, out_cache = layers.affine_forward(x.reshape(T * B, H), params["Why"], params["by"])
    loss, dlogits = None, None
    if targets is not None:
        loss, dlogits = layers.softmax_cross_entropy(logits, targets.reshape(-1))
    return logits, loss, new_state, (caches, out_cache, dlogits, (T, B))


CHANNELS = {"rnn": ("h",), "lstm": ("h", "c", "o", "i", "f", "g"), "gru": ("h", "r", "z", "n")}  # see inside()


def inside(config: ModelConfig, cache) -> dict[str, np.ndarray]:
    """What a forward pass computed in each layer, read from the cache it keeps for backward (so
    nothing is recorded, and training pays nothing, unless a caller asks): {"l{l}.{channel}": (T, B, H)}
    for the channels of CHANNELS[config.model]: h, the hidden state; for the LSTM "c" = tanh(c_t)
    (bounded, as Karpathy, Johnson & Fei-Fei 2015 plot it) and the activated gates o i f g; for the
    GRU the activated gates r z n. Views into the cache, valid until it is dropped.
    """
    caches = cache[0]
    out = {}
    for l, (_, rec_cache, _) in enumerate(caches):
        hs = rec_cache[0]  # (T+1, B, H), hs[0] the initial state
        out[f"l{l}.h"] = hs[1:]
        if config.model == "lstm":
            _, _, tanh_cs, acts, _ = rec_cache  # tanh_cs (T, B, H); acts (4, T, B, H) [o i f g]
            out[f"l{l}.c"] = tanh_cs
            out.update({f"l{l}.{g}": acts[k] for k, g in enumerate("oifg")})
        elif config.model == "gru":
            acts = rec_cache[2]  # (3, T, B, H) [r z n]
            out.update({f"l{l}.{g}": acts[k] for k, g in enumerate("rzn")})
    return out


def backward(config: ModelConfig, cache) -> dict[str, np.ndarray]:
    """The gradients of forward's loss w.r.t. every parameter: forward walked in reverse."""
    caches, out_cache, dlogits, (T, B) = cache
    H = config.hidden_size
    grads = {}
    dx, grads["Why"], grads["by"] = layers.affine_backward(dlogits, out_cache)
    dhs = dx.reshape(T, B, H)  # gradient w.r.t. the top layer's outputs (after dropout)
    for l in reversed(range(config.num_layers)):
        in_cache, rec_cache, mask = caches[l]
        if mask is not None:
            dhs = layers.dropout_backward(dhs, mask)
        if config.model == "lstm":
            dxw, _dh0, _dc0, grads[f"l{l}.Whh"] = layers.lstm_backward(dhs, rec_cache)
        elif config.model == "gru":
            dxw, _dh0, grads[f"l{l}.Whh"], grads[f"l{l}.bhn"] = layers.gru_backward(dhs, rec_cache)
        else:
            dxw, _dh0, grads[f"l{l}.Whh"] = layers.rnn_backward(dhs, rec_cache)
        # The initial state is a constant (carried from the previous window): _dh0/_dc0 stop here.
        if l == 0:
            grads["l0.Wxh"], grads["l0.bh"] = layers.embedding_backward(dxw, in_cache)
        else:
            dx, grads[f"l{l}.Wxh"], grads[f"l{l}.bh"] = layers.affine_backward(dxw.reshape(T * B, -1), in_cache)
            dhs = dx.reshape(T, B, H)
    return {name: grads[name] for name in params_order(config)}


def params_order(config: ModelConfig):
    return param_shapes(config).keys()


def loss_and_grads(params, config: ModelConfig, inputs, targets, state, rng=None, masks=None):
    """Forward and full BPTT over one batch: (loss, grads, final state). rng, masks: as in forward
    (give one when training with dropout; the gradients are those of the loss with those masks)."""
    _, loss, new_state, cache = forward(params, config, inputs, state, targets, rng, masks)
    return loss, backward(config, cache), new_state


class Stepper:
    """The model advanced one character at a time on B streams, with the state inside (the seed's
    `y = rnn.step(x)`): generation, model.step and charnn.Model use it. No dropout.

    Prepared once: layer 0's input projection of every character, bias included (a (V, G*H) table:
    the one-hot product is a row of it); for layers above, [W_xh; W_hh] stacked so that
    [x_t; h_{t-1}] times it makes both products in one (a GRU keeps W_xh apart: r multiplies only
    h W_hh); for the LSTM and GRU, the sigmoid blocks scaled by layers.gate_scale, as the sequence
    forwards scale them. The matrices are kept transposed, (G*H, K), and the activations as columns,
    (K, B), so a product is W^T @ x; for one stream the columns are 1-D vectors, and numpy then calls
    BLAS's matrix-vector product (gemv), which reads the transposed weights row by row, the fastest
    form for one stream. Each gate is then a contiguous (H, B) block, which the cells of layers take
    as they take (B, H) blocks (they are element-wise). Every buffer is preallocated, and layer l's
    h is stored where layer l+1 reads its input, so a step allocates and copies no array.
    """

    def __init__(self, params, config: ModelConfig, batch_size: int = 1, state: dict | None = None):
        self.config, self.B = config, batch_size
        H, L, B, kind = config.hidden_size, config.num_layers, batch_size, config.model
        dtype = params["Why"].dtype
        blocks = gates(config)
        G = blocks * H
        scale = layers.gate_scale(layers.GATE_SCALE[kind], H, dtype) if kind in layers.GATE_SCALE else 1
        col = (lambda a: a[..., 0]) if B == 1 else (lambda a: a)  # one stream: the 1-D vector
        bias = (lambda b: b) if B == 1 else (lambda b: b[:, None])  # (G*H,) added to (G*H, B) columns
        self.embed = (params["l0.Wxh"] + params["l0.bh"]) * scale  # (V, G*H)
        self.W, self.b, self.Wx = [], [], []  # Wx: a GRU layer's input weights above layer 0, else None
        for l in range(L):
            Wxh, Whh = params[f"l{l}.Wxh"], params[f"l{l}.Whh"]
            W = Whh * scale if l == 0 or kind == "gru" else np.concatenate([Wxh, Whh]) * scale  # (H or 2H, G*H)
            self.W.append(np.ascontiguousarray(W.T))  # (G*H, H or 2H)
            self.b.append(bias(params[f"l{l}.bh"] * scale))
            self.Wx.append(np.ascontiguousarray((Wxh * scale).T) if kind == "gru" and l > 0 else None)  # (G*H, H)
        self.bhn = [params[f"l{l}.bhn"][:, None] if kind == "gru" else None for l in range(L)]  # (H, 1)
        self.Why, self.by = np.ascontiguousarray(params["Why"].T), bias(params["by"])  # (V, H)
        self.hs = np.zeros((L + 1, H, B), dtype)  # hs[l + 1]: layer l's h, read by layer l+1; hs[0] unused
        self.cs = np.zeros((L, H, B), dtype) if kind == "lstm" else None  # LSTM cell states
        xh = [self.hs[l:l + 2].reshape(2 * H, B) for l in range(L)]  # (2H, B) = [input from below; h], views
        self.xh, self.x, self.h = [col(v) for v in xh], [col(self.hs[l]) for l in range(L)], [col(self.hs[l + 1]) for l in range(L)]
        a = np.empty((G, B), dtype)  # pre-activations, then activated gates
        xw = np.empty((G, B), dtype)  # GRU: the input projection apart (a is then h W_hh)
        self.a, self.xw = col(a), col(xw)
        self.a_gates, self.xw_gates = a.reshape(blocks, H, B), xw.reshape(blocks, H, B)  # gate-major views
        self.rows = np.empty((B, G), dtype)  # layer 0's looked-up rows, B > 1
        self.hn, self.tmp, self.tanh_c = (np.empty((H, B), dtype) for _ in range(3))
        logits = np.empty((len(params["by"]), B), dtype)  # (V, B)
        self.logits, self.out = col(logits), logits[:, 0] if B == 1 else logits.T
        if state is not None:
            self.set_state(state)

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the state, as model.zero_state makes it: each (L, B, H)."""
        out = {"h": self.hs[1:].transpose(0, 2, 1).copy()}
        if self.cs is not None:
            out["c"] = self.cs.transpose(0, 2, 1).copy()
        return out

    def set_state(self, state: dict) -> None:
        """Start from state (each (L, B, H)), copied in."""
        self.hs[1:] = state["h"].transpose(0, 2, 1)
        if self.cs is not None:
            self.cs[...] = state["c"].transpose(0, 2, 1)

    def reset(self) -> None:
        """Back to the zero state."""
        self.hs[...] = 0
        if self.cs is not None:
            self.cs[...] = 0

    def step(self, ids) -> np.ndarray:
        """Feed one character to every stream: ids an int for one stream, else (B,) ids. Returns the
        logits of the next, (V,) for one stream, else (B, V); overwritten by the next step."""
        kind, a, one = self.config.model, self.a, self.B == 1
        if not one:
            np.take(self.embed, ids, axis=0, out=self.rows)  # (B, G*H)
        for l in range(self.config.num_layers):
            h, cell_h = self.h[l], self.hs[l + 1]  # (H,) or (H, B); cell_h: (H, B), the same memory
            if kind == "gru":
                if l > 0:
                    np.dot(self.Wx[l], self.x[l], out=self.xw)
                    self.xw += self.b[l]
                elif one:
                    np.copyto(self.xw, self.embed[ids])
                else:
                    np.copyto(self.xw, self.rows.T)
                np.dot(self.W[l], h, out=a)
                layers.gru_cell(self.xw_gates, self.a_gates, self.bhn[l], cell_h, self.hn, cell_h)  # h_prev is read before h is written
            else:
                if l > 0:
                    np.dot(self.W[l], self.xh[l], out=a)
                    a += self.b[l]
                else:
                    np.dot(self.W[0], h, out=a)
                    a += self.embed[ids] if one else self.rows.T
                if kind == "lstm":
                    c = self.cs[l]
                    layers.lstm_cell(self.a_gates, c, c, self.tanh_c, cell_h, self.tmp)
                else:
                    np.tanh(a, out=h)
        np.dot(self.Why, h, out=self.logits)
        self.logits += self.by
        return self.out


def step(params, config: ModelConfig, ids, state):
    """Advance the model one character: ids (B,) -> (logits (B, V), new state). The state dict is
    not modified. A Stepper made for one step: to step many characters, keep a Stepper."""
    B = len(ids)
    stepper = Stepper(params, config, B, state)
    logits = stepper.step(int(ids[0]) if B == 1 else ids)
    return logits.reshape(B, -1).copy(), stepper.state
