"""The MPI side of test_parallel.py: one job of 2 ranks running every check that needs ranks, so
MPI starts once. Run as

    mpiexec -n 2 python -m mpi4py tests/parallel_job.py FOLDER CORPUS

test_parallel.py has trained the one-process runs in FOLDER first (one-rnn, one-lstm, ...). The
job trains the same runs on 2 ranks (two-*), resumes the one-process LSTM's step-25 snapshot on 2
ranks, counts the bytes its TCP sockets sent, and writes FOLDER/job.json; then, last, rank 1 raises
in the middle of a run, which must end the whole job (the test checks how fast, and the files).
"""

import dataclasses
import json
import os
import subprocess
import sys
import time

from mpi4py import MPI

sys.path.insert(0, os.path.dirname(__file__))

from charnn import model, parallel, train  # noqa: E402
from parallel_configs import configs  # noqa: E402


def tcp_bytes_sent() -> int | None:
    """Bytes sent by this process's TCP sockets (ss's bytes_sent, matched by socket inode), or None
    without ss."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    try:
        out = subprocess.run(["ss", "-tine"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    total, mine = 0, False
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):  # a socket's first line: ino:N among its fields
            mine = any(f"ino:{i} " in line + " " for i in inodes)
        elif mine:
            for field in line.split():
                if field.startswith("bytes_sent:"):
                    total += int(field.split(":")[1])
    return total


def main(folder: str, corpus: str) -> None:
    team = parallel.team()
    assert team.size == 2, team.size
    results = {}
    for name, (mc, tc) in configs().items():
        result = train.train(corpus, mc, tc, folder, run_name=f"two-{name}")
        results[name] = result.status
    resumed = train.resume(os.path.join(folder, "one-lstm", "step-0000025.npz"))
    results["resumed_1_to_2"] = resumed.latest
    results["tcp_bytes_sent"] = tcp_bytes_sent()
    if team.leader:
        with open(os.path.join(folder, "job.json"), "w") as f:
            json.dump(results, f)
        with open(os.path.join(folder, "raising.started"), "w") as f:
            f.write(str(time.time()))
    team.barrier()

    # Last: rank 1 raises at its 15th step; latest.npz of step 10 must stay, and the job end.
    real = model.loss_and_grads
    calls = [0]

    def failing(*args, **kwargs):
        calls[0] += 1
        if team.rank == 1 and calls[0] == 15:
            raise RuntimeError("a rank that raises")
        return real(*args, **kwargs)

    model.loss_and_grads = failing
    mc, tc = configs()["rnn"]
    train.train(corpus, mc, dataclasses.replace(tc, eval_every=10, keep_every=None), folder, run_name="raising")
    MPI.COMM_WORLD.Barrier()
    print("the raising run ended normally", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:3])
