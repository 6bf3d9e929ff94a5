"""What a training run tells its user: the Reporter interface, and every line it is given.

The loop (train.py) decides when to speak; this file decides what the lines say, so they can be
read, and changed, in one place. Nothing here prints.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from charnn import evaluate, schedule


@dataclass
class Progress:
    step: int  # updates done
    total_steps: int  # the expected number at the end (the time budget can make it an estimate)
    loss: float  # this step's training loss, nats/char
    grad_norm: float  # before clipping
    chars_per_sec: float  # B*T / time of this step
    epoch: float  # passes over the training split, fractional
    learning_rate: float


class Task:
    """A long part of the way to the first step (encoding a corpus, checking its cache, fitting the
    baselines), told how much of `total` is done; the CLI shows it as a progress bar."""

    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Reporter:
    """Where the loop's news goes. The default ignores it all; the CLI draws a progress bar."""

    def task(self, description: str, total: int, unit: str = "it") -> Task:
        return Task()

    def start(self, total_steps: int, first_step: int) -> None: ...

    def step(self, progress: Progress) -> None: ...

    def note(self, line: str) -> None: ...

    def close(self) -> None: ...


def show(name: str, value) -> str:
    """A setting's value as the user would type it."""
    if value is None:
        return "none"
    if name == "time_budget":
        return schedule.format_duration(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def resuming(checkpoint_path: str, step: int, old_config, changes: dict, branch_dir: str | None) -> str:
    changed = ", ".join(f"--{k.replace('_', '-')} {show(k, getattr(old_config, k))} -> {show(k, v)}"
                        for k, v in changes.items())
    line = f"resuming {checkpoint_path} at step {step}" + (f"; changed: {changed}" if changed else "; same settings")
    if branch_dir is not None:
        line += f"; continuing in {branch_dir} (the folder's latest.npz is newer, damaged or another run's)"
    if old_config.lr_schedule != "constant" and ({"steps", "epochs", "time_budget"} & set(changes)):
        line += "; the learning-rate schedule is now sized by the new limit"
    return line


def limit_already_reached(step: int, elapsed: float, steps_spent: bool, time_spent: bool) -> str:
    """Name the limit that is spent: raising another one would not continue the run."""
    spent, wanted = [], []
    if steps_spent:
        spent.append(f"its step limit ({step:,} steps)")
        wanted.append("a larger --steps (the run's total) or --epochs")
    if time_spent:
        spent.append(f"its time budget ({schedule.format_duration(elapsed)} of training)")
        wanted.append("a larger --time-budget")
    return f"this run already reached {' and '.join(spent)}; give {' and '.join(wanted)} to continue it"


def megabytes(n: int) -> str:
    """A size in bytes, readably: 3.1 KB, 1.1 MB, 105 MB."""
    if n < 1e6:
        return f"{n / 1e3:.1f} KB"
    return f"{n / 1e6:,.1f} MB" if n < 1e8 else f"{n / 1e6:,.0f} MB"


def home_short(path: str) -> str:
    """A path under the user's home folder written from ~, as a shell would show it."""
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if home != "~" and path.startswith(home + os.sep) else path


def seconds(s: float) -> str:
    return f"{s:.2f} s" if s < 1 else f"{s:.1f} s"


def data(corpus, source, batch_size: int, seq_length: int) -> str:
    """Where the ids are, what getting them cost, and what they take in memory."""
    size = corpus.ids.dtype.itemsize
    line = f"data: {len(corpus.ids):,} characters, {corpus.vocab.size} distinct ({size} byte{'s' if size > 1 else ''} an id); "
    if source.cache is None:
        line += f"ids encoded in {seconds(source.seconds)} (--no-cache)"
    else:
        how = "reused, checked in" if source.status == "reused" else f"{source.status} in"
        line += f"id cache {how} {seconds(source.seconds)}: {home_short(source.cache)}"
    if source.in_memory:
        return line + f"; the ids in memory, {megabytes(source.nbytes)}"
    return line + f" ({megabytes(source.nbytes)} on disk, mapped: a step reads {batch_size} x {seq_length + 1} ids)"


def coverage(bits: dict, train_chars: int, val_chars: int) -> tuple[str, str]:
    """What the baselines were scored on and fitted on, in words: the whole splits, or how much."""
    scored, fitted = bits["scored_chars"] or val_chars - 1, bits["fit_chars"] or train_chars  # None: all
    on = ("the validation split" if scored >= val_chars - 1
          else f"the {scored:,} validation characters each evaluation scores")
    fit = "the training split" if fitted >= train_chars else f"the first {fitted:,} training characters"
    return on, fit


def baselines(bits: dict, train_chars: int, val_chars: int) -> str:
    on, fit = coverage(bits, train_chars, val_chars)
    return (f"baselines on {on}: unigram {bits['unigram_bits']:.3f} bits/char, "
            f"{bits['ngram_order']}-gram {bits['ngram_bits']:.3f} bits/char (fitted on {fit})")


def too_small(n_params: int, train_chars: int, smaller: tuple[int, int] | None) -> str:
    """The small-corpus warning; smaller is (a --hidden-size to try, its parameters), if there is one."""
    hidden = f"a smaller --hidden-size ({smaller[0]} gives {smaller[1]:,} parameters), " if smaller else ""
    return (f"warning: {n_params:,} parameters for {train_chars:,} training characters: the model can learn the "
            f"text by heart, so expect it to overfit (the validation loss rising again) within a few epochs; try "
            f"{hidden}--patience 3 to stop when the validation loss stops improving, or more --dropout")


def preflight(model_config, config, n_params: int, activation_mb: float, corpus: dict, val_scored: int, steps_to_go: int,
              by_time_budget: bool, windows_per_epoch: int, step_time: float, run_dir: str) -> str:
    shape = f"{model_config.model} {model_config.num_layers}x{model_config.hidden_size}"
    subset = f", {val_scored:,} scored per evaluation" if val_scored < corpus["val_chars"] - 1 else ""
    return (f"pre-flight: {shape}, {n_params:,} parameters; activations "
            f"~{activation_mb:.0f} MB at B {config.batch_size}, T {config.seq_length}; corpus {corpus['chars']:,} "
            f"characters ({corpus['train_chars']:,} train, {corpus['val_chars']:,} val{subset}); {steps_to_go:,} steps to go"
            f"{' (time budget)' if by_time_budget else ''}, {steps_to_go / windows_per_epoch:.2f} epochs; "
            f"~{step_time:.3f} s a step, ~{schedule.format_duration(steps_to_go * step_time)}; checkpoints in {run_dir}")


def evaluated(step: int, val_loss: float, bits: dict, improved: bool) -> str:
    return (f"step {step}  val loss {val_loss:.3f} nats/char  {evaluate.bits(val_loss):.3f} bits/char"
            f"  (unigram {bits['unigram_bits']:.2f}, {bits['ngram_order']}-gram {bits['ngram_bits']:.2f})"
            f"{'  best' if improved else ''}")


def sample(step: int, temperature: float, text: str) -> str:
    return f"--- sample at step {step} (temperature {temperature}) ---\n{text}\n---"


def rolled_back(bad_step: int, loss: float, back_to: int, lr_scale: float) -> str:
    what = "NaN or infinite" if not math.isfinite(loss) else f"{loss:.3f}, far above its recent mean"
    return (f"step {bad_step}: loss {what}; rolled back to step {back_to}, learning rate halved "
            f"(now x{lr_scale:g}), batch skipped")


def gave_up(loss: float, rollbacks_in_a_row: int, step: int, best: float | None, best_step: int | None) -> str:
    cause = "NaN or infinite" if not math.isfinite(loss) else "far above its recent level"
    if step > 0:
        kept = f"latest.npz holds the last good state (step {step})"
        if best is not None:
            kept += f", best.npz the best (val loss {best:.3f} at step {best_step})"
    else:
        kept = "no update was made, so nothing was saved"
    return (f"the loss was still {cause} after {rollbacks_in_a_row} rollbacks in a row; training stopped; {kept}; "
            "try a lower --learning-rate or --grad-clip")


def finished(status: str, state, patience: int | None, best_path: str, val_scored: int) -> str:
    reason = {"done": "done", "time budget": "the time budget is spent",
              "patience": f"no better validation loss in {patience} evaluations"}[status]
    return (f"{reason}: {state.step} steps in {schedule.format_duration(state.elapsed)}; best val loss "
            f"{state.best:.3f} nats/char at step {state.best_step} ({val_scored:,} validation characters scored), "
            f"saved as {best_path}")
