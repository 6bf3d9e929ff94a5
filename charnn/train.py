"""The training loop: batches, steps, evaluation, checkpoints, recovery, progress.

Each step takes the next window of T characters from each of the B streams (data.BatchStream),
runs forward and full BPTT over it (model.loss_and_grads), clips the gradient by its global norm
and updates the parameters. The recurrent state at the end of a window is carried into the next
window of the same stream as a constant; it is reset to zero at the start of every pass over the
training split and after a rollback, and evaluation always starts from zero (evaluate.mean_loss).

The corpus's ids come from its id cache (idcache.py), mapped read-only, so a corpus of any size
costs memory only for the windows being read. Every `eval_every` steps and when the run ends, the
validation split is scored (all of it, or a fixed subset of at most `val_chars` characters spread
over it: data.pieces) and the run's folder (charnn/runs.py) gets `best.npz`, if the validation
loss is the best so far, then `latest.npz`; `metrics.jsonl` logs the run as it goes. A checkpoint
holds the whole RunState, so `resume` continues a run exactly: the same updates, bit for bit, as if it had never stopped (as
long as the limits, which size the learning-rate schedule, stay the same).

The pieces around the loop: limits.py (when the run ends, the learning rate), recovery.py
(divergence and rollback), reports.py (the lines the user reads), masks.py (dropout masks), and
parallel.py: the same loop runs in each of N processes of a data-parallel run (`--workers N`, or
mpiexec), each on its block of the streams, with the gradients, the validation loss and the
decision to stop shared, and rank 0 alone writing; in one process those are no-ops. The library
never prints: it reports to a Reporter (the CLI draws the progress bar from it).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import numpy as np

from charnn import baselines, checkpoint, data, evaluate, idcache, masks, model, optim, parallel, reports, runs, sample
from charnn.config import RESUMABLE, ModelConfig, TrainConfig
from charnn.decoding import Decoding
from charnn.errors import CharnnError
from charnn.fields import Invalid, shown
from charnn.limits import Limits, total_steps
from charnn.recovery import MAX_ROLLBACKS, RECENT, Recovery, is_diverging
from charnn.reports import Progress, Reporter
from charnn.runs import BEST, LATEST, MetricsLog, make_run_dir, stem

__all__ = ["train", "new_run", "resume", "Result", "Reporter", "Progress", "RunState", "RESUMABLE", "MAX_ROLLBACKS",
           "total_steps", "activation_bytes"]

LOG_EVERY = 10  # steps per training line in metrics.jsonl
OVERFIT_RATIO = 10  # parameters per training character above which the pre-flight warns of overfitting
BASELINES_VERSION = 1  # part of the key of remembered baselines: raise it when their computation changes
SAMPLE_LENGTH = 200  # characters of each --sample-every sample
SAMPLE_TEMPERATURE = 0.8


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
    rng: np.random.Generator  # the run's generator after initialisation (kept; dropout masks come from masks.py)
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
        """The checkpoint header's run state (header.RUN_STATE describes each field)."""
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


def train(corpus_path, model_config: ModelConfig, train_config: TrainConfig, checkpoint_dir="checkpoints",
          run_name: str | None = None, reporter: Reporter | None = None, cache_dir: str | None = None,
          use_cache: bool = True) -> Result:
    """Train a new model on the text at corpus_path; model_config.vocab_size is set from the text.
    Its ids come from its cache in cache_dir (idcache.default_dir() if None), or are encoded in
    memory if use_cache is False."""
    config = train_config.validate()
    model_config.validate()  # the vocabulary size is checked again once the text is read
    parallel.check_divides(config.batch_size, parallel.team().size)
    reporter = reporter or Reporter()
    corpus, source = load_corpus(corpus_path, cache_dir, use_cache, reporter)
    model_config = dataclasses.replace(model_config, vocab_size=corpus.vocab.size).validate()
    rng = np.random.default_rng(config.random_seed)
    params = model.init_params(model_config, rng, config.dtype)
    return new_run(corpus, source, model_config, config, params, rng, checkpoint_dir, run_name, reporter)


def new_run(corpus: data.Corpus, source: idcache.Source, model_config: ModelConfig, config: TrainConfig, params: dict,
            rng: np.random.Generator, checkpoint_dir="checkpoints", run_name: str | None = None,
            reporter: Reporter | None = None, parent: dict | None = None, opening_note: str | None = None) -> Result:
    """A run in a new folder from these parameters, with a fresh optimizer and a zero carried state;
    source: where the corpus's ids came from (idcache.load_corpus); rng: the run's generator
    after initialisation, saved with it. parent: the header's record of the checkpoint a fine-tuned
    run starts from (finetune.py)."""
    data.check_sizes(len(corpus.ids), config.val_frac, config.batch_size, config.seq_length)
    team = parallel.team()
    parallel.check_divides(config.batch_size, team.size)
    run_dir, created = team.first(
        lambda: make_run_dir(checkpoint_dir, run_name, f"{stem(corpus.path)}-{model_config.model}"))
    state = RunState(params=params, opt_state=optim.init_state(config.optimizer, params),
                     carried=model.zero_state(model_config, config.batch_size, config.dtype), rng=rng)
    return Training(model_config, config, corpus, source, run_dir, state, reporter, created_dir=created, parent=parent,
                    opening_note=opening_note).run()


def resume(checkpoint_path: str, overrides: dict | None = None, corpus_path=None, reporter: Reporter | None = None,
           cache_dir: str | None = None, use_cache: bool = True) -> Result:
    """Continue the run a checkpoint belongs to, with the same settings except `overrides`
    (TrainConfig fields among RESUMABLE; any other TrainConfig or ModelConfig field that differs
    from the run's is refused). The corpus is read from the path in the checkpoint unless
    corpus_path is given, and must be the same text; its cache is used, or rebuilt, as in train()."""
    ckpt = checkpoint.load(checkpoint_path)
    old, old_model = ckpt.train_config, ckpt.model_config.to_dict()
    changes, fixed = {}, []
    for name, value in (overrides or {}).items():
        if name in old_model:
            if old_model[name] != value:
                fixed.append(name)
        elif getattr(old, name) != value:
            if name in RESUMABLE:
                changes[name] = value
            else:
                fixed.append(name)
    if fixed:
        names = ", ".join("--" + k.replace("_", "-") for k in fixed)
        raise CharnnError(f"a resumed run cannot change {names} (they define the run); start a new run instead")
    config = dataclasses.replace(old, **changes).validate()
    team = parallel.team()
    parallel.check_divides(config.batch_size, team.size)  # any N that divides B resumes any checkpoint
    corpus_path = corpus_path or ckpt.header["corpus"]["path"]
    reporter = reporter or Reporter()
    corpus, source = load_corpus(corpus_path, cache_dir, use_cache, reporter)
    if corpus.sha256 != ckpt.header["corpus"]["sha256"]:
        raise CharnnError(f"{corpus_path} is not the text this run was trained on (its contents changed); "
                          "resuming needs the same corpus: give its path after the checkpoint")
    if ckpt.header["parent"] is not None:  # a fine-tuned model's vocabulary also holds its parent's characters
        corpus, source = in_vocab(corpus, source, ckpt.vocab)
    train_chars = len(data.split(corpus.ids, config.val_frac)[0])
    _check_corpus_facts(checkpoint_path, ckpt.header, corpus, train_chars)
    state = RunState.from_checkpoint(ckpt)
    if "learning_rate" in changes:
        state.lr_scale = 1.0  # a rate the user sets replaces the one rollbacks had lowered
    limit = total_steps(config, data.windows_per_epoch(train_chars, config.batch_size, config.seq_length))
    steps_spent = limit is not None and limit <= state.step
    time_spent = config.time_budget is not None and state.elapsed >= config.time_budget
    if steps_spent or time_spent:
        raise CharnnError(reports.limit_already_reached(state.step, state.elapsed, steps_spent, time_spent))
    run_dir, created, branched = team.first(lambda: _run_dir_of(checkpoint_path, ckpt, state.step))
    opening = reports.resuming(checkpoint_path, state.step, old, changes, run_dir if branched else None)
    return Training(ckpt.model_config, config, corpus, source, run_dir, state, reporter, created_dir=created,
                    opening_note=opening, baseline_bits=ckpt.header["baselines"], parent=ckpt.header["parent"]).run()


def load_corpus(corpus_path, cache_dir: str | None, use_cache: bool, reporter: Reporter):
    """idcache.load_corpus; in a data-parallel run, rank 0 first (it may build the id cache, which
    the others then map) and the others silently."""
    team = parallel.team()
    quiet = reporter if team.leader else Reporter()
    return team.leader_first(lambda: idcache.load_corpus(corpus_path, cache_dir, use_cache, reporter=quiet))


def _run_dir_of(checkpoint_path: str, ckpt: checkpoint.Checkpoint, step: int) -> tuple[str, bool, bool]:
    """(run_dir, created, branched): where a resumed run continues: its checkpoint's folder, or a new
    folder beside it, so nothing newer or foreign is overwritten."""
    run_dir = os.path.dirname(checkpoint_path) or "."
    if not _would_overwrite(checkpoint_path, ckpt):
        return run_dir, False, False
    folder = os.path.abspath(run_dir)
    return *make_run_dir(os.path.dirname(folder), None, f"{os.path.basename(folder)}-from-{step}"), True


def in_vocab(corpus: data.Corpus, source: idcache.Source, vocab) -> tuple[data.Corpus, idcache.Source]:
    """The corpus with its ids in the model's vocabulary (data.in_vocab), and where they are now:
    in memory, if they had to be translated."""
    moved = data.in_vocab(corpus, vocab)
    if moved is corpus:
        return corpus, source
    return moved, dataclasses.replace(source, in_memory=True, nbytes=moved.ids.nbytes)


def _check_corpus_facts(checkpoint_path: str, header: dict, corpus: data.Corpus, train_chars: int) -> None:
    """The same text (its SHA-256 matched) must also be what the header says of it, or the batch
    cursor, which the header's numbers bound (header.py), may point outside the real split."""
    facts = header["corpus"]
    held_and_real = {"vocab": (header["vocab"], corpus.vocab.chars), "corpus.chars": (facts["chars"], len(corpus.ids)),
                     "corpus.train_chars": (facts["train_chars"], train_chars)}
    for name, (held, real) in held_and_real.items():
        if held != real:
            raise checkpoint.header_error(checkpoint_path, Invalid(name, held, f"{shown(real)}, what {corpus.path} has"))


def _would_overwrite(checkpoint_path: str, ckpt: checkpoint.Checkpoint) -> bool:
    """Would continuing in the checkpoint's folder overwrite something worth more: a latest.npz
    that is further on (a later step, or the same step after a rollback), damaged, or from another
    run?"""
    latest = os.path.join(os.path.dirname(checkpoint_path) or ".", LATEST)
    if os.path.abspath(checkpoint_path) == os.path.abspath(latest) or not os.path.exists(latest):
        return False
    try:
        other = checkpoint.load(latest)
    except CharnnError:
        return True
    if _run_identity(other) != _run_identity(ckpt):
        return True
    ahead = other.header["step"] > ckpt.header["step"]
    return ahead or (other.header["step"] == ckpt.header["step"] and _position(other) != _position(ckpt))


def _position(ckpt: checkpoint.Checkpoint) -> tuple:
    """Where a run is beyond its step: a rollback after a save changes these, not the step."""
    h = ckpt.header
    return h["data"], h["rollbacks"], h["lr_scale"]


def _run_identity(ckpt: checkpoint.Checkpoint) -> tuple:
    """What makes two checkpoints the same run: the text, the model and every training setting a
    resume may not change (the rule resume() applies to its overrides)."""
    defining = {k: v for k, v in ckpt.train_config.to_dict().items() if k not in RESUMABLE}
    return ckpt.header["corpus"]["sha256"], ckpt.model_config, defining


@dataclass
class Session:
    """What one session of a run keeps and does not save: its timing and what is on disk."""

    first_step: int  # the run's step when this session started
    started: float = 0.0  # time.perf_counter() when its first step began ...
    elapsed_before: float = 0.0  # ... and the run's training time before it
    step_time: float | None = None  # smoothed seconds per step
    eval_time: float = 0.0  # seconds of the last evaluation
    unsaved_changes: int = 0  # updates and rollbacks since latest.npz was last written
    pending_log: list = field(default_factory=list)  # (loss, grad norm, chars/s) since the last metrics line


class Training:
    """One session of a run: from a RunState (new or resumed) to the end, a stop or an interruption."""

    def __init__(self, model_config: ModelConfig, config: TrainConfig, corpus: data.Corpus, source: idcache.Source,
                 run_dir: str, state: RunState, reporter: Reporter | None, created_dir: bool,
                 opening_note: str | None = None, baseline_bits: dict | None = None, parent: dict | None = None):
        self.model_config, self.config, self.run_dir, self.state = model_config, config, run_dir, state
        self.team = parallel.team()  # this process's share of the run (parallel.py): all of it in one process
        self.leader = self.team.leader  # rank 0: the one that reports and writes
        self.reporter = (reporter or Reporter()) if self.leader else Reporter()
        self.opening_note = opening_note
        self.corpus, self.source, self.vocab = corpus, source, corpus.vocab
        self.train_ids, self.val_ids = data.split(corpus.ids, config.val_frac)  # views: nothing is read yet
        self.val_pieces = data.pieces(len(self.val_ids), config.val_chars)  # what every evaluation scores
        self.rows = self.team.rows(config.batch_size)  # (b0, b1): the block of streams this process trains on
        self.weight = (self.rows[1] - self.rows[0]) / config.batch_size  # its share of the batch's mean loss
        self.stream = data.BatchStream(self.train_ids, config.batch_size, config.seq_length, self.rows)
        self.stream.epoch, self.stream.window = state.cursor
        state.carried = {name: s[:, self.rows[0]:self.rows[1]].copy() for name, s in state.carried.items()}
        self.limits = Limits(config, self.stream.windows_per_epoch)
        self.run_facts = {  # the header entries that do not change as the run goes on (header.RUN_FACTS)
            "model": model_config.to_dict(), "train": config.to_dict(), "vocab": corpus.vocab.chars,
            "corpus": {"path": os.path.abspath(corpus.path), "sha256": corpus.sha256, "chars": len(corpus.ids),
                       "train_chars": len(self.train_ids), "val_chars": len(self.val_ids)},
            "baselines": baseline_bits,  # computed before the first step of a new run
            "parent": parent,
        }
        self.created_dir = created_dir  # this session made run_dir: remove it if it ends with nothing saved
        self.recovery = Recovery(run_dir, writes=self.leader)
        self.session = Session(first_step=state.step)

    def run(self) -> Result:
        """Run the session with run_dir locked. Ctrl-C, from here on, only raises a flag: the step
        under way (or the evaluation) finishes, its state is saved, and the session ends."""
        try:
            with ExitStack() as stack:
                if self.leader:
                    stack.enter_context(runs.locked(self.run_dir))
                self.metrics = MetricsLog(self.run_dir, self.state.step) if self.leader else None
                stack.callback(lambda: self.metrics and self.metrics.close())
                stack.callback(self.recovery.close)
                interrupted = stack.enter_context(_interrupt_flag())
                status, message = self._loop(interrupted)
        finally:
            # A session that saved nothing leaves nothing (rank 0 keeps the files).
            if self.leader and not runs.holds_checkpoints(self.run_dir):
                if self.created_dir:
                    shutil.rmtree(self.run_dir)
                elif self.session.first_step == 0:  # a new run in an empty folder the user gave
                    runs.remove(self.run_dir, runs.METRICS)
        return Result(run_dir=self.run_dir, status=status, step=self.state.step, best_val_loss=self.state.best,
                      message=message)

    def _loop(self, interrupted) -> tuple[str, str]:
        state, config = self.state, self.config
        self._start()
        while True:
            self._tick()
            stop = self.limits.reached(state, self.session.step_time, self.session.eval_time)
            # A run that reached its limit is done, Ctrl-C or not; every process stops after the same step.
            # The same training time on every process, too: a time budget's learning rate follows it.
            stop, state.elapsed = self.team.agree(stop or ("interrupted" if interrupted() else None), state.elapsed)
            if stop:
                return self._finish(stop)
            t0 = time.perf_counter()
            inputs, targets, dropout = self._next_batch()
            lr = self.limits.learning_rate(state)
            loss, grads, carried = model.loss_and_grads(state.params, self.model_config, inputs, targets,
                                                        state.carried, masks=dropout)
            loss, grads = self.team.sum_step(loss, grads, self.weight)  # the whole batch's, on every process
            grad_norm = optim.clip_by_global_norm(grads, config.grad_clip)
            if is_diverging(loss, grad_norm, state.recent):
                if self.recovery.in_a_row == MAX_ROLLBACKS:
                    return "diverged", self._give_up(loss)
                self._roll_back(loss)
                continue
            self._update(grads, carried, loss, lr)
            self._after_step(loss, grad_norm, lr, self.config.batch_size * self.config.seq_length,
                             time.perf_counter() - t0)

    # -- the step's parts -------------------------------------------------------------------------

    def _next_batch(self):
        """(inputs, targets) of this process's streams, each (T, B'), and their dropout masks
        (L, T, B', H) or None."""
        drawn = self.stream.drawn
        inputs, targets, new_pass = self.stream.next()
        if new_pass:  # a new pass over the text: forget the last one's context
            self.state.carried = self._zero_state()
        mc = self.model_config
        dropout = None if mc.dropout == 0 else masks.dropout_masks(
            self.config.random_seed, drawn, range(*self.rows), mc.num_layers, self.config.seq_length, mc.hidden_size,
            mc.dropout, self.config.dtype)
        return inputs, targets, dropout

    def _zero_state(self) -> dict[str, np.ndarray]:
        return model.zero_state(self.model_config, self.rows[1] - self.rows[0], self.config.dtype)

    def _update(self, grads, carried, loss, lr) -> None:
        state = self.state
        self.recovery.before_update(state)
        state.step += 1
        optim.update(self.config.optimizer, state.params, grads, state.opt_state, lr, state.step)
        state.carried = carried
        state.recent = (state.recent + [loss])[-RECENT:]
        self.session.unsaved_changes += 1

    def _after_step(self, loss, grad_norm, lr, chars, dt) -> None:
        """Log the step (chars characters in dt seconds), then sample, evaluate and keep a snapshot
        when they are due."""
        state, config, session = self.state, self.config, self.session
        chars_per_sec = chars / dt
        session.step_time = dt if session.step_time is None else 0.9 * session.step_time + 0.1 * dt
        self._log_step(loss, grad_norm, chars_per_sec, lr)
        self.reporter.step(Progress(state.step, self._expected_total(), loss, grad_norm, chars_per_sec,
                                    self.stream.position, lr))
        if config.sample_every and state.step % config.sample_every == 0 and self.leader:
            self._print_sample()
        if state.step % config.eval_every == 0 or state.step == self.limits.steps:
            self._evaluate_and_save()
        if config.keep_every and state.step % config.keep_every == 0:
            self._save(runs.snapshot_name(state.step))

    def _roll_back(self, loss: float) -> None:
        state = self.state
        bad_step = state.step + 1  # the update whose loss was bad (it was not applied)
        zero = self._zero_state()
        undone_step = state.step
        undid_evaluation = self.recovery.roll_back(state, zero)
        if state.step < undone_step:  # an update was undone: so is what it left behind
            if self.session.pending_log:
                self.session.pending_log.pop()
            if self.config.keep_every and undone_step % self.config.keep_every == 0 and self.leader:
                runs.remove(self.run_dir, runs.snapshot_name(undone_step))
        self.session.unsaved_changes += 1
        if undid_evaluation:  # latest.npz is the undone step: replace it now, not only at the end
            self._save(LATEST)
        self.reporter.note(reports.rolled_back(bad_step, loss, state.step, state.lr_scale))
        self._metric(event="rollback", loss=loss if np.isfinite(loss) else None, lr_scale=state.lr_scale)

    def _give_up(self, loss: float) -> str:
        state = self.state
        if state.step > 0:  # the rollbacks left the last good state in place: keep it
            self._save(LATEST)
        return reports.gave_up(loss, self.recovery.in_a_row, state.step, state.best, state.best_step)

    # -- the session's start and end --------------------------------------------------------------

    def _start(self) -> None:
        if self.opening_note:
            self.reporter.note(self.opening_note)
        self.reporter.note(reports.data(self.corpus, self.source, self.config.batch_size, self.config.seq_length))
        self.team.sync(self._arrays())  # every process starts from rank 0's parameters and optimizer state
        if self.run_facts["baselines"] is None:
            self.run_facts["baselines"] = self.team.first(self._baselines)
        self._warn_if_too_small()
        self._preflight()
        self.session.started, self.session.elapsed_before = time.perf_counter(), self.state.elapsed
        self.reporter.start(self._expected_total(), self.state.step)

    def _finish(self, status: str) -> tuple[str, str]:
        """Save what the session has not saved yet, and say how the run ended."""
        state = self.state
        if status == "interrupted":
            if state.step == 0 or (state.step == self.session.first_step and not self.session.unsaved_changes):
                return status, "interrupted before a step was made: nothing new to save"
            path = self._save(LATEST) if self.session.unsaved_changes else os.path.join(self.run_dir, LATEST)
            return status, f"interrupted: saved the state after step {state.step} to {path}"
        if not state.history["step"] or state.history["step"][-1] != state.step:
            self._evaluate_and_save()  # the run's end is always evaluated and saved
        elif self.session.unsaved_changes:  # evaluated, but a rollback changed the state since
            self._save(LATEST)
        return status, reports.finished(status, state, self.config.patience, os.path.join(self.run_dir, BEST),
                                        self.val_pieces.predicted)

    # -- evaluation, checkpoints, logs ------------------------------------------------------------

    def _evaluate_and_save(self) -> None:
        state = self.state
        t0 = time.perf_counter()
        state.val_loss = self.team.mean_loss(state.params, self.model_config, self.val_ids, self.val_pieces)
        self.team.check_same(self._arrays(), state.step)
        self.session.eval_time = time.perf_counter() - t0
        self._tick()
        train_losses = state.recent[-min(len(state.recent), self.config.eval_every):]
        state.history["step"].append(state.step)
        state.history["train_loss"].append(float(np.mean(train_losses)) if train_losses else None)
        state.history["val_loss"].append(state.val_loss)
        improved = state.best is None or state.val_loss < state.best
        if improved:
            self.recovery.new_best(state, state.best, state.best_step)
            state.best, state.best_step = state.val_loss, state.step
            self._save(BEST)  # before latest.npz, whose header names it: a crash between leaves both true
        self._save(LATEST)
        self.reporter.note(reports.evaluated(state.step, state.val_loss, self.run_facts["baselines"], improved))
        self._metric(event="eval", val_loss=state.val_loss, val_bits=evaluate.bits(state.val_loss), best=improved)

    def _arrays(self) -> list[np.ndarray]:
        """The parameters and optimizer state: what every process holds alike."""
        return list(self.state.params.values()) + [a for slot in self.state.opt_state.values() for a in slot.values()]

    def _save(self, name: str) -> str:
        """Write the run's state to name (rank 0, with every process's carried state)."""
        state = self.state
        self._tick()
        header = dict(self.run_facts, **state.header(self.stream), workers=self.team.size)
        path = os.path.join(self.run_dir, name)
        carried = self.team.gather_rows(state.carried)  # (L, B, H) on rank 0, None elsewhere
        if self.leader:
            checkpoint.save(path, checkpoint.Checkpoint(header=header, params=state.params,
                                                        optim_state=state.opt_state, state=carried))
        if name == LATEST:
            self.session.unsaved_changes = 0
        return path

    def _tick(self) -> None:
        """Bring state.elapsed up to now: the run's training time, across sessions."""
        self.state.elapsed = self.session.elapsed_before + time.perf_counter() - self.session.started

    def _expected_total(self) -> int:
        return self.limits.expected_total(self.state, self.session.step_time, self.session.eval_time)

    def _baselines(self) -> dict:
        """The baselines, fitted on at most baselines.FIT_CHARS training characters and scored on the
        evaluation's characters; remembered beside the id cache, so a new run on the same text and
        split does not fit them again."""
        fit_chars = min(len(self.train_ids), baselines.FIT_CHARS)
        # The figures depend on the text, the split, what is scored and fitted, and V (add-one
        # smoothing; a fine-tuned model's vocabulary is larger than its text's), not on the ids' order.
        key = {"version": BASELINES_VERSION, "val_frac": self.config.val_frac, "val_chars": self.val_pieces.predicted,
               "streams": data.EVAL_STREAMS, "fit_chars": fit_chars, "vocab_size": self.vocab.size}

        def fit():
            with self.reporter.task("baselines", baselines.work_units(self.vocab.size), "step") as bar:
                return baselines.baselines(self.train_ids, self.val_ids, self.vocab.size, pieces=self.val_pieces,
                                           fit_chars=fit_chars, progress=bar.update)
        bits = idcache.remember(self.source, self.corpus.sha256, key, fit)
        self.reporter.note(reports.baselines(bits, len(self.train_ids), len(self.val_ids)))
        return bits

    def _warn_if_too_small(self) -> None:
        """A model with many more parameters than there are training characters learns the text by
        heart: say so, and what to try, before it does."""
        n_params = sum(p.size for p in self.state.params.values())
        if n_params > OVERFIT_RATIO * len(self.train_ids):
            smaller = smaller_model(self.model_config, len(self.train_ids))
            self.reporter.note(reports.too_small(n_params, len(self.train_ids),
                                                 smaller if smaller[0] < self.model_config.hidden_size else None))

    def _preflight(self) -> None:
        """One line before the first step: the model, memory, data and an estimate of time."""
        state, config, model_config = self.state, self.config, self.model_config
        inputs, targets = self.stream.peek()
        times = []
        for _ in range(2):  # the first pass also pays for warming up (allocation, BLAS threads)
            t0 = time.perf_counter()
            # A dry step: nothing is updated, and no dropout mask is made.
            model.loss_and_grads(state.params, model_config, inputs, targets, state.carried)
            times.append(time.perf_counter() - t0)
        self.session.step_time = min(times)  # the first estimate, for the progress bar's total
        expected = self._expected_total()
        self.reporter.note(reports.preflight(
            model_config, config, n_params=sum(p.size for p in state.params.values()),
            activation_mb=activation_bytes(model_config, config.batch_size, config.seq_length, config.dtype) / 2**20,
            corpus=self.run_facts["corpus"], val_scored=self.val_pieces.predicted,
            steps_to_go=max(0, expected - state.step), by_time_budget=expected != self.limits.steps, windows_per_epoch=self.stream.windows_per_epoch,
            step_time=self.session.step_time, run_dir=self.run_dir))

    def _print_sample(self) -> None:
        rng = np.random.default_rng([self.config.random_seed, self.state.step])  # apart from the run's rng
        seed = sample.default_seed(self.vocab, rng)
        text = "".join(sample.generate(self.state.params, self.model_config, self.vocab, seed, SAMPLE_LENGTH, rng,
                                       Decoding(temperature=SAMPLE_TEMPERATURE)))
        self.reporter.note(reports.sample(self.state.step, SAMPLE_TEMPERATURE, seed + text))

    def _log_step(self, loss, grad_norm, chars_per_sec, lr) -> None:
        pending = self.session.pending_log
        pending.append((loss, grad_norm, chars_per_sec))
        if self.state.step % LOG_EVERY == 0:
            losses, norms, rates = zip(*pending)
            self._metric(event="train", train_loss=float(np.mean(losses)), grad_norm=float(np.mean(norms)),
                         chars_per_sec=float(np.mean(rates)), lr=lr)
            pending.clear()

    def _metric(self, **fields) -> None:
        if not self.leader:
            return
        state = self.state
        self.metrics.write({"step": state.step, "time": round(state.elapsed, 3),
                            "epoch": round(self.stream.position, 4), "rollbacks": state.rollbacks, **fields})


def smaller_model(model_config: ModelConfig, train_chars: int) -> tuple[int, int]:
    """(H, its parameter count): the widest power-of-two hidden size from 16 up whose model has no
    more parameters than train_chars (16 if even that one has), for the pre-flight's advice."""
    def count(h):
        shapes = model.param_shapes(dataclasses.replace(model_config, hidden_size=h))
        return sum(int(np.prod(s)) for s in shapes.values())
    h = 16
    while h * 2 < model_config.hidden_size and count(h * 2) <= train_chars:
        h *= 2
    return h, count(h)


def activation_bytes(model_config: ModelConfig, B: int, T: int, dtype) -> int:
    """Memory of the arrays one training step keeps alive at its peak (forward caches plus the
    gradients of the backward pass), estimated from their shapes."""
    H, V, L = model_config.hidden_size, model_config.vocab_size, model_config.num_layers
    G = model.gates(model_config)
    per_layer = T * B * G * H * 3  # input projection, activated gates, their gradient
    per_layer += (T + 1) * B * H * (3 if model_config.model == "lstm" else 1)  # hidden (and cell, tanh) states
    per_layer += T * B * H  # gradient w.r.t. the layer's outputs
    output = T * B * V * 2 + T * B * H  # logits, their gradient, the top layer's output gradient
    return (L * per_layer + output) * np.dtype(dtype).itemsize


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
