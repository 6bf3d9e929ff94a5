"""Global-norm gradient clipping and the optimizers, all keyed by the parameters' names.

Optimizer state is a dict of slots, each a dict with the parameters' names: Adam keeps "m" (first
moment) and "v" (second moment), RMSProp and Adagrad keep "v", SGD keeps nothing. The update count
`t` (Adam's bias correction) is kept by the caller and saved in the checkpoint header.
Updates work in place on the parameter arrays.
"""

from __future__ import annotations

import math

import numpy as np

SLOTS = {"adam": ("m", "v"), "rmsprop": ("v",), "adagrad": ("v",), "sgd": ()}

ADAM_BETAS = (0.9, 0.999)  # Kingma & Ba 2015, as PyTorch
RMSPROP_DECAY = 0.99  # PyTorch's default alpha
EPS = 1e-8
NORM_CHUNK = 1 << 15  # elements widened to float64 at a time by global_norm: 256 KB, whatever the model


def global_norm(grads: dict[str, np.ndarray]) -> float:
    """sqrt of the sum of squares of every gradient element, in float64.

    A float32 dot product sums in float32, which overflows above 3.4e38 and keeps about 7 digits,
    so float32 gradients are widened to float64 a chunk at a time into one small buffer (no
    float64 copy of the whole gradient) and each chunk is summed by a float64 dot product."""
    total = 0.0
    buf = np.empty(NORM_CHUNK, np.float64)  # (NORM_CHUNK,) scratch
    for g in grads.values():
        flat = g.reshape(-1)  # (n,), a view of a contiguous gradient
        if flat.dtype == np.float64:
            total += float(np.dot(flat, flat))
            continue
        for start in range(0, flat.size, NORM_CHUNK):
            chunk = buf[:min(NORM_CHUNK, flat.size - start)]
            chunk[...] = flat[start:start + NORM_CHUNK]
            total += float(np.dot(chunk, chunk))
    return math.sqrt(total)


def clip_by_global_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients together so their global norm is at most max_norm (0: no clipping).
    Returns the norm before clipping. Unlike element-wise clipping it keeps the gradient's
    direction (Pascanu et al. 2013)."""
    norm = global_norm(grads)
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads.values():
            g *= scale
    return norm


def init_state(optimizer: str, params: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    return {slot: {name: np.zeros_like(p) for name, p in params.items()} for slot in SLOTS[optimizer]}


def update(optimizer: str, params, grads, state, learning_rate: float, t: int) -> None:
    """One update of every parameter, in place. t: this update's number, counted from 1.

    The gradient arrays are used up: Adam works in them as scratch space, so a step allocates
    nothing (pass copies if you need the gradients afterwards)."""
    if optimizer == "adam":
        b1, b2 = ADAM_BETAS
        # Bias correction folded into the step size (Kingma & Ba 2015, end of section 2).
        lr_t = learning_rate * math.sqrt(1 - b2**t) / (1 - b1**t)
        eps_t = EPS * math.sqrt(1 - b2**t)
    for name, p in params.items():
        g = grads[name]
        if optimizer == "sgd":
            g *= learning_rate
            p -= g
            continue
        v = state["v"][name]
        if optimizer == "adam":
            m = state["m"][name]
            # m <- b1 m + (1 - b1) g, written as g + b1 (m - g) to need no temporary; likewise v.
            m -= g
            m *= b1
            m += g
            g *= g
            v -= g
            v *= b2
            v += g
            np.sqrt(v, out=g)  # g is free now: the step is lr_t m / (sqrt(v) + eps_t)
            g += eps_t
            np.divide(m, g, out=g)
            g *= lr_t
            p -= g
        elif optimizer == "rmsprop":
            v *= RMSPROP_DECAY
            v += (1 - RMSPROP_DECAY) * g * g
            p -= learning_rate * g / (np.sqrt(v) + EPS)
        elif optimizer == "adagrad":
            v += g * g
            p -= learning_rate * g / (np.sqrt(v) + EPS)
        else:
            raise AssertionError(f"unknown optimizer {optimizer}")
