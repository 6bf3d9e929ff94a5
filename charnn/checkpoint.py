"""The checkpoint format: one .npz file, readable with `np.load(path, allow_pickle=False)`.

Entries (every array a plain numeric or string array, never a pickled object):
    header              0-d string array: JSON, the fields described in header.py
    param/<name>        every parameter under its name (model.param_shapes), dtype train.dtype
    optim/<slot>/<name> optimizer state under the same names (optim.SLOTS), same dtype
    state/<h|c>         the recurrent state carried into the next window, (L, B, H)

save() writes a temporary file in the same folder and renames it over the target (os.replace is
atomic), so a crash or Ctrl-C mid-write never leaves a half-written checkpoint under a real name.
load() checks the header against its description (header.validate), then every array's name, shape
and dtype against the header, from the .npy headers inside the zip before any array is read, and
says what is wrong and what to do.
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

MAX_HEADER_BYTES = 64 * 2**20  # a header holds settings and histories: a few MB at most, even for long runs


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
    arrays = {"header": np.array(json.dumps(header, ensure_ascii=False)), **arrays_by_name(ckpt)}
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
    (object) arrays, which are refused without being unpickled, and missing or misshapen arrays,
    which are refused from their .npy headers before any array's data is read."""
    if os.path.isdir(path):
        raise CharnnError(f"{path} is a folder; give a checkpoint file (.npz)")
    if not os.path.exists(path):
        raise CharnnError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise CharnnError(f"cannot read {path}: {e.strerror or e}") from None
    if magic != b"PK\x03\x04":  # every .npz is a zip archive
        raise CharnnError(f"{path} is not a charnn checkpoint (not an .npz archive)")
    if not zipfile.is_zipfile(path):
        raise CharnnError(_damaged(path))
    found = array_headers(path)
    if "header" not in found:
        raise CharnnError(f"{path} is not a charnn checkpoint (it has no charnn header)")
    shape, dtype = found.pop("header")
    if dtype.kind != "U" or shape != ():
        raise CharnnError(f"{path} is not a charnn checkpoint (its header is not text)")
    if dtype.itemsize > MAX_HEADER_BYTES:
        raise CharnnError(f"{path} is not a charnn checkpoint (its header is {dtype.itemsize / 2**20:,.0f} MB)")
    header = _validated(path, _read_header(path, _read(path, ["header"])["header"]))
    ckpt = Checkpoint(header=header, params={}, optim_state={}, state={})
    check_array_headers(path, ckpt, found)
    arrays = _read(path, list(found))
    ckpt.params = _take(arrays, "param/")
    ckpt.optim_state = {slot: _take(arrays, f"optim/{slot}/") for slot in optim.SLOTS[ckpt.train_config.optimizer]}
    ckpt.state = _take(arrays, "state/")
    for name, a in arrays_by_name(ckpt).items():
        if not np.isfinite(a).all():
            raise CharnnError(f"{path}: {name} holds NaN or infinite values; use an earlier checkpoint")
    return ckpt


def _damaged(path: str) -> str:
    return f"{path} is truncated or damaged; {advice(path)}"


def array_headers(path: str) -> dict[str, tuple[tuple, np.dtype]]:
    """(shape, dtype) of every array in the .npz at path, by name, from the .npy header at the start
    of each member of the zip: only those first bytes are decompressed, so a file that holds a huge
    array, or pickled objects, is refused before its data costs time or memory."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    found = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    raise CharnnError(f"{path} is not a charnn checkpoint (it holds {info.filename!r})")
                with z.open(info) as f:
                    read = readers.get(np.lib.format.read_magic(f))
                    if read is None:  # version 3.0 is only for structured dtypes, which charnn never writes
                        raise CharnnError(_damaged(path))
                    shape, _fortran_order, dtype = read(f)
                if dtype.hasobject:  # numpy would need pickle to read it: never
                    raise CharnnError(f"{path} holds pickled objects, which charnn never loads (they can run code); "
                                      "it is not a charnn checkpoint")
                found[info.filename[:-len(".npy")]] = (shape, dtype)
    except CharnnError:
        raise
    except Exception:  # noqa: BLE001 - only zipfile and numpy run here, parsing the file's bytes (see _read)
        raise CharnnError(_damaged(path)) from None
    return found


def _read(path: str, names: list[str]) -> dict[str, np.ndarray]:
    """The named arrays of the .npz at path (array_headers has checked what they are)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {name: f[name] for name in names}
    except Exception:  # noqa: BLE001 - only zipfile and numpy run here, parsing the file's bytes
        # Damaged bytes surface as many types: BadZipFile, zlib.error, EOFError, struct.error,
        # NotImplementedError (a flipped compression method), RuntimeError (a flipped encryption
        # flag), tokenize.TokenError (a damaged .npy header), MemoryError (an absurd shape), ...
        raise CharnnError(_damaged(path)) from None


def arrays_by_name(ckpt: Checkpoint) -> dict[str, np.ndarray]:
    """Every array of a checkpoint under its name in the file (param/..., optim/<slot>/..., state/...)."""
    arrays = {f"param/{n}": p for n, p in ckpt.params.items()}
    for slot, values in ckpt.optim_state.items():
        arrays.update({f"optim/{slot}/{n}": a for n, a in values.items()})
    arrays.update({f"state/{n}": s for n, s in ckpt.state.items()})
    return arrays


def _read_header(path, array) -> dict:
    """The JSON of the header array (a 0-d string array: load has checked its .npy header)."""
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


def check_array_headers(path, ckpt: Checkpoint, found: dict) -> None:
    """Every array ckpt's header implies is in found, with its shape and dtype, and nothing else.
    found: each array's name -> (shape, dtype), as array_headers reads them (the header's own entry
    taken out)."""
    mc, dtype = ckpt.model_config, np.dtype(ckpt.train_config.dtype)
    leftover = dict(found)
    shapes = model.param_shapes(mc)
    slots = optim.SLOTS[ckpt.train_config.optimizer]
    for what, prefix in [("parameter", "param/")] + [(f"optimizer {slot}", f"optim/{slot}/") for slot in slots]:
        values = _take(leftover, prefix)
        missing = [n for n in shapes if n not in values]
        extra = [n for n in values if n not in shapes]
        if missing or extra:
            raise CharnnError(f"{path}: {what} arrays do not match the model (missing {missing}, unexpected {extra}); the file is damaged or not from this charnn")
        for name, shape in shapes.items():
            _check_array(path, f"{what} {name}", values[name], shape, dtype)
    state = _take(leftover, "state/")
    if set(state) != set(model.state_names(mc)):
        raise CharnnError(f"{path}: recurrent state arrays {sorted(state)} do not match a {mc.model} model")
    state_shape = (mc.num_layers, ckpt.train_config.batch_size, mc.hidden_size)  # (L, B, H)
    for name, shape_and_dtype in state.items():
        _check_array(path, f"state {name}", shape_and_dtype, state_shape, dtype)
    if leftover:
        raise CharnnError(f"{path}: unexpected arrays {sorted(leftover)}; the file is not from this charnn")


def _check_array(path, what, shape_and_dtype: tuple, shape, dtype) -> None:
    found_shape, found_dtype = shape_and_dtype
    if found_shape != tuple(shape):
        raise CharnnError(f"{path}: {what} has shape {found_shape}, expected {tuple(shape)}; the file is damaged")
    if found_dtype != dtype:
        raise CharnnError(f"{path}: {what} has dtype {found_dtype}, expected {dtype}; the file is damaged")


def find(path: str | None, folder: str = "checkpoints") -> str:
    """The checkpoint file to use: `path` itself; for a run folder, its best (else latest)
    checkpoint; for a folder of run folders (a --checkpoint-dir), or with no path the `folder`,
    that of its newest run."""
    if path is None:
        return _newest(folder, f"no checkpoint found in {folder}/; train a model first (charnn train CORPUS) or give --checkpoint")
    if not os.path.isdir(path):
        return path
    own = _run_files(path)
    return own[0] if own else _newest(path, f"{path} is a folder without best.npz or latest.npz, or run folders "
                                            "holding them; give a checkpoint file")


def _run_files(folder: str) -> list[str]:
    """A run folder's best.npz and latest.npz, those that exist, in that order."""
    return [f for f in (os.path.join(folder, n) for n in ("best.npz", "latest.npz")) if os.path.isfile(f)]


def _newest(folder: str, nothing: str) -> str:
    """The checkpoint of the newest run in folder (by its files' modification times): a run
    folder's best or latest checkpoint, or a loose .npz file. Raises CharnnError(nothing) if none."""
    runs = []  # (newest modification time in the run, the checkpoint to use)
    if os.path.isdir(folder):
        for entry in os.scandir(folder):
            if entry.is_dir():
                files = _run_files(entry.path)
                if files:
                    runs.append((max(os.path.getmtime(f) for f in files), files[0]))
            elif entry.name.endswith(".npz") and entry.is_file():
                runs.append((entry.stat().st_mtime, entry.path))
    if not runs:
        raise CharnnError(nothing)
    return max(runs)[1]
