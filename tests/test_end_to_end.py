"""Whole runs through the public API and the CLI: every optimizer and float64 through train,
checkpoint and resume, --epochs counted from the corpus, the rule that a resume branches instead of
overwriting, and resuming a run whose corpus moved."""

import dataclasses
import json
import os
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import charnn
from charnn import checkpoint, model, train
from charnn.cli import cli
from charnn.errors import CharnnError

from conftest import TINY_TEXT, assert_same_arrays, checkpoint_arrays as arrays, tiny_configs


class Notes(train.Reporter):
    def __init__(self):
        self.notes = []

    def note(self, line):
        self.notes.append(line)


def straight_and_resumed(corpus, tmp_path, mc, steps, **train_opts):
    """(a run of `steps` steps, a run of steps/2 resumed to `steps`), as Results."""
    whole = train.train(corpus, mc, tiny_configs(steps=steps, **train_opts)[1], tmp_path, run_name="whole")
    half = train.train(corpus, mc, tiny_configs(steps=steps // 2, **train_opts)[1], tmp_path, run_name="half")
    assert half.step == steps // 2
    resumed = train.resume(half.latest, {"steps": steps})
    assert resumed.status == "done" and resumed.step == steps and resumed.run_dir == half.run_dir
    return whole, resumed


# ------------------------------------------------------------------------------------------------
# Optimizers and float64 through train, checkpoint and resume


@pytest.mark.parametrize("optimizer, slots", [("rmsprop", ("v",)), ("adagrad", ("v",)), ("sgd", ())])
def test_every_optimizer_resumes_bit_for_bit_with_its_slots(tiny_corpus, tmp_path, optimizer, slots):
    mc = tiny_configs("lstm")[0]
    whole, resumed = straight_and_resumed(tiny_corpus, tmp_path, mc, 12, eval_every=6, optimizer=optimizer)
    assert_same_arrays(whole.latest, resumed.latest)
    names = set(model.param_shapes(dataclasses.replace(mc, vocab_size=len(set(TINY_TEXT)))))
    saved = arrays(whole.latest)
    held = {k for k in saved if k.startswith("optim/")}
    assert held == {f"optim/{slot}/{n}" for slot in slots for n in names}
    for k in held:  # accumulated gradients, not the zeros a fresh run starts from
        assert np.all(saved[k] >= 0) and np.any(saved[k] > 0), k
    ckpt = checkpoint.load(whole.latest)
    assert ckpt.train_config.optimizer == optimizer and sorted(ckpt.optim_state) == sorted(slots)


def test_float64_saves_float64_resumes_exactly_and_samples(tiny_corpus, tmp_path):
    mc = tiny_configs("gru")[0]
    whole, resumed = straight_and_resumed(tiny_corpus, tmp_path, mc, 10, eval_every=5, dtype="float64")
    saved = arrays(whole.latest)
    assert {a.dtype for a in saved.values()} == {np.dtype("float64")}
    assert any(k.startswith("optim/m/") for k in saved) and any(k.startswith("state/") for k in saved)
    assert_same_arrays(whole.latest, resumed.latest)
    m = charnn.load(resumed.best)
    assert m.params["Why"].dtype == np.float64 and m.state["h"].dtype == np.float64
    p = m.step("t")
    assert p.shape == (len(set(TINY_TEXT)),) and abs(p.sum() - 1) < 1e-12
    text = m.generate("the ", length=25, random_seed=2)
    assert len(text) == 25 and set(text) <= set(TINY_TEXT)
    r = CliRunner().invoke(cli, ["sample", "--checkpoint", resumed.best, "--seed", "the ", "--length", "25",
                                 "--random-seed", "2"], catch_exceptions=False)
    assert r.exit_code == 0 and r.stdout == "the " + text + "\n"


# ------------------------------------------------------------------------------------------------
# --epochs through the CLI


def test_epochs_stop_after_that_many_passes_and_info_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    # A stream here is 536 characters, a multiple of T: its last T characters lack the target after
    # them, so a count that forgot the target would be one window a pass too many.
    B, T, val_frac = 4, 8, 0.2
    # The expected count from the corpus alone: the validation split is the last floor(N * val_frac)
    # characters, the rest is cut into B equal streams, and a pass takes every window of T inputs
    # and T targets (T + 1 characters from column kT) that fits in a stream.
    n_train = len(TINY_TEXT) - int(len(TINY_TEXT) * val_frac)
    per_stream = n_train // B
    windows = 0
    while windows * T + T + 1 <= per_stream:
        windows += 1
    expected = 2 * windows
    assert (per_stream, expected) == (536, 132)
    runner = CliRunner()
    r = runner.invoke(cli, ["train", "tiny.txt", "--epochs", "2", "--hidden-size", "16", "--num-layers", "1",
                            "--batch-size", str(B), "--seq-length", str(T), "--val-frac", str(val_frac),
                            "--eval-every", "1000", "--run-name", "e"], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    assert f"done: {expected} steps in " in r.stderr
    latest = os.path.join("checkpoints", "e", "latest.npz")
    assert checkpoint.load(latest).header["step"] == expected
    with open(os.path.join("checkpoints", "e", "metrics.jsonl")) as f:
        last = [json.loads(line) for line in f][-1]
    assert last["step"] == expected and last["epoch"] == 2.0
    info = runner.invoke(cli, ["info", latest], catch_exceptions=False)
    assert info.exit_code == 0
    assert re.search(rf"^progress +step {expected} \(2\.00 epochs\)", info.stdout, re.M), info.stdout
    assert re.search(r"^training .*limit 2 epochs", info.stdout, re.M), info.stdout
    more = runner.invoke(cli, ["resume", latest, "--epochs", "2.25"], catch_exceptions=False)
    assert more.exit_code == 0, more.stderr
    assert checkpoint.load(latest).header["step"] == 149  # 2.25 x 66 = 148.5 windows: a started window is a whole step


# ------------------------------------------------------------------------------------------------
# Resume: branch instead of overwrite


@pytest.fixture
def run_r(tiny_corpus, tmp_path):
    """A run "r" of 10 steps, evaluated and kept at steps 5 and 10."""
    mc, tc = tiny_configs("rnn", steps=10, eval_every=5, keep_every=5)
    result = train.train(tiny_corpus, mc, tc, tmp_path, run_name="r")
    assert sorted(os.listdir(result.run_dir)) == ["best.npz", "latest.npz", "metrics.jsonl",
                                                 "step-0000005.npz", "step-0000010.npz"]
    return result


def resume_noted(path, overrides):
    notes = Notes()
    result = train.resume(path, overrides, reporter=notes)
    return result, notes.notes[0]


def test_a_damaged_latest_is_left_alone(run_r, tmp_path):
    with open(run_r.latest, "rb") as f:
        whole = f.read()
    with open(run_r.latest, "wb") as f:
        f.write(whole[:len(whole) // 2])
    damaged = open(run_r.latest, "rb").read()
    result, first = resume_noted(run_r.best, {"steps": 12})
    assert result.run_dir == str(tmp_path / f"r-from-{checkpoint.load(run_r.best).header['step']}-1")
    assert result.step == 12 and "continuing in" in first
    assert open(run_r.latest, "rb").read() == damaged
    assert os.path.exists(os.path.join(result.run_dir, "latest.npz"))


@pytest.mark.parametrize("differs", [{"random_seed": 1}, {"optimizer": "sgd"}, {"batch_size": 2}])
def test_another_runs_latest_is_left_alone(run_r, tiny_corpus, tmp_path, differs):
    mc, tc = tiny_configs("rnn", steps=4, eval_every=4, **differs)  # behind step 5: only `differs` differs
    other = train.train(tiny_corpus, mc, tc, tmp_path, run_name="other")
    shutil.copyfile(other.latest, run_r.latest)
    foreign = open(run_r.latest, "rb").read()
    result, first = resume_noted(os.path.join(run_r.run_dir, "step-0000005.npz"), {"steps": 7})
    assert os.path.basename(result.run_dir) == "r-from-5-1" and result.step == 7 and "continuing in" in first
    assert open(run_r.latest, "rb").read() == foreign


def test_a_latest_further_on_is_left_alone_and_the_branch_continues_exactly(run_r, tmp_path):
    before = open(run_r.latest, "rb").read()
    step5 = os.path.join(run_r.run_dir, "step-0000005.npz")
    result, first = resume_noted(step5, {"steps": 10})
    assert os.path.basename(result.run_dir) == "r-from-5-1" and "continuing in" in first
    assert open(run_r.latest, "rb").read() == before
    assert_same_arrays(os.path.join(run_r.run_dir, "step-0000010.npz"), result.latest)  # the same steps 6..10
    again = train.resume(step5, {"steps": 6})
    assert os.path.basename(again.run_dir) == "r-from-5-2"  # the first branch is not touched either


def test_the_folders_own_older_latest_is_continued_in_place(run_r):
    shutil.copyfile(os.path.join(run_r.run_dir, "step-0000005.npz"), run_r.latest)
    result, first = resume_noted(os.path.join(run_r.run_dir, "step-0000010.npz"), {"steps": 12})
    assert result.run_dir == run_r.run_dir and "continuing in" not in first
    assert checkpoint.load(run_r.latest).header["step"] == 12
    assert sorted(os.listdir(os.path.dirname(run_r.run_dir))) == ["r", "tiny.txt"]


# ------------------------------------------------------------------------------------------------
# Resume with the corpus's path given


def test_resume_with_the_corpus_at_its_new_path(tiny_corpus, tmp_path):
    mc, tc = tiny_configs("rnn", steps=6, eval_every=3)
    run = train.train(tiny_corpus, mc, tc, tmp_path / "ck", run_name="m")
    moved = tmp_path / "elsewhere" / "moved.txt"
    moved.parent.mkdir()
    os.replace(tiny_corpus, moved)
    with pytest.raises(CharnnError, match="no such file"):
        train.resume(run.latest, {"steps": 9})
    result = train.resume(run.latest, {"steps": 9}, corpus_path=str(moved))
    assert result.status == "done" and result.step == 9
    assert checkpoint.load(result.latest).header["corpus"]["path"] == str(moved)

    moved.write_text(TINY_TEXT.replace("cat", "act"), encoding="utf-8")  # another text, same length and letters
    r = CliRunner().invoke(cli, ["resume", run.latest, str(moved), "--steps", "12"], catch_exceptions=False)
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "not the text this run was trained on" in r.stderr, r.stderr
    assert checkpoint.load(run.latest).header["step"] == 9
