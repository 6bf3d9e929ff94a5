"""The training loop: batches, steps, evaluation, checkpoints, progress.

Each step takes the next window of T characters from each of the B streams (data.BatchStream),
runs forward and full BPTT over it (model.loss_and_grads), clips the gradient by its global norm
and updates the parameters. The recurrent state at the end of a window is carried into the next
window of the same stream as a constant; it is reset to zero at the start of every pass over the
training split, and evaluation always starts from zero (evaluate.mean_loss).

Every `eval_every` steps and at the end, the whole validation split is scored and the run's folder
gets `latest.npz` (this step) and, if the validation loss is the best so far, `best.npz`.
The library never prints: it reports to a Reporter (the CLI draws the progress bar from it).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from charnn import checkpoint, data, evaluate, model, optim
from charnn.config import ModelConfig, TrainConfig
from charnn.errors import CharnnError

LATEST, BEST = "latest.npz", "best.npz"


@dataclass
class Progress:
    step: int  # updates done
    total_steps: int
    loss: float  # this step's training loss, nats/char
    grad_norm: float  # before clipping
    chars_per_sec: float  # B*T / time of this step
    epoch: float  # passes over the training split, fractional


class Reporter:
    """Where the loop's news goes. The default ignores it all; the CLI draws a progress bar."""

    def start(self, total_steps: int, summary: str) -> None: ...

    def step(self, progress: Progress) -> None: ...

    def note(self, line: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class Result:
    run_dir: str
    status: str  # "done", "interrupted" or "diverged"
    step: int
    best_val_loss: float | None
    message: str  # one line: what happened and where the checkpoints are

    @property
    def best(self) -> str:
        return os.path.join(self.run_dir, BEST)

    @property
    def latest(self) -> str:
        return os.path.join(self.run_dir, LATEST)


def total_steps(config: TrainConfig, windows_per_epoch: int) -> int:
    """The run's length: --steps, --epochs, or whichever ends first."""
    by_epochs = math.ceil(config.epochs * windows_per_epoch) if config.epochs is not None else None
    candidates = [s for s in (config.steps, by_epochs) if s is not None]
    return max(1, min(candidates))


def train(corpus_path, model_config: ModelConfig, train_config: TrainConfig, checkpoint_dir="checkpoints",
          run_name: str | None = None, reporter: Reporter | None = None) -> Result:
    """Train a new model on the text at corpus_path; model_config.vocab_size is set from the text."""
    reporter = reporter or Reporter()
    tc = train_config.validate()
    model_config.validate()  # the vocabulary size is checked again once the text is read
    corpus = data.read_corpus(corpus_path)
    mc = dataclasses.replace(model_config, vocab_size=corpus.vocab.size).validate()
    data.check_sizes(len(corpus.ids), tc.val_frac, tc.batch_size, tc.seq_length)
    train_ids, val_ids = data.split(corpus.ids, tc.val_frac)
    stream = data.BatchStream(train_ids, tc.batch_size, tc.seq_length)
    total = total_steps(tc, stream.windows_per_epoch)
    run_dir = make_run_dir(checkpoint_dir, run_name, f"{_stem(corpus_path)}-{mc.model}")

    rng = np.random.default_rng(tc.random_seed)
    params = model.init_params(mc, rng, tc.dtype)
    opt_state = optim.init_state(tc.optimizer, params)
    state = model.zero_state(mc, tc.batch_size, tc.dtype)
    history = {"step": [], "train_loss": [], "val_loss": []}
    header = {
        "model": mc.to_dict(),
        "train": tc.to_dict(),
        "vocab": corpus.vocab.chars,
        "corpus": {"path": os.path.abspath(corpus.path), "chars": len(corpus.ids),
                   "train_chars": len(train_ids), "val_chars": len(val_ids)},
        "history": history,
    }
    best, best_step, val_loss = None, None, None

    def save(name: str, step: int, elapsed: float) -> str:
        header.update(step=step, data={"epoch": stream.epoch, "window": stream.window}, val_loss=val_loss,
                      best_val_loss=best, best_step=best_step, elapsed_seconds=round(elapsed, 3))
        path = os.path.join(run_dir, name)
        checkpoint.save(path, checkpoint.Checkpoint(header=header, params=params, optim_state=opt_state, state=state))
        return path

    n_params = sum(p.size for p in params.values())
    reporter.start(total, (
        f"{mc.model} {mc.num_layers}x{mc.hidden_size}, {n_params:,} parameters, vocabulary {mc.vocab_size}; "
        f"{len(train_ids):,} training and {len(val_ids):,} validation characters; "
        f"{total} steps of {tc.batch_size}x{tc.seq_length} ({total / stream.windows_per_epoch:.2f} epochs); "
        f"checkpoints in {run_dir}"
    ))
    step, elapsed, since_eval = 0, 0.0, []
    status, message = "done", ""
    with _interrupt_flag() as interrupted:
        while step < total:
            t0 = time.perf_counter()
            inputs, targets, first = stream.next()
            if first:  # a new pass over the text: forget the last one's context
                state = model.zero_state(mc, tc.batch_size, tc.dtype)
            loss, grads, new_state = model.loss_and_grads(params, mc, inputs, targets, state)
            norm = optim.clip_by_global_norm(grads, tc.grad_clip)
            if not (math.isfinite(loss) and math.isfinite(norm)):
                status = "diverged"
                kept = (f"the last good checkpoint is {os.path.join(run_dir, LATEST)} (step {header['step']})"
                        if "step" in header else "no checkpoint was saved before it")
                what = "loss" if not math.isfinite(loss) else "gradient"
                message = (f"the {what} became NaN or infinite at step {step + 1}; training stopped before that update "
                           f"and {kept}; try a lower --learning-rate or --grad-clip")
                break
            optim.update(tc.optimizer, params, grads, opt_state, tc.learning_rate, step + 1)
            state = new_state
            step += 1
            dt = time.perf_counter() - t0
            elapsed += dt
            since_eval.append(loss)
            reporter.step(Progress(step, total, loss, norm, inputs.size / dt, stream.position))
            if interrupted():
                path = save(LATEST, step, elapsed)
                status, message = "interrupted", f"interrupted: saved the state after step {step} to {path}"
                break
            if step % tc.eval_every == 0 or step == total:
                t1 = time.perf_counter()
                val_loss = evaluate.mean_loss(params, mc, val_ids)
                elapsed += time.perf_counter() - t1
                history["step"].append(step)
                history["train_loss"].append(float(np.mean(since_eval)))
                history["val_loss"].append(val_loss)
                since_eval = []
                improved = best is None or val_loss < best
                if improved:
                    best, best_step = val_loss, step
                save(LATEST, step, elapsed)
                if improved:
                    save(BEST, step, elapsed)
                reporter.note(f"step {step}  val loss {val_loss:.3f} nats/char  {evaluate.bits(val_loss):.3f} bits/char"
                              f"{'  (best)' if improved else ''}")
    if status == "done":
        message = (f"done: {step} steps; best val loss {best:.3f} nats/char at step {best_step}, "
                   f"saved as {os.path.join(run_dir, BEST)}")
    if not os.listdir(run_dir):
        os.rmdir(run_dir)  # diverged before anything was saved: leave no empty run behind
    return Result(run_dir=run_dir, status=status, step=step, best_val_loss=best, message=message)


def _stem(path) -> str:
    return os.path.splitext(os.path.basename(os.fspath(path)))[0] or "run"


def make_run_dir(checkpoint_dir, run_name: str | None, default_name: str) -> str:
    """Create this run's own folder under checkpoint_dir. A default name gets the first free
    suffix (-1, -2, ...) so earlier runs are never touched; an explicit run name that already holds
    files is refused."""
    checkpoint_dir = os.fspath(checkpoint_dir)
    try:
        os.makedirs(checkpoint_dir, exist_ok=True)
        if run_name is not None:
            path = os.path.join(checkpoint_dir, run_name)
            if os.path.isdir(path) and os.listdir(path):
                raise CharnnError(f"run folder {path} already holds checkpoints; choose another --run-name")
            os.makedirs(path, exist_ok=True)
            return path
        n = 1
        while True:
            path = os.path.join(checkpoint_dir, f"{default_name}-{n}")
            try:
                os.mkdir(path)
                return path
            except FileExistsError:
                n += 1
    except CharnnError:
        raise
    except OSError as e:
        raise CharnnError(f"cannot write checkpoints to {checkpoint_dir}: {e.strerror or e}; choose another --checkpoint-dir") from None


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
