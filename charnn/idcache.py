"""The id cache: a corpus encoded once, then mapped read-only by every later use.

The first use of a text file reads it in chunks (textfile.py) and writes its ids to a cache file.
Later runs, `resume`, `eval`, `charnn corpus` and every process of a data-parallel run open that
file read-only with numpy.memmap: the ids cost no memory until windows of them are read, and
starting costs a hash of the text instead of its encoding.

Where: one file per text path, `<name>-<16 hex digits of the path's SHA-256>.ids`, in --cache-dir,
else $CHARNN_CACHE_DIR, else $XDG_CACHE_HOME/charnn, else ~/.cache/charnn (the XDG base-directory
convention pip and most tools on Linux follow). A file per path, not per content, so editing a
text replaces its cache instead of adding one. The folder may be deleted at any time: what is
missing is rebuilt.

The file (little-endian):
    b"CHARNNID"  8 bytes
    J            uint64: the length of the header
    header       J bytes of UTF-8 JSON: format, version, vocab, dtype, chars, text_bytes,
                 text_sha256, ids_crc32
    zeros        up to the next multiple of DATA_ALIGN bytes from the start
    ids          `chars` ids of `dtype`: uint8 when V <= 256, else uint16 or uint32

A cache is used only if its header is whole and of this version, its size is exactly the header
plus the ids, and (with verify) the text has the recorded SHA-256 and the ids the recorded CRC-32.
Hashing the whole text each time is what confirms it is unchanged: measured here at 0.75 s a GB
(SHA-256 with the CPU's SHA instructions) and 0.43 s a GB for the CRC, within the seconds a cached
start may take; a size-and-date check would be faster but can be fooled. Anything else is rebuilt,
never trusted. A build writes a temporary file in the same folder and renames it over the cache,
so a crash never leaves half a cache under the real name, and two processes building the same one
at once end with one good file (each maps its own, the same ids; the last rename wins).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np

from charnn import textfile
from charnn.checkpoint import create_temporary
from charnn.data import Corpus, Vocab, id_dtype
from charnn.errors import CharnnError
from charnn.reports import Reporter

MAGIC = b"CHARNNID"
FORMAT = "charnn-ids"
VERSION = 1
PRELUDE = struct.Struct("<8sQ")  # MAGIC, J
DATA_ALIGN = 4096  # the ids start on a page boundary
MAX_HEADER = 1 << 24  # bytes: a header longer than this is damaged (the largest vocabulary needs ~8 MB)
READ_BYTES = 1 << 24  # bytes read at a time when checking a cache (16 MB)
ENV = "CHARNN_CACHE_DIR"


def default_dir() -> str:
    """$CHARNN_CACHE_DIR, else $XDG_CACHE_HOME/charnn (if absolute, as the XDG spec asks), else
    ~/.cache/charnn."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return os.path.join(xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache"), "charnn")


def cache_path(text_path: str, cache_dir: str | None = None) -> str:
    """The cache file of the text at text_path (which need not exist yet)."""
    real = os.path.realpath(text_path).encode("utf-8", "surrogateescape")
    name = os.path.splitext(os.path.basename(text_path))[0] or "text"
    return os.path.join(cache_dir or default_dir(), f"{name}-{hashlib.sha256(real).hexdigest()[:16]}.ids")


@dataclass(frozen=True)
class Source:
    """Where a corpus's ids came from: what the pre-flight's data line says about them."""

    cache: str | None  # the cache file; None when they were encoded in memory (--no-cache)
    status: str  # "reused", "built", "rebuilt (<why>)" or "encoded"
    seconds: float  # taken to check or encode them
    nbytes: int  # of the ids
    in_memory: bool = False  # the ids are an array in memory (--no-cache, or translated), not a map of the cache


def load_corpus(path, cache_dir: str | None = None, use_cache: bool = True, verify: bool = True,
                reporter: Reporter | None = None, chunk_bytes: int | None = None) -> tuple[Corpus, Source]:
    """The corpus at path with its ids read-only from its cache (built first if missing or not
    trusted), or encoded in memory when use_cache is False; and where they came from.

    verify=False skips hashing the text and the ids (the header, sizes and version are still
    checked): for the processes of a data-parallel run after one of them has verified the cache.
    reporter.task shows a progress bar over the long parts.
    """
    path = os.fspath(path)
    reporter = reporter or Reporter()
    size = textfile.check_file(path)
    t0 = time.perf_counter()
    if not use_cache:
        with reporter.task(f"encoding {os.path.basename(path)}", 2 * size, "B") as bar:
            found, ids = textfile.read_ids(path, bar.update, chunk_bytes)
        corpus = Corpus(path=path, vocab=found.vocab, ids=ids, sha256=found.sha256, size=size)
        return corpus, Source(None, "encoded", time.perf_counter() - t0, ids.nbytes, in_memory=True)
    cpath = cache_path(path, cache_dir)
    # The file is checked and mapped through one open file, so another process renaming its own
    # build over cpath meanwhile cannot slip in between.
    try:
        f = open(cpath, "rb")
    except OSError as e:
        header, ids, why = None, None, "none yet" if isinstance(e, FileNotFoundError) else "unreadable"
    else:
        with f:
            header, why = _read_header(f)
            if header is not None and header["text_bytes"] != size:
                why = "the text changed"
            elif header is not None and verify:
                why = _verify(path, f, header, reporter)
            ids = None if why else _map(f, header)
    status = "reused"
    if why:
        header, ids = _build(path, cpath, size, reporter, chunk_bytes)
        status = "built" if why == "none yet" else f"rebuilt ({why})"
    corpus = Corpus(path=path, vocab=Vocab(header["vocab"]), ids=ids, sha256=header["text_sha256"], size=size)
    return corpus, Source(cpath, status, time.perf_counter() - t0, ids.nbytes)


def _map(f, header: dict) -> np.ndarray:
    """(chars,) the ids of the open cache file f, read-only, as a plain ndarray over the map."""
    return np.asarray(np.memmap(f, dtype=_dtype(header), mode="r", offset=header["offset"], shape=(header["chars"],)))


def _verify(path: str, f, header: dict, reporter: Reporter) -> str:
    """Why the cache f cannot be trusted ("" if it can): the text's SHA-256 and the ids' CRC-32
    against the header's. The two read different files, so two threads do both at once (hashlib
    and zlib let go of the GIL on large buffers, and so does reading)."""
    with reporter.task("checking the id cache", header["text_bytes"] + _ids_bytes(header), "B") as bar, \
            ThreadPoolExecutor(2) as pool:
        text_sha256 = pool.submit(textfile.file_sha256, path, bar.update)
        ids_crc32 = pool.submit(_ids_crc32, f, header, bar.update)
        if text_sha256.result() != header["text_sha256"]:
            return "the text changed"
        return "" if ids_crc32.result() == header["ids_crc32"] else "damaged"


def _dtype(header: dict) -> np.dtype:
    return np.dtype(header["dtype"]).newbyteorder("<")


def _ids_bytes(header: dict) -> int:
    return header["chars"] * _dtype(header).itemsize


def _data_offset(json_bytes: int) -> int:
    """Where the ids start, after the prelude and a header of json_bytes."""
    return -(-(PRELUDE.size + json_bytes) // DATA_ALIGN) * DATA_ALIGN


def _read_header(f) -> tuple[dict | None, str]:
    """(the header of the open cache file f, "") if its structure holds, else (None, why not):
    "truncated", "damaged" or "another format version". The header gets the ids' offset, "offset"."""
    f.seek(0)
    prelude = f.read(PRELUDE.size)
    if len(prelude) < PRELUDE.size:
        return None, "truncated"
    magic, n = PRELUDE.unpack(prelude)
    if magic != MAGIC or n > MAX_HEADER:
        return None, "damaged"
    raw = f.read(n)
    if len(raw) < n:
        return None, "truncated"
    try:
        header = json.loads(raw.decode("utf-8"))
        if header["format"] != FORMAT:
            return None, "damaged"
        if header["version"] != VERSION:
            return None, "another format version"
        vocab = Vocab(header["vocab"])
        ok = (header["dtype"] == id_dtype(vocab.size).name
              and all(isinstance(header[k], int) and header[k] > 0 for k in ("chars", "text_bytes"))
              and all(isinstance(header[k], str) for k in ("text_sha256", "ids_crc32")))
    except (ValueError, KeyError, TypeError, CharnnError):  # not JSON, a field missing or of a wrong type
        return None, "damaged"
    if not ok:
        return None, "damaged"
    header["offset"] = _data_offset(n)
    have, want = os.fstat(f.fileno()).st_size, header["offset"] + _ids_bytes(header)
    if have != want:
        return None, "truncated" if have < want else "damaged"
    return header, ""


def _ids_crc32(f, header: dict, progress: Callable[[int], None]) -> str:
    """The CRC-32 of the ids of the open cache file f, read in chunks (not through a map, so they
    do not stay resident), as 8 hex digits."""
    crc = 0
    f.seek(header["offset"])
    while block := f.read(READ_BYTES):
        crc = zlib.crc32(block, crc)
        progress(len(block))
    return f"{crc:08x}"


def _build(path: str, cpath: str, size: int, reporter: Reporter, chunk_bytes: int | None) -> tuple[dict, np.ndarray]:
    """Encode the text at path into a new cache file at cpath: its header, and its ids mapped
    (from the file written here, whatever other processes rename over cpath)."""
    folder = os.path.dirname(cpath)
    with _writing(cpath):
        os.makedirs(folder, exist_ok=True)
        with reporter.task(f"encoding {os.path.basename(path)}", 2 * size, "B") as bar:
            found = textfile.scan(path, bar.update, chunk_bytes)
            header = {"format": FORMAT, "version": VERSION, "vocab": found.vocab.chars, "dtype": found.vocab.dtype.name,
                      "chars": found.chars, "text_bytes": found.size, "text_sha256": found.sha256,
                      "ids_crc32": "00000000"}  # rewritten once the ids are written: 8 hex digits, same length
            n = len(_header_json(header))
            header["offset"] = _data_offset(n)
            fd, tmp = create_temporary(folder, ".ids.tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(PRELUDE.pack(MAGIC, n) + _header_json(header))
                    f.write(bytes(header["offset"] - f.tell()))
                    crc = 0
                    for ids in textfile.id_chunks(path, found, bar.update, chunk_bytes):
                        block = memoryview(ids.astype(_dtype(header), copy=False)).cast("B")
                        crc = zlib.crc32(block, crc)
                        f.write(block)
                    header["ids_crc32"] = f"{crc:08x}"
                    f.seek(PRELUDE.size)
                    f.write(_header_json(header))
                # No fsync: a cache is rebuilt if a crash leaves it damaged (the CRC tells), and
                # syncing a GB would cost seconds every first run.
                with open(tmp, "rb") as f:
                    ids = _map(f, header)
                os.replace(tmp, cpath)
                tmp = None
            finally:
                if tmp is not None and os.path.exists(tmp):
                    os.unlink(tmp)
    return header, ids


def _header_json(header: dict) -> bytes:
    """The header as stored: every field but the offset, which follows from its length."""
    fields = {k: v for k, v in header.items() if k != "offset"}
    return json.dumps(fields, ensure_ascii=False, sort_keys=True).encode("utf-8")


@contextmanager
def _writing(cpath: str):
    """Turn a failure to write the cache into one line that says what to do."""
    try:
        yield
    except OSError as e:
        raise CharnnError(f"could not write the id cache {cpath}: {e.strerror or e}; give --cache-dir with a "
                          f"writable folder that has room, or --no-cache to keep the ids in memory") from None


def remember(source: Source, sha256: str, key: dict, compute: Callable[[], dict]) -> dict:
    """compute(), or the value an earlier run saved beside the cache for the same text and key, so
    a run on a cached corpus does not redo slow work that depends only on them (the baselines).
    Without a cache it is computed every time; failing to save it is not an error."""
    if source.cache is None:
        return compute()
    memo_path = source.cache + ".json"
    try:
        with open(memo_path, encoding="utf-8") as f:
            memo = json.load(f)
        entries = memo["entries"] if memo["text_sha256"] == sha256 else {}
    except (OSError, ValueError, KeyError, TypeError):
        entries = {}
    name = json.dumps(key, sort_keys=True)
    if name in entries:
        return entries[name]
    value = entries[name] = compute()
    tmp = None
    try:
        fd, tmp = create_temporary(os.path.dirname(memo_path), ".json.tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"text_sha256": sha256, "entries": entries}, f)
        os.replace(tmp, memo_path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return value
