"""Exact resume (bit for bit), resume rules, time budgets, patience, snapshots, metrics."""

import dataclasses
import json
import os
import signal
import time

import numpy as np
import pytest

from charnn import checkpoint, evaluate, reports, runs, train
from charnn.errors import CharnnError

from conftest import assert_same_arrays, checkpoint_arrays as arrays, tiny_configs
from test_train import Recorder


@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_half_then_resumed_equals_whole(tiny_corpus, tmp_path, name):
    mc, whole_tc = tiny_configs(name, steps=24, eval_every=8)
    whole = train.train(tiny_corpus, mc, whole_tc, tmp_path, run_name="whole")
    _, half_tc = tiny_configs(name, steps=12, eval_every=8)
    half = train.train(tiny_corpus, mc, half_tc, tmp_path, run_name="half")
    assert half.step == 12
    rec = Recorder()
    resumed = train.resume(half.latest, {"steps": 24}, reporter=rec)
    assert resumed.run_dir == half.run_dir and resumed.step == 24
    assert any("resuming" in n and "--steps 12 -> 24" in n for n in rec.notes)
    assert reports.show("time_budget", 570.0) == "9m30s" and reports.show("patience", None) == "none"
    assert_same_arrays(whole.latest, resumed.latest)
    a, b = checkpoint.load(whole.latest).header, checkpoint.load(resumed.latest).header
    for key in ("step", "data", "rng", "recent_losses", "lr_scale", "best_val_loss", "best_step"):
        assert a[key] == b[key], key


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_resume_with_dropout_continues_the_masks_exactly(tiny_corpus, tmp_path, name):
    """The run's random generator is saved, so the masks after a resume are those of an unbroken run."""
    mc, whole_tc = tiny_configs(name, steps=20, eval_every=10)
    mc = dataclasses.replace(mc, dropout=0.3)
    whole = train.train(tiny_corpus, mc, whole_tc, tmp_path, run_name="whole")
    half = train.train(tiny_corpus, mc, tiny_configs(name, steps=10, eval_every=10)[1], tmp_path, run_name="half")
    resumed = train.resume(half.latest, {"steps": 20})
    assert_same_arrays(whole.latest, resumed.latest)
    other = train.train(tiny_corpus, dataclasses.replace(mc, dropout=0.0), whole_tc, tmp_path, run_name="plain")
    assert arrays(other.latest)["param/Why"].tobytes() != arrays(whole.latest)["param/Why"].tobytes()


def test_ctrl_c_then_resume_equals_uninterrupted_with_a_schedule(tiny_corpus, tmp_path):
    """The cosine schedule, warm-up and the stream's pass boundary (at 37 windows) all line up."""
    mc, tc = tiny_configs("lstm", steps=45, eval_every=10, lr_schedule="cosine", warmup_steps=5)
    whole = train.train(tiny_corpus, mc, tc, tmp_path, run_name="whole")

    def interrupt(progress):
        if progress.step == 23:
            os.kill(os.getpid(), signal.SIGINT)
    stopped = train.train(tiny_corpus, mc, tc, tmp_path, run_name="stopped", reporter=Recorder(interrupt))
    assert stopped.status == "interrupted" and stopped.step == 23
    resumed = train.resume(stopped.latest)
    assert resumed.status == "done" and resumed.step == 45
    assert_same_arrays(whole.latest, resumed.latest)


def test_resume_rules(tiny_corpus, tmp_path):
    mc, tc = tiny_configs("rnn", steps=10, eval_every=5)
    run = train.train(tiny_corpus, mc, tc, tmp_path, run_name="r")
    with pytest.raises(CharnnError, match=r"already reached its step limit \(10 steps\); give a larger --steps"):
        train.resume(run.latest)
    with pytest.raises(CharnnError, match="reached its time budget .*; give a larger --time-budget to") as e:
        train.resume(run.latest, {"steps": 100, "time_budget": 1e-6})  # only the time is spent: --steps would not help
    assert "--steps" not in str(e.value)
    with pytest.raises(CharnnError, match="cannot change --batch-size, --seq-length"):
        train.resume(run.latest, {"steps": 20, "batch_size": 8, "seq_length": 8})
    old = str(tmp_path / "r" / "old.npz")
    checkpoint.save(old, checkpoint.load(run.latest))  # a copy of step 10
    rec = Recorder()
    more = train.resume(run.latest, {"steps": 15, "learning_rate": 0.01, "batch_size": tc.batch_size}, reporter=rec)
    assert more.step == 15
    assert any("--learning-rate 0.03 -> 0.01" in n for n in rec.notes)
    assert checkpoint.load(more.latest).train_config.learning_rate == 0.01
    # from an older checkpoint than the run's latest: a new folder, the newer latest.npz untouched
    before = open(more.latest, "rb").read()
    branch = train.resume(old, {"steps": 12})
    assert os.path.basename(branch.run_dir) == "r-from-10-1" and open(more.latest, "rb").read() == before


def test_resume_refuses_a_changed_corpus(tiny_corpus, tmp_path):
    mc, tc = tiny_configs("rnn", steps=6, eval_every=3)
    run = train.train(tiny_corpus, mc, tc, tmp_path)
    tiny_corpus.write_text(tiny_corpus.read_text() + "more")
    with pytest.raises(CharnnError, match="not the text this run was trained on"):
        train.resume(run.latest, {"steps": 12})


def test_time_budget_stops_evaluates_and_saves(tiny_corpus, tmp_path, monkeypatch):
    """On a clock that moves only while the model computes (a step takes 10 ms, an evaluation
    20 ms, whatever the machine's load), the run ends when one more step and the final evaluation
    would not fit, so it uses nearly all of the budget and little more."""
    from charnn import model
    now = {"t": 0.0}
    monkeypatch.setattr(time, "perf_counter", lambda: now["t"])

    def taking(seconds, real):
        def timed(*args, **kwargs):
            now["t"] += seconds
            return real(*args, **kwargs)
        return timed
    step_time, eval_time = 0.010, 0.020
    monkeypatch.setattr(model, "loss_and_grads", taking(step_time, model.loss_and_grads))
    monkeypatch.setattr(evaluate, "mean_loss", taking(eval_time, evaluate.mean_loss))
    mc, tc = tiny_configs("lstm", steps=None, eval_every=100000, time_budget=0.5)
    rec = Recorder()
    result = train.train(tiny_corpus, mc, tc, tmp_path, reporter=rec)
    assert result.status == "time budget" and result.step > 10
    header = checkpoint.load(result.latest).header
    assert header["step"] == result.step and header["history"]["step"] == [result.step]  # evaluated at the end
    assert tc.time_budget - step_time <= header["elapsed_seconds"] <= tc.time_budget + eval_time
    assert "the time budget is spent" in result.message
    assert abs(rec.steps[-1].total_steps - result.step) <= 5  # the bar's estimate of the end was right


def test_patience_stops_after_k_evaluations_without_improvement(tiny_corpus, tmp_path, monkeypatch):
    losses = iter([2.0, 1.5, 1.6, 1.7, 1.4, 1.3])
    monkeypatch.setattr(evaluate, "mean_loss", lambda *a, **k: next(losses))
    mc, tc = tiny_configs("rnn", steps=100, eval_every=2, patience=2)
    result = train.train(tiny_corpus, mc, tc, tmp_path)
    assert result.status == "patience" and result.step == 8 and result.best_val_loss == 1.5
    assert checkpoint.load(result.best).header["step"] == 4


def test_keep_every_and_the_metrics_log(tiny_corpus, tmp_path):
    mc, tc = tiny_configs("rnn", steps=30, eval_every=15, keep_every=10)
    result = train.train(tiny_corpus, mc, tc, tmp_path)
    assert sorted(os.listdir(result.run_dir)) == ["best.npz", "latest.npz", "metrics.jsonl",
                                                 "step-0000010.npz", "step-0000020.npz", "step-0000030.npz"]
    records = [json.loads(line) for line in open(os.path.join(result.run_dir, runs.METRICS))]
    trains = [r for r in records if r["event"] == "train"]
    evals = [r for r in records if r["event"] == "eval"]
    assert [r["step"] for r in trains] == [10, 20, 30] and [r["step"] for r in evals] == [15, 30]
    for r in trains:
        assert {"time", "train_loss", "lr", "grad_norm", "chars_per_sec", "rollbacks", "epoch"} <= set(r)
    assert {"val_loss", "val_bits"} <= set(evals[0])


def test_a_resumed_run_drops_log_lines_from_after_its_checkpoint(tiny_corpus, tmp_path):
    mc, tc = tiny_configs("rnn", steps=30, eval_every=10, keep_every=10)
    run = train.train(tiny_corpus, mc, tc, tmp_path, run_name="r")
    os.replace(tmp_path / "r" / "step-0000020.npz", tmp_path / "r" / "latest.npz")
    train.resume(run.latest, {"steps": 25})
    steps = [json.loads(line)["step"] for line in open(os.path.join(run.run_dir, runs.METRICS))]
    assert steps == sorted(steps) and steps.count(30) == 0 and max(steps) == 25


def test_preflight_baselines_and_samples_are_reported(tiny_corpus, tmp_path):
    mc, tc = tiny_configs("lstm", steps=20, eval_every=10, sample_every=10)
    rec = Recorder()
    result = train.train(tiny_corpus, mc, tc, tmp_path, reporter=rec)
    text = "\n".join(rec.notes)
    assert "baselines on the validation split: unigram" in text and "5-gram" in text
    pre = [n for n in rec.notes if n.startswith("pre-flight:")][0]
    for part in ("lstm 2x16", "parameters", "activations ~", "MB at B 4, T 16", "20 steps to go", "epochs", "s a step"):
        assert part in pre, part
    assert text.count("--- sample at step") == 2
    evals = [n for n in rec.notes if " val loss " in n]
    assert all("(unigram " in n and "5-gram" in n for n in evals)
    assert checkpoint.load(result.latest).header["baselines"]["ngram_order"] == 5


@pytest.mark.parametrize("stop_at", [10, 30])  # an evaluation step, and the run's last step
def test_ctrl_c_on_an_evaluation_or_the_last_step(tiny_corpus, tmp_path, stop_at):
    mc, tc = tiny_configs("rnn", steps=30, eval_every=10)
    whole = train.train(tiny_corpus, mc, tc, tmp_path, run_name="whole")

    def interrupt(progress):
        if progress.step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)
    stopped = train.train(tiny_corpus, mc, tc, tmp_path, run_name="stopped", reporter=Recorder(interrupt))
    if stop_at == 30:  # the last step finished: the run is complete, not interrupted
        assert stopped.status == "done"
        finished = stopped
    else:
        assert stopped.status == "interrupted" and stopped.step == 10
        assert checkpoint.load(stopped.latest).header["history"]["step"] == [10]  # evaluated before stopping
        finished = train.resume(stopped.latest)
    for name in (runs.LATEST, runs.BEST):
        assert_same_arrays(os.path.join(whole.run_dir, name), os.path.join(finished.run_dir, name))
    assert checkpoint.load(finished.latest).header["history"] == checkpoint.load(whole.latest).header["history"]


def test_a_nan_right_after_a_resume_skips_the_batch_and_goes_on(tiny_corpus, tmp_path, monkeypatch):
    from charnn import model
    mc, tc = tiny_configs("lstm", steps=10, eval_every=5)
    run = train.train(tiny_corpus, mc, tc, tmp_path)
    real, calls = model.loss_and_grads, []

    def poisoned(*args, **kwargs):
        calls.append(1)  # calls 1 and 2 are the pre-flight's dry steps; call 3 is the first step
        loss, grads, state = real(*args, **kwargs)
        return (float("nan") if len(calls) == 3 else loss), grads, state
    monkeypatch.setattr(model, "loss_and_grads", poisoned)
    rec = Recorder()
    resumed = train.resume(run.latest, {"steps": 20}, reporter=rec)
    assert resumed.status == "done" and resumed.step == 20
    assert [n for n in rec.notes if "rolled back" in n] == [
        "step 11: loss NaN or infinite; rolled back to step 10, learning rate halved (now x0.5), batch skipped"]
    assert checkpoint.load(resumed.latest).header["lr_scale"] == 0.5


def test_resume_after_the_cache_was_deleted_rebuilds_it_and_continues_exactly(tiny_corpus, tmp_path, cache_dir):
    mc, whole_tc = tiny_configs("lstm", steps=24, eval_every=8)
    whole = train.train(tiny_corpus, mc, whole_tc, tmp_path, run_name="whole")
    half = train.train(tiny_corpus, mc, tiny_configs("lstm", steps=12, eval_every=8)[1], tmp_path, run_name="half")
    for name in os.listdir(cache_dir):
        os.unlink(cache_dir / name)
    rec = Recorder()
    resumed = train.resume(half.latest, {"steps": 24}, reporter=rec)
    assert any(n.startswith("data: ") and "id cache built" in n for n in rec.notes)
    assert_same_arrays(whole.latest, resumed.latest)


def without(path, train_fields=(), baseline_fields=()):
    """Rewrite a checkpoint as an older charnn wrote it: without the given header fields."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    header = json.loads(str(arrays["header"]))
    for k in train_fields:
        del header["train"][k]
    for k in baseline_fields:
        del header["baselines"][k]
    np.savez(path, **dict(arrays, header=np.array(json.dumps(header))))


def test_a_checkpoint_from_before_val_chars_scores_the_whole_split(tiny_corpus, tmp_path):
    """Written before --val-chars existed, a run scored its whole validation split: resumed, it still
    does (config.ABSENT), and info still reads it."""
    mc, tc = tiny_configs("rnn", steps=8, eval_every=4, val_chars=50)
    run = train.train(tiny_corpus, mc, tc, tmp_path)
    assert "(50 validation characters scored)" in run.message
    without(run.latest, train_fields=["val_chars"], baseline_fields=["fit_chars", "scored_chars"])
    old = checkpoint.load(run.latest)
    assert old.train_config.val_chars is None
    rec = Recorder()
    resumed = train.resume(run.latest, {"steps": 12}, reporter=rec)
    assert "(267 validation characters scored)" in resumed.message
    with pytest.raises(CharnnError, match="cannot change --val-chars"):
        train.resume(resumed.latest, {"steps": 16, "val_chars": 100})
    from charnn import describe
    assert any(line.startswith("baselines") for line in describe.describe(run.latest, checkpoint.load(run.latest)))
