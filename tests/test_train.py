"""The training loop on tiny corpora: learning, checkpoints, determinism, runs kept apart,
divergence and Ctrl-C."""

import dataclasses
import json
import math
import os
import signal
import time

import numpy as np
import pytest

from charnn import checkpoint, data, evaluate, model, runs, textfile, train
from charnn.errors import CharnnError
from charnn.recovery import is_diverging as diverging

from conftest import random_params_and_state, tiny_configs


class Recorder(train.Reporter):
    def __init__(self, on_step=None):
        self.steps, self.notes, self.on_step = [], [], on_step

    def start(self, total_steps, summary):
        self.total, self.summary = total_steps, summary

    def step(self, progress):
        self.steps.append(progress)
        if self.on_step:
            self.on_step(progress)

    def note(self, line):
        self.notes.append(line)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_a_small_model_learns_a_small_text(tiny_corpus, tmp_path, name):
    mc, tc = tiny_configs(name, steps=100, eval_every=25)
    rec = Recorder()
    result = train.train(tiny_corpus, mc, tc, tmp_path / "ck", reporter=rec)
    assert result.status == "done" and result.step == 100 and rec.total == 100
    V = textfile.scan(str(tiny_corpus)).vocab.size
    assert result.best_val_loss < 0.5 * math.log(V)  # ln V = 2.77 here
    assert [n.split()[1] for n in rec.notes if " val loss " in n] == ["25", "50", "75", "100"]
    best = checkpoint.load(result.best)
    assert best.header["best_val_loss"] == result.best_val_loss
    assert best.header["history"]["step"][-1] == best.header["step"]
    latest = checkpoint.load(result.latest)
    assert latest.header["step"] == 100 and latest.header["history"]["step"] == [25, 50, 75, 100]
    assert all(p.chars_per_sec > 0 and math.isfinite(p.grad_norm) for p in rec.steps)


def arrays_of(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_same_seed_gives_identical_checkpoints(tiny_corpus, tmp_path):
    mc, tc = tiny_configs("lstm", steps=20)
    a = train.train(tiny_corpus, mc, tc, tmp_path / "ck")
    b = train.train(tiny_corpus, mc, tc, tmp_path / "ck")
    assert a.run_dir != b.run_dir  # a second run never overwrites the first
    for name in (runs.LATEST, runs.BEST):
        xa, xb = arrays_of(os.path.join(a.run_dir, name)), arrays_of(os.path.join(b.run_dir, name))
        ha, hb = json.loads(str(xa.pop("header"))), json.loads(str(xb.pop("header")))
        ha.pop("elapsed_seconds"), hb.pop("elapsed_seconds")  # wall-clock time is the one difference
        assert ha == hb
        assert xa.keys() == xb.keys()
        for k in xa:
            assert xa[k].tobytes() == xb[k].tobytes(), k
    c = train.train(tiny_corpus, mc, tiny_configs("lstm", steps=20, random_seed=1)[1], tmp_path / "ck")
    assert arrays_of(c.latest)["param/Why"].tobytes() != arrays_of(a.latest)["param/Why"].tobytes()


def test_runs_get_their_own_folders_and_a_taken_name_is_refused(tiny_corpus, tmp_path):
    mc, tc = tiny_configs("rnn", steps=10)
    first = train.train(tiny_corpus, mc, tc, tmp_path, run_name="mine")
    before = open(first.latest, "rb").read()
    with pytest.raises(CharnnError, match="already holds checkpoints"):
        train.train(tiny_corpus, mc, tc, tmp_path, run_name="mine")
    assert open(first.latest, "rb").read() == before
    r1 = train.train(tiny_corpus, mc, tc, tmp_path)
    r2 = train.train(tiny_corpus, mc, tc, tmp_path)
    assert os.path.basename(r1.run_dir) == "tiny-rnn-1" and os.path.basename(r2.run_dir) == "tiny-rnn-2"


def test_unwritable_checkpoint_folder(tiny_corpus, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    mc, tc = tiny_configs(steps=5)
    with pytest.raises(CharnnError, match="cannot write checkpoints to .*choose another --checkpoint-dir"):
        train.train(tiny_corpus, mc, tc, blocker / "ck")


def poison_after(monkeypatch, step, count):
    """Make model.loss_and_grads return NaN `count` times once `step` steps are done."""
    real = model.loss_and_grads
    left = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, grads, state = real(*args, **kwargs)
        if left["n"] > 0:
            left["n"] -= 1
            return math.nan, grads, state
        return loss, grads, state
    monkeypatch.setattr(model, "loss_and_grads", poisoned)

    def on_step(progress):
        if progress.step == step and not left.get("armed"):
            left["n"], left["armed"] = count, True
    return Recorder(on_step)


def test_a_nan_is_rolled_back_and_the_run_goes_on(tiny_corpus, tmp_path, monkeypatch):
    rec = poison_after(monkeypatch, step=14, count=1)
    mc, tc = tiny_configs(steps=30, eval_every=10)
    result = train.train(tiny_corpus, mc, tc, tmp_path, reporter=rec)
    assert result.status == "done" and result.step == 30
    rollback = [n for n in rec.notes if "rolled back" in n]
    assert rollback == ["step 15: loss NaN or infinite; rolled back to step 13, learning rate halved (now x0.5), batch skipped"]
    steps = [p.step for p in rec.steps]
    assert steps[:14] == list(range(1, 15)) and steps[14] == 14  # update 14 was undone and made again
    header = checkpoint.load(result.latest).header
    assert header["rollbacks"] == 1 and header["lr_scale"] == 0.5
    events = [json.loads(l) for l in open(os.path.join(result.run_dir, runs.METRICS))]
    assert [e["step"] for e in events if e["event"] == "rollback"] == [13]


def test_persistent_nan_stops_and_keeps_the_last_good_state(tiny_corpus, tmp_path, monkeypatch):
    rec = poison_after(monkeypatch, step=14, count=1000)
    mc, tc = tiny_configs(steps=30, eval_every=10)
    result = train.train(tiny_corpus, mc, tc, tmp_path, reporter=rec)
    assert result.status == "diverged" and f"after {train.MAX_ROLLBACKS} rollbacks in a row" in result.message
    assert "last good state (step 13)" in result.message and "best.npz the best" in result.message
    assert checkpoint.load(result.latest).header["step"] == 13
    assert checkpoint.load(result.best).header["step"] == 10  # the best is untouched


def test_nan_at_the_first_step_leaves_no_run_behind(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(model, "loss_and_grads", lambda *a, **k: (math.inf, {}, None))
    mc, tc = tiny_configs(steps=30)
    result = train.train(tiny_corpus, mc, tc, tmp_path / "ck")
    assert result.status == "diverged" and "no update was made, so nothing was saved" in result.message
    assert os.listdir(tmp_path / "ck") == []


def test_a_far_higher_loss_counts_as_divergence_but_noise_at_a_low_loss_does_not():
    recent = [1.5] * 20
    assert diverging(4.0, 1.0, recent) and not diverging(2.4, 1.0, recent) and diverging(1.5, math.inf, recent)
    assert not diverging(0.6, 1.0, [0.1] * 20)  # five times the mean, but only half a nat above it


def test_ctrl_c_saves_the_last_finished_step(tiny_corpus, tmp_path):
    def interrupt(progress):
        if progress.step == 7:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C in a terminal
    mc, tc = tiny_configs(steps=30, eval_every=5)
    result = train.train(tiny_corpus, mc, tc, tmp_path, reporter=Recorder(interrupt))
    assert result.status == "interrupted" and result.step == 7
    assert "after step 7" in result.message and result.latest in result.message
    assert checkpoint.load(result.latest).header["step"] == 7
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_state_is_reset_at_each_pass(tiny_corpus, tmp_path, monkeypatch):
    """Within a pass the final state of a window is the next window's initial state; a pass starts
    from zero."""
    seen = []
    real = model.loss_and_grads

    def spy(params, config, inputs, targets, state, masks=None):
        out = real(params, config, inputs, targets, state, masks=masks)
        seen.append((state["h"].copy(), out[2]["h"].copy()))
        return out
    monkeypatch.setattr(model, "loss_and_grads", spy)
    mc, tc = tiny_configs("rnn", steps=1, seq_length=16, batch_size=4)
    windows = data.BatchStream(data.split(textfile.read_ids(str(tiny_corpus))[1], tc.val_frac)[0], 4, 16).windows_per_epoch
    train.train(tiny_corpus, mc, tiny_configs("rnn", steps=windows + 2)[1], tmp_path)
    seen = seen[2:]  # the first two calls are the pre-flight's dry steps
    assert not seen[0][0].any()
    for k in range(1, len(seen)):
        if k == windows:  # the first window of the second pass
            assert not seen[k][0].any()
        else:
            np.testing.assert_array_equal(seen[k][0], seen[k - 1][1])


@pytest.mark.parametrize("length,streams", [(50, 1), (50, 4), (53, 4), (3, 8)])
def test_evaluation_scores_every_character_once(rng, length, streams):
    """mean_loss equals the per-character losses of the pieces, each run from a zero state."""
    from charnn.config import ModelConfig
    config = ModelConfig("lstm", vocab_size=5, hidden_size=4, num_layers=2)
    params, _ = random_params_and_state(config, rng, 1)
    ids = rng.integers(0, 5, size=length)
    got = evaluate.mean_loss(params, config, ids, data.pieces(length, streams=streams))
    S = min(streams, length - 1)
    total = 0.0
    for piece in np.array_split(np.arange(length - 1), S):  # prediction positions of each piece
        x, y = ids[piece][:, None], ids[piece + 1][:, None]
        _, loss, _, _ = model.forward(params, config, x, model.zero_state(config, 1, "float64"), y)
        total += loss * len(piece)
    assert got == pytest.approx(total / (length - 1), rel=1e-12)


def test_total_steps():
    from charnn.config import TrainConfig
    assert train.total_steps(TrainConfig(steps=50), 10) == 50
    assert train.total_steps(TrainConfig(epochs=2.5), 10) == 25
    assert train.total_steps(TrainConfig(steps=12, epochs=2), 10) == 12


class NaNOnce(Recorder):
    """Makes the loss of the update after `after` steps NaN, once; `on_rollback` runs when the
    run reports the rollback."""

    def __init__(self, monkeypatch, after, on_rollback=None):
        super().__init__(self._arm)
        self.after, self.left, self.on_rollback = after, 0, on_rollback
        real = model.loss_and_grads

        def poisoned(*args, **kwargs):
            loss, grads, state = real(*args, **kwargs)
            if self.left:
                self.left -= 1
                return math.nan, grads, state
            return loss, grads, state
        monkeypatch.setattr(model, "loss_and_grads", poisoned)

    def _arm(self, progress):
        if progress.step == self.after and not hasattr(self, "armed"):
            self.left, self.armed = 1, True

    def note(self, line):
        super().note(line)
        if "rolled back" in line and self.on_rollback:
            self.on_rollback()


def test_ctrl_c_right_after_a_rollback_saves_the_rolled_back_state(tiny_corpus, tmp_path, monkeypatch):
    """Step 12 is bad: the run goes back to step 10, the step it just saved, but with the rate
    halved and the bad batch skipped; that is what Ctrl-C must save."""
    rec = NaNOnce(monkeypatch, after=11, on_rollback=lambda: os.kill(os.getpid(), signal.SIGINT))
    mc, tc = tiny_configs(steps=30, eval_every=10)
    result = train.train(tiny_corpus, mc, tc, tmp_path, reporter=rec)
    assert result.status == "interrupted" and "after step 10" in result.message
    header = checkpoint.load(result.latest).header
    assert (header["step"], header["lr_scale"], header["rollbacks"]) == (10, 0.5, 1)
    assert header["data"]["window"] == 12  # the bad batch is behind the saved cursor


def test_the_end_right_after_a_rollback_saves_the_rolled_back_state(tiny_corpus, tmp_path, monkeypatch):
    real = time.perf_counter
    late = {"by": 0.0}
    monkeypatch.setattr(time, "perf_counter", lambda: real() + late["by"])
    rec = NaNOnce(monkeypatch, after=11, on_rollback=lambda: late.__setitem__("by", 3600.0))
    mc, tc = tiny_configs(steps=None, eval_every=10, time_budget=600)
    result = train.train(tiny_corpus, mc, tc, tmp_path, reporter=rec)
    assert result.status == "time budget" and result.step == 10
    header = checkpoint.load(result.latest).header
    assert (header["step"], header["lr_scale"], header["rollbacks"]) == (10, 0.5, 1)


def test_a_rollback_undoes_the_best_of_the_step_it_undoes(tiny_corpus, tmp_path, monkeypatch):
    """Step 10 is evaluated (the best so far), then step 11 is bad: the run goes back to step 9,
    so the evaluation of step 10 and its best are no longer the run's."""
    losses = iter([3.0, 1.0, 2.0, 2.5, 2.5])  # steps 5, 10 (undone), 10 again, 15, 20
    monkeypatch.setattr(evaluate, "mean_loss", lambda *a, **k: next(losses))
    rec = NaNOnce(monkeypatch, after=10)
    mc, tc = tiny_configs(steps=20, eval_every=5)
    result = train.train(tiny_corpus, mc, tc, tmp_path, reporter=rec)
    assert result.status == "done" and result.best_val_loss == 2.0
    latest, best = checkpoint.load(result.latest).header, checkpoint.load(result.best).header
    assert latest["history"]["val_loss"] == [3.0, 2.0, 2.5, 2.5]
    assert (latest["best_val_loss"], latest["best_step"]) == (2.0, 10)
    assert (best["step"], best["val_loss"], best["rollbacks"]) == (10, 2.0, 1)  # the step made again


def test_a_rollback_of_the_best_puts_back_the_previous_best_file(tiny_corpus, tmp_path, monkeypatch):
    """Ctrl-C right after the rollback: best.npz must be the best the run still has (step 5)."""
    losses = iter([3.0, 1.0])
    monkeypatch.setattr(evaluate, "mean_loss", lambda *a, **k: next(losses))
    rec = NaNOnce(monkeypatch, after=10, on_rollback=lambda: os.kill(os.getpid(), signal.SIGINT))
    mc, tc = tiny_configs(steps=20, eval_every=5)
    result = train.train(tiny_corpus, mc, tc, tmp_path, reporter=rec)
    assert result.status == "interrupted" and result.step == 9 and result.best_val_loss == 3.0
    latest, best = checkpoint.load(result.latest).header, checkpoint.load(result.best).header
    assert (latest["best_val_loss"], latest["best_step"]) == (3.0, 5)
    assert (best["step"], best["val_loss"]) == (5, 3.0)
    assert sorted(os.listdir(result.run_dir)) == ["best.npz", "latest.npz", "metrics.jsonl"]


def test_best_is_written_before_the_latest_that_points_at_it(tiny_corpus, tmp_path, monkeypatch):
    losses = iter([2.0, 1.0])
    monkeypatch.setattr(evaluate, "mean_loss", lambda *a, **k: next(losses))
    real = checkpoint.save

    def full_disk_at_the_second_best(path, ckpt):
        if path.endswith(runs.BEST) and ckpt.header["step"] == 10:
            raise CharnnError("could not write checkpoint: no space left on device")
        real(path, ckpt)
    monkeypatch.setattr(checkpoint, "save", full_disk_at_the_second_best)
    mc, tc = tiny_configs(steps=20, eval_every=5)
    with pytest.raises(CharnnError, match="no space"):
        train.train(tiny_corpus, mc, tc, tmp_path, run_name="r")
    latest, best = checkpoint.load(tmp_path / "r" / runs.LATEST).header, checkpoint.load(tmp_path / "r" / runs.BEST).header
    assert latest["best_step"] == best["step"] == 5


def test_a_rollback_that_undoes_an_evaluation_rewrites_latest_at_once(tiny_corpus, tmp_path, monkeypatch):
    """Should the process die right after the rollback, latest.npz must not be the undone step,
    nor name a best that best.npz no longer holds."""
    losses = iter([3.0, 1.0, 2.0, 2.5, 2.5])
    monkeypatch.setattr(evaluate, "mean_loss", lambda *a, **k: next(losses))
    on_disk = []

    def look():
        on_disk.append((checkpoint.load(tmp_path / "r" / runs.LATEST).header,
                        checkpoint.load(tmp_path / "r" / runs.BEST).header))
    rec = NaNOnce(monkeypatch, after=10, on_rollback=look)
    mc, tc = tiny_configs(steps=20, eval_every=5)
    train.train(tiny_corpus, mc, tc, tmp_path, run_name="r", reporter=rec)
    latest, best = on_disk[0]
    assert (latest["step"], latest["best_step"], latest["lr_scale"]) == (9, 5, 0.5)
    assert best["step"] == 5


def test_a_rollback_removes_the_undone_steps_snapshot_and_loss(tiny_corpus, tmp_path, monkeypatch):
    """Step 15 is kept as a --keep-every snapshot, then step 16 is bad: the run goes back to step
    14 and is stopped there (Ctrl-C). step-0000015.npz, an undone future that a resume from it would
    continue in place, must be gone, and the undone update's loss must have left the recent losses
    the spike check uses."""
    rec = NaNOnce(monkeypatch, after=15, on_rollback=lambda: os.kill(os.getpid(), signal.SIGINT))
    mc, tc = tiny_configs(steps=30, eval_every=100, keep_every=5)
    result = train.train(tiny_corpus, mc, tc, tmp_path, reporter=rec)
    assert result.status == "interrupted" and result.step == 14
    names = sorted(n for n in os.listdir(result.run_dir) if n.startswith("step-"))
    assert names == ["step-0000005.npz", "step-0000010.npz"]
    assert len(checkpoint.load(result.latest).header["recent_losses"]) == 14


def test_resuming_the_best_of_a_step_that_was_rolled_back_to_branches(tiny_corpus, tmp_path, monkeypatch):
    """best.npz and latest.npz both at step 10, but latest holds the rollback made after it (rate
    halved, bad batch skipped): resuming best.npz must not overwrite latest.npz with the state
    before that rollback."""
    rec = NaNOnce(monkeypatch, after=11, on_rollback=lambda: os.kill(os.getpid(), signal.SIGINT))
    mc, tc = tiny_configs(steps=30, eval_every=10)
    result = train.train(tiny_corpus, mc, tc, tmp_path, run_name="r", reporter=rec)
    monkeypatch.undo()
    assert checkpoint.load(result.best).header["step"] == checkpoint.load(result.latest).header["step"] == 10
    latest = open(result.latest, "rb").read()
    more = train.resume(result.best, {"steps": 12})
    assert more.run_dir != result.run_dir and os.path.basename(more.run_dir).startswith("r-from-10")
    assert open(result.latest, "rb").read() == latest


def test_a_bounded_validation_and_baselines_say_what_they_covered(tiny_corpus, tmp_path, monkeypatch):
    """--val-chars and baselines.FIT_CHARS below the splits: every evaluation scores the same
    subset, the baselines are scored on it, and the lines say so; a second run on the same text
    takes the baselines from beside the id cache instead of fitting them again."""
    from charnn import baselines
    monkeypatch.setattr(baselines, "FIT_CHARS", 500)
    fits = []
    real_fit = baselines.fit_ngram
    monkeypatch.setattr(baselines, "fit_ngram", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    scored = []
    real_loss = evaluate.summed_loss
    monkeypatch.setattr(evaluate, "summed_loss", lambda p, c, ids, pieces, lut=None: scored.append(
        (pieces.starts.tolist(), pieces.lengths.tolist())) or real_loss(p, c, ids, pieces, lut))
    mc, tc = tiny_configs("rnn", steps=20, eval_every=10, val_chars=100)
    rec = Recorder()
    result = train.train(tiny_corpus, mc, tc, tmp_path, reporter=rec)
    assert len(scored) == 2 and scored[0] == scored[1] and sum(scored[0][1]) == 100
    line = [n for n in rec.notes if n.startswith("baselines")][0]
    assert line.startswith("baselines on the 100 validation characters each evaluation scores: unigram")
    assert line.endswith("(fitted on the first 500 training characters)")
    assert "268 val, 100 scored per evaluation" in [n for n in rec.notes if n.startswith("pre-flight")][0]
    assert "(100 validation characters scored)" in result.message
    header = checkpoint.load(result.latest).header["baselines"]
    assert header["fit_chars"] == 500 and header["scored_chars"] == 100 and len(fits) == 1
    from charnn import describe
    info = "\n".join(describe.describe(result.latest, checkpoint.load(result.latest)))
    assert "eval every 10 on 100 validation characters, seed 0" in info
    assert "(on the 100 validation characters each evaluation scores, fitted on the first 500 training characters)" in info
    again = Recorder()
    train.train(tiny_corpus, mc, tc, tmp_path, reporter=again)
    assert len(fits) == 1 and [n for n in again.notes if n.startswith("baselines")] == [line]  # remembered


def test_the_data_line_and_the_small_corpus_warning(tiny_corpus, tmp_path):
    mc, tc = tiny_configs("lstm", steps=2, eval_every=2)
    rec = Recorder()
    train.train(tiny_corpus, mc, tc, tmp_path, reporter=rec)
    data_line = rec.notes[0]
    assert data_line.startswith("data: 2,680 characters, 16 distinct (1 byte an id); id cache built in ")
    assert "a step reads 4 x 17 ids" in data_line
    assert not any(n.startswith("warning") for n in rec.notes)  # 4,496 parameters for 2,412 characters: fine
    big = dataclasses.replace(mc, hidden_size=128)
    rec = Recorder()
    train.train(tiny_corpus, big, tc, tmp_path, reporter=rec, use_cache=False)
    assert rec.notes[0].startswith("data: 2,680 characters, 16 distinct (1 byte an id); ids encoded in ")
    assert rec.notes[0].endswith(" (--no-cache); the ids in memory, 2.7 KB")
    warning = [n for n in rec.notes if n.startswith("warning")]
    assert len(warning) == 1 and "207,888 parameters for 2,412 training characters" in warning[0]
    assert "--hidden-size (16 gives 4,496 parameters), --patience 3" in warning[0] and "--dropout" in warning[0]
    assert train.smaller_model(big, 10**6)[0] == 64  # the widest power of two below 128 that fits
