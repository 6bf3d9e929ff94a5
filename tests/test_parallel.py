"""Data-parallel training (parallel.py, launch.py, masks.py): 2 MPI ranks train exactly as one
process does, resume across worker counts, and a failing rank ends the job.

The checks that need ranks run in one MPI job (parallel_job.py), started once for the module with
MPICH's shared memory off and UCX (MPICH's network layer in the mpich wheel) on TCP only, so the
gradients cross TCP sockets as between machines. Every process started here runs under a timeout.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from charnn import checkpoint, describe, launch, masks, model, parallel, train
from charnn.cli import cli
from charnn.config import ModelConfig
from charnn.errors import CharnnError

from conftest import TINY_TEXT
from parallel_configs import configs

HERE = os.path.dirname(os.path.abspath(__file__))
JOB_TIMEOUT = 120  # seconds: a hang fails the test instead of blocking the suite
FAULT_LIMIT = 30  # seconds from a rank's failure to the end of the job
TCP_ONLY = {"MPIR_CVAR_NOLOCAL": "1", "UCX_TLS": "tcp"}  # MPICH without shared memory, UCX on TCP alone
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}  # largest difference, relative to the largest value


def mpiexec():
    return os.path.join(os.path.dirname(sys.executable), "mpiexec")


def run_limited(cmd, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run in a session of its own, all of which (mpiexec, its proxies, the ranks) is
    killed if it outlives JOB_TIMEOUT: a hang fails the test instead of blocking the suite."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)
    try:
        out, err = proc.communicate(timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{' '.join(map(str, cmd))} ran over {JOB_TIMEOUT} s")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The one-process runs, then the 2-rank job over TCP; (folder, the job's stderr, when it ended)."""
    folder = tmp_path_factory.mktemp("parallel")
    corpus = folder / "tiny.txt"
    corpus.write_text(TINY_TEXT * 3, encoding="utf-8")
    for name, (mc, tc) in configs().items():
        train.train(str(corpus), mc, tc, str(folder), run_name=f"one-{name}")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **TCP_ONLY)
    proc = run_limited([mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", os.path.join(HERE, "parallel_job.py"),
                        str(folder), str(corpus)], env=env, cwd=str(folder))
    ended = time.time()
    assert (folder / "job.json").exists(), proc.stderr[-3000:]
    return folder, proc, ended


def assert_same_run(a_path, b_path, dtype="float64"):
    """Two checkpoints hold the same parameters, optimizer state, carried state and evaluations, to
    the tolerance of their dtype."""
    a, b = checkpoint.load(str(a_path)), checkpoint.load(str(b_path))
    tol = TOLERANCE[dtype]
    arrays = [(a.params, b.params), (a.state, b.state)] + [(a.optim_state[s], b.optim_state[s]) for s in a.optim_state]
    for x, y in arrays:
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].shape == y[k].shape and x[k].dtype == y[k].dtype == np.dtype(dtype), k
            scale = max(1.0, float(np.abs(x[k]).max()))
            assert float(np.abs(x[k] - y[k]).max()) <= tol * scale, (k, float(np.abs(x[k] - y[k]).max()))
    ha, hb = a.header, b.header
    assert (ha["step"], ha["data"], ha["history"]["step"]) == (hb["step"], hb["data"], hb["history"]["step"])
    assert np.allclose(ha["history"]["val_loss"], hb["history"]["val_loss"], rtol=tol, atol=0)
    assert np.allclose(ha["recent_losses"], hb["recent_losses"], rtol=tol, atol=0)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "lstm32"])
def test_two_ranks_train_as_one_process_does(job, name):
    folder, _, _ = job
    dtype = configs()[name][1].dtype
    for file in ("latest.npz", "best.npz", "step-0000025.npz"):
        assert_same_run(folder / f"one-{name}" / file, folder / f"two-{name}" / file, dtype)
    one, two = (checkpoint.load(str(folder / f"{w}-{name}" / "latest.npz")).header for w in ("one", "two"))
    assert (one["workers"], two["workers"]) == (1, 2)
    assert any(line.endswith("; workers 2") for line in describe.describe("x", checkpoint.load(
        str(folder / f"two-{name}" / "latest.npz"))))


def test_a_run_resumed_on_other_worker_counts_is_the_run_that_never_stopped(job):
    folder, _, _ = job
    one_to_two = json.loads((folder / "job.json").read_text())["resumed_1_to_2"]
    assert_same_run(folder / "one-lstm" / "latest.npz", one_to_two)
    two_to_one = train.resume(str(folder / "two-lstm" / "step-0000025.npz"))  # in this process: 2 -> 1
    assert_same_run(folder / "one-lstm" / "latest.npz", two_to_one.latest)
    assert "mpi4py" not in sys.modules  # the one-process runs never imported it


def test_the_gradients_crossed_tcp(job):
    folder, _, _ = job
    sent = json.loads((folder / "job.json").read_text())["tcp_bytes_sent"]
    if sent is None:
        pytest.skip("no `ss` here to count a socket's bytes")
    # 50 steps of the LSTM's float64 gradient at least, for one of its runs (it trained several)
    n = sum(p.size for p in checkpoint.load(str(folder / "two-lstm" / "latest.npz")).params.values())
    assert sent >= 50 * 8 * n, (sent, n)


def test_a_rank_that_raises_ends_the_job(job):
    folder, proc, ended = job
    started = float((folder / "raising.started").read_text())
    assert proc.returncode != 0 and "RuntimeError: a rank that raises" in proc.stderr
    assert "the raising run ended normally" not in proc.stderr
    assert ended - started < FAULT_LIMIT
    latest = checkpoint.load(str(folder / "raising" / "latest.npz"))  # intact, of the last evaluation
    assert latest.header["step"] == 10


def descendants(pid):
    """The processes under pid (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def rank_pids(pid):
    out = []
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args[0] == os.fsencode(sys.executable) and b"mpi4py" in args:  # a rank, not mpiexec or its proxy
            out.append(p)
    return out


def test_a_killed_worker_ends_the_job_with_one_line_and_the_checkpoints_intact(tmp_path):
    """`charnn train --workers 2` (the launcher, on shared memory), a rank SIGKILLed after the first
    evaluation: the job ends within the limit, non-zero, with one line; latest.npz resumes."""
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    cmd = [sys.executable, "-m", "charnn", "train", str(corpus), "--workers", "2", "--model", "rnn", "--hidden-size",
           "8", "--num-layers", "1", "--batch-size", "4", "--seq-length", "8", "--steps", "1000000", "--eval-every",
           "5", "--checkpoint-dir", str(tmp_path / "ck"), "--run-name", "r", "--dropout", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    latest = tmp_path / "ck" / "r" / "latest.npz"
    try:
        deadline = time.time() + JOB_TIMEOUT
        while not latest.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        ranks = rank_pids(proc.pid)
        assert latest.exists() and len(ranks) == 2, proc.poll()
        os.kill(max(ranks), signal.SIGKILL)
        killed = time.time()
        _, err = proc.communicate(timeout=FAULT_LIMIT)
        assert time.time() - killed < FAULT_LIMIT
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    lines = [line for line in err.splitlines() if line.startswith("charnn: ")]
    assert len(lines) == 1 and "a worker was killed (signal 9)" in lines[0], err[-2000:]
    assert "=====" not in err and "Traceback" not in err
    ckpt = checkpoint.load(str(latest))
    assert ckpt.header["workers"] == 2 and ckpt.header["step"] % 5 == 0
    resumed = train.resume(str(latest), {"steps": ckpt.header["step"] + 1})
    assert resumed.status == "done"


def test_a_time_budget_keeps_the_workers_in_step(tmp_path):
    """The learning rate of a run with a time budget follows the training time, which each rank
    measures on its own clock: the ranks must use one time, or their updates differ and the first
    evaluation ends the run ("the workers fell out of step")."""
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    r = run_limited([sys.executable, "-m", "charnn", "train", str(corpus), "--workers", "2", "--model", "rnn",
                     "--hidden-size", "8", "--num-layers", "1", "--batch-size", "4", "--seq-length", "8",
                     "--time-budget", "2", "--eval-every", "10", "--checkpoint-dir", str(tmp_path / "ck"),
                     "--run-name", "r", "--dropout", "0"])
    assert r.returncode == 0 and "the time budget is spent" in r.stderr, r.stderr[-2000:]
    assert checkpoint.load(str(tmp_path / "ck" / "r" / "latest.npz")).header["step"] > 10


def test_a_worker_count_that_does_not_divide_the_batch_is_refused_before_any_rank_starts(tmp_path, monkeypatch):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    monkeypatch.setattr(launch, "run", lambda *a: pytest.fail("ranks were started"))
    r = CliRunner().invoke(cli, ["train", str(corpus), "--workers", "3", "--batch-size", "4", "--checkpoint-dir",
                                 str(tmp_path / "ck")])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "--batch-size 4 cannot be shared by 3 workers" in r.stderr and "(1, 2, 4)" in r.stderr
    assert not (tmp_path / "ck").exists()


def test_workers_without_mpi4py_say_how_to_install_it(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mpi4py" else real(name, *a))
    r = CliRunner().invoke(cli, ["train", "corpus.txt", "--workers", "2"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "pip install 'charnn[mpi]'" in r.stderr


def test_mpiexec_without_mpi4py_is_refused(monkeypatch):
    """`mpiexec -n 2 charnn train ...` would run two unrelated trainings into one folder."""
    monkeypatch.setattr(parallel, "_team", None)
    monkeypatch.setenv("PMI_SIZE", "2")
    with pytest.raises(CharnnError, match="python -m mpi4py -m charnn"):
        parallel.team()


def test_the_ranks_command_line():
    argv = ["train", "c.txt", "--workers", "2", "--steps", "5", "--workers=2"]
    cmd = launch.command(argv, 4)
    assert cmd[1:] == ["-n", "4", sys.executable, "-m", "mpi4py", "-m", "charnn", "train", "c.txt", "--steps", "5"]
    assert all(launch.environment()[v] == "1" for v in launch.THREAD_VARS)


def test_mpich_failure_banner_becomes_one_line():
    seen = launch._Seen()
    banner = ["", "=" * 83, "=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES", "=   PID 1 RUNNING AT vm",
              "=   EXIT CODE: 9", "=   CLEANING UP REMAINING PROCESSES", "=" * 83,  # as MPICH 5 prints it
              "YOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed (signal 9)",
              "This typically refers to a problem with your application.",
              "Please see the FAQ page for debugging suggestions"]
    shown = [line for line in banner if seen.read(line)]
    assert shown == [""] and seen.failure() == "a worker was killed (signal 9)"
    assert all(launch._Seen().read(line) for line in ("=====", "=" * 40, "==  a title  =="))  # a rank's own lines
    interrupted = launch._Seen()
    assert not interrupted.read("Abort(130) on node 0 (rank 0 in comm 0): application called MPI_Abort(...)")
    assert interrupted.failure() is None  # Ctrl-C: the ranks said what they saved
    assert not any(interrupted.read(f"[mpiexec@vm] {line}") for line in (  # hydra's, on stdout
        "Sending Ctrl-C to processes as requested", "Press Ctrl-C again to force abort"))
    crashed = launch._Seen()
    crashed.read("Abort(1) on node 1 (rank 1 in comm 0): application called MPI_Abort(MPI_COMM_WORLD, 1) - process 1")
    assert crashed.failure() == "rank 1 failed (exit status 1)"
    assert crashed.read("Error: x") and not crashed.read("Error: x") and crashed.failure() is None


def test_blocks_share_the_streams_in_order():
    assert [parallel.block(8, r, 4) for r in range(4)] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert [parallel.block(32, r, 3) for r in range(3)] == [(0, 10), (10, 21), (21, 32)]  # evaluation's pieces
    assert parallel.block(32, 63, 64) == (31, 32) and parallel.block(32, 0, 64) == (0, 0)


def test_a_streams_dropout_mask_does_not_depend_on_who_owns_it():
    whole = masks.dropout_masks(3, 7, range(0, 4), 2, 5, 6, 0.25, "float64")  # (L, T, B, H)
    halves = [masks.dropout_masks(3, 7, range(b0, b0 + 2), 2, 5, 6, 0.25, "float64") for b0 in (0, 2)]
    assert whole.shape == (2, 5, 4, 6) and np.array_equal(whole, np.concatenate(halves, axis=2))
    assert set(np.unique(whole)) == {0.0, 1 / 0.75}
    big = masks.dropout_masks(0, 0, range(8), 2, 64, 64, 0.25, "float32")
    assert abs(float((big == 0).mean()) - 0.25) < 0.01
    assert not np.array_equal(whole, masks.dropout_masks(3, 8, range(0, 4), 2, 5, 6, 0.25, "float64"))


def test_bench_workers_runs_on_a_tiny_configuration(tmp_path):
    """Not a timing test: one process and 2 workers are timed, and the scaling tables follow."""
    out = tmp_path / "bench.json"
    r = run_limited([sys.executable, "-m", "charnn", "bench", "--workers", "2", "--model", "lstm", "--num-layers", "1",
                     "--hidden-size", "8", "--batch-size", "4", "--seq-length", "4", "--steps", "2", "--warmup", "1",
                     "--torch-python", "/nonexistent/python", "--json", str(out)])
    assert r.returncode == 0, r.stderr
    row = json.loads(out.read_text())["train"][0]
    assert row["name"] == "LSTM 1 x 8, B 4, T 4" and row["one"]["seconds"] > 0
    config = ModelConfig(model="lstm", num_layers=1, hidden_size=8, vocab_size=65)
    n = sum(p.size for p in model.init_params(config, np.random.default_rng(0)).values())
    assert row["workers"]["gradient_bytes"] == 4 * (n + 1)  # float32 gradients and the loss
    assert 0 < row["workers"]["allreduce"] < row["workers"]["seconds"] and row["workers"]["peak_rss"] > 0
    assert "| LSTM 1 x 8, B 4, T 4 |" in r.stdout
    assert "Expected at 10 Gb/s" in r.stdout and "Expected at 100 Gb/s" in r.stdout
