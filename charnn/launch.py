"""`charnn train ... --workers N` (and `charnn resume ... --workers N`): the same command run as N
MPI ranks on this machine, started by the MPI's own launcher:

    mpiexec -n N path/to/python -m mpi4py -m charnn train CORPUS ...   (without --workers)

`python -m mpi4py` makes an uncaught error in one rank abort the whole job instead of leaving the
others waiting in a collective. Each rank gets one BLAS/OpenMP thread (set in its environment, so
before it imports numpy): the N ranks are the parallelism, and a second BLAS thread per rank would
only compete for the same cores. mpiexec is the one beside this Python (the `mpich` wheel puts it
in the environment's bin folder), else the first on PATH.

What the user sees is what one process shows: rank 0 alone reports (train.py gives the others a
silent Reporter), identical error lines from several ranks are shown once, and MPICH's own banner
about a failed job is replaced by one line saying which rank failed and how.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading

from charnn.errors import CharnnError
from charnn.parallel import INSTALL

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# MPICH's lines about a failed job (hydra's banner, whose rules are exactly 83 "=", and MPI_Abort's
# note), replaced by one line of ours, and hydra's own lines on a Ctrl-C (on its stdout, where
# generated text alone belongs): the ranks say what they saved. A rank's own line of "=" of another
# length (a sample's underline) is shown.
NOISE = re.compile(r"^(={83}|=  .*|YOUR APPLICATION TERMINATED.*|This typically refers to a problem.*|"
                   r"Please see the FAQ page.*|Abort\(\d+\) on node \d+.*|"
                   r"\[mpiexec@[^\]]*\] (Sending Ctrl-C to processes|Press Ctrl-C again).*|\s*)$")
BANNER_EXIT = re.compile(r"=\s+PID \d+ RUNNING AT .*|=\s+EXIT CODE: (\d+)")
KILLED = re.compile(r"YOUR APPLICATION TERMINATED WITH THE EXIT STRING: .*\(signal (\d+)\)")
ABORTED = re.compile(r"Abort\((\d+)\) on node \d+ \(rank (\d+) in comm")


def mpiexec() -> str:
    """The launcher beside this Python (a venv's bin, where the mpich wheel puts it), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")
    if found is None:
        raise CharnnError(f"--workers needs an MPI launcher (mpiexec) and mpi4py: {INSTALL}")
    return found


def check_available() -> None:
    """One line saying how to install the extra, if mpi4py is missing (it is not imported here)."""
    if importlib.util.find_spec("mpi4py") is None:
        raise CharnnError(f"--workers needs mpi4py and an MPI, charnn's optional extra: {INSTALL}")
    if "mpi4py" in sys.modules:
        raise CharnnError("--workers starts its own MPI ranks; under mpiexec, leave it out (mpiexec's -n is the "
                          "number of workers)")


def without_workers(argv: list[str]) -> list[str]:
    """The command line with its --workers option taken out: what each rank runs."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


def command(argv: list[str], workers: int) -> list[str]:
    return [mpiexec(), "-n", str(workers), sys.executable, "-m", "mpi4py", "-m", "charnn", *without_workers(argv)]


def environment() -> dict:
    env = dict(os.environ, **{name: "1" for name in THREAD_VARS})
    env.setdefault("COLUMNS", str(shutil.get_terminal_size().columns))  # the ranks' stderr is a pipe: tqdm's width
    return env


def run(argv: list[str], workers: int) -> int:
    """Run the command as `workers` ranks; their stdout and stderr are passed on (filtered as the
    module says). Returns the exit status to leave with."""
    check_available()
    cmd = command(argv, workers)
    previous = signal.signal(signal.SIGINT, lambda *_: None)  # Ctrl-C reaches the ranks, which save and stop
    try:
        # MPICH's banner comes on stdout, its abort notes and the ranks' lines on stderr: both are
        # filtered, stdout in a thread of its own.
        proc = subprocess.Popen(cmd, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen = _Seen()
        out = threading.Thread(target=_pass, args=(proc.stdout, sys.stdout, seen))
        out.start()
        _pass(proc.stderr, sys.stderr, seen)
        out.join()
        status = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    what = seen.failure()
    if status != 0 and what:
        if _unfinished_line:  # the progress bar's: end it first
            sys.stderr.write("\n")
        sys.stderr.write(f"charnn: {what}; the job was stopped. The run's checkpoints are as last saved "
                         "(resume from its latest.npz)\n")
        sys.stderr.flush()
    return status if status >= 0 else 128 - status


class _Seen:
    """What the ranks' stderr said about how the job ended."""

    def __init__(self):
        self.errors = set()  # the "Error: ..." lines shown (a rank's CharnnError)
        self.killed = None  # hydra's exit string for a rank killed by a signal
        self.aborted = None  # (rank, status) of the first MPI_Abort

    def read(self, text: str) -> bool:
        """Note what the line says; True if it is to be shown."""
        killed, aborted = KILLED.search(text), ABORTED.search(text)
        if killed:
            self.killed = killed.group(1)
        if aborted and self.aborted is None:
            self.aborted = int(aborted.group(2)), int(aborted.group(1))
        if (NOISE.match(text) and text.strip()) or BANNER_EXIT.match(text):
            return False
        if text.startswith("Error: "):
            if text in self.errors:
                return False
            self.errors.add(text)
        return True

    def failure(self) -> str | None:
        """One line on a failed job, or None where a rank's own line said it (an error, Ctrl-C)."""
        if self.killed:
            return f"a worker was killed (signal {self.killed})"
        if self.aborted:
            rank, status = self.aborted
            if status == 130 or (status == 1 and self.errors):
                return None
            return f"rank {rank} failed (exit status {status})"
        return None


def _pass(pipe, stream, seen: _Seen) -> None:
    """Copy what the ranks write to pipe onto stream as it comes (a progress bar's '\\r' updates at
    once), dropping MPICH's failure banner and repeated error lines."""
    pending = b""
    while True:
        chunk = os.read(pipe.fileno(), 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            if seen.read(raw.decode(errors="replace").rsplit("\r", 1)[-1]):
                _write(stream, raw + b"\n")
        if b"\r" in pending:  # a progress bar's update: show it now, keep what follows its last \r
            head, pending = pending.rsplit(b"\r", 1)
            _write(stream, head + b"\r")
    if pending:
        _write(stream, pending)


_unfinished_line = False  # the last bytes written to stderr did not end a line


def _write(stream, data: bytes) -> None:
    global _unfinished_line
    if stream is sys.stderr:
        _unfinished_line = not data.endswith(b"\n")
    stream.flush()
    stream.buffer.write(data)
    stream.buffer.flush()
