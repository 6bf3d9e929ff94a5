"""The checkpoint's header, described once: each field's type and range, what it holds, and what
its absence means in a checkpoint written before the field existed (same format version).

validate() checks a header read from a file against this description, field by field (nested
fields too), then the fields against each other, before anything reads it; what it returns has
every described field, absent ones filled in. table() writes README's table of the header from
the same description (a test holds the two equal), so the checks, the documentation and the
format cannot drift apart.

Adding a field to the format is one entry here: in RUN_FACTS (fixed for a whole run) or RUN_STATE
(changes as it goes, train.RunState), or in the Record of the field it belongs to. A new setting
of ModelConfig or TrainConfig is one `setting(...)` line in config.py instead. A field older
checkpoints lack needs `absent=` (what they did without it); a check between fields goes in
_check_across.
"""

from __future__ import annotations

import json
import os

from charnn import data
from charnn.config import ModelConfig, TrainConfig, record
from charnn.fields import REQUIRED, Field, Invalid, ListOf, Maybe, Number, OneOf, Record, Text, Whole, rows

FORMAT = "charnn-checkpoint"
VERSION = 1


def _is_vocab(chars: str) -> bool:
    """Distinct characters in sorted order, each a Unicode scalar value (what data.Vocab makes
    of a strict UTF-8 text: no lone surrogate, which could not be printed)."""
    return chars != "" and list(chars) == sorted(set(chars)) and not any("\ud800" <= c <= "\udfff" for c in chars)


def _is_path(path: str) -> bool:
    """A path open() takes: not empty, no NUL, and encodable as a file name (a lone surrogate is
    not, unless it stands for an undecodable byte of a real name)."""
    try:
        return path != "" and "\0" not in path and bool(os.fsencode(path))
    except UnicodeEncodeError:
        return False


_HEX_DIGITS = set("0123456789abcdef")
_UINT128 = Whole(0, 2 ** 128 - 1, doc="a whole number from 0 to 2**128 - 1")


def _check_history(history: dict, name: str) -> None:
    """One entry per evaluation in each list, in the order they were made."""
    steps = history["step"]
    for key in ("train_loss", "val_loss"):
        if len(history[key]) != len(steps):
            raise Invalid(f"{name}.{key}", history[key], f"a list of {len(steps)}, as long as {name}.step")
    for i in range(1, len(steps)):
        if steps[i] <= steps[i - 1]:
            raise Invalid(f"{name}.step[{i}]", steps[i], f"a step after {name}.step[{i - 1}] ({steps[i - 1]})")


FORMAT_FIELDS = {
    "format": Field(OneOf(FORMAT), "the format's name"),
    "version": Field(OneOf(VERSION), "the format's version"),
}
RUN_FACTS = {
    "model": Field(record(ModelConfig), "the ModelConfig: the network's shape"),
    "train": Field(record(TrainConfig), "the TrainConfig: every training option"),
    "vocab": Field(Text("a non-empty string of distinct characters in sorted order", _is_vocab),
                   "the vocabulary, its characters in id order"),
    "corpus": Field(Record({
        "path": Field(Text("a file path", _is_path),
                      "the text's absolute path when it was trained on"),
        "sha256": Field(Text("64 lowercase hexadecimal digits", lambda s: len(s) == 64 and set(s) <= _HEX_DIGITS),
                        "the SHA-256 of its bytes, which a resumed run checks"),
        "chars": Field(Whole(2), "characters in the text"),
        "train_chars": Field(Whole(1), "characters in its training split"),
        "val_chars": Field(Whole(1), "characters in its validation split"),
    }), "the text trained on"),
    "baselines": Field(Maybe(Record({
        "unigram_bits": Field(Number(), "the add-one unigram model's bits per character"),
        "ngram_order": Field(Whole(1, 64), "the order of the n-gram model"),
        "ngram_bits": Field(Number(), "the n-gram model's bits per character"),
        "fit_chars": Field(Maybe(Whole(1)), "the training characters they were fitted on, the first ones (null: all "
                                            "of the split)", absent=None),
        "scored_chars": Field(Maybe(Whole(1)), "the validation characters they were scored on, those an evaluation "
                                               "scores (null: every one after the first)", absent=None),
    })), "the reference models on the validation split (null: not computed yet; resume computes them)", absent=None),
    "parent": Field(Maybe(Record({
        "path": Field(Text("a file path", _is_path), "its absolute path when the run started"),
        "step": Field(Whole(0), "its step"),
        "corpus": Field(Text("a file path", _is_path), "the path of the text it was trained on"),
        "added": Field(Text("distinct characters in sorted order", lambda s: s == "" or _is_vocab(s)),
                       "the characters of the new text it lacked, added to the vocabulary"),
    })), "the checkpoint a fine-tuned run started from (`train --init-from`; null: a run from scratch)", absent=None),
}
RUN_STATE = {
    "step": Field(Whole(0), "updates applied"),
    "data": Field(Record({
        "epoch": Field(Whole(0), "completed passes over the training split"),
        "window": Field(Whole(0), "the pass's next window, below the windows a pass has"),
    }), "the batch cursor"),
    "rng": Field(Record({
        "bit_generator": Field(OneOf("PCG64"), "the generator numpy's default_rng makes"),
        "state": Field(Record({"state": Field(_UINT128, "its 128-bit state"),
                               "inc": Field(_UINT128, "its 128-bit increment")}), "the generator's state"),
        "has_uint32": Field(OneOf(0, 1), "whether half of a 64-bit draw is kept for the next 32-bit one"),
        "uinteger": Field(Whole(0, 2 ** 32 - 1, doc="a whole number from 0 to 2**32 - 1"), "that half"),
    }), "the run's random generator after initialisation, as numpy's bit_generator.state gives it "
       "(dropout masks no longer come from it: they follow from train.random_seed and the batch's number, "
       "masks.py)"),
    "elapsed_seconds": Field(Number(), "training time across resumes"),
    "val_loss": Field(Maybe(Number()), "the validation loss at the last evaluation, nats per character (null before one)"),
    "best_val_loss": Field(Maybe(Number()), "the best validation loss so far (null before an evaluation)"),
    "best_step": Field(Maybe(Whole(0)), "the step of the best validation loss, one of history.step (null before an "
                                        "evaluation)"),
    "lr_scale": Field(Number(0, 1, above=True), "the learning-rate multiplier, halved by every rollback"),
    "rollbacks": Field(Whole(0), "rollbacks made in all"),
    "recent_losses": Field(ListOf(Number()), "the last training losses, the divergence check's reference"),
    "workers": Field(Whole(1), "the processes the run's last session trained on (data-parallel ranks, parallel.py)",
                     absent=1),
    "history": Field(Record({
        "step": Field(ListOf(Whole(0)), "the step of every evaluation, increasing, at most step"),
        "train_loss": Field(ListOf(Maybe(Number())), "the mean of the last training losses before it, at most 50 and "
                                                  "at most eval_every of them (null if none)"),
        "val_loss": Field(ListOf(Number()), "its validation loss"),
    }, across=_check_history), "every evaluation, three lists of one length"),
}
FIELDS = {**FORMAT_FIELDS, **RUN_FACTS, **RUN_STATE}


def _check_across(h: dict, name: str) -> None:
    """What no single field shows: the fields agree with each other, so that nothing that reads
    them (describe, resume, the training loop) meets a state a run cannot be in."""
    model, train, corpus = h["model"], h["train"], h["corpus"]
    if model["vocab_size"] != len(h["vocab"]):
        raise Invalid("model.vocab_size", model["vocab_size"], f"{len(h['vocab'])}, the number of characters in vocab")
    if corpus["train_chars"] + corpus["val_chars"] != corpus["chars"]:
        raise Invalid("corpus.chars", corpus["chars"], f"{corpus['train_chars'] + corpus['val_chars']}, "
                                                       "corpus.train_chars + corpus.val_chars")
    B, T = train["batch_size"], train["seq_length"]
    windows = data.windows_per_epoch(corpus["train_chars"], B, T)
    if windows < 1:
        raise Invalid("corpus.train_chars", corpus["train_chars"],
                      f"at least {B * (T + 1)}: train.seq_length + 1 characters for each of train.batch_size streams")
    if h["data"]["window"] >= windows:
        raise Invalid("data.window", h["data"]["window"], f"below {windows}, the windows in a pass over "
                                                          "corpus.train_chars at train.batch_size x train.seq_length")
    if h["parent"] is not None and not set(h["parent"]["added"]) <= set(h["vocab"]):
        raise Invalid("parent.added", h["parent"]["added"], "characters of vocab")
    steps = h["history"]["step"]
    if steps and steps[-1] > h["step"]:
        raise Invalid("history.step", steps, f"steps up to {h['step']}, the header's step")
    if (h["best_val_loss"] is None) != (h["best_step"] is None):
        raise Invalid("best_step", h["best_step"], "null exactly when best_val_loss is null")
    if h["best_step"] is not None and h["best_step"] not in steps:
        raise Invalid("best_step", h["best_step"], "one of the steps in history.step")


HEADER = Record(FIELDS, "a JSON object", across=_check_across)


def validate(header) -> dict:
    """The header with every field checked and absent ones filled in; raises fields.Invalid,
    which names the field (dotted for nested ones), what it holds and what was expected."""
    return HEADER.check(header, "")


def table() -> str:
    """README's table of the header: every field, nested ones after their parent."""
    lines = ["| field | value | if absent | contents |", "| --- | --- | --- | --- |"]
    for name, field in rows(FIELDS):
        absent = "required" if field.absent is REQUIRED else f"`{json.dumps(field.absent)}`"
        lines.append(f"| `{name}` | {field.rule.doc} | {absent} | {field.text} |")
    return "\n".join(lines)
