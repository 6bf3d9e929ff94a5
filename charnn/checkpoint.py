"""The checkpoint format: one .npz file, readable with `np.load(path, allow_pickle=False)`.

Entries (every array a plain numeric or string array, never a pickled object):
    header              0-d string array: JSON, the fields described in header.py
    param/<name>        every parameter under its name (model.param_shapes), dtype train.dtype
    optim/<slot>/<name> optimizer state under the same names (optim.SLOTS), same dtype
    state/<h|c>         the recurrent state carried into the next window, (L, B, H)

save() writes a temporary file in the same folder and renames it over the target (os.replace is
atomic), so a crash or Ctrl-C mid-write never leaves a half-written checkpoint under a real name.
load() checks the header against its description (header.validate), then every array against the
header, and says what is wrong and what to do.
"""

from __future__ import annotations

import json
import os
import secrets
import zipfile
from dataclasses import dataclass, field

import numpy as np

from charnn import header as header_format
from charnn import model, optim
from charnn.config import ModelConfig, TrainConfig
from charnn.data import Vocab
from charnn.errors import CharnnError
from charnn.fields import REQUIRED, Invalid
from charnn.header import FORMAT, VERSION


def advice(path: str) -> str:
    """What to do about a damaged or edited checkpoint: use another of its run's."""
    others = [n for n in ("best.npz", "latest.npz") if n != os.path.basename(path)]
    return f"use another checkpoint, such as the run's {' or '.join(others)}"


@dataclass
class Checkpoint:
    header: dict  # the JSON header, every field of header.FIELDS
    params: dict[str, np.ndarray]
    optim_state: dict[str, dict[str, np.ndarray]]
    state: dict[str, np.ndarray]  # carried recurrent state, each (L, B, H)
    model_config: ModelConfig = field(init=False)
    train_config: TrainConfig = field(init=False)
    vocab: Vocab = field(init=False)

    def __post_init__(self):
        self.model_config = ModelConfig.from_dict(self.header["model"])
        self.train_config = TrainConfig.from_dict(self.header["train"])
        self.vocab = Vocab(self.header["vocab"])


def save(path: str, ckpt: Checkpoint) -> None:
    """Write ckpt to path atomically. Raises CharnnError if the folder cannot be written; an
    existing file at path is then left as it was."""
    header = dict(ckpt.header, format=FORMAT, version=VERSION)
    described = header_format.FIELDS
    assert set(header) <= set(described) and all(k in header for k, f in described.items() if f.absent is REQUIRED), \
        sorted(set(header) ^ set(described))
    arrays = {"header": np.array(json.dumps(header, ensure_ascii=False))}
    arrays.update({f"param/{n}": p for n, p in ckpt.params.items()})
    for slot, values in ckpt.optim_state.items():
        arrays.update({f"optim/{slot}/{n}": a for n, a in values.items()})
    arrays.update({f"state/{n}": s for n, s in ckpt.state.items()})
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = create_temporary(folder, ".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise CharnnError(f"could not write checkpoint {path}: {e.strerror or e}; earlier checkpoints are untouched") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def create_temporary(folder: str, suffix: str) -> tuple[int, str]:
    """A new hidden file with a random name in folder, opened for writing: (descriptor, path). Mode
    0o666 lets the OS apply the umask, so the file gets the usual mode without reading the umask
    (which means setting it)."""
    while True:
        tmp = os.path.join(folder, f".{secrets.token_hex(8)}{suffix}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def load(path: str) -> Checkpoint:
    """Read and validate a checkpoint. Raises CharnnError (one line) for a missing file, a file that
    is not a charnn checkpoint, a truncated or damaged one, another format version, pickled
    (object) arrays, which are refused without being unpickled, and missing or misshapen arrays."""
    if os.path.isdir(path):
        raise CharnnError(f"{path} is a folder; give a checkpoint file (.npz)")
    if not os.path.exists(path):
        raise CharnnError(f"{path}: no such checkpoint file")
    damaged = f"{path} is truncated or damaged; {advice(path)}"
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise CharnnError(f"cannot read {path}: {e.strerror or e}") from None
    if magic != b"PK\x03\x04":  # every .npz is a zip archive
        raise CharnnError(f"{path} is not a charnn checkpoint (not an .npz archive)")
    if not zipfile.is_zipfile(path):
        raise CharnnError(damaged)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
    except ValueError as e:
        if "allow_pickle" in str(e):  # numpy refused an object array before unpickling it
            raise CharnnError(f"{path} holds pickled objects, which charnn never loads (they can run code); it is not a charnn checkpoint") from None
        raise CharnnError(damaged) from None
    except Exception:  # noqa: BLE001 - only zipfile and numpy run here, parsing the file's bytes
        # Damaged bytes surface as many types: BadZipFile, zlib.error, EOFError, struct.error,
        # NotImplementedError (a flipped compression method), RuntimeError (a flipped encryption
        # flag), tokenize.TokenError (a damaged .npy header), MemoryError (an absurd shape), ...
        raise CharnnError(damaged) from None
    if "header" not in arrays:
        raise CharnnError(f"{path} is not a charnn checkpoint (it has no charnn header)")
    header = _validated(path, _read_header(path, arrays.pop("header")))
    ckpt = Checkpoint(
        header=header,
        params=_take(arrays, "param/"),
        optim_state={slot: _take(arrays, f"optim/{slot}/") for slot in optim.SLOTS[header["train"]["optimizer"]]},
        state=_take(arrays, "state/"),
    )
    _check_arrays(path, ckpt, leftover=arrays)
    return ckpt


def _read_header(path, array) -> dict:
    if array.dtype.kind != "U" or array.shape != ():
        raise CharnnError(f"{path} is not a charnn checkpoint (its header is not text)")
    try:
        header = json.loads(str(array))
    except (ValueError, RecursionError):  # not JSON, an integer of over 4,300 digits, nesting too deep
        raise CharnnError(f"{path} is not a charnn checkpoint (its header is not JSON)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CharnnError(f"{path} is not a charnn checkpoint (format {header.get('format') if isinstance(header, dict) else None!r})")
    if header.get("version") != VERSION:
        raise CharnnError(
            f"{path} is a charnn checkpoint of format version {header.get('version')!r}, and this charnn reads "
            f"version {VERSION}; use the charnn version that wrote it, or train a new model"
        )
    return header


def _validated(path, header: dict) -> dict:
    """The header checked against its description before anything reads it (header.validate)."""
    try:
        return header_format.validate(header)
    except Invalid as e:
        raise header_error(path, e) from None


def header_error(path, invalid: Invalid) -> CharnnError:
    """The one line for a header field that is not what it should be."""
    return CharnnError(f"{path}: header field {invalid}; {advice(path)}")


def _take(arrays: dict, prefix: str) -> dict[str, np.ndarray]:
    """Remove and return the entries under prefix, keyed by the rest of their name."""
    names = [n for n in arrays if n.startswith(prefix)]
    return {n[len(prefix):]: arrays.pop(n) for n in names}


def _check_arrays(path, ckpt: Checkpoint, leftover: dict) -> None:
    mc, dtype = ckpt.model_config, np.dtype(ckpt.train_config.dtype)
    shapes = model.param_shapes(mc)
    groups = [("parameter", ckpt.params)] + [(f"optimizer {slot}", ckpt.optim_state[slot]) for slot in ckpt.optim_state]
    for what, values in groups:
        missing = [n for n in shapes if n not in values]
        extra = [n for n in values if n not in shapes]
        if missing or extra:
            raise CharnnError(f"{path}: {what} arrays do not match the model (missing {missing}, unexpected {extra}); the file is damaged or not from this charnn")
        for name, shape in shapes.items():
            _check_array(path, f"{what} {name}", values[name], shape, dtype)
    if set(ckpt.state) != set(model.state_names(mc)):
        raise CharnnError(f"{path}: recurrent state arrays {sorted(ckpt.state)} do not match a {mc.model} model")
    state_shape = (mc.num_layers, ckpt.train_config.batch_size, mc.hidden_size)  # (L, B, H)
    for name, s in ckpt.state.items():
        _check_array(path, f"state {name}", s, state_shape, dtype)
    if leftover:
        raise CharnnError(f"{path}: unexpected arrays {sorted(leftover)}; the file is not from this charnn")


def _check_array(path, what, a: np.ndarray, shape, dtype) -> None:
    if a.shape != tuple(shape):
        raise CharnnError(f"{path}: {what} has shape {a.shape}, expected {tuple(shape)}; the file is damaged")
    if a.dtype != dtype:
        raise CharnnError(f"{path}: {what} has dtype {a.dtype}, expected {dtype}; the file is damaged")
    if not np.isfinite(a).all():
        raise CharnnError(f"{path}: {what} holds NaN or infinite values; use an earlier checkpoint")


def find(path: str | None, folder: str = "checkpoints") -> str:
    """The checkpoint file to use: `path` itself, the best (else latest) checkpoint of a run folder
    given as `path`, or, with no path, that of the newest run under `folder`."""
    if path is not None:
        if os.path.isdir(path):
            for name in ("best.npz", "latest.npz"):
                if os.path.isfile(os.path.join(path, name)):
                    return os.path.join(path, name)
            raise CharnnError(f"{path} is a folder without best.npz or latest.npz; give a checkpoint file")
        return path
    runs = []  # (newest modification time in the run, the checkpoint to use)
    if os.path.isdir(folder):
        for entry in os.scandir(folder):
            if entry.is_dir():
                files = [os.path.join(entry.path, n) for n in ("best.npz", "latest.npz")]
                files = [f for f in files if os.path.isfile(f)]
                if files:
                    runs.append((max(os.path.getmtime(f) for f in files), files[0]))
            elif entry.name.endswith(".npz") and entry.is_file():
                runs.append((entry.stat().st_mtime, entry.path))
    if not runs:
        raise CharnnError(f"no checkpoint found in {folder}/; train a model first (charnn train CORPUS) or give --checkpoint")
    return max(runs)[1]
