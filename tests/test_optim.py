import math

import numpy as np
import pytest

from charnn import optim


def test_global_norm_clipping(rng):
    grads = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    expected = math.sqrt(sum((g ** 2).sum() for g in grads.values()))
    direction = {k: g / expected for k, g in grads.items()}
    norm = optim.clip_by_global_norm(grads, 1.0)
    assert norm == pytest.approx(expected)
    assert optim.global_norm(grads) == pytest.approx(1.0, rel=1e-5)
    for k in grads:  # scaled together: the direction is kept
        np.testing.assert_allclose(grads[k], direction[k], rtol=1e-5)


def test_no_clipping_below_the_limit_or_when_off(rng):
    grads = {"a": rng.standard_normal(10)}
    before = grads["a"].copy()
    optim.clip_by_global_norm(grads, 1e6)
    optim.clip_by_global_norm(grads, 0)
    np.testing.assert_array_equal(grads["a"], before)


def test_adam_matches_the_paper(rng):
    """Folding the bias correction into the step size gives Kingma & Ba's update exactly."""
    p = {"w": rng.standard_normal(6)}
    ref = p["w"].copy()
    state = optim.init_state("adam", p)
    m, v = np.zeros(6), np.zeros(6)
    b1, b2, lr, eps = 0.9, 0.999, 0.01, 1e-8
    for t in range(1, 6):
        g = rng.standard_normal(6)
        optim.update("adam", p, {"w": g.copy()}, state, lr, t)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        ref -= lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        np.testing.assert_allclose(p["w"], ref, rtol=1e-12)
    assert set(state) == {"m", "v"} and set(state["m"]) == {"w"}


@pytest.mark.parametrize("name,lr", [("adam", 0.1), ("rmsprop", 0.05), ("adagrad", 0.5), ("sgd", 0.1)])
def test_every_optimizer_minimises_a_quadratic(name, lr, rng):
    target = rng.standard_normal(5)
    p = {"w": np.zeros(5)}
    state = optim.init_state(name, p)
    assert set(state) == {"adam": {"m", "v"}, "rmsprop": {"v"}, "adagrad": {"v"}, "sgd": set()}[name]
    for t in range(1, 301):
        optim.update(name, p, {"w": 2 * (p["w"] - target)}, state, lr, t)
    assert np.abs(p["w"] - target).max() < 0.05


def test_the_global_norm_is_summed_in_float64():
    """float32 gradients whose squares overflow float32 (above 3.4e38) still have a finite norm,
    and many small squares are summed without float32's rounding."""
    big = {"a": np.full(4, 1e20, np.float32), "b": np.full(3, -1e20, np.float32)}
    assert optim.global_norm(big) == pytest.approx(math.sqrt(7) * 1e20, rel=1e-6)
    many = {"w": np.full(3_000_000, 0.1, np.float32)}
    exact = math.sqrt(3_000_000 * float(np.float32(0.1)) ** 2)
    assert optim.global_norm(many) == pytest.approx(exact, rel=1e-12)


def _rmsprop(p, g, v, lr, t):  # PyTorch's torch.optim.RMSprop, alpha 0.99, eps 1e-8, no momentum
    v = 0.99 * v + 0.01 * g * g
    return p - lr * g / (np.sqrt(v) + 1e-8), v


def _adagrad(p, g, v, lr, t):  # Duchi et al. 2011, as torch.optim.Adagrad with no decay
    v = v + g * g
    return p - lr * g / (np.sqrt(v) + 1e-8), v


def _sgd(p, g, v, lr, t):
    return p - lr * g, v


@pytest.mark.parametrize("name,formula", [("rmsprop", _rmsprop), ("adagrad", _adagrad), ("sgd", _sgd)])
def test_rmsprop_adagrad_and_sgd_follow_their_formulas(name, formula, rng):
    """Five updates with changing gradients and rates against the update rule written out."""
    p = {"w": rng.standard_normal((2, 3)), "b": rng.standard_normal(3)}
    ref = {k: a.copy() for k, a in p.items()}
    ref_v = {k: np.zeros_like(a) for k, a in p.items()}
    state = optim.init_state(name, p)
    for t in range(1, 6):
        lr = 0.01 * t
        grads = {k: rng.standard_normal(a.shape) for k, a in p.items()}
        optim.update(name, p, {k: g.copy() for k, g in grads.items()}, state, lr, t)
        for k in p:
            ref[k], ref_v[k] = formula(ref[k], grads[k], ref_v[k], lr, t)
            np.testing.assert_allclose(p[k], ref[k], rtol=1e-12, atol=1e-15)
            if name != "sgd":
                np.testing.assert_allclose(state["v"][k], ref_v[k], rtol=1e-12, atol=1e-15)
