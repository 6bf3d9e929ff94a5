"""A run's folder on disk: its name, its checkpoint files and its metrics log.

    checkpoints/<corpus>-<model>-<n>/   latest.npz   the last saved state (what resume starts from)
                                        best.npz     the state with the best validation loss so far
                                        metrics.jsonl one JSON object a line: train, eval, rollback
                                        step-<N>.npz snapshots kept by --keep-every
"""

from __future__ import annotations

import json
import math
import os

from charnn.errors import CharnnError

LATEST, BEST, METRICS = "latest.npz", "best.npz", "metrics.jsonl"


def stem(path) -> str:
    """A file's name without folder and extension: the default run name's first part."""
    return os.path.splitext(os.path.basename(os.fspath(path)))[0] or "run"


def make_run_dir(checkpoint_dir, run_name: str | None, default_name: str) -> str:
    """Create this run's own folder under checkpoint_dir. A default name gets the first free
    suffix (-1, -2, ...) so earlier runs are never touched; an explicit run name that already holds
    files is refused."""
    checkpoint_dir = os.fspath(checkpoint_dir)
    try:
        os.makedirs(checkpoint_dir, exist_ok=True)
        if run_name is not None:
            path = os.path.join(checkpoint_dir, run_name)
            if os.path.isdir(path) and os.listdir(path):
                raise CharnnError(f"run folder {path} already holds checkpoints; choose another --run-name")
            os.makedirs(path, exist_ok=True)
            return path
        n = 1
        while True:
            path = os.path.join(checkpoint_dir, f"{default_name}-{n}")
            try:
                os.mkdir(path)
                return path
            except FileExistsError:
                n += 1
    except CharnnError:
        raise
    except OSError as e:
        raise CharnnError(f"cannot write checkpoints to {checkpoint_dir}: {e.strerror or e}; choose another --checkpoint-dir") from None


class MetricsLog:
    """metrics.jsonl, opened for appending. A resumed run (step > 0) first drops the lines written
    after its checkpoint (they belong to a future that did not happen) and any line cut short by a
    crash, rewriting the file atomically."""

    def __init__(self, run_dir: str, step: int):
        path = os.path.join(run_dir, METRICS)
        try:
            if step and os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    kept = [line for line in f if (_line_step(line) or math.inf) <= step]
                tmp = path + ".tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    f.writelines(kept)
                os.replace(tmp, path)
            self.file = open(path, "a", encoding="utf-8")
        except OSError as e:
            raise CharnnError(f"cannot write {path}: {e.strerror or e}; choose another --checkpoint-dir") from None

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _line_step(line: str) -> int | None:
    """The step of a metrics.jsonl line, or None for a line that is not a whole JSON record (no
    line has step 0: the first is written after the first update)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None
