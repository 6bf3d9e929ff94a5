"""A run's folder on disk: its name, its checkpoint files and its metrics log.

    checkpoints/<corpus>-<model>-<n>/   latest.npz   the last saved state (what resume starts from)
                                        best.npz     the state with the best validation loss so far
                                        metrics.jsonl one JSON object a line: train, eval, rollback
                                        step-<N>.npz snapshots kept by --keep-every
                                        .lock        the pid of the process writing the folder
                                        .previous-best.npz  the best before the last one, while a
                                                     rollback can still undo that evaluation
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager, suppress

from charnn.checkpoint import create_temporary
from charnn.errors import CharnnError

LATEST, BEST, METRICS, LOCK = "latest.npz", "best.npz", "metrics.jsonl", ".lock"
PREVIOUS_BEST = ".previous-best.npz"  # best.npz before the last improvement, while a rollback can undo it


def stem(path) -> str:
    """A file's name without folder and extension: the default run name's first part."""
    return os.path.splitext(os.path.basename(os.fspath(path)))[0] or "run"


def check_run_name(run_name: str) -> None:
    """A run name is one folder inside the checkpoint folder: no separator, no "." or "..", not empty."""
    seps = [sep for sep in (os.sep, os.altsep) if sep]
    if run_name in ("", ".", "..") or any(sep in run_name for sep in seps):
        raise CharnnError(f"--run-name {run_name!r} must be a plain folder name (no {' or '.join(seps)}, "
                          "not '.' or '..', not empty)")


def make_run_dir(checkpoint_dir, run_name: str | None, default_name: str) -> tuple[str, bool]:
    """This run's own folder under checkpoint_dir, and whether it was created here (only such a
    folder may be removed when the session saves nothing). A default name gets the first free
    suffix (-1, -2, ...) so earlier runs are never touched; an explicit run name that already holds
    files is refused."""
    checkpoint_dir = os.fspath(checkpoint_dir)
    if run_name is not None:
        check_run_name(run_name)
    try:
        os.makedirs(checkpoint_dir, exist_ok=True)
        if run_name is not None:
            path = os.path.join(checkpoint_dir, run_name)
            if os.path.isdir(path):
                if os.listdir(path):
                    raise CharnnError(f"run folder {path} already holds checkpoints; choose another --run-name")
                return path, False
            os.mkdir(path)
            return path, True
        n = 1
        while True:
            path = os.path.join(checkpoint_dir, f"{default_name}-{n}")
            try:
                os.mkdir(path)
                return path, True
            except FileExistsError:
                n += 1
    except CharnnError:
        raise
    except OSError as e:
        raise CharnnError(f"cannot write checkpoints to {checkpoint_dir}: {e.strerror or e}; choose another --checkpoint-dir") from None


def holds_checkpoints(run_dir: str) -> bool:
    return any(name.endswith(".npz") and not name.startswith(".") for name in os.listdir(run_dir))


@contextmanager
def locked(run_dir: str):
    """Hold an exclusive lock on run_dir's LOCK file while the block runs, so two processes never
    write one run's files at once. It is a kernel lock (flock), released when its process ends,
    however it ends: a lock left by a crash is never taken for a live one, and a live one never
    for a stale one. The file holds the pid, for the message."""
    path = os.path.join(run_dir, LOCK)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise CharnnError(f"cannot write {path}: {e.strerror or e}; choose another --checkpoint-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise CharnnError(f"run folder {run_dir} is in use by {who} (its {LOCK}); wait for it to end") from None
        if _same_file(fd, path):
            break
        os.close(fd)  # its last holder removed it between our open and lock: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    try:
        yield
    finally:
        os.unlink(path)  # before unlocking, so a process that opened this file sees it gone and retries
        os.close(fd)


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def keep_previous_best(run_dir: str) -> bool:
    """Keep best.npz under PREVIOUS_BEST before a new best replaces it (a hard link: no copy). False
    if there is no best.npz yet."""
    best, previous = os.path.join(run_dir, BEST), os.path.join(run_dir, PREVIOUS_BEST)
    if not os.path.exists(best):
        return False
    remove(run_dir, PREVIOUS_BEST)
    try:
        os.link(best, previous)
    except OSError:  # a file system without hard links
        shutil.copyfile(best, previous)
    return True


def restore_previous_best(run_dir: str, had_best: bool) -> None:
    """Undo the last improvement on disk: best.npz becomes the one before it (or goes, if none)."""
    if had_best:
        os.replace(os.path.join(run_dir, PREVIOUS_BEST), os.path.join(run_dir, BEST))
    else:
        remove(run_dir, BEST)


def snapshot_name(step: int) -> str:
    """The file a --keep-every snapshot of this step is kept in."""
    return f"step-{step:07d}.npz"


def remove(run_dir: str, name: str) -> None:
    """Delete one of the run's files (PREVIOUS_BEST, METRICS, a snapshot_name) if it is there."""
    with suppress(FileNotFoundError):
        os.unlink(os.path.join(run_dir, name))


class MetricsLog:
    """metrics.jsonl, opened for appending. A resumed run (step > 0) first drops the lines written
    after its checkpoint (they belong to a future that did not happen) and any line cut short by a
    crash, rewriting the file atomically (a unique temporary name in the folder, synced, then
    renamed over it)."""

    def __init__(self, run_dir: str, step: int):
        path = os.path.join(run_dir, METRICS)
        try:
            if step and os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    kept = [line for line in f if _line_step(line) is not None and _line_step(line) <= step]
                fd, tmp = create_temporary(run_dir, ".jsonl.tmp")
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as f:
                        f.writelines(kept)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, path)
                except BaseException:
                    os.unlink(tmp)
                    raise
            self.file = open(path, "a", encoding="utf-8")
        except OSError as e:
            raise CharnnError(f"cannot write {path}: {e.strerror or e}; choose another --checkpoint-dir") from None

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _line_step(line: str) -> int | None:
    """The step of a metrics.jsonl line, or None for a line that is not a whole JSON record (a
    rollback before a new run's first update is logged at step 0)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None
