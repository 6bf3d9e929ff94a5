"""When a run ends, how far along it is, and its learning rate at each step.

A run ends at --steps, --epochs or --time-budget, whichever comes first, or when --patience
evaluations in a row bring no better validation loss. The learning-rate schedule is sized by the
same limit (schedule.py), and its progress is that of whichever limit is nearest.
"""

from __future__ import annotations

import math

from charnn import schedule
from charnn.config import TrainConfig


def total_steps(config: TrainConfig, windows_per_epoch: int) -> int | None:
    """The run's step limit: --steps, --epochs, or whichever ends first (None: time budget only)."""
    by_epochs = math.ceil(config.epochs * windows_per_epoch) if config.epochs is not None else None
    candidates = [s for s in (config.steps, by_epochs) if s is not None]
    return max(1, min(candidates)) if candidates else None


class Limits:
    """A run's limits, asked about its RunState (step, elapsed, history) and this session's timing."""

    def __init__(self, config: TrainConfig, windows_per_epoch: int):
        self.config = config
        self.steps = total_steps(config, windows_per_epoch)  # None: the time budget alone

    def reached(self, state, step_time: float | None, eval_time: float) -> str | None:
        """Why the run ends before another step ("done", "time budget", "patience"), or None."""
        config = self.config
        if self.steps is not None and state.step >= self.steps:
            return "done"
        # Stop when one more step and the final evaluation would not fit in the budget.
        if config.time_budget is not None and state.elapsed + (step_time or 0.0) + eval_time >= config.time_budget:
            return "time budget"
        if config.patience is not None and state.best_step is not None:
            evaluations_since_best = sum(1 for k in state.history["step"] if k > state.best_step)
            if evaluations_since_best >= config.patience:
                return "patience"
        return None

    def fraction_done(self, state) -> float:
        """Fraction of the run done, against whichever limit ends it first."""
        fractions = [state.step / self.steps] if self.steps else []
        if self.config.time_budget is not None:
            fractions.append(state.elapsed / self.config.time_budget)
        return min(1.0, max(fractions)) if fractions else 0.0

    def expected_total(self, state, step_time: float | None, eval_time: float) -> int:
        """Steps the run will have at its end, for the progress bar's ETA: the step limit, or
        what the time budget leaves room for at the current speed, whichever is smaller."""
        totals = [self.steps] if self.steps else []
        budget = self.config.time_budget
        if budget is not None and step_time:
            totals.append(state.step + max(0, int((budget - state.elapsed - eval_time) / step_time)))
        return min(totals) if totals else state.step

    def learning_rate(self, state) -> float:
        """The rate of the next update (step state.step + 1)."""
        config = self.config
        warm = config.warmup_steps
        warm_fraction = (warm / self.steps if self.steps else 0.0) if warm else 0.0
        factor = schedule.factor(config.lr_schedule, state.step + 1, self.fraction_done(state), warm, warm_fraction)
        return config.learning_rate * state.lr_scale * factor
