"""The two records that describe a run: what the model is, and how it is trained.

Both are saved inside every checkpoint (as JSON in its header), so `charnn sample` can rebuild the
model and a later run can see how an earlier one was made (as nanoGPT keeps its config in its
checkpoints). `validate()` gives the one-line messages users see for bad settings.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from charnn.errors import CharnnError
from charnn.schedule import SCHEDULES

MODELS = ("rnn", "lstm", "gru")
OPTIMIZERS = ("adam", "rmsprop", "adagrad", "sgd")
DTYPES = ("float32", "float64")
# What a resumed run may change (TrainConfig fields, in the order `charnn train --help` shows them);
# every other field defines the run (model, data layout, randomness). The CLI's run options and the
# README's resume section are checked against this list by the tests.
RESUMABLE = ("steps", "epochs", "time_budget", "learning_rate", "lr_schedule", "warmup_steps", "grad_clip",
             "eval_every", "patience", "sample_every", "keep_every")
DEFAULT_STEPS = 2800  # the limit of `charnn train` when none of --steps, --epochs, --time-budget is given
# Characters a validation pass scores at most (--val-chars). At the default settings a training
# step of B x T = 2,048 characters takes as long as scoring 5,100 to 5,700 (measured; `charnn bench
# --corpus-mb 100` reports it), so the 400 steps between two evaluations are worth about 2 M scored
# characters: 200,000 keeps an evaluation near a tenth of the training time, and still scores tiny
# shakespeare's 111,539 validation characters whole.
DEFAULT_VAL_CHARS = 200_000


def _positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CharnnError(f"{name} must be a positive whole number, got {value!r}")


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise CharnnError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape. V = vocab_size, H = hidden_size, L = num_layers."""

    model: str = "lstm"  # "rnn" (tanh recurrence), "lstm" or "gru"
    vocab_size: int = 65  # V: characters in the vocabulary (input and output width)
    hidden_size: int = 384  # H: units in each recurrent layer
    num_layers: int = 2  # L: stacked recurrent layers; layer l reads layer l-1's hidden state
    dropout: float = 0.2  # p: drop probability between layers and before the output, in training only

    def validate(self) -> "ModelConfig":
        _choice("--model", self.model, MODELS)
        _positive("the vocabulary size", self.vocab_size)
        _positive("--hidden-size", self.hidden_size)
        _positive("--num-layers", self.num_layers)
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise CharnnError(f"--dropout must be a probability, at least 0 (off) and below 1, got {p!r}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return _from_dict(cls, d, "model config").validate()


@dataclass(frozen=True)
class TrainConfig:
    """How the model is trained. T = seq_length, B = batch_size."""

    seq_length: int = 64  # T: characters per window; backprop runs through all T steps
    batch_size: int = 32  # B: parallel contiguous streams over the training text
    steps: int | None = None  # stop after this many updates in all (None: another limit ends the run)
    epochs: float | None = None  # stop after this many passes over the training split
    learning_rate: float = 3e-3
    optimizer: str = "adam"
    grad_clip: float = 5.0  # maximum global gradient norm; 0 turns clipping off
    val_frac: float = 0.1  # the last val_frac of the text is the validation split
    eval_every: int = 400  # steps between validation passes (and checkpoints)
    random_seed: int = 0
    dtype: str = "float32"
    lr_schedule: str = "cosine"  # how the rate changes over the run (schedule.py)
    warmup_steps: int = 0  # steps of linear warm-up before the schedule
    time_budget: float | None = None  # seconds of training (the run's total, across resumes)
    patience: int | None = None  # stop after this many evaluations without a better val loss
    sample_every: int | None = None  # steps between short samples printed during training
    keep_every: int | None = None  # steps between kept snapshots (step-NNNNNNN.npz)
    val_chars: int | None = DEFAULT_VAL_CHARS  # validation characters an evaluation scores at most (None: all)

    def validate(self) -> "TrainConfig":
        _positive("--seq-length", self.seq_length)
        _positive("--batch-size", self.batch_size)
        _positive("--eval-every", self.eval_every)
        if self.steps is None and self.epochs is None and self.time_budget is None:
            raise CharnnError("give --steps, --epochs or --time-budget: training needs an end")
        if self.steps is not None:
            _positive("--steps", self.steps)
        if self.epochs is not None and not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise CharnnError(f"--epochs must be a positive number, got {self.epochs!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise CharnnError(f"--learning-rate must be a positive number, got {self.learning_rate!r}")
        if not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise CharnnError(f"--grad-clip must be 0 (off) or a positive number, got {self.grad_clip!r}")
        if not 0 < self.val_frac < 1:
            raise CharnnError(f"--val-frac must be between 0 and 1 (exclusive), got {self.val_frac!r}")
        if not isinstance(self.random_seed, int) or self.random_seed < 0:
            raise CharnnError(f"--random-seed must be a whole number >= 0, got {self.random_seed!r}")
        _choice("--optimizer", self.optimizer, OPTIMIZERS)
        _choice("--dtype", self.dtype, DTYPES)
        _choice("--lr-schedule", self.lr_schedule, SCHEDULES)
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise CharnnError(f"--warmup-steps must be a whole number >= 0, got {self.warmup_steps!r}")
        if self.time_budget is not None and not (self.time_budget > 0 and math.isfinite(self.time_budget)):
            raise CharnnError(f"--time-budget must be a positive duration, got {self.time_budget!r}")
        for name, value in (("--patience", self.patience), ("--sample-every", self.sample_every),
                            ("--keep-every", self.keep_every), ("--val-chars", self.val_chars)):
            if value is not None:
                _positive(name, value)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return _from_dict(cls, d, "training config").validate()


# What a field added to charnn later means when a checkpoint written before it lacks it: the
# behaviour of the charnn that wrote it (not today's default, which may be a tuned recipe).
ABSENT = {"dropout": 0.0, "lr_schedule": "constant", "warmup_steps": 0, "time_budget": None, "patience": None,
          "sample_every": None, "keep_every": None, "val_chars": None}


def _from_dict(cls, d: dict, what: str):
    """Rebuild a config from a checkpoint header: unknown fields are refused, and fields added to
    charnn after the checkpoint was written take the value that means what the old charnn did."""
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(d, dict) or not set(d) <= names:
        raise CharnnError(f"the checkpoint's {what} has fields this version of charnn does not know")
    return cls(**{**{k: v for k, v in ABSENT.items() if k in names}, **d})
