"""recovery.py on its own: the snapshot one update back, what a rollback restores, and when."""

import os

import numpy as np

from charnn import runs
from charnn.recovery import Recovery
from charnn.train import RunState


def small_state(step=3):
    params = {"w": np.arange(4.0)}
    return RunState(params=params, opt_state={"v": {"w": np.zeros(4)}}, carried={"h": np.ones((1, 2, 3))},
                    rng=np.random.default_rng(0), step=step, recent=[1.0, 2.0, 3.0])


def save_best(folder, content: bytes):
    """As checkpoint.save writes: a new file renamed over the old (the previous best's link keeps it)."""
    (folder / "tmp").write_bytes(content)
    os.replace(folder / "tmp", folder / runs.BEST)


def update(state, recovery, loss):
    """What the loop does around an update: snapshot, then change everything."""
    recovery.before_update(state)
    state.step += 1
    state.params["w"] += 1
    state.opt_state["v"]["w"] += 10
    state.recent.append(loss)


def test_a_rollback_restores_the_state_before_the_last_update(tmp_path):
    state, recovery = small_state(), Recovery(str(tmp_path))
    update(state, recovery, 4.0)
    update(state, recovery, 5.0)
    zero = {"h": np.zeros((1, 2, 3))}
    assert recovery.roll_back(state, zero) is False  # no evaluation was undone
    assert state.step == 4 and state.params["w"].tolist() == [1, 2, 3, 4] and state.opt_state["v"]["w"][0] == 10
    assert state.recent == [1.0, 2.0, 3.0, 4.0] and state.carried is zero
    assert (state.lr_scale, state.rollbacks, recovery.in_a_row) == (0.5, 1, 1)
    # a second bad step in a row: there is no older snapshot, so only the rate and the batch go
    assert recovery.roll_back(state, zero) is False
    assert state.step == 4 and state.params["w"].tolist() == [1, 2, 3, 4]
    assert (state.lr_scale, state.rollbacks, recovery.in_a_row) == (0.25, 2, 2)
    update(state, recovery, 4.5)
    assert recovery.in_a_row == 0


def test_a_rollback_before_any_update_only_skips(tmp_path):
    state, recovery = small_state(), Recovery(str(tmp_path))
    recovery.roll_back(state, {"h": np.zeros((1, 2, 3))})
    assert state.step == 3 and state.params["w"].tolist() == [0, 1, 2, 3] and state.lr_scale == 0.5


def test_an_evaluation_is_undone_with_its_best_and_the_best_file(tmp_path):
    state, recovery = small_state(), Recovery(str(tmp_path))
    (tmp_path / runs.BEST).write_bytes(b"old best")
    update(state, recovery, 4.0)  # step 4, evaluated: a new best replaces best.npz
    state.history = {"step": [4], "train_loss": [4.0], "val_loss": [1.5]}
    recovery.new_best(state, 2.0, 2)
    state.best, state.best_step, state.val_loss = 1.5, 4, 1.5
    save_best(tmp_path, b"new best")
    update(state, recovery, 9.0)  # step 5: the evaluation of step 4 is now final
    assert not (tmp_path / runs.PREVIOUS_BEST).exists()
    recovery.roll_back(state, {})
    assert (state.step, state.best, state.best_step) == (4, 1.5, 4)
    assert (tmp_path / runs.BEST).read_bytes() == b"new best"

    update(state, recovery, 4.0)  # step 5, evaluated, a new best; then its next update is bad
    state.history = {"step": [4, 5], "train_loss": [4.0, 4.0], "val_loss": [1.5, 1.0]}
    recovery.new_best(state, 1.5, 4)
    state.best, state.best_step, state.val_loss = 1.0, 5, 1.0
    save_best(tmp_path, b"newest best")
    update(state, recovery, 9.0)
    assert recovery.roll_back(state, {}) is False  # back to step 5: its evaluation stays
    assert recovery.roll_back(state, {}) is False  # nothing older to go back to
    assert state.best == 1.0


def test_undoing_the_evaluated_step_brings_back_the_previous_best(tmp_path):
    state, recovery = small_state(), Recovery(str(tmp_path))
    (tmp_path / runs.BEST).write_bytes(b"old best")
    update(state, recovery, 4.0)  # step 4, evaluated: a new best
    state.history = {"step": [4], "train_loss": [4.0], "val_loss": [1.5]}
    recovery.new_best(state, 2.0, 2)
    state.best, state.best_step, state.val_loss = 1.5, 4, 1.5
    save_best(tmp_path, b"new best")
    assert recovery.roll_back(state, {}) is True  # step 4 is undone, and its evaluation with it
    assert (state.step, state.best, state.best_step, state.val_loss) == (3, 2.0, 2, None)
    assert state.history == {"step": [], "train_loss": [], "val_loss": []}
    assert (tmp_path / runs.BEST).read_bytes() == b"old best"
    assert not (tmp_path / runs.PREVIOUS_BEST).exists()
