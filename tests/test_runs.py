"""A run's folder: names, the lock that keeps two processes apart, the metrics log."""

import json
import math
import os
import subprocess
import sys

import pytest

from charnn import model, runs, train
from charnn.errors import CharnnError

from conftest import tiny_configs


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", ""])
def test_a_run_name_must_be_a_plain_folder_name(tiny_corpus, tmp_path, name):
    mc, tc = tiny_configs(steps=2)
    with pytest.raises(CharnnError, match="--run-name"):
        train.train(tiny_corpus, mc, tc, tmp_path / "ck", run_name=name)
    assert not (tmp_path / "x").exists() and not (tmp_path / "ck" / "a").exists()


def test_an_empty_folder_given_as_run_name_is_kept_when_nothing_is_saved(tiny_corpus, tmp_path, monkeypatch):
    (tmp_path / "mine").mkdir()
    monkeypatch.setattr(model, "loss_and_grads", lambda *a, **k: (math.inf, {}, None))
    mc, tc = tiny_configs(steps=5)
    result = train.train(tiny_corpus, mc, tc, tmp_path, run_name="mine")
    assert result.status == "diverged" and (tmp_path / "mine").is_dir()
    assert os.listdir(tmp_path / "mine") == []  # nor its log: the same --run-name can be used again


def test_a_failing_metrics_log_leaves_no_new_folder(tiny_corpus, tmp_path, monkeypatch):
    def fail(self, run_dir, step):
        raise CharnnError("cannot write metrics.jsonl")
    monkeypatch.setattr(runs.MetricsLog, "__init__", fail)
    mc, tc = tiny_configs(steps=5)
    with pytest.raises(CharnnError, match="metrics"):
        train.train(tiny_corpus, mc, tc, tmp_path / "ck")
    assert os.listdir(tmp_path / "ck") == []


def test_a_folder_in_use_by_another_process_is_refused(tiny_corpus, tmp_path):
    """A process holding the folder's lock keeps others out, by name; once it is killed (no
    chance to clean up), its lock is gone with it and the folder can be used again."""
    mc, tc = tiny_configs(steps=10, eval_every=5)
    run = train.train(tiny_corpus, mc, tc, tmp_path, run_name="r")
    assert runs.LOCK not in os.listdir(run.run_dir)  # released at the end
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from charnn import runs\n"
                               f"with runs.locked({run.run_dir!r}):\n print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CharnnError, match=f"in use by process {holder.pid}"):
            train.resume(run.latest, {"steps": 20})
    finally:
        holder.kill()
        holder.wait()
    assert runs.LOCK in os.listdir(run.run_dir)  # a killed holder leaves its file, but not its lock
    more = train.resume(run.latest, {"steps": 20})
    assert more.step == 20 and runs.LOCK not in os.listdir(run.run_dir)


def test_a_lock_file_without_a_live_lock_is_taken_over_even_empty(tmp_path):
    """An empty or stale LOCK file (its writer just made it, or died) decides nothing: the kernel
    lock does. Two holders at once in one process are refused too."""
    (tmp_path / runs.LOCK).write_text("")
    with runs.locked(str(tmp_path)):
        with pytest.raises(CharnnError, match=f"in use by process {os.getpid()}"):
            with runs.locked(str(tmp_path)):
                pass
        (tmp_path / runs.LOCK).write_text("")  # as a holder's file looks before its pid is written
        with pytest.raises(CharnnError, match="in use by another process"):
            with runs.locked(str(tmp_path)):
                pass
    assert not (tmp_path / runs.LOCK).exists()


def test_the_lock_is_released_on_an_error(tmp_path):
    with pytest.raises(RuntimeError):
        with runs.locked(str(tmp_path)):
            assert (tmp_path / runs.LOCK).read_text() == str(os.getpid())
            raise RuntimeError
    assert not (tmp_path / runs.LOCK).exists()


def test_a_step_zero_rollback_line_survives_a_resume(tiny_corpus, tmp_path, monkeypatch):
    """A rollback before the first update is logged at step 0; a resume keeps it."""
    real, calls = model.loss_and_grads, []

    def poisoned(*args, **kwargs):
        calls.append(1)  # calls 1 and 2 are the pre-flight's dry steps
        loss, grads, state = real(*args, **kwargs)
        return (math.nan if len(calls) == 3 else loss), grads, state
    monkeypatch.setattr(model, "loss_and_grads", poisoned)
    mc, tc = tiny_configs(steps=10, eval_every=5)
    run = train.train(tiny_corpus, mc, tc, tmp_path, run_name="r")
    monkeypatch.setattr(model, "loss_and_grads", real)
    train.resume(run.latest, {"steps": 15})
    records = [json.loads(line) for line in open(os.path.join(run.run_dir, runs.METRICS))]
    assert [(r["step"], r["event"]) for r in records if r["event"] == "rollback"] == [(0, "rollback")]


def test_the_metrics_rewrite_is_synced_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    lines = [json.dumps({"step": s, "event": "train"}) + "\n" for s in (10, 20, 30)]
    (tmp_path / runs.METRICS).write_text("".join(lines))
    (tmp_path / (runs.METRICS + ".tmp")).mkdir()  # a name a fixed temporary file would collide with
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    log = runs.MetricsLog(str(tmp_path), 20)
    log.close()
    assert (tmp_path / runs.METRICS).read_text() == "".join(lines[:2]) and synced
    assert sorted(os.listdir(tmp_path)) == [runs.METRICS, runs.METRICS + ".tmp"]
