"""Generating text: prime the model with a seed, then draw one character at a time.

Each generated character is fed back as the next input (Karpathy 2015, "The unreasonable
effectiveness of recurrent neural networks"). The distribution of the next character is
softmax(logits / temperature), optionally cut to the top_k most likely; argmax takes the most
likely character every time, which makes the output deterministic.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from charnn import layers, model
from charnn.config import ModelConfig
from charnn.data import Vocab
from charnn.errors import CharnnError


def choose(logits: np.ndarray, rng: np.random.Generator, temperature=1.0, top_k=None, argmax=False) -> int:
    """Pick the next id from logits: (V,). Inverse-CDF sampling: the first id whose cumulative
    probability exceeds a uniform draw."""
    if argmax:
        return int(np.argmax(logits))
    if top_k is not None and top_k < len(logits):
        cutoff = np.partition(logits, -top_k)[-top_k]  # the k-th largest logit
        logits = np.where(logits < cutoff, -np.inf, logits)  # (V,)
    cdf = np.cumsum(layers.softmax(logits, temperature))  # (V,)
    i = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return min(i, len(logits) - 1)  # guards the (measure-zero) draw of exactly cdf[-1]


def check_options(temperature: float, top_k: int | None, length: int) -> None:
    if not temperature > 0:
        raise CharnnError(f"--temperature must be above 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise CharnnError(f"--top-k must be at least 1, got {top_k}")
    if length < 0:
        raise CharnnError(f"--length must be 0 or more, got {length}")


class Stepper:
    """model.step for one stream, made fast for generation: the weights are prepared once and every
    buffer is preallocated, so a character costs one matrix-vector product per layer (two for a
    GRU layer above the first) and a few in-place ufuncs, with no allocation.

    Prepared once: layer 0's input projection of every character, bias included (a (V, G*H) table:
    the one-hot product is a row of it); for layers above, [W_xh; W_hh] stacked so that
    [x_t, h_{t-1}] @ [W_xh; W_hh] makes both products in one; for the LSTM and GRU, the sigmoid
    columns halved as the sequence forwards halve them (exact: halving is exact in floating point).
    The matrices are kept transposed, (G*H, K), and multiply the vector from the left: BLAS's
    matrix-vector product reads them row by row, measured as fast or faster here than x @ W on the
    (K, G*H) array (4 MB: 40 vs 40 us; 8 MB: 63 vs 71 us; the output layer: 1.8 vs 2.5 us).
    The state is the same dict as model.step's, for one stream: each (L, 1, H), updated in place.
    """

    def __init__(self, params, config: ModelConfig, state: dict):
        self.config, self.state = config, state
        H, kind = config.hidden_size, config.model
        dtype = params["Why"].dtype
        scale = layers.gate_scale(layers.GATE_SCALE[kind], H, dtype) if kind in layers.GATE_SCALE else 1
        self.embed = (params["l0.Wxh"] + params["l0.bh"]) * scale  # (V, G*H)
        self.W, self.b, self.Wx = [], [], []  # Wx: a GRU layer's input weights above layer 0, else None
        for l in range(config.num_layers):
            Wxh, Whh = params[f"l{l}.Wxh"], params[f"l{l}.Whh"]
            if l == 0 or kind == "gru":  # the GRU needs h W_hh apart (r multiplies part of it)
                W = Whh * scale
            else:
                W = np.concatenate([Wxh, Whh]) * scale  # (2H, G*H)
            self.W.append(np.ascontiguousarray(W.T))  # (G*H, H or 2H)
            self.b.append(params[f"l{l}.bh"] * scale)
            self.Wx.append(np.ascontiguousarray((Wxh * scale).T) if kind == "gru" and l > 0 else None)
        self.bhn = [params.get(f"l{l}.bhn") for l in range(config.num_layers)]
        self.Why, self.by = np.ascontiguousarray(params["Why"].T), params["by"]  # (V, H)
        blocks = model.gates(config)
        G = blocks * H
        # Vectors are 1-D: numpy then calls BLAS's matrix-vector product (gemv), measured 15-25%
        # faster here than the same product on (1, K) matrices. The cells take (1, ...) views.
        # xh[l]: (2H,) = [input from the layer below, this layer's h]; layer 0 uses only the h half.
        self.xh = [np.zeros(2 * H, dtype) for _ in range(config.num_layers)]
        for l in range(config.num_layers):
            self.xh[l][H:] = state["h"][l, 0]
        self.a = np.empty(G, dtype)  # pre-activations, then activated gates
        self.xw = np.empty(G, dtype)  # GRU: the input projection apart (a is then h W_hh)
        if kind in layers.GATE_SCALE:  # the cells' gate-major (G, 1, H) views
            self.a_gates = layers.gate_major(self.a[None], blocks)
            self.xw_gates = layers.gate_major(self.xw[None], blocks)
        self.hn = np.empty((1, H), dtype)
        self.tmp = np.empty((1, H), dtype)
        self.tanh_c = np.empty((1, H), dtype)
        self.logits = np.empty(len(self.by), dtype)

    def step(self, char_id: int) -> np.ndarray:
        """Feed one character id; return the logits of the next, (V,) (overwritten by the next step)."""
        H, kind, a = self.config.hidden_size, self.config.model, self.a
        for l in range(self.config.num_layers):
            xh, h = self.xh[l], self.xh[l][H:]
            if kind == "gru":
                if l == 0:
                    np.copyto(self.xw, self.embed[char_id])
                else:
                    np.dot(self.Wx[l], xh[:H], out=self.xw)
                    self.xw += self.b[l]
                np.dot(self.W[l], h, out=a)
                layers.gru_cell(self.xw_gates, self.a_gates, self.bhn[l], h[None], self.hn, h[None])  # h_prev is read before h is written
            else:
                if l == 0:
                    np.dot(self.W[0], h, out=a)
                    a += self.embed[char_id]
                else:
                    np.dot(self.W[l], xh, out=a)
                    a += self.b[l]
                if kind == "lstm":
                    c = self.state["c"][l]
                    layers.lstm_cell(self.a_gates, c, c, self.tanh_c, h[None], self.tmp)
                else:
                    np.tanh(a, out=h)
            self.state["h"][l, 0] = h
            if l + 1 < self.config.num_layers:
                self.xh[l + 1][:H] = h
        np.dot(self.Why, h, out=self.logits)
        self.logits += self.by
        return self.logits


def generate(params, config: ModelConfig, vocab: Vocab, seed: str, length: int, rng: np.random.Generator,
             temperature=1.0, top_k=None, argmax=False) -> Iterator[str]:
    """Yield `length` characters continuing `seed` (which must be non-empty and use only the
    vocabulary's characters: CharnnError names the others)."""
    check_options(temperature, top_k, length)
    if not seed:
        raise CharnnError("the seed text is empty; give at least one character")
    ids = vocab.encode(seed)[:, None]  # (T, 1)
    dtype = params["Why"].dtype
    # Priming: the whole seed in one forward pass; its last logits predict the first new character.
    logits, _, state, _ = model.forward(params, config, ids, model.zero_state(config, 1, dtype))
    last = logits[-1]  # (V,)
    stepper = Stepper(params, config, state)
    for k in range(length):
        next_id = choose(last, rng, temperature, top_k, argmax)
        yield vocab.chars[next_id]
        if k + 1 < length:
            last = stepper.step(next_id)


def default_seed(vocab: Vocab, rng: np.random.Generator) -> str:
    """A newline, the natural start of a text, if the model knows it; else a random character."""
    return "\n" if "\n" in vocab.chars else vocab.chars[int(rng.integers(vocab.size))]
