"""The training loop: batches, steps, evaluation, checkpoints, recovery, progress.

Each step takes the next window of T characters from each of the B streams (data.BatchStream),
runs forward and full BPTT over it (model.loss_and_grads), clips the gradient by its global norm
and updates the parameters. The recurrent state at the end of a window is carried into the next
window of the same stream as a constant; it is reset to zero at the start of every pass over the
training split and after a rollback, and evaluation always starts from zero (evaluate.mean_loss).

Every `eval_every` steps and when the run ends, the whole validation split is scored and the run's
folder (charnn/runs.py) gets `latest.npz` and, if the validation loss is the best so far,
`best.npz`; `metrics.jsonl` logs the run as it goes. A checkpoint holds the whole RunState, so
`resume` continues a run exactly: the same updates, bit for bit, as if it had never stopped (as
long as the limits, which size the learning-rate schedule, stay the same).

A step whose loss is NaN, infinite or far above its recent level is not applied: the run rolls
back to the state before the previous update (kept in memory), halves the learning rate, skips the
batch and goes on; after MAX_ROLLBACKS in a row it stops.

The library never prints: it reports to a Reporter (the CLI draws the progress bar from it).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from charnn import baselines, checkpoint, data, evaluate, model, optim, sample, schedule
from charnn.config import ModelConfig, TrainConfig
from charnn.errors import CharnnError
from charnn.runs import BEST, LATEST, MetricsLog, make_run_dir, stem

# What a resumed run may change; everything else defines the run (model, data layout, randomness).
RESUMABLE = ("steps", "epochs", "learning_rate", "grad_clip", "eval_every", "lr_schedule", "warmup_steps",
             "time_budget", "patience", "sample_every", "keep_every")
# A loss above both SPIKE_FACTOR times its recent mean and that mean plus SPIKE_NATS is treated as
# divergence: the factor alone would flag ordinary noise once the loss is small (0.5 after 0.1).
SPIKE_FACTOR = 2.0
SPIKE_NATS = 1.0
RECENT = 50  # training losses the recent mean is taken over
MAX_ROLLBACKS = 5  # rollbacks in a row before the run stops
LOG_EVERY = 10  # steps per training line in metrics.jsonl
SAMPLE_LENGTH = 200  # characters of each --sample-every sample
SAMPLE_TEMPERATURE = 0.8


@dataclass
class Progress:
    step: int  # updates done
    total_steps: int  # the expected number at the end (the time budget can make it an estimate)
    loss: float  # this step's training loss, nats/char
    grad_norm: float  # before clipping
    chars_per_sec: float  # B*T / time of this step
    epoch: float  # passes over the training split, fractional
    learning_rate: float


class Reporter:
    """Where the loop's news goes. The default ignores it all; the CLI draws a progress bar."""

    def start(self, total_steps: int, first_step: int) -> None: ...

    def step(self, progress: Progress) -> None: ...

    def note(self, line: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class Result:
    run_dir: str
    status: str  # "done", "time budget", "patience", "interrupted" or "diverged"
    step: int
    best_val_loss: float | None
    message: str  # one line: what happened and where the checkpoints are

    @property
    def best(self) -> str:
        return os.path.join(self.run_dir, BEST)

    @property
    def latest(self) -> str:
        return os.path.join(self.run_dir, LATEST)


@dataclass
class RunState:
    """Everything that changes as a run goes on. All of it is saved in every checkpoint."""

    params: dict[str, np.ndarray]
    opt_state: dict[str, dict[str, np.ndarray]]
    carried: dict[str, np.ndarray]  # recurrent state carried into the next window, each (L, B, H)
    rng: np.random.Generator  # the run's randomness after initialisation: dropout masks
    step: int = 0  # updates applied
    cursor: tuple = (0, 0)  # the batch stream's (completed passes, next window) where the run starts
    elapsed: float = 0.0  # seconds of training, across resumes
    val_loss: float | None = None  # at the last evaluation
    best: float | None = None  # the best validation loss so far ...
    best_step: int | None = None  # ... and its step
    lr_scale: float = 1.0  # halved by every rollback
    rollbacks: int = 0  # in all
    recent: list = field(default_factory=list)  # the last RECENT training losses
    history: dict = field(default_factory=lambda: {"step": [], "train_loss": [], "val_loss": []})

    def header(self, stream: data.BatchStream) -> dict:
        return {"step": self.step, "data": {"epoch": stream.epoch, "window": stream.window},
                "rng": self.rng.bit_generator.state, "elapsed_seconds": round(self.elapsed, 3),
                "val_loss": self.val_loss, "best_val_loss": self.best, "best_step": self.best_step,
                "lr_scale": self.lr_scale, "rollbacks": self.rollbacks, "recent_losses": self.recent,
                "history": self.history}

    @classmethod
    def from_checkpoint(cls, ckpt: checkpoint.Checkpoint) -> "RunState":
        h = ckpt.header
        rng = np.random.default_rng()
        rng.bit_generator.state = h["rng"]
        return cls(params=ckpt.params, opt_state=ckpt.optim_state, carried=ckpt.state, rng=rng, step=h["step"],
                   cursor=(h["data"]["epoch"], h["data"]["window"]), elapsed=h["elapsed_seconds"],
                   val_loss=h["val_loss"], best=h["best_val_loss"], best_step=h["best_step"],
                   lr_scale=h["lr_scale"], rollbacks=h["rollbacks"], recent=h["recent_losses"],
                   history=h["history"])


def total_steps(config: TrainConfig, windows_per_epoch: int) -> int | None:
    """The run's step limit: --steps, --epochs, or whichever ends first (None: time budget only)."""
    by_epochs = math.ceil(config.epochs * windows_per_epoch) if config.epochs is not None else None
    candidates = [s for s in (config.steps, by_epochs) if s is not None]
    return max(1, min(candidates)) if candidates else None


def train(corpus_path, model_config: ModelConfig, train_config: TrainConfig, checkpoint_dir="checkpoints",
          run_name: str | None = None, reporter: Reporter | None = None) -> Result:
    """Train a new model on the text at corpus_path; model_config.vocab_size is set from the text."""
    tc = train_config.validate()
    model_config.validate()  # the vocabulary size is checked again once the text is read
    corpus = data.read_corpus(corpus_path)
    mc = dataclasses.replace(model_config, vocab_size=corpus.vocab.size).validate()
    data.check_sizes(len(corpus.ids), tc.val_frac, tc.batch_size, tc.seq_length)
    run_dir = make_run_dir(checkpoint_dir, run_name, f"{stem(corpus_path)}-{mc.model}")
    rng = np.random.default_rng(tc.random_seed)
    params = model.init_params(mc, rng, tc.dtype)
    state = RunState(params=params, opt_state=optim.init_state(tc.optimizer, params),
                     carried=model.zero_state(mc, tc.batch_size, tc.dtype), rng=rng)
    return _Run(mc, tc, corpus, run_dir, state, reporter, new_run=True).go()


def resume(checkpoint_path: str, overrides: dict | None = None, corpus_path=None, reporter: Reporter | None = None) -> Result:
    """Continue the run a checkpoint belongs to, with the same settings except `overrides`
    (TrainConfig fields among RESUMABLE; any other TrainConfig or ModelConfig field that differs
    from the run's is refused). The corpus is read from the path in the checkpoint unless
    corpus_path is given, and must be the same text."""
    ckpt = checkpoint.load(checkpoint_path)
    old, old_model = ckpt.train_config, ckpt.model_config.to_dict()
    changes, fixed = {}, []
    for k, v in (overrides or {}).items():
        if k in old_model:
            if old_model[k] != v:
                fixed.append(k)
        elif getattr(old, k) != v:
            (changes.__setitem__(k, v) if k in RESUMABLE else fixed.append(k))
    if fixed:
        names = ", ".join("--" + k.replace("_", "-") for k in fixed)
        raise CharnnError(f"a resumed run cannot change {names} (they define the run); start a new run instead")
    tc = dataclasses.replace(old, **changes).validate()
    corpus_path = corpus_path or ckpt.header["corpus"]["path"]
    corpus = data.read_corpus(corpus_path)
    if corpus.sha256 != ckpt.header["corpus"]["sha256"]:
        raise CharnnError(f"{corpus_path} is not the text this run was trained on (its contents changed); "
                          "resuming needs the same corpus: give its path after the checkpoint")
    state = RunState.from_checkpoint(ckpt)
    if "learning_rate" in changes:
        state.lr_scale = 1.0  # a rate the user sets replaces the one rollbacks had lowered
    limit = total_steps(tc, data.windows_per_epoch(len(data.split(corpus.ids, tc.val_frac)[0]), tc.batch_size,
                                                   tc.seq_length))
    if (limit is not None and limit <= state.step) or (tc.time_budget is not None and state.elapsed >= tc.time_budget):
        raise CharnnError(f"this run already reached its limit ({state.step} steps, "
                          f"{schedule.format_duration(state.elapsed)}); give a larger --steps (the run's total), "
                          "--epochs or --time-budget to continue it")
    run_dir = os.path.dirname(checkpoint_path) or "."
    branched = _would_overwrite(checkpoint_path, ckpt)
    if branched:  # continue in a new folder beside it, so nothing newer or foreign is overwritten
        folder = os.path.abspath(run_dir)
        run_dir = make_run_dir(os.path.dirname(folder), None, f"{os.path.basename(folder)}-from-{state.step}")
    said = ", ".join(f"--{k.replace('_', '-')} {_show(k, getattr(old, k))} -> {_show(k, v)}" for k, v in changes.items())
    first = f"resuming {checkpoint_path} at step {state.step}" + (f"; changed: {said}" if said else "; same settings")
    if branched:
        first += f"; continuing in {run_dir} (the folder's latest.npz is newer, damaged or another run's)"
    if tc.lr_schedule != "constant" and ({"steps", "epochs", "time_budget"} & set(changes)):
        first += "; the learning-rate schedule is now sized by the new limit"
    return _Run(ckpt.model_config, tc, corpus, run_dir, state, reporter, new_run=branched, first_note=first,
                baseline_bits=ckpt.header.get("baselines")).go()


def _would_overwrite(checkpoint_path: str, ckpt: checkpoint.Checkpoint) -> bool:
    """Would continuing in the checkpoint's folder overwrite something worth more: a latest.npz
    that is further on, damaged, or from another run?"""
    latest = os.path.join(os.path.dirname(checkpoint_path) or ".", LATEST)
    if os.path.abspath(checkpoint_path) == os.path.abspath(latest) or not os.path.exists(latest):
        return False
    try:
        other = checkpoint.load(latest).header
    except CharnnError:
        return True
    same_run = (other["corpus"]["sha256"], other["model"], other["train"]["random_seed"]) == \
        (ckpt.header["corpus"]["sha256"], ckpt.header["model"], ckpt.header["train"]["random_seed"])
    return not same_run or other["step"] > ckpt.header["step"]


def _show(name: str, value) -> str:
    if value is None:
        return "none"
    if name == "time_budget":
        return schedule.format_duration(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


class _Run:
    """One session of a run: from a RunState (new or resumed) to the end, a stop or an interruption."""

    def __init__(self, mc: ModelConfig, tc: TrainConfig, corpus: data.Corpus, run_dir: str, state: RunState,
                 reporter: Reporter | None, new_run: bool, first_note: str | None = None,
                 baseline_bits: dict | None = None):
        self.mc, self.tc, self.run_dir, self.s = mc, tc, run_dir, state
        self.reporter = reporter or Reporter()
        self.first_note = first_note
        self.vocab = corpus.vocab
        self.train_ids, self.val_ids = data.split(corpus.ids, tc.val_frac)
        self.stream = data.BatchStream(self.train_ids, tc.batch_size, tc.seq_length)
        self.stream.epoch, self.stream.window = state.cursor
        self.limit = total_steps(tc, self.stream.windows_per_epoch)  # None: the time budget alone
        self.static = {
            "model": mc.to_dict(), "train": tc.to_dict(), "vocab": corpus.vocab.chars,
            "corpus": {"path": os.path.abspath(corpus.path), "sha256": corpus.sha256, "chars": len(corpus.ids),
                       "train_chars": len(self.train_ids), "val_chars": len(self.val_ids)},
        }
        self.new_run = new_run  # this session made run_dir: remove it if it ends with nothing saved
        self.baseline_bits = baseline_bits  # computed before the first step of a new run
        self.snapshot = None  # (params, opt_state, step) before the last update
        self.step_time = None  # smoothed seconds per step
        self.eval_time = 0.0  # seconds of the last evaluation
        self.log_acc = []  # (loss, norm, chars/s) since the last metrics line

    # -- the loop ---------------------------------------------------------------------------------

    def go(self) -> Result:
        """Run the session. Ctrl-C, from here on, only raises a flag: the step under way (or the
        evaluation) finishes, its state is saved, and the session ends."""
        with _interrupt_flag() as interrupted:
            self.metrics = MetricsLog(self.run_dir, self.s.step)
            try:
                status, message = self._loop(interrupted)
            finally:
                self.metrics.close()
                if self.new_run and not any(name.endswith(".npz") for name in os.listdir(self.run_dir)):
                    shutil.rmtree(self.run_dir)  # a new run that saved nothing leaves no folder behind
        return Result(run_dir=self.run_dir, status=status, step=self.s.step, best_val_loss=self.s.best, message=message)

    def _loop(self, interrupted) -> tuple[str, str]:
        s, tc = self.s, self.tc
        self.static["baselines"] = self.baseline_bits or self._baselines()
        self._preflight()
        status, message = "done", ""
        rollbacks_in_row = 0
        first_step, saved_step = s.step, s.step  # where this session started; the last step on disk
        self.clock = (time.perf_counter(), s.elapsed)  # this session's start, and the time before it
        self.reporter.start(self._expected_total(), s.step)
        while True:
            self._tick()
            status = self._limit_reached() or ("interrupted" if interrupted() else None)
            if status:  # a run that reached its limit is done, Ctrl-C or not
                break
            t0 = time.perf_counter()
            inputs, targets, first = self.stream.next()
            if first:  # a new pass over the text: forget the last one's context
                s.carried = model.zero_state(self.mc, tc.batch_size, tc.dtype)
            lr = self._learning_rate()
            loss, grads, new_carried = model.loss_and_grads(s.params, self.mc, inputs, targets, s.carried, rng=s.rng)
            norm = optim.clip_by_global_norm(grads, tc.grad_clip) if grads else math.nan
            if self._diverging(loss, norm):
                rollbacks_in_row += 1
                if rollbacks_in_row > MAX_ROLLBACKS:
                    status, message = "diverged", self._give_up(loss, rollbacks_in_row)
                    break
                self._rollback(loss)
                continue
            rollbacks_in_row = 0
            self._take_snapshot()
            s.step += 1
            optim.update(tc.optimizer, s.params, grads, s.opt_state, lr, s.step)
            s.carried = new_carried
            s.recent = (s.recent + [loss])[-RECENT:]
            dt = time.perf_counter() - t0
            self.step_time = dt if self.step_time is None else 0.9 * self.step_time + 0.1 * dt
            self._log_step(loss, norm, inputs.size / dt, lr)
            self.reporter.step(Progress(s.step, self._expected_total(), loss, norm, inputs.size / dt,
                                        self.stream.position, lr))
            if tc.sample_every and s.step % tc.sample_every == 0:
                self._print_sample()
            if s.step % tc.eval_every == 0 or s.step == self.limit:
                self._evaluate_and_save()
                saved_step = s.step
            if tc.keep_every and s.step % tc.keep_every == 0:
                self._save(f"step-{s.step:07d}.npz")
        if status == "interrupted":
            if s.step == first_step:
                message = "interrupted before a step was made: nothing new to save"
            else:
                path = os.path.join(self.run_dir, LATEST) if saved_step == s.step else self._save(LATEST)
                message = f"interrupted: saved the state after step {s.step} to {path}"
        elif status in ("done", "time budget", "patience"):
            if not s.history["step"] or s.history["step"][-1] != s.step:
                self._evaluate_and_save()  # the run's end is always evaluated and saved
            reason = {"done": "done", "time budget": "the time budget is spent",
                      "patience": f"no better validation loss in {tc.patience} evaluations"}[status]
            message = (f"{reason}: {s.step} steps in {schedule.format_duration(s.elapsed)}; best val loss "
                       f"{s.best:.3f} nats/char at step {s.best_step}, saved as {os.path.join(self.run_dir, BEST)}")
        return status, message

    def _tick(self) -> None:
        """Bring s.elapsed up to now: the run's training time, across sessions."""
        started, before = self.clock
        self.s.elapsed = before + time.perf_counter() - started

    def _limit_reached(self) -> str | None:
        s, tc = self.s, self.tc
        if self.limit is not None and s.step >= self.limit:
            return "done"
        if tc.time_budget is not None:
            # Stop when one more step and the final evaluation would not fit in the budget.
            if s.elapsed + (self.step_time or 0.0) + self.eval_time >= tc.time_budget:
                return "time budget"
        if tc.patience is not None and s.best_step is not None:
            evals_since = sum(1 for k in s.history["step"] if k > s.best_step)
            if evals_since >= tc.patience:
                return "patience"
        return None

    def _progress(self) -> float:
        """Fraction of the run done, against whichever limit ends it first."""
        s, tc = self.s, self.tc
        fractions = [s.step / self.limit] if self.limit else []
        if tc.time_budget is not None:
            fractions.append(s.elapsed / tc.time_budget)
        return min(1.0, max(fractions)) if fractions else 0.0

    def _expected_total(self) -> int:
        """Steps the run will have at its end, for the progress bar's ETA: the step limit, or
        what the time budget leaves room for at the current speed, whichever is smaller."""
        s, tc = self.s, self.tc
        totals = [self.limit] if self.limit else []
        if tc.time_budget is not None and self.step_time:
            totals.append(s.step + max(0, int((tc.time_budget - s.elapsed - self.eval_time) / self.step_time)))
        return min(totals) if totals else s.step

    def _learning_rate(self) -> float:
        tc = self.tc
        warm = tc.warmup_steps
        warm_fraction = (warm / self.limit if self.limit else 0.0) if warm else 0.0
        f = schedule.factor(tc.lr_schedule, self.s.step + 1, self._progress(), warm, warm_fraction)
        return tc.learning_rate * self.s.lr_scale * f

    # -- divergence -------------------------------------------------------------------------------

    def _diverging(self, loss: float, norm: float) -> bool:
        if not (math.isfinite(loss) and math.isfinite(norm)):
            return True
        recent = self.s.recent
        if len(recent) < 10:
            return False
        mean = float(np.mean(recent))
        return loss > SPIKE_FACTOR * mean and loss > mean + SPIKE_NATS

    def _take_snapshot(self) -> None:
        """Keep the parameters and optimizer state before this update, in copies made once and
        refilled (a few ms a step at most)."""
        s = self.s
        if self.snapshot is None:
            self.snapshot = (_copy(s.params), {k: _copy(v) for k, v in s.opt_state.items()}, 0)
        params, opt_state, _ = self.snapshot
        _copy_into(params, s.params)
        for k in opt_state:
            _copy_into(opt_state[k], s.opt_state[k])
        self.snapshot = (params, opt_state, s.step)

    def _rollback(self, loss: float) -> None:
        """Undo the last update, halve the learning rate, skip the batch just drawn. The carried
        state restarts from zero: the windows it summed up are no longer the ones before the next.
        Before this session's first update there is nothing to undo: the batch is only skipped."""
        s = self.s
        bad = s.step + 1  # the update whose loss was bad (it was not applied)
        if self.snapshot is not None:
            params, opt_state, s.step = self.snapshot
            _copy_into(s.params, params)
            for k in opt_state:
                _copy_into(s.opt_state[k], opt_state[k])
            for key in s.history:  # evaluations of the undone step are no longer the run's
                s.history[key] = s.history[key][:sum(1 for k in s.history["step"] if k <= s.step)]
        s.carried = model.zero_state(self.mc, self.tc.batch_size, self.tc.dtype)
        s.lr_scale *= 0.5
        s.rollbacks += 1
        what = "NaN or infinite" if not math.isfinite(loss) else f"{loss:.3f}, far above its recent mean"
        self.reporter.note(f"step {bad}: loss {what}; rolled back to step {s.step}, learning rate halved "
                           f"(now x{s.lr_scale:g}), batch skipped")
        self._metric(event="rollback", loss=loss if math.isfinite(loss) else None, lr_scale=s.lr_scale)

    def _give_up(self, loss: float, in_row: int) -> str:
        s = self.s
        cause = "NaN or infinite" if not math.isfinite(loss) else "far above its recent level"
        if s.step > 0:  # the rollbacks left the last good state in place: keep it
            self._save(LATEST)
            kept = f"latest.npz holds the last good state (step {s.step})"
            if s.best is not None:
                kept += f", best.npz the best (val loss {s.best:.3f} at step {s.best_step})"
        else:
            kept = "no update was made, so nothing was saved"
        return (f"the loss was still {cause} after {in_row - 1} rollbacks in a row; training stopped; {kept}; "
                "try a lower --learning-rate or --grad-clip")

    # -- evaluation, checkpoints, logs ------------------------------------------------------------

    def _evaluate_and_save(self) -> None:
        s = self.s
        t0 = time.perf_counter()
        s.val_loss = evaluate.mean_loss(s.params, self.mc, self.val_ids)
        self.eval_time = time.perf_counter() - t0
        self._tick()
        train_losses = s.recent[-min(len(s.recent), self.tc.eval_every):]
        s.history["step"].append(s.step)
        s.history["train_loss"].append(float(np.mean(train_losses)) if train_losses else None)
        s.history["val_loss"].append(s.val_loss)
        improved = s.best is None or s.val_loss < s.best
        if improved:
            s.best, s.best_step = s.val_loss, s.step
        self._save(LATEST)
        if improved:
            self._save(BEST)
        b = self.static["baselines"]
        self.reporter.note(f"step {s.step}  val loss {s.val_loss:.3f} nats/char  {evaluate.bits(s.val_loss):.3f} bits/char"
                           f"  (unigram {b['unigram_bits']:.2f}, {b['ngram_order']}-gram {b['ngram_bits']:.2f})"
                           f"{'  best' if improved else ''}")
        self._metric(event="eval", val_loss=s.val_loss, val_bits=evaluate.bits(s.val_loss), best=improved)

    def _save(self, name: str) -> str:
        s = self.s
        self._tick()
        header = dict(self.static, **s.header(self.stream))
        path = os.path.join(self.run_dir, name)
        checkpoint.save(path, checkpoint.Checkpoint(header=header, params=s.params, optim_state=s.opt_state,
                                                    state=s.carried))
        return path

    def _baselines(self) -> dict:
        b = baselines.baselines(self.train_ids, self.val_ids, self.vocab.size)
        self.reporter.note(f"baselines on the validation split: unigram {b['unigram_bits']:.3f} bits/char, "
                           f"{b['ngram_order']}-gram {b['ngram_bits']:.3f} bits/char (fitted on the training split)")
        return b

    def _preflight(self) -> None:
        """One line before the first step: the model, memory, data and an estimate of time."""
        s, tc, mc = self.s, self.tc, self.mc
        if self.first_note:
            self.reporter.note(self.first_note)
        inputs, targets = self.stream.peek()
        times = []
        for _ in range(2):  # the first pass also pays for warming up (allocation, BLAS threads)
            t0 = time.perf_counter()
            # A dry step: nothing is updated, and no dropout mask is drawn (the run's rng stays as it is).
            model.loss_and_grads(s.params, mc, inputs, targets, s.carried)
            times.append(time.perf_counter() - t0)
        step_time = min(times)
        self.step_time = step_time  # the first estimate, for the progress bar's total
        n_params = sum(p.size for p in s.params.values())
        limit = self._expected_total()
        per_epoch = self.stream.windows_per_epoch
        todo = max(0, limit - s.step)
        self.reporter.note(
            f"pre-flight: {mc.model} {mc.num_layers}x{mc.hidden_size}, {n_params:,} parameters; activations "
            f"~{activation_bytes(mc, tc.batch_size, tc.seq_length, tc.dtype) / 2**20:.0f} MB at B {tc.batch_size}, "
            f"T {tc.seq_length}; corpus {self.static['corpus']['chars']:,} characters ({len(self.train_ids):,} train, "
            f"{len(self.val_ids):,} val); {todo:,} steps to go{' (time budget)' if limit != self.limit else ''}, "
            f"{todo / per_epoch:.2f} epochs; ~{step_time:.3f} s a step, ~{schedule.format_duration(todo * step_time)}; "
            f"checkpoints in {self.run_dir}")

    def _print_sample(self) -> None:
        rng = np.random.default_rng([self.tc.random_seed, self.s.step])  # apart from the run's rng
        seed = sample.default_seed(self.vocab, rng)
        text = "".join(sample.generate(self.s.params, self.mc, self.vocab, seed, SAMPLE_LENGTH, rng,
                                       temperature=SAMPLE_TEMPERATURE))
        self.reporter.note(f"--- sample at step {self.s.step} (temperature {SAMPLE_TEMPERATURE}) ---\n{seed}{text}\n---")

    def _log_step(self, loss, norm, rate, lr) -> None:
        self.log_acc.append((loss, norm, rate))
        if self.s.step % LOG_EVERY == 0:
            losses, norms, rates = zip(*self.log_acc)
            self._metric(event="train", train_loss=float(np.mean(losses)), grad_norm=float(np.mean(norms)),
                         chars_per_sec=float(np.mean(rates)), lr=lr)
            self.log_acc = []

    def _metric(self, **fields) -> None:
        s = self.s
        record = {"step": s.step, "time": round(s.elapsed, 3), "epoch": round(self.stream.position, 4),
                  "rollbacks": s.rollbacks, **fields}
        self.metrics.write(record)


def activation_bytes(mc: ModelConfig, B: int, T: int, dtype) -> int:
    """Memory of the arrays one training step keeps alive at its peak (forward caches plus the
    gradients of the backward pass), estimated from their shapes."""
    H, V, L, G = mc.hidden_size, mc.vocab_size, mc.num_layers, model.gates(mc)
    per_layer = T * B * G * H * 3  # input projection, activated gates, their gradient
    per_layer += (T + 1) * B * H * (3 if mc.model == "lstm" else 1)  # hidden (and cell, tanh) states
    per_layer += T * B * H  # gradient w.r.t. the layer's outputs
    output = T * B * V * 2 + T * B * H  # logits, their gradient, the top layer's output gradient
    return (L * per_layer + output) * np.dtype(dtype).itemsize


def _copy(arrays: dict) -> dict:
    return {k: v.copy() for k, v in arrays.items()}


def _copy_into(dst: dict, src: dict) -> None:
    for k, v in src.items():
        np.copyto(dst[k], v)


@contextmanager
def _interrupt_flag():
    """While active, Ctrl-C (SIGINT) only raises a flag, which the loop checks after each step, so
    the state it saves is that of a finished step. A second Ctrl-C interrupts at once."""
    hit = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield hit.is_set
        return

    def handler(signum, frame):
        hit.set()
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield hit.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
