"""Synchronous data-parallel training over MPI (mpi4py): what the processes of one run share.

N processes (MPI ranks) train one model. Rank r owns a contiguous block of B/N of the B streams
(data.BatchStream rows); every step each rank runs forward and backward on its block, and the
gradients are summed with one Allreduce, so every rank holds the gradient of the whole batch and
applies the same update to its own copy of the parameters. What else they share:

- Gradients: one flat contiguous buffer, each parameter's gradient a view into it, plus one
  element for the loss. A rank's gradient is the mean over its T x B/N characters; it is weighted
  by B'/B (B' its streams) as it is copied in, so the sum is the mean over the global B x T, and
  the loss likewise. Clipping by the global norm comes after the sum, on identical buffers.
- State: parameters and optimizer state are broadcast from rank 0 when a session starts (new or
  resumed), and compared (a digest of their bytes) at every evaluation: a mismatch ends the run.
- Decisions: the time budget and Ctrl-C are local facts, so the reason to stop is agreed with one
  small reduction (MAX of a code) before every step; every rank stops after the same step. The
  same reduction gives every rank the same training time (the longest), from which a run with a
  time budget takes its learning rate: with each rank's own clock the updates would differ. Patience
  and divergence need nothing: they follow from identical losses and histories.
- Evaluation: each rank scores a block of the validation pieces; the sums are added up.
- Files: rank 0 alone writes (checkpoints, metrics, the run folder, the id cache's baselines); it
  gathers every stream's carried state first, so a checkpoint is the same file whatever N.

A one-process run uses Solo, which does each of these trivially, and never imports mpi4py.
Under MPI, Workers does them on COMM_WORLD. team() tells which: mpi4py already imported (a
launch through `python -m mpi4py -m charnn`) and more than one rank.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time

import numpy as np

from charnn import evaluate
from charnn.errors import CharnnError

# Why the run stops before the next step, in increasing precedence: a limit reached on any rank
# beats a Ctrl-C (as in one process), so all ranks end with the same status.
REASONS = (None, "interrupted", "time budget", "patience", "done")
# Environment variables MPI launchers set in the processes they start: the job's size.
LAUNCHER_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
INSTALL = "pip install 'charnn[mpi]'"

_team = None


def team() -> "Solo":
    """This process's team: Workers when it is one rank of several launched through mpi4py, else Solo."""
    global _team
    if _team is None:
        _team = _make_team()
    return _team


def _make_team() -> "Solo":
    if "mpi4py" not in sys.modules:  # a plain run: never import MPI
        size = max([int(os.environ.get(k, "1") or 1) for k in LAUNCHER_SIZE])
        if size > 1:  # started by mpiexec as `charnn ...`: every rank would train alone and overwrite the others
            raise CharnnError(f"this is one of {size} processes mpiexec started, but not through mpi4py: launch "
                              "`mpiexec -n N python -m mpi4py -m charnn train ...`, or `charnn train --workers N`")
        return Solo()
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    return Solo() if comm.Get_size() == 1 else Workers(comm)


def block(n: int, rank: int, size: int) -> tuple[int, int]:
    """Rank's contiguous share [start, stop) of n items, in rank order; the shares differ by at most
    one item (B streams over N | B ranks: exactly B/N each)."""
    return n * rank // size, n * (rank + 1) // size


def check_divides(batch_size: int, workers: int) -> None:
    """N must divide B: each rank owns B/N whole streams."""
    if batch_size % workers:
        fits = [n for n in range(1, batch_size + 1) if batch_size % n == 0]
        raise CharnnError(f"--batch-size {batch_size} cannot be shared by {workers} workers: each owns B/N whole "
                          f"streams, so N must divide B ({', '.join(map(str, fits[:12]))}"
                          f"{', ...' if len(fits) > 12 else ''})")


class Solo:
    """One process: everything local, nothing shared."""

    rank, size = 0, 1
    allreduce_seconds = 0.0  # time spent summing gradients (bench.py reads it)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def rows(self, n: int) -> tuple[int, int]:
        """This rank's block of n streams or pieces."""
        return block(n, self.rank, self.size)

    def first(self, fn):
        """fn() run on rank 0 alone, its result (or its CharnnError) shared with every rank."""
        return fn()

    def barrier(self) -> None:
        """Wait until every rank is here."""

    def leader_first(self, fn):
        """fn() run on rank 0, then on the other ranks (a cache rank 0 builds, the others then read);
        rank 0's CharnnError is raised on every rank."""
        return fn()

    def sync(self, arrays: list[np.ndarray]) -> None:
        """Every rank's arrays (in the same order) made rank 0's, in place."""

    def sum_step(self, loss: float, grads: dict[str, np.ndarray], weight: float) -> tuple[float, dict]:
        """(the batch's loss, its gradients) from this rank's: each weighted by weight = B'/B and summed."""
        return loss, grads

    def mean_loss(self, params, config, ids: np.ndarray, pieces) -> float:
        """evaluate.mean_loss of pieces of ids, each rank scoring a block of the pieces."""
        return evaluate.mean_loss(params, config, ids, pieces)

    def agree(self, reason: str | None, elapsed: float) -> tuple[str | None, float]:
        """(the reason to stop that every rank applies (REASONS), from each rank's own; the run's
        training time every rank uses, the longest of theirs). The time sets the learning rate of a
        run with a time budget (limits.fraction_done), which must be the same on every rank."""
        return reason, elapsed

    def check_same(self, arrays: list[np.ndarray], step: int) -> None:
        """Raise CharnnError unless every rank holds the same arrays."""

    def gather_rows(self, blocks: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """Rank 0: every rank's (L, B', H) blocks joined along the streams, (L, B, H); others: None."""
        return blocks


class Workers(Solo):
    """One rank of N, on an MPI communicator."""

    def __init__(self, comm):
        from mpi4py import MPI
        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.flat = None  # (n_params + 1,) the step's gradients and loss, summed in place
        self.views = None  # each parameter's gradient: a view of flat
        self.layout = None  # [(name, shape, dtype)] of the gradients the buffer is laid out for

    def first(self, fn):
        outcome = None
        if self.leader:
            try:
                outcome = ("ok", fn())
            except CharnnError as e:
                outcome = ("error", str(e))
        kind, value = self.comm.bcast(outcome, root=0)
        if kind == "error":
            raise CharnnError(value)
        return value

    def barrier(self):
        self.comm.Barrier()

    def leader_first(self, fn):
        if self.leader:
            try:
                result = fn()
            except CharnnError as e:
                self.comm.bcast(str(e), root=0)
                raise
            self.comm.bcast(None, root=0)
            return result
        error = self.comm.bcast(None, root=0)
        if error is not None:
            raise CharnnError(error)
        return fn()

    def sync(self, arrays):
        for a in arrays:
            self.comm.Bcast(a, root=0)

    def sum_step(self, loss, grads, weight):
        layout = [(name, g.shape, g.dtype) for name, g in grads.items()]
        if self.layout != layout:  # the first step of a run (a process may train several: the tests do)
            self.layout = layout
            self.flat = np.empty(sum(g.size for g in grads.values()) + 1, layout[0][2])
            self.views, offset = {}, 0
            for name, g in grads.items():
                self.views[name] = self.flat[offset:offset + g.size].reshape(g.shape)
                offset += g.size
        for name, g in grads.items():
            np.multiply(g, weight, out=self.views[name])
        self.flat[-1] = loss * weight
        t0 = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, self.flat, op=self.MPI.SUM)
        self.allreduce_seconds += time.perf_counter() - t0
        return float(self.flat[-1]), self.views

    def mean_loss(self, params, config, ids, pieces):
        mine = pieces.block(*self.rows(len(pieces.lengths)))
        total = np.array([evaluate.summed_loss(params, config, ids, mine)], np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, total, op=self.MPI.SUM)
        return float(total[0]) / pieces.predicted

    def agree(self, reason, elapsed):
        both = np.array([REASONS.index(reason), elapsed], np.float64)  # the code is a small integer: exact
        self.comm.Allreduce(self.MPI.IN_PLACE, both, op=self.MPI.MAX)
        return REASONS[int(both[0])], float(both[1])

    def check_same(self, arrays, step):
        digest = hashlib.blake2b(digest_size=16)
        for a in arrays:
            digest.update(np.ascontiguousarray(a).data)
        digests = self.comm.allgather(digest.hexdigest())
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            raise CharnnError(f"after step {step} the parameters of rank(s) {', '.join(map(str, differ))} differ "
                              "from rank 0's: the workers fell out of step; resume from the run's latest.npz (if it has "
                              "one yet), or start the run again")

    def gather_rows(self, blocks):
        gathered = self.comm.gather(blocks, root=0)
        if not self.leader:
            return None
        return {name: np.concatenate([g[name] for g in gathered], axis=1) for name in blocks}
