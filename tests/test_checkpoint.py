"""Save/load round trips and every kind of bad file the loader must refuse."""

import json
import os
import re
import time

import numpy as np
import pytest

from charnn import checkpoint, model, optim
from charnn.config import ModelConfig, TrainConfig
from charnn.errors import CharnnError


def make_checkpoint(rng, name="lstm", dtype="float32"):
    mc = ModelConfig(name, vocab_size=5, hidden_size=4, num_layers=2)
    tc = TrainConfig(steps=10, batch_size=3, dtype=dtype)
    params = model.init_params(mc, rng, dtype)
    opt = optim.init_state(tc.optimizer, params)
    for slot in opt.values():
        for a in slot.values():
            a[...] = rng.standard_normal(a.shape)
    state = {k: rng.standard_normal(s.shape).astype(dtype) for k, s in model.zero_state(mc, 3, dtype).items()}
    header = {"model": mc.to_dict(), "train": tc.to_dict(), "vocab": "\nabz€", "step": 7,
              "history": {"step": [5], "train_loss": [1.5], "val_loss": [1.6]},
              "corpus": {"path": "/x.txt", "sha256": "0" * 64, "chars": 100, "train_chars": 90, "val_chars": 10},
              "data": {"epoch": 0, "window": 7}, "rng": np.random.default_rng(0).bit_generator.state,
              "elapsed_seconds": 1.5, "val_loss": 1.6, "best_val_loss": 1.6, "best_step": 5, "lr_scale": 1.0,
              "rollbacks": 0, "recent_losses": [1.5]}
    return checkpoint.Checkpoint(header=header, params=params, optim_state=opt, state=state)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_is_bit_exact(tmp_path, rng, name, dtype):
    ckpt = make_checkpoint(rng, name, dtype)
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, ckpt)
    back = checkpoint.load(path)
    assert back.header["vocab"] == "\nabz€" and back.header["step"] == 7
    assert back.header["format"] == checkpoint.FORMAT and back.header["version"] == checkpoint.VERSION
    assert back.model_config == ckpt.model_config and back.train_config == ckpt.train_config
    for a, b in [(ckpt.params, back.params), (ckpt.state, back.state)] + [
            (ckpt.optim_state[s], back.optim_state[s]) for s in ckpt.optim_state]:
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes()
    with np.load(path, allow_pickle=False) as f:  # readable by plain numpy, names as documented
        assert "param/l0.Wxh" in f.files and "optim/m/Why" in f.files and "state/h" in f.files


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_write_that_fails_midway_leaves_the_old_file_readable(tmp_path, rng, monkeypatch, error):
    """np.savez writes part of the archive, then the disk fills up or Ctrl-C comes."""
    path = str(tmp_path / "c.npz")
    old = make_checkpoint(rng)
    checkpoint.save(path, old)
    real = np.savez

    def half_written(f, **arrays):
        real(f, **dict(list(arrays.items())[:3]))
        f.write(b"PK\x03\x04 half")
        raise error
    monkeypatch.setattr(np, "savez", half_written)
    with pytest.raises(CharnnError if isinstance(error, OSError) else KeyboardInterrupt):
        checkpoint.save(path, make_checkpoint(rng))
    assert os.listdir(tmp_path) == ["c.npz"]
    back = checkpoint.load(path)
    assert back.header["step"] == old.header["step"]
    for k in old.params:
        np.testing.assert_array_equal(back.params[k], old.params[k])


def test_save_replaces_the_old_file(tmp_path, rng):
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, make_checkpoint(rng))
    new = make_checkpoint(rng)
    checkpoint.save(path, new)
    np.testing.assert_array_equal(checkpoint.load(path).params["Why"], new.params["Why"])
    assert os.listdir(tmp_path) == ["c.npz"]


def test_failed_save_leaves_the_old_file(tmp_path, rng, monkeypatch):
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, make_checkpoint(rng))
    before = open(path, "rb").read()

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(CharnnError, match="No space left on device.*earlier checkpoints are untouched"):
        checkpoint.save(path, make_checkpoint(rng))
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["c.npz"]


def write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CharnnError, match="not a charnn checkpoint"):
        checkpoint.load(str(text))
    other = tmp_path / "other.npz"
    write_npz(other, weights=np.ones(3))
    with pytest.raises(CharnnError, match="no charnn header"):
        checkpoint.load(str(other))
    with pytest.raises(CharnnError, match="no such checkpoint"):
        checkpoint.load(str(tmp_path / "missing.npz"))


def test_refuses_a_truncated_file(tmp_path, rng):
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, make_checkpoint(rng))
    data = open(path, "rb").read()
    for cut in (len(data) // 2, len(data) - 10):
        open(path, "wb").write(data[:cut])
        with pytest.raises(CharnnError, match="truncated or damaged"):
            checkpoint.load(path)


def rewrite(path, change):
    """Load the raw arrays of a checkpoint, apply change(arrays), write them back."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    write_npz(path, **arrays)


def set_header(**fields):
    def change(arrays):
        header = json.loads(str(arrays["header"]))
        header.update(fields)
        arrays["header"] = np.array(json.dumps(header))
    return change


def test_refuses_another_format_version(tmp_path, rng):
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, make_checkpoint(rng))
    rewrite(path, set_header(version=99))
    with pytest.raises(CharnnError, match="format version 99.*reads version 1"):
        checkpoint.load(path)
    rewrite(path, set_header(version=1, format="something-else"))
    with pytest.raises(CharnnError, match="not a charnn checkpoint"):
        checkpoint.load(path)


class Trap:
    """Unpickling this object would create a file: proof that loading ran pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_refuses_pickled_arrays_without_unpickling(tmp_path, rng):
    path = str(tmp_path / "c.npz")
    marker = tmp_path / "unpickled"
    checkpoint.save(path, make_checkpoint(rng))

    def add_object(arrays):
        arrays["param/Why"] = np.array([Trap(str(marker))], dtype=object)
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    add_object(arrays)
    with open(path, "wb") as f:
        np.savez(f, allow_pickle=True, **arrays)
    with pytest.raises(CharnnError, match="pickled objects"):
        checkpoint.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("change,message", [
    (lambda a: a.pop("param/l1.Whh"), r"missing \['l1.Whh'\]"),
    (lambda a: a.update({"param/Why": np.zeros((4, 9), np.float32)}), r"parameter Why has shape \(4, 9\)"),
    (lambda a: a.update({"param/by": np.zeros(5, np.float64)}), "parameter by has dtype float64"),
    (lambda a: a.update({"optim/v/by": np.zeros(3, np.float32)}), "optimizer v by has shape"),
    (lambda a: a.update({"state/h": np.zeros((2, 3), np.float32)}), "state h has shape"),
    (lambda a: a.update({"param/by": np.full(5, np.nan, np.float32)}), "NaN or infinite"),
    (lambda a: a.update({"extra": np.zeros(1)}), "unexpected arrays"),
])
def test_refuses_missing_misshapen_or_foreign_arrays(tmp_path, rng, change, message):
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, make_checkpoint(rng))
    rewrite(path, change)
    with pytest.raises(CharnnError, match=message):
        checkpoint.load(path)


def test_a_saved_checkpoint_has_the_usual_file_mode(tmp_path, rng):
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, make_checkpoint(rng))
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_refuses_a_header_that_does_not_match(tmp_path, rng):
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, make_checkpoint(rng))
    rewrite(path, set_header(vocab="ab"))
    with pytest.raises(CharnnError, match="vocabulary has 2 characters but the model 5"):
        checkpoint.load(path)


def test_find_picks_the_best_of_the_newest_run(tmp_path, rng):
    with pytest.raises(CharnnError, match="no checkpoint found"):
        checkpoint.find(None, str(tmp_path))
    old, new = tmp_path / "run-1", tmp_path / "run-2"
    for run in (old, new):
        run.mkdir()
        checkpoint.save(str(run / "latest.npz"), make_checkpoint(rng))
    checkpoint.save(str(new / "best.npz"), make_checkpoint(rng))
    past = time.time() - 100
    os.utime(old / "latest.npz", (past, past))
    assert checkpoint.find(None, str(tmp_path)) == str(new / "best.npz")
    assert checkpoint.find(str(old), "unused") == str(old / "latest.npz")
    assert checkpoint.find("x.npz", "unused") == "x.npz"


def open_descriptors():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("failing", ["fdopen", "fsync", "savez"])
def test_a_failed_save_leaves_no_descriptor_open(tmp_path, rng, monkeypatch, failing):
    ckpt, path = make_checkpoint(rng), str(tmp_path / "c.npz")

    def fail(*a, **k):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(np if failing == "savez" else os, failing, fail)
    before = open_descriptors()
    with pytest.raises(CharnnError, match="Input/output error"):
        checkpoint.save(path, ckpt)
    assert open_descriptors() == before and os.listdir(tmp_path) == []


def test_save_never_changes_the_umask(tmp_path, rng, monkeypatch):
    """Setting the umask, even for a moment, lets another thread create a world-writable file."""
    def refuse(mask):
        raise AssertionError("os.umask called")
    monkeypatch.setattr(os, "umask", refuse)
    checkpoint.save(str(tmp_path / "c.npz"), make_checkpoint(rng))
    assert os.listdir(tmp_path) == ["c.npz"]


def test_readme_lists_exactly_the_header_fields():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    section = readme.split("## The checkpoint format", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `header\.(\w+)` \|", section, flags=re.M)
    assert sorted(listed) == sorted(checkpoint.HEADER_FIELDS) and len(listed) == len(set(listed))


def test_a_run_writes_exactly_the_described_header(tmp_path):
    from charnn import train
    from conftest import TINY_TEXT, tiny_configs
    corpus = tmp_path / "t.txt"
    corpus.write_text(TINY_TEXT)
    mc, tc = tiny_configs("rnn", steps=2, eval_every=2)
    result = train.train(corpus, mc, tc, tmp_path / "ck")
    header = checkpoint.load(os.path.join(result.run_dir, "latest.npz")).header
    assert set(header) == set(checkpoint.HEADER_FIELDS)


@pytest.mark.parametrize("field", checkpoint.REQUIRED)
def test_refuses_a_header_without_a_required_field(tmp_path, rng, field):
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, make_checkpoint(rng))

    def drop(arrays):
        header = json.loads(str(arrays["header"]))
        del header[field]
        arrays["header"] = np.array(json.dumps(header))
    rewrite(path, drop)
    with pytest.raises(CharnnError, match=rf"incomplete header \(no {field}\)"):
        checkpoint.load(path)
