"""A UTF-8 text file read in chunks: never the whole text, nor a Python object per character, in
memory, whatever the file's size.

A corpus is read twice, the first time it is used (later runs map its id cache, idcache.py):
- scan(): the file's size, SHA-256 and character count, and its vocabulary (sorted(set(text)),
  found without holding the text), checking strict UTF-8 on the way;
- id_chunks(): the ids of every character, in order, a chunk at a time; it hashes the bytes again
  and refuses a file that changed between the two passes.

Chunks are cut at character boundaries (aligned_chunks), so each decodes on its own and a bad byte
is reported at its true offset in the file wherever the chunk boundaries fall. Pure-ASCII chunks,
the bulk of most corpora, skip decoding: their bytes are their code points.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

import numpy as np

from charnn.data import Vocab, chars_of, code_points
from charnn.errors import CharnnError

CHUNK_BYTES = 1 << 22  # bytes read at a time (4 MB): temporaries stay in tens of MB even for CJK text
MAX_POINT = 0x10FFFF  # the largest Unicode code point


@dataclass(frozen=True)
class TextScan:
    """What the first pass learns about a text file."""

    size: int  # bytes
    sha256: str  # of the bytes, hex
    chars: int  # N: characters (code points)
    vocab: Vocab  # sorted(set(text))


def check_file(path: str) -> int:
    """The size in bytes of a readable, non-empty file at path; else a CharnnError saying what to do."""
    if os.path.isdir(path):
        raise CharnnError(f"{path} is a folder; give the path of a UTF-8 text file")
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise CharnnError(f"{path}: no such file; give the path of a UTF-8 text file") from None
    except OSError as e:
        raise CharnnError(f"cannot read {path}: {e.strerror}") from None
    if size == 0:
        raise CharnnError(f"{path} is empty; give a text with at least a few thousand characters")
    return size


def _open(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as e:
        raise CharnnError(f"cannot read {path}: {e.strerror}") from None


def _boundary(data: bytes) -> int:
    """Where data may be cut so that no UTF-8 character straddles the cut: before a lead byte among
    the last three whose sequence is not complete yet, else at the end (a complete character, ASCII,
    or bytes that are invalid anyway, which decoding then reports)."""
    n = len(data)
    for i in range(n - 1, max(n - 4, -1), -1):
        b = data[i]
        if b < 0x80:  # ASCII: complete
            return n
        if b >= 0xC0:  # a lead byte: 110xxxxx starts 2 bytes, 1110xxxx 3, 11110xxx 4
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return i if n - i < need else n
    return n  # continuation bytes only (10xxxxxx): keep looking is pointless, they are invalid


def aligned_chunks(f: BinaryIO, chunk_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(offset of the chunk in the file, its bytes) for consecutive chunks of about chunk_bytes,
    each ending at a character boundary. An incomplete character at the end of the file is the last
    chunk (decoding it reports the error)."""
    offset, carry = 0, b""
    while True:
        block = f.read(chunk_bytes)
        if not block:
            if carry:
                yield offset, carry
            return
        data = carry + block if carry else block
        cut = _boundary(data)
        carry = data[cut:]
        if cut:
            yield offset, data[:cut]
            offset += cut


def _decode(path: str, offset: int, raw: bytes) -> str:
    """raw, the bytes at offset of the file (whole characters), as text; invalid UTF-8 is a
    CharnnError with the offset of the first bad byte in the file, and the reason decoding the
    whole file would give."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        at, reason = offset + e.start, e.reason
    # The reason can depend on the bytes after the bad one (an "unexpected end of data" here may be
    # an "invalid continuation byte" in the file), and those may be in the next chunk: a UTF-8
    # character is at most 4 bytes, so decode the file's 4 bytes from there.
    with _open(path) as f:
        f.seek(at)
        window = f.read(4)
    try:
        window.decode("utf-8")
    except UnicodeDecodeError as e:
        reason = e.reason
    raise CharnnError(f"{path} is not valid UTF-8: byte 0x{window[0]:02x} at offset {at} ({reason}); "
                      "convert it to UTF-8 first (for example with iconv)")


def _points(path: str, offset: int, raw: bytes) -> np.ndarray:
    """(n,) code points of a chunk: an ASCII chunk's bytes as they are (uint8, no copy), else its
    decoded text through UTF-32 (uint32)."""
    if raw.isascii():
        return np.frombuffer(raw, dtype=np.uint8)
    return code_points(_decode(path, offset, raw))


def scan(path: str, progress: Callable[[int], None] | None = None, chunk_bytes: int | None = None) -> TextScan:
    """The first pass: size, SHA-256, characters and vocabulary, and strict UTF-8 (CharnnError with
    the offset of the first bad byte). progress(n) is told of every n bytes read."""
    size = check_file(path)
    digest = hashlib.sha256()
    seen = np.zeros(MAX_POINT + 1, dtype=bool)  # (0x110000,) which code points occur
    seen_ascii = b""  # the ASCII characters seen so far, as bytes
    chars = 0
    with _open(path) as f:
        for offset, raw in aligned_chunks(f, chunk_bytes or CHUNK_BYTES):
            digest.update(raw)
            text = None if raw.isascii() else _decode(path, offset, raw)  # decoding validates
            chars += len(raw) if text is None else len(text)
            # Only what is not known yet needs marking: deleting the ASCII bytes already seen leaves,
            # in most chunks, next to nothing (ASCII bytes never occur inside a multi-byte
            # character, so what is left is still valid UTF-8); when much is left (a text mostly
            # in another script), the chunk's decoded text is used as it is.
            rest = raw.translate(None, seen_ascii)
            if rest:
                new = rest.decode("utf-8") if text is None or 4 * len(rest) < len(raw) else text
                seen[code_points(new)] = True
                seen_ascii = bytes(np.flatnonzero(seen[:128]).astype(np.uint8))
            if progress:
                progress(len(raw))
    return TextScan(size=size, sha256=digest.hexdigest(), chars=chars, vocab=Vocab(chars_of(np.flatnonzero(seen))))


def id_chunks(path: str, scan: TextScan, progress: Callable[[int], None] | None = None,
              chunk_bytes: int | None = None) -> Iterator[np.ndarray]:
    """The second pass: the ids of every character of the file, in order, a chunk at a time, each
    (n,) of dtype scan.vocab.dtype. Raises CharnnError if the file is not the one scanned (it changed
    in between: its hash, length or characters differ), before yielding more ids than it has."""
    vocab = scan.vocab
    lut = np.zeros(int(vocab.points[-1]) + 1, dtype=vocab.dtype)  # code point -> id
    lut[vocab.points] = np.arange(vocab.size)
    # With 1-byte ids an ASCII chunk is translated byte to id by bytes.translate (twice numpy's speed).
    table = None
    if vocab.dtype == np.uint8:
        ascii_ids = np.zeros(256, dtype=np.uint8)  # (256,) the id of each ASCII byte (0 for those not in the text)
        ascii_ids[:min(128, len(lut))] = lut[:128]
        table = ascii_ids.tobytes()
    changed = CharnnError(f"{path} changed while it was being read; run again once nothing is writing to it")
    digest = hashlib.sha256()
    done = 0
    with _open(path) as f:
        for offset, raw in aligned_chunks(f, chunk_bytes or CHUNK_BYTES):
            digest.update(raw)
            if table is not None and raw.isascii():
                ids = np.frombuffer(raw.translate(table), dtype=np.uint8)
            else:
                points = _points(path, offset, raw)
                if int(points.max()) >= len(lut):
                    raise changed
                ids = lut[points]
            done += len(ids)
            if done > scan.chars:
                raise changed
            if progress:
                progress(len(raw))
            yield ids
    if done != scan.chars or digest.hexdigest() != scan.sha256:
        raise changed


def file_sha256(path: str, progress: Callable[[int], None] | None = None, chunk_bytes: int | None = None) -> str:
    """The SHA-256 of a file's bytes, hex, read in chunks."""
    digest = hashlib.sha256()
    with _open(path) as f:
        while block := f.read(chunk_bytes or CHUNK_BYTES):
            digest.update(block)
            if progress:
                progress(len(block))
    return digest.hexdigest()


def read_ids(path: str, progress: Callable[[int], None] | None = None,
             chunk_bytes: int | None = None) -> tuple[TextScan, np.ndarray]:
    """Both passes into memory: (the scan, (N,) ids). For a corpus that is not cached (--no-cache)."""
    found = scan(path, progress, chunk_bytes)
    ids = np.empty(found.chars, dtype=found.vocab.dtype)  # (N,)
    start = 0
    for chunk in id_chunks(path, found, progress, chunk_bytes):
        ids[start:start + len(chunk)] = chunk
        start += len(chunk)
    return found, ids



def read_slice(path: str, start: int, count: int, chunk_bytes: int | None = None) -> tuple[str, int | None]:
    """Characters start .. start+count of the UTF-8 file at path, with scan's checks, read a chunk at
    a time so that a large file is never whole in memory (reading stops once they are in); and the
    file's length in characters if it ends before start+count, else None."""
    check_file(path)
    pieces, seen = [], 0  # the slice's parts; characters of the file decoded so far
    with _open(path) as f:
        for offset, raw in aligned_chunks(f, chunk_bytes or CHUNK_BYTES):
            text = _decode(path, offset, raw)
            lo, hi = max(start - seen, 0), min(start + count - seen, len(text))
            if lo < hi:
                pieces.append(text[lo:hi])
            seen += len(text)
            if seen >= start + count:
                return "".join(pieces), None
    return "".join(pieces), seen


def read_text(path: str) -> str:
    """A whole (small) UTF-8 text file as a string, with scan's checks: a prompt's prime text."""
    check_file(path)
    with _open(path) as f:
        return _decode(path, 0, f.read())
