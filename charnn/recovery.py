"""Divergence: telling a bad step, and undoing the update before it.

A step whose loss is NaN, infinite or far above its recent level is not applied: the run rolls back
to the state before the previous update (a snapshot kept in memory), halves the learning rate,
skips the batch and goes on; after MAX_ROLLBACKS in a row it stops. A rollback undoes everything the
undone update led to: its evaluation, the best that evaluation set, and that best on disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from charnn import runs

# A loss above both SPIKE_FACTOR times its recent mean and that mean plus SPIKE_NATS is treated as
# divergence: the factor alone would flag ordinary noise once the loss is small (0.5 after 0.1).
SPIKE_FACTOR = 2.0
SPIKE_NATS = 1.0
RECENT = 50  # training losses the recent mean is taken over
MAX_ROLLBACKS = 5  # rollbacks in a row before the run stops


def is_diverging(loss: float, grad_norm: float, recent: list) -> bool:
    """Is this step's loss (or gradient) NaN or infinite, or far above the recent losses?"""
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        return True
    if len(recent) < 10:
        return False
    mean = float(np.mean(recent))
    return loss > SPIKE_FACTOR * mean and loss > mean + SPIKE_NATS


@dataclass
class ReplacedBest:
    """What an evaluation's new best replaced, kept until the next update makes it final."""

    step: int  # the step evaluated
    best: float | None
    best_step: int | None
    had_file: bool  # a best.npz existed, now kept as runs.PREVIOUS_BEST


class Recovery:
    """The state one update back, and the best the last evaluation replaced: what a rollback needs."""

    def __init__(self, run_dir: str, writes: bool = True):
        self.run_dir = run_dir
        self.writes = writes  # False: another process of a data-parallel run keeps the files (parallel.py)
        self.params = self.opt_state = None  # copies made once and refilled before every update
        self.step = None  # the step they hold (None: no update made in this session yet)
        self.recent = None  # the training losses as they were then
        self.in_a_row = 0  # rollbacks since the last applied update
        self.replaced_best: ReplacedBest | None = None

    def before_update(self, state) -> None:
        """Keep the parameters and optimizer state before this update (a few ms a step at most)."""
        if self.params is None:
            self.params = _copy(state.params)
            self.opt_state = {slot: _copy(values) for slot, values in state.opt_state.items()}
        _copy_into(self.params, state.params)
        for slot in self.opt_state:
            _copy_into(self.opt_state[slot], state.opt_state[slot])
        self.step = state.step
        self.recent = list(state.recent)
        self.in_a_row = 0
        if self.replaced_best is not None:  # the evaluated step is now the snapshot's: no rollback undoes it
            self.replaced_best = None
            if self.writes:
                runs.remove(self.run_dir, runs.PREVIOUS_BEST)

    def new_best(self, state, previous_best: float | None, previous_best_step: int | None) -> None:
        """Called as an evaluation's new best is about to replace best.npz."""
        had_file = runs.keep_previous_best(self.run_dir) if self.writes else False
        self.replaced_best = ReplacedBest(state.step, previous_best, previous_best_step, had_file)

    def roll_back(self, state, zero_carried: dict) -> bool:
        """Undo the last update, halve the learning rate, skip the batch just drawn. The carried
        state restarts from zero: the windows it summed up are no longer the ones before the next.
        Before this session's first update there is nothing to undo: the batch is only skipped.
        True if an evaluation was undone (latest.npz then holds a state the run no longer has)."""
        self.in_a_row += 1
        undid_evaluation = False
        if self.step is not None and self.step < state.step:
            _copy_into(state.params, self.params)
            for slot in self.opt_state:
                _copy_into(state.opt_state[slot], self.opt_state[slot])
            state.step = self.step
            state.recent = list(self.recent)  # the undone update's loss no longer counts in the spike check
            kept = sum(1 for k in state.history["step"] if k <= state.step)
            undid_evaluation = kept < len(state.history["step"])
            for key in state.history:  # evaluations of the undone step are no longer the run's
                state.history[key] = state.history[key][:kept]
            state.val_loss = state.history["val_loss"][-1] if kept else None
            undone = self.replaced_best
            if undone is not None and undone.step > state.step:  # ... nor is the best it set
                state.best, state.best_step = undone.best, undone.best_step
                if self.writes:
                    runs.restore_previous_best(self.run_dir, undone.had_file)
                self.replaced_best = None
        state.carried = zero_carried
        state.lr_scale *= 0.5
        state.rollbacks += 1
        return undid_evaluation

    def close(self) -> None:
        """The session ends: what the last evaluation replaced stays replaced."""
        if self.writes:
            runs.remove(self.run_dir, runs.PREVIOUS_BEST)


def _copy(arrays: dict) -> dict:
    return {k: v.copy() for k, v in arrays.items()}


def _copy_into(dst: dict, src: dict) -> None:
    for k, v in src.items():
        np.copyto(dst[k], v)
