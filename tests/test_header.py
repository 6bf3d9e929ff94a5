"""The header's one description (header.py, fields.py): the README's table, each kind of check,
what absent fields mean, and the checks across fields that keep a loaded run sound."""

import json
import math
import os

import numpy as np
import pytest

from charnn import header as header_format
from charnn import train
from charnn.config import ModelConfig, TrainConfig
from charnn.errors import CharnnError
from charnn.fields import Invalid

from conftest import tiny_configs
from test_checkpoint import make_checkpoint


@pytest.fixture
def header(rng):
    """A valid header (that of test_checkpoint's checkpoint: LSTM, V 5, B 3, T 64, step 7)."""
    return dict(make_checkpoint(rng).header, format=header_format.FORMAT, version=header_format.VERSION)


DELETE = object()  # the value that removes a field


def edited(header, **changes):
    """A copy of header with fields set, or deleted by DELETE; a nested field's keyword joins its
    names with a double underscore (history__step=[5])."""
    h = json.loads(json.dumps(header))
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        parent = h
        for p in parents:
            parent = parent[p]
        if value is DELETE:
            del parent[key]
        else:
            parent[key] = value
    return h


def invalid(header) -> str:
    with pytest.raises(Invalid) as e:
        header_format.validate(header)
    return str(e.value)


def test_the_readme_table_of_the_header_is_the_description_in_the_code():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    assert header_format.table() in readme


def test_a_valid_header_comes_back_whole(header):
    assert header_format.validate(header) == dict(header, baselines=None, parent=None, workers=1)  # absent ones mean null


def test_fields_an_older_checkpoint_lacks_mean_what_it_did(header):
    h = edited(header, model__dropout=DELETE, train__lr_schedule=DELETE, train__warmup_steps=DELETE)
    checked = header_format.validate(h)
    assert checked["model"]["dropout"] == 0.0 and checked["train"]["lr_schedule"] == "constant"
    assert checked["train"]["warmup_steps"] == 0 and checked["baselines"] is None


@pytest.mark.parametrize("field,value,message", [
    ("step", True, "step holds true; expected a whole number >= 0"),
    ("step", 7.0, "step holds 7.0; expected a whole number >= 0"),
    ("step", 2 ** 53 + 1, "step holds 9007199254740993; expected a whole number >= 0, at most 9007199254740992"),
    ("step", None, "step holds null; expected a whole number >= 0"),
    ("elapsed_seconds", math.nan, "elapsed_seconds holds NaN; expected a number >= 0"),
    ("lr_scale", math.inf, "lr_scale holds Infinity; expected a number above 0 and at most 1"),
    ("lr_scale", 0.0, "lr_scale holds 0.0; expected a number above 0 and at most 1"),
    ("best_val_loss", -1.0, "best_val_loss holds -1.0; expected null or a number >= 0"),
    ("vocab", "ba", 'vocab holds "ba"; expected a non-empty string of distinct characters in sorted order'),
    ("vocab", "a\ud800", "vocab holds"),
    ("corpus__sha256", "0" * 63, "corpus.sha256 holds"),
    ("corpus__path", "a\0b", "corpus.path holds"),
    ("corpus__chars", DELETE, "corpus.chars is missing; expected a whole number >= 2"),
    ("train__optimizer", "lbfgs", 'train.optimizer holds "lbfgs"; expected one of adam, rmsprop, adagrad, sgd'),
    ("train__batch_size", "3", 'train.batch_size holds "3"; expected a positive whole number'),
    ("train__surplus", 1, "train.surplus holds 1; expected no such field (this version of charnn does not know it)"),
    ("surplus", [1], "surplus holds [1]; expected no such field"),
    ("rng__state__inc", 2 ** 128, "rng.state.inc holds 340282366920938463463374607431768211456; expected a whole "
                                  "number from 0 to 2**128 - 1"),
    ("rng__state", [1, 2], "rng.state holds [1, 2]; expected an object with the fields state, inc"),
    ("rng__bit_generator", "MT19937", 'rng.bit_generator holds "MT19937"; expected "PCG64"'),
    ("history__val_loss", [1.6, "x"], 'history.val_loss[1] holds "x"; expected a number >= 0'),
    ("data", None, "data holds null; expected an object with the fields epoch, window"),
    ("recent_losses", "x" * 100, 'recent_losses holds "' + "x" * 36 + '...; expected a list, each a number >= 0'),
    ("parent", {"path": "/p.npz", "step": 3, "corpus": "/a.txt"}, "parent.added is missing"),
    ("parent", {"path": "/p.npz", "step": -3, "corpus": "/a.txt", "added": ""}, "parent.step holds -3"),
    ("parent", {"path": "/p.npz", "step": 3, "corpus": "/a.txt", "added": "za"}, 'parent.added holds "za"; expected '
                                                                                  "distinct characters in sorted order"),
])
def test_each_field_is_checked(header, field, value, message):
    assert invalid(edited(header, **{field: value})).startswith(message)


@pytest.mark.parametrize("changes,message", [
    ({"vocab": "\nabz"}, "model.vocab_size holds 5; expected 4, the number of characters in vocab"),
    ({"corpus__chars": 999}, "corpus.chars holds 999; expected 1000, corpus.train_chars + corpus.val_chars"),
    ({"corpus__train_chars": 194, "corpus__chars": 294},
     "corpus.train_chars holds 194; expected at least 195: train.seq_length + 1 characters for each of "
     "train.batch_size streams"),
    ({"data__window": 4}, "data.window holds 4; expected below 4, the windows in a pass over corpus.train_chars"),
    ({"history__train_loss": []}, "history.train_loss holds []; expected a list of 1, as long as history.step"),
    ({"history": {"step": [5, 5], "train_loss": [1.0, 1.0], "val_loss": [1.6, 1.6]}},
     "history.step[1] holds 5; expected a step after history.step[0] (5)"),
    ({"step": 4}, "history.step holds [5]; expected steps up to 4, the header's step"),
    ({"best_val_loss": None}, "best_step holds 5; expected null exactly when best_val_loss is null"),
    ({"best_step": 6}, "best_step holds 6; expected one of the steps in history.step"),
    ({"parent": {"path": "/p.npz", "step": 3, "corpus": "/a.txt", "added": "aq"}},
     'parent.added holds "aq"; expected characters of vocab'),
    ({"train__steps": None}, "train.steps holds null; expected a positive whole number, as epochs and time_budget "
                             "are null too (a run needs an end)"),
])
def test_the_fields_are_checked_against_each_other(header, changes, message):
    assert invalid(edited(header, **changes)).startswith(message)


def test_the_configs_name_the_field_from_a_header_and_the_option_from_the_command_line():
    d = dict(ModelConfig().to_dict(), hidden_size=0)
    with pytest.raises(Invalid, match="^model.hidden_size holds 0; expected a positive whole number$"):
        ModelConfig.from_dict(d)
    with pytest.raises(CharnnError, match="^--hidden-size must be a positive whole number, got 0$"):
        ModelConfig(hidden_size=0).validate()
    with pytest.raises(Invalid, match=r"^parent.train.epochs holds \{\}; expected null or a positive number$"):
        TrainConfig.from_dict(dict(TrainConfig(steps=1).to_dict(), epochs={}), "parent.train")
    with pytest.raises(CharnnError, match="^--seq-length must be a positive whole number, got True$"):
        TrainConfig(steps=1, seq_length=True).validate()


def test_resume_checks_the_header_against_the_corpus(tiny_corpus, tmp_path):
    """A header whose corpus numbers agree with each other but not with the text (its SHA-256
    matched) would put the batch cursor outside the real split: refused, naming the field."""
    mc, tc = tiny_configs("rnn", steps=4, eval_every=2)
    result = train.train(tiny_corpus, mc, tc, tmp_path, run_name="run")
    with np.load(result.latest, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    h = json.loads(str(arrays["header"]))
    chars = h["corpus"]["chars"]
    for changes, message in [({"corpus__chars": chars + 10, "corpus__val_chars": h["corpus"]["val_chars"] + 10},
                              f"header field corpus.chars holds {chars + 10}; expected {chars}, what {tiny_corpus} has"),
                             ({"vocab": h["vocab"][:-1] + "~"}, "header field vocab holds")]:
        with open(result.latest, "wb") as f:
            np.savez(f, **dict(arrays, header=np.array(json.dumps(edited(h, **changes)))))
        before = sorted(os.listdir(result.run_dir))
        with pytest.raises(CharnnError, match="latest.npz: " + message):
            train.resume(result.latest, {"steps": 8})
        assert sorted(os.listdir(result.run_dir)) == before
