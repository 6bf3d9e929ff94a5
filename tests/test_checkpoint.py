"""Save/load round trips and every kind of bad file the loader must refuse."""

import json
import os
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from charnn import checkpoint, model, optim
from charnn import header as header_format
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
              "corpus": {"path": "/x.txt", "sha256": "0" * 64, "chars": 1000, "train_chars": 900, "val_chars": 100},
              "data": {"epoch": 0, "window": 3}, "rng": np.random.default_rng(0).bit_generator.state,
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


def test_save_replaces_atomically_and_leaves_no_temporary(tmp_path, rng, monkeypatch):
    """A write interrupted halfway (Ctrl-C) leaves the old checkpoint whole; a finished one
    replaces it by one rename from a temporary file in the same folder."""
    path = str(tmp_path / "c.npz")
    old = make_checkpoint(rng)
    checkpoint.save(path, old)
    before = open(path, "rb").read()
    real_savez = np.savez

    def half_then_interrupt(f, **arrays):
        real_savez(f, **arrays)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, make_checkpoint(rng))
    monkeypatch.undo()
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["c.npz"]
    assert checkpoint.load(path).params["Why"].tobytes() == old.params["Why"].tobytes()

    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((a, b)), real_replace(a, b)))
    new = make_checkpoint(rng)
    checkpoint.save(path, new)
    (src, dst), = renames
    assert dst == path and os.path.dirname(src) == str(tmp_path) and src != path
    assert checkpoint.load(path).params["Why"].tobytes() == new.params["Why"].tobytes()
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


def test_a_huge_array_is_refused_from_its_npy_header_before_it_is_read(tmp_path, rng):
    """A 1 MB file whose l0.Wxh is a deflated 256 MB array of zeros: refused from the shape in its
    .npy header, with a few MB of memory at most (reading it first would take 256 MB)."""
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, make_checkpoint(rng))
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files if k != "param/l0.Wxh"}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, a in arrays.items():
            with z.open(name + ".npy", "w") as f:
                np.lib.format.write_array(f, a)
        with z.open("param/l0.Wxh.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (2**26,)})
            for _ in range(16):
                f.write(bytes(2**24))
    assert os.path.getsize(path) < 2**21
    tracemalloc.start()
    try:
        with pytest.raises(CharnnError, match=r"parameter l0.Wxh has shape \(67108864,\), expected \(5, 16\)"):
            checkpoint.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, peak


def test_a_huge_header_is_refused_before_it_is_read(tmp_path):
    """A header member that claims a 400 MB string (and holds a few bytes) is refused from its
    .npy header: reading it would allocate the 400 MB first."""
    path = str(tmp_path / "c.npz")
    with zipfile.ZipFile(path, "w") as z:
        with z.open("header.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<U100000000", "fortran_order": False, "shape": ()})
            f.write(b"{}")
    with pytest.raises(CharnnError, match="not a charnn checkpoint \\(its header is 381 MB\\)"):
        checkpoint.load(path)


def test_array_headers_reads_shapes_and_dtypes(tmp_path, rng):
    path = str(tmp_path / "c.npz")
    ckpt = make_checkpoint(rng, "gru", "float64")
    checkpoint.save(path, ckpt)
    found = checkpoint.array_headers(path)
    assert found["header"][1].kind == "U" and found["header"][0] == ()
    assert found["param/l0.Wxh"] == ((5, 12), np.dtype("float64")) and found["state/h"] == ((2, 3, 4), np.dtype("float64"))
    assert set(found) == {"header"} | set(checkpoint.arrays_by_name(ckpt))


def test_refuses_an_incomplete_header(tmp_path, rng):
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, make_checkpoint(rng))

    def drop_rng(arrays):
        header = json.loads(str(arrays["header"]))
        del header["rng"]
        arrays["header"] = np.array(json.dumps(header))
    rewrite(path, drop_rng)
    with pytest.raises(CharnnError, match=r"c.npz: header field rng is missing; expected an object; use another checkpoint"):
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
    with pytest.raises(CharnnError, match="header field model.vocab_size holds 5; expected 2, the number of characters in vocab"):
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
    assert checkpoint.find(str(tmp_path), "unused") == str(new / "best.npz")  # a folder of runs: its newest
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CharnnError, match="without best.npz or latest.npz, or run folders"):
        checkpoint.find(str(empty))


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_save_leaves_no_descriptor_open_when_a_call_fails(tmp_path, rng, monkeypatch):
    """Whatever fails while the temporary file is made or written, its descriptor is closed and
    the temporary removed."""
    ckpt = make_checkpoint(rng)
    path = str(tmp_path / "c.npz")
    failing = OSError(1, "Operation not permitted")
    for target, name in [(os, "fchmod"), (os, "fsync"), (np, "savez")]:
        before = _open_descriptors()
        with monkeypatch.context() as m:
            m.setattr(target, name, lambda *a, **k: (_ for _ in ()).throw(failing))
            try:
                checkpoint.save(path, ckpt)
            except CharnnError:
                pass
        assert _open_descriptors() == before, name
        assert [n for n in os.listdir(tmp_path) if n != "c.npz"] == [], name


def test_save_never_touches_the_process_umask(tmp_path, rng, monkeypatch):
    """Setting the umask to read it would leave a moment in which another thread creates
    world-writable files; the checkpoint still gets the usual mode, 0o666 less the umask."""
    original = os.umask(0o027)
    try:
        def no_umask(*a):
            raise AssertionError("checkpoint.save called os.umask")
        monkeypatch.setattr(os, "umask", no_umask)
        path = str(tmp_path / "c.npz")
        checkpoint.save(path, make_checkpoint(rng))
        assert os.stat(path).st_mode & 0o777 == 0o640  # 0o666 less the umask 0o027
    finally:
        monkeypatch.undo()
        os.umask(original)


def test_save_writes_exactly_the_described_header(tmp_path, rng):
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, make_checkpoint(rng))
    with np.load(path, allow_pickle=False) as f:
        header = json.loads(str(f["header"]))
    assert set(header) == set(header_format.FIELDS) - {"baselines", "parent", "workers"}
    ckpt = make_checkpoint(rng)
    ckpt.header["undescribed"] = 1  # a field nobody described cannot slip into the format
    with pytest.raises(AssertionError):
        checkpoint.save(path, ckpt)
