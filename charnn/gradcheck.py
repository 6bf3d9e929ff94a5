"""Finite-difference checks of the analytic gradients, in float64.

check_model compares model.loss_and_grads with central differences on a small random problem,
every parameter element, starting from a random (non-zero) carried state, optionally with dropout
(the same masks in every evaluation). `charnn gradcheck` and the tests both call it.
numerical_gradient is the same method for any function of one array (the layer tests use it).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from charnn import model
from charnn.config import ModelConfig

THRESHOLD = 1e-6  # worst relative error allowed; the checks below reach about 1e-8
EPSILON = 1e-3  # finite-difference step


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = EPSILON) -> np.ndarray:
    """d f() / d x by the five-point central difference, perturbing x in place one element at a time:
        f'(x) ~ [8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))] / 12h,  error O(h^4).
    The plain two-point form's error is O(h^2) plus rounding ~1e-16/h; on elements whose gradient is
    ~1e-5 neither leaves a relative error safely below 1e-6, and this form does."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        values = []
        for k in (1, -1, 2, -2):
            flat[i] = old + k * h
            values.append(f())
        flat[i] = old
        p1, m1, p2, m2 = values
        gflat[i] = (8 * (p1 - m1) - (p2 - m2)) / (12 * h)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """max |a - n| / max(|a| + |n|, 1e-6), over the elements (CS231n's rel_error, with a floor that
    keeps elements whose gradient is zero within rounding from counting as large errors)."""
    diff = np.abs(analytic - numeric)
    return float(np.max(diff / np.maximum(np.abs(analytic) + np.abs(numeric), 1e-6)))


def check_model(model_name="lstm", num_layers=2, hidden_size=5, seq_length=4, batch_size=3,
                vocab_size=7, seed=0, dropout=0.0) -> dict[str, float]:
    """Worst relative error of every parameter's BPTT gradient against finite differences.

    With dropout > 0 the loss is that of training, with masks: every evaluation gets a Generator
    seeded the same way, so it draws the same masks (the forward draws them in a fixed order), and
    the finite differences see one fixed function of the parameters, as the gradient does.
    """
    config = ModelConfig(model=model_name, vocab_size=vocab_size, hidden_size=hidden_size,
                         num_layers=num_layers, dropout=dropout).validate()
    rng = np.random.default_rng(seed)
    params = model.init_params(config, rng, "float64")
    for p in params.values():  # also non-zero biases, so every term of the math is exercised
        p += rng.uniform(-0.5, 0.5, size=p.shape)
    state = {name: rng.uniform(-0.9, 0.9, size=s.shape)
             for name, s in model.zero_state(config, batch_size, "float64").items()}
    inputs = rng.integers(0, vocab_size, size=(seq_length, batch_size))  # (T, B)
    targets = rng.integers(0, vocab_size, size=(seq_length, batch_size))  # (T, B)

    mask_seed = int(rng.integers(2**31))

    def masks():  # None without dropout: the plain evaluation path
        return np.random.default_rng(mask_seed) if dropout > 0 else None

    def loss() -> float:
        return model.forward(params, config, inputs, state, targets, masks())[1]

    _, grads, _ = model.loss_and_grads(params, config, inputs, targets, state, masks())
    return {name: relative_error(grads[name], numerical_gradient(loss, params[name])) for name in params}
