"""A few hundred damaged and hand-edited checkpoints, made from a tiny real run by a seeded
generator: header fields deleted, retyped and put out of range (nested ones too), unknown fields
added, arrays of another dtype or shape, missing or extra, byte flips and truncations.

Each goes through what the commands call (checkpoint.load for every command; describe.describe
for info, sample.generate for sample, evaluate.score_text for eval, train.resume in full for
resume, train._would_overwrite for the latest.npz beside a resumed checkpoint; charnn.load for
the Python API) and a handful also through the CLI. Each must end in CharnnError, one line, with
nothing on disk changed, or load and then work; never in another exception.
"""

import json
import math
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import charnn
from charnn import checkpoint, describe, evaluate, fields, header as header_format, sample, train
from charnn.cli import cli
from charnn.config import ModelConfig, TrainConfig
from charnn.errors import CharnnError

from conftest import TINY_TEXT

SEED = 14
DESCRIBED = dict(fields.rows(header_format.FIELDS))  # dotted name -> its description
# Values of every JSON type, and the extremes Python's json reads and writes (NaN, infinity, an
# integer past 2**64, a NUL character).
WEIRD = [None, -1, 0, 1, 1.5, 1e12, 10 ** 30, True, math.nan, math.inf, -math.inf, "", "x", "\x00", "x" * 500,
         [], [1, 2], {}, {"a": 1}]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny GRU run with dropout (so its random state matters): 6 steps, evaluated at 3 and 6."""
    folder = tmp_path_factory.mktemp("fuzz")
    corpus = folder / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    mc = ModelConfig("gru", hidden_size=8, num_layers=1, dropout=0.1)
    tc = TrainConfig(seq_length=8, batch_size=2, steps=6, eval_every=3, learning_rate=0.03, lr_schedule="constant")
    result = train.train(corpus, mc, tc, folder, run_name="run")
    with np.load(result.latest, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return {"best": result.best, "arrays": arrays, "bytes": Path(result.latest).read_bytes(),
            "header": json.loads(str(arrays["header"]))}


# -- the mutations ----------------------------------------------------------------------------------

def _paths(value, prefix=()):
    """Every path into a JSON value: object keys, and the first and last index of lists."""
    if isinstance(value, dict):
        for key, v in value.items():
            yield prefix + (key,)
            yield from _paths(v, prefix + (key,))
    elif isinstance(value, list):
        for i in sorted({0, len(value) - 1}) if value else ():
            yield prefix + (i,)
            yield from _paths(value[i], prefix + (i,))


def _dotted(path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))


def _nudged(value, r: random.Random):
    """A value of the same type, out of range or just different."""
    if isinstance(value, bool) or value is None:
        return r.choice([0, 1.0, "none"])
    if isinstance(value, int):
        return r.choice([value + 1, value - 1, -value - 1, value * 1000 + 7, 2 ** 53 + 1, 2 ** 128])
    if isinstance(value, float):
        return r.choice([-value - 0.5, value * 1e6, 0.0, value / 2, 5e-324])
    if isinstance(value, str):
        return r.choice([value[:-1], value + value, value[::-1], value.upper(), value + "\ud800"])
    if isinstance(value, list):
        return r.choice([value[:-1], value + value[-1:], value[::-1]])
    return dict(value, unknown=1)


def _kind(value) -> str:
    if value is None or isinstance(value, (bool, str, list, dict)):
        return type(value).__name__
    return "number"


def header_mutations(header: dict, r: random.Random):
    """Per path: deleted, given two values of other types, nudged; plus unknown fields."""
    for path in _paths(header):
        old = _get(header, path)
        yield ("delete", path, None)
        for new in r.sample(WEIRD, 2):
            yield ("replace", path, new)
        yield ("replace", path, _nudged(old, r))
    for parent in [(), ("train",), ("corpus",), ("rng", "state"), ("history",)]:
        yield ("replace", parent + ("surplus",), 1)


def _get(value, path):
    for p in path:
        value = value[p]
    return value


def _mutated(header, op, path, new):
    h = json.loads(json.dumps(header))
    parent = _get(h, path[:-1])
    if op == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return h


def write_arrays(path, arrays, **kw):
    with open(path, "wb") as f:
        np.savez(f, **arrays, **kw)


def array_mutations(arrays: dict, r: random.Random):
    names = sorted(k for k in arrays if k != "header")
    changes = {
        "dtype float64": lambda a: a.astype(np.float64),
        "dtype int32": lambda a: a.astype(np.int32),
        "dtype float16": lambda a: a.astype(np.float16),
        "dtype complex": lambda a: a.astype(np.complex64),
        "one row less": lambda a: a[:-1],
        "an axis more": lambda a: a[None],
        "flattened": lambda a: a.reshape(-1),
        "transposed": lambda a: a.T.copy() if a.ndim > 1 else a[None],
        "a NaN": lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, np.nan, a).astype(a.dtype),
        "an infinity": lambda a: np.full_like(a, np.inf),
    }
    for _ in range(30):
        name, (what, change) = r.choice(names), r.choice(sorted(changes.items()))
        yield f"{name}: {what}", {**arrays, name: change(arrays[name])}
    for name in r.sample(names, 4):
        yield f"{name}: missing", {k: v for k, v in arrays.items() if k != name}
    yield "an extra array", {**arrays, "param/extra": np.zeros(3, np.float32)}
    yield "an extra optimizer slot", {**arrays, "optim/s/Why": arrays["param/Why"]}
    text = str(arrays["header"])
    for what, header in [("header as bytes", np.array(text.encode())), ("header as a list", np.array([text])),
                         ("header a number", np.array(1.0)), ("header not JSON", np.array(text[:-1])),
                         ("header a JSON list", np.array("[1, 2]")), ("header empty", np.array("")),
                         ("header nested 100,000 deep", np.array("[" * 100_000 + "]" * 100_000)),
                         ("header an integer of 5,000 digits", np.array(text[:-1] + ', "step": ' + "9" * 5000 + "}"))]:
        yield what, {**arrays, "header": header}
    yield "no header", {k: v for k, v in arrays.items() if k != "header"}


def all_mutations(run):
    """(description, write(path), the header field a refusal must name or None), seeded."""
    r = random.Random(SEED)
    header, arrays = run["header"], run["arrays"]
    out = []
    for op, path, new in header_mutations(header, r):
        changed = {**arrays, "header": np.array(json.dumps(_mutated(header, op, path, new), ensure_ascii=False))}
        old = _get(header, path) if op == "replace" and path[-1] != "surplus" else None
        # A required field deleted, an unknown one added, a value of another JSON type (null aside):
        # the message must name the field.
        described = DESCRIBED.get(_dotted(path))
        required = op == "delete" and described is not None and described.absent is fields.REQUIRED
        retyped = old is not None and new is not None and _kind(old) != _kind(new)
        named = _dotted(path) if required or path[-1] == "surplus" or retyped else None
        if path[0] in ("format", "version"):  # refused before the header is read, with messages of their own
            named = None
        out.append((f"{op} {_dotted(path)} -> {new!r:.30}", lambda p, a=changed: write_arrays(p, a), named))
    for what, changed in array_mutations(arrays, r):
        out.append((what, lambda p, a=changed: write_arrays(p, a), None))
    out.append(("a pickled array", lambda p: write_arrays(p, {**arrays, "param/by": np.array([{}], dtype=object)},
                                                          allow_pickle=True), None))
    data = run["bytes"]
    for _ in range(40):
        flipped = bytearray(data)
        for _ in range(r.choice([1, 1, 2, 8])):
            flipped[r.randrange(len(data))] ^= 1 << r.randrange(8)
        out.append(("byte flips", lambda p, b=bytes(flipped): Path(p).write_bytes(b), None))
    for cut in [0, 1, 4, 30, *sorted(r.sample(range(31, len(data)), 16)), len(data) - 1]:
        out.append((f"truncated to {cut} bytes", lambda p, b=data[:cut]: Path(p).write_bytes(b), None))
    return out


# -- what every command does with a file ------------------------------------------------------------

def _folder_state(folder):
    """Every file in folder and its bytes."""
    return {name: Path(folder, name).read_bytes() for name in sorted(os.listdir(folder))}


def _one_line(e: CharnnError):
    assert str(e) and "\n" not in str(e) and "\r" not in str(e), repr(str(e))


def try_every_command(path, best, best_ckpt):
    """'refused' (with the CharnnError's message) or 'loaded'; any other exception fails the test."""
    folder = os.path.dirname(path)
    before = _folder_state(folder)
    try:
        ckpt = checkpoint.load(path)  # what every command and charnn.load call first
    except CharnnError as e:
        _one_line(e)
        assert _folder_state(folder) == before  # nothing on disk changed
        return "refused", str(e)
    # Resuming best.npz compares it with the latest.npz beside it (this file), which is newer or not.
    assert isinstance(train._would_overwrite(best, best_ckpt), bool)
    assert isinstance(charnn.load(path).step(ckpt.vocab.chars[0]), np.ndarray)
    assert all(isinstance(line, str) for line in describe.describe(path, ckpt))
    rng = np.random.default_rng(0)
    text = "".join(sample.generate(ckpt.params, ckpt.model_config, ckpt.vocab, ckpt.vocab.chars[0], 5, rng))
    assert len(text) == 5
    score = evaluate.score_text(ckpt.params, ckpt.model_config, ckpt.vocab, TINY_TEXT[:300])
    assert score.predicted > 0
    try:
        train.resume(path, {"steps": ckpt.header["step"] + 1})
    except CharnnError as e:  # e.g. a limit the edit made already reached, or a corpus path that is gone
        _one_line(e)
        assert _folder_state(folder) == before
    return "loaded", None


def test_every_damaged_checkpoint_gets_one_clear_line_or_works(run, tmp_path):
    best_ckpt = checkpoint.load(run["best"])
    outcomes = {"refused": 0, "loaded": 0}
    mutations = all_mutations(run)
    assert len(mutations) > 300
    folder = tmp_path / "run"  # the run's folder: its best.npz, and the damaged file as its latest.npz
    best, path = str(folder / "best.npz"), str(folder / "latest.npz")
    for i, (what, write, named) in enumerate(mutations):
        if not folder.exists():
            folder.mkdir()
            shutil.copyfile(run["best"], best)
        write(path)
        try:
            outcome, message = try_every_command(path, best, best_ckpt)
        except Exception as e:
            raise AssertionError(f"mutation {i} ({what}): {type(e).__name__}: {e}") from e
        if named is not None:
            assert outcome == "refused" and f"header field {named} " in message, (what, message)
        outcomes[outcome] += 1
        if outcome == "loaded":  # a resume may have written into the folder: start the next one afresh
            shutil.rmtree(folder)
    # Both kinds occur: the generator makes files that still load (a header that stays valid), and
    # most are refused.
    assert outcomes["loaded"] >= 20 and outcomes["refused"] >= 250, outcomes


@pytest.mark.parametrize("what", ["delete step", "history.step a string", "data.window past the pass",
                                  "best_step not evaluated", "a flipped byte", "truncated"])
def test_the_commands_print_one_error_line(run, tmp_path, monkeypatch, what):
    header, arrays = run["header"], run["arrays"]
    edits = {"delete step": lambda h: h.pop("step"),
             "history.step a string": lambda h: h["history"].update(step="3, 6"),
             "data.window past the pass": lambda h: h["data"].update(window=10 ** 6),
             "best_step not evaluated": lambda h: h.update(best_step=5)}
    path = tmp_path / "latest.npz"
    if what in edits:
        h = json.loads(json.dumps(header))
        edits[what](h)
        write_arrays(path, {**arrays, "header": np.array(json.dumps(h))})
    elif what == "a flipped byte":
        data = bytearray(run["bytes"])
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(run["bytes"][:len(run["bytes"]) // 3])
    (tmp_path / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    before = _folder_state(tmp_path)
    with pytest.raises(CharnnError) as api:
        charnn.load("latest.npz")
    for args in (["info", "latest.npz"], ["sample", "--checkpoint", "latest.npz", "--length", "5"],
                 ["eval", "latest.npz", "tiny.txt"], ["resume", "latest.npz", "--steps", "9"],
                 ["train", "--resume", "latest.npz", "--steps", "9"]):
        r = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert r.exit_code == 1 and r.stdout == "", (args, r.stdout)
        assert r.stderr.startswith("Error: latest.npz") and r.stderr.count("\n") == 1, (args, r.stderr)
        assert r.stderr == f"Error: {api.value}\n"  # the Python API says the same
        assert r.stderr.endswith("; use another checkpoint, such as the run's best.npz\n")
    assert _folder_state(tmp_path) == before
