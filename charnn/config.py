"""The two records that describe a run: what the model is, and how it is trained.

Both are saved inside every checkpoint (as JSON in its header), so `charnn sample` can rebuild the
model and a later run can see how an earlier one was made (as nanoGPT keeps its config in its
checkpoints). Each field is described once, where it is declared (`setting`): its default, what
it may hold (a rule of fields.py), what it means, and what its absence from an older checkpoint
means. `validate()` checks a config made on the command line, in the words of its options;
`from_dict()` checks one read from a checkpoint, naming the header field (fields.Invalid).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from charnn.errors import CharnnError
from charnn.fields import REQUIRED, Field, Invalid, Maybe, Number, OneOf, Record, Rule, Whole
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
# step of B x T = 2,048 characters takes as long as scoring 4,300 to 5,700 (measured; `charnn bench
# --corpus-mb 100` reports it), so the 400 steps between two evaluations are worth 1.7 to 2.3 M
# scored characters: 150,000 keeps an evaluation under a tenth of the training time (200,000 measured
# 9.7% to 11.5% of it), and still scores tiny shakespeare's 111,539 validation characters whole.
DEFAULT_VAL_CHARS = 150_000


def setting(default, rule: Rule, text: str, absent=REQUIRED):
    """A config field: its default, what it may hold, what it means, and what it means when a
    checkpoint written before charnn had it lacks it (the behaviour of the charnn that wrote it,
    not today's default, which may be a tuned recipe)."""
    return dataclasses.field(default=default, metadata={"field": Field(rule, text, absent)})


def record(cls) -> Record:
    """The fields of ModelConfig or TrainConfig as a Record: how a checkpoint header holds them
    (with the class's check_across, the check between its fields, if it has one)."""
    fields = {f.name: f.metadata["field"] for f in dataclasses.fields(cls)}
    return Record(fields, "an object", across=getattr(cls, "check_across", None))


def _check_options(config) -> None:
    """Every field against its rule, in the words of the command line (the field's option)."""
    for name, field in record(type(config)).fields.items():
        value, rule = getattr(config, name), field.rule
        if isinstance(rule, Maybe):  # None is "not given" on the command line: only a given value is checked
            if value is None:
                continue
            rule = rule.rule
        try:
            rule.check(value, name)
        except Invalid as e:
            raise CharnnError(f"--{name.replace('_', '-')} must be {e.expected}, got {value!r}") from None


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape. V = vocab_size, H = hidden_size, L = num_layers."""

    model: str = setting("lstm", OneOf(*MODELS), "the recurrent cell: rnn (tanh recurrence), lstm or gru")
    vocab_size: int = setting(65, Whole(1), "V: characters in the vocabulary (input and output width)")
    hidden_size: int = setting(384, Whole(1), "H: units in each recurrent layer")
    num_layers: int = setting(2, Whole(1), "L: stacked recurrent layers; layer l reads layer l-1's hidden state")
    dropout: float = setting(0.2, Number(0, 1, below=True, doc="a probability, at least 0 (off) and below 1"),
                             "p: drop probability between layers and before the output, in training only", absent=0.0)

    def validate(self) -> "ModelConfig":
        _check_options(self)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, name: str = "model") -> "ModelConfig":
        """Rebuild the config from a checkpoint header's `name` field; Invalid names a bad field."""
        return cls(**record(cls).check(d, name))


@dataclass(frozen=True)
class TrainConfig:
    """How the model is trained. T = seq_length, B = batch_size."""

    seq_length: int = setting(64, Whole(1), "T: characters per window; backprop runs through all T steps")
    batch_size: int = setting(32, Whole(1), "B: parallel contiguous streams over the training text")
    steps: int | None = setting(None, Maybe(Whole(1)),
                                "stop after this many updates in all (null: another limit ends the run)")
    epochs: float | None = setting(None, Maybe(Number(above=True)),
                                   "stop after this many passes over the training split")
    learning_rate: float = setting(3e-3, Number(above=True), "the base step size of the optimizer")
    optimizer: str = setting("adam", OneOf(*OPTIMIZERS), "the update rule")
    grad_clip: float = setting(5.0, Number(doc="0 (off) or a positive number"),
                               "maximum global gradient norm; 0 turns clipping off")
    val_frac: float = setting(0.1, Number(0, 1, above=True, below=True, doc="between 0 and 1 (exclusive)"),
                              "the last val_frac of the text is the validation split")
    eval_every: int = setting(400, Whole(1), "steps between validation passes (and checkpoints)")
    random_seed: int = setting(0, Whole(0), "the seed of the run's random generator")
    dtype: str = setting("float32", OneOf(*DTYPES), "the floating-point type of training")
    lr_schedule: str = setting("cosine", OneOf(*SCHEDULES), "how the rate changes over the run (schedule.py)",
                               absent="constant")
    warmup_steps: int = setting(0, Whole(0), "steps of linear warm-up before the schedule", absent=0)
    time_budget: float | None = setting(None, Maybe(Number(above=True, doc="a positive duration in seconds")),
                                        "seconds of training (the run's total, across resumes)", absent=None)
    patience: int | None = setting(None, Maybe(Whole(1)), "stop after this many evaluations without a better val loss",
                                   absent=None)
    sample_every: int | None = setting(None, Maybe(Whole(1)), "steps between short samples printed during training",
                                       absent=None)
    keep_every: int | None = setting(None, Maybe(Whole(1)), "steps between kept snapshots (step-NNNNNNN.npz)",
                                     absent=None)
    val_chars: int | None = setting(DEFAULT_VAL_CHARS, Maybe(Whole(1)),
                                    "validation characters an evaluation scores at most, a fixed subset spread over "
                                    "the split (null: all of it)", absent=None)

    def validate(self) -> "TrainConfig":
        _check_options(self)
        if not _has_an_end(self.to_dict()):
            raise CharnnError("give --steps, --epochs or --time-budget: training needs an end")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, name: str = "train") -> "TrainConfig":
        """Rebuild the config from a checkpoint header's `name` field; Invalid names a bad field."""
        return cls(**record(cls).check(d, name))

    @staticmethod
    def check_across(values: dict, name: str) -> None:
        """validate()'s check between fields, for a header's `name` field (its values checked)."""
        if not _has_an_end(values):
            raise Invalid(f"{name}.steps", None, "a positive whole number, as epochs and time_budget are null too "
                                                 "(a run needs an end)")


def _has_an_end(values: dict) -> bool:
    return any(values[k] is not None for k in ("steps", "epochs", "time_budget"))
