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


@pytest.mark.parametrize("name,lr,slots", [("adam", 0.1, {"m", "v"}), ("rmsprop", 0.05, {"v"}),
                                           ("adagrad", 0.5, {"v"}), ("sgd", 0.1, set())])
def test_every_optimizer_minimises_a_quadratic(name, lr, slots, rng):
    target = rng.standard_normal(5)
    p = {"w": np.zeros(5)}
    state = optim.init_state(name, p)
    assert set(state) == slots
    for t in range(1, 301):
        optim.update(name, p, {"w": 2 * (p["w"] - target)}, state, lr, t)
    assert np.abs(p["w"] - target).max() < 0.05


def test_global_norm_is_float64_for_float32_gradients():
    """The sum of squares of float32 gradients overflows float32 (max 3.4e38): the norm must not."""
    grads = {"a": np.full(4, 1e20, np.float32), "b": np.full(3, 3.0, np.float32)}
    norm = optim.global_norm(grads)
    assert type(norm) is float and norm == pytest.approx(2e20, rel=1e-6)
    x = np.float32(1.0001)
    many = {"a": np.full(10**6, x)}  # a float32 sum of 10^6 squares keeps about 7 digits of them
    assert optim.global_norm(many) == pytest.approx(1000 * float(x), rel=1e-12)


def test_rmsprop_adagrad_and_sgd_by_hand():
    """Three updates of p = [1, -2] with the gradients below, worked out from the formulas:
    SGD p -= lr g;  Adagrad v += g^2, p -= lr g / (sqrt(v) + eps);
    RMSProp v = 0.99 v + 0.01 g^2, p -= lr g / (sqrt(v) + eps)."""
    gs = [np.array([0.5, -1.0]), np.array([0.5, 2.0]), np.array([-1.0, 0.0])]
    lr = 0.1
    expected = {
        "sgd": [[0.95, -1.9], [0.9, -2.1], [1.0, -2.1]],
        # v: [0.25, 1], [0.5, 5], [1.5, 5]
        "adagrad": [[0.9, -1.9], [0.9 - 0.05 / math.sqrt(0.5), -1.9 - 0.2 / math.sqrt(5)],
                    [0.9 - 0.05 / math.sqrt(0.5) + 0.1 / math.sqrt(1.5), -1.9 - 0.2 / math.sqrt(5)]],
    }
    # RMSProp's v: [0.0025, 0.01], then [0.0024750 + 0.0025, 0.0099 + 0.04], then 0.99 v + [0.01, 0]
    v1 = np.array([0.0025, 0.01])
    v2 = np.array([0.0049750, 0.0499])
    v3 = np.array([0.0049750 * 0.99 + 0.01, 0.0499 * 0.99])
    eps = 1e-8
    r1 = np.array([1.0, -2.0]) - lr * gs[0] / (np.sqrt(v1) + eps)
    r2 = r1 - lr * gs[1] / (np.sqrt(v2) + eps)
    expected["rmsprop"] = [r1, r2, r2 - lr * gs[2] / (np.sqrt(v3) + eps)]
    np.testing.assert_allclose(r1, [0, -1], atol=1e-6)  # the first step is lr * sign(g) * 10
    for name in ("sgd", "adagrad", "rmsprop"):
        p = {"w": np.array([1.0, -2.0])}
        state = optim.init_state(name, p)
        for t, (g, want) in enumerate(zip(gs, expected[name]), start=1):
            optim.update(name, p, {"w": g.copy()}, state, lr, t)
            np.testing.assert_allclose(p["w"], want, rtol=1e-7, atol=1e-12, err_msg=f"{name} step {t}")
