"""Learning-rate schedules, and the durations users write for time budgets.

A schedule maps the run's progress to a multiple of the base learning rate. Progress is the
fraction of the run done, measured against whichever limit ends the run first: the step limit
(--steps, or --epochs turned into steps) or the time budget. So the same schedule fits a run sized
in steps, in epochs or in minutes.

    constant  1
    cosine    from 1 down to MIN_FRACTION along half a cosine (Loshchilov & Hutter 2017, SGDR,
              without restarts; nanoGPT decays to a tenth the same way)
    step      1, then 1/10 from half the run, 1/100 from three quarters (He et al. 2016)

With --warmup-steps W, the rate also rises linearly over the first W steps (Goyal et al. 2017),
and the decay starts after them.
"""

from __future__ import annotations

import math
import re

from charnn.errors import CharnnError

SCHEDULES = ("constant", "cosine", "step")
MIN_FRACTION = 0.1  # where cosine ends, as a fraction of the base rate


def factor(schedule: str, step: int, progress: float, warmup_steps: int = 0, warmup_progress: float = 0.0) -> float:
    """The multiple of the base learning rate for update number `step` (from 1).

    progress: fraction of the run done before this update, in [0, 1].
    warmup_progress: the fraction of the run the warm-up takes (so decay spans what is left).
    """
    if warmup_steps and step <= warmup_steps:
        return step / warmup_steps
    if warmup_progress >= 1:
        return 1.0
    p = min(1.0, max(0.0, (progress - warmup_progress) / (1 - warmup_progress)))
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return MIN_FRACTION + (1 - MIN_FRACTION) * 0.5 * (1 + math.cos(math.pi * p))
    if schedule == "step":
        return 1.0 if p < 0.5 else 0.1 if p < 0.75 else 0.01
    raise AssertionError(f"unknown schedule {schedule}")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in "90s", "10m", "2h", "1h30m", "1.5h" or a plain number of seconds."""
    s = str(text).strip().lower()
    try:
        seconds = float(s)
    except ValueError:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", s)
        if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhd])", "", s).strip():
            raise CharnnError(f"--time-budget takes a duration such as 90s, 10m, 2h or 1h30m, got {text!r}") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise CharnnError(f"--time-budget must be a positive duration, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """90 -> "1m30s", 7384 -> "2h03m", 12.4 -> "12s"."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
