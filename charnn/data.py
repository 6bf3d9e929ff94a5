"""From a text file to the integer arrays the model trains on.

- read_corpus: strict UTF-8, with the byte offset of the first bad byte in the error.
- Vocab: the sorted set of the text's characters (Unicode code points, not bytes), as min-char-rnn
  builds it but in a fixed order (`sorted(set(text))`), so the same text always gives the same ids.
- Encoding works on whole arrays of code points (no Python loop per character), in chunks so a
  100 MB text needs little more memory than its ids.
- split: the last val_frac of the text is the validation split; nothing else decides it.
- BatchStream: B contiguous streams over the training split, char-rnn style; step k of a pass takes
  the k-th window of T characters from every stream, so a stream's hidden state can be carried from
  one window to the next.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from charnn.errors import CharnnError

CHUNK = 1 << 20  # characters per encoding chunk: bounds the temporaries (a few MB each)


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id (1 byte per character for V <= 256)."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise AssertionError("a vocabulary is at most 0x110000 code points")


def _code_points(text: str) -> np.ndarray:
    """(N,) uint32 code points of `text`, without a Python loop per character."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _code_point_chunks(raw: bytes | None, text: str | None) -> Iterator[np.ndarray]:
    """Code points of the corpus, CHUNK at a time. ASCII bytes are their own code points, so a
    pure-ASCII file is viewed in place (no copy); other text goes through UTF-32 chunk by chunk."""
    if raw is not None:
        view = np.frombuffer(raw, dtype=np.uint8)
        for start in range(0, len(view), CHUNK):
            yield view[start:start + CHUNK]
    else:
        for start in range(0, len(text), CHUNK):
            yield _code_points(text[start:start + CHUNK])


class Vocab:
    """The model's characters in sorted order; a character's id is its index in `chars`."""

    def __init__(self, chars: str):
        if not chars or list(chars) != sorted(set(chars)):
            raise CharnnError("a vocabulary must be a non-empty string of distinct characters in sorted order")
        self.chars = chars
        self.size = len(chars)  # V
        self.dtype = id_dtype(self.size)
        self._points = _code_points(chars)  # (V,) code point of each id
        # Lookup table code point -> id + 1 (0 marks a character outside the vocabulary).
        self._lut = np.zeros(int(self._points[-1]) + 1, dtype=np.uint32)
        self._lut[self._points] = np.arange(1, self.size + 1, dtype=np.uint32)

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def unknown(self, text: str) -> str:
        """The distinct characters of `text` the vocabulary lacks, sorted."""
        return "".join(sorted(set(text) - set(self.chars)))

    def encode(self, text: str) -> np.ndarray:
        """(N,) ids of `text`; raises CharnnError naming any character the vocabulary lacks."""
        return self._encode_chunks(_code_point_chunks(None, text), len(text), lambda: self.unknown(text))

    def _encode_chunks(self, chunks: Iterator[np.ndarray], n: int, unknown) -> np.ndarray:
        ids = np.empty(n, dtype=self.dtype)
        start = 0
        for points in chunks:
            mapped = self._lut[np.minimum(points, len(self._lut) - 1)]
            if not (mapped.all() and (points < len(self._lut)).all()):
                missing = unknown()
                raise CharnnError(f"the text has characters the model never saw: {missing!r}")
            np.subtract(mapped, 1, out=ids[start:start + len(points)], casting="unsafe")
            start += len(points)
        return ids

    def encode_known(self, text: str) -> tuple[np.ndarray, str, int]:
        """(ids of the characters of `text` the vocabulary has, in order; the distinct others,
        sorted; how many characters were left out)."""
        points = _code_points(text)
        mapped = self._lut[np.minimum(points, len(self._lut) - 1)].astype(np.int64)
        mapped[points >= len(self._lut)] = 0
        known = mapped > 0
        n_unknown = int(len(points) - known.sum())
        ids = (mapped[known] - 1).astype(self.dtype)
        return ids, (self.unknown(text) if n_unknown else ""), n_unknown

    def decode(self, ids) -> str:
        """The text of a sequence of ids (the inverse of encode)."""
        points = self._points[np.asarray(ids, dtype=np.intp)]
        return points.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


@dataclass
class Corpus:
    path: str
    vocab: Vocab
    ids: np.ndarray  # (N,) ids of every character of the file, dtype from id_dtype(V)
    sha256: str  # of the file's bytes: a resumed run checks it trains on the same text


def _read_utf8(path) -> tuple[bytes, bytes | None, str | None]:
    """(raw bytes, the same bytes if pure ASCII else None, the decoded text else None).

    Raises CharnnError (one line, what to do) for a missing path, a folder, an empty file and
    invalid UTF-8 (with the offset of the first bad byte).
    """
    if os.path.isdir(path):
        raise CharnnError(f"{path} is a folder; give the path of a UTF-8 text file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise CharnnError(f"{path}: no such file; give the path of a UTF-8 text file") from None
    except OSError as e:
        raise CharnnError(f"cannot read {path}: {e.strerror}") from None
    if not raw:
        raise CharnnError(f"{path} is empty; give a text with at least a few thousand characters")
    if raw.isascii():
        return raw, raw, None
    try:
        return raw, None, raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CharnnError(
            f"{path} is not valid UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} ({e.reason}); "
            "convert it to UTF-8 first (for example with iconv)"
        ) from None


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file's contents, with read_corpus's checks."""
    raw, ascii_raw, text = _read_utf8(os.fspath(path))
    return text if text is not None else raw.decode("ascii")


def read_corpus(path: str | os.PathLike) -> Corpus:
    """Read a UTF-8 text file, build its vocabulary and encode it (see _read_utf8 for the errors)."""
    path = os.fspath(path)
    raw, ascii_raw, text = _read_utf8(path)
    digest = hashlib.sha256(raw).hexdigest()
    raw = ascii_raw  # a decoded text replaces the bytes: let them go before the ids are made
    n = len(raw) if raw is not None else len(text)

    # First pass: which code points occur. bincount per chunk keeps the temporaries small.
    seen = np.zeros(128, dtype=bool)
    for points in _code_point_chunks(raw, text):
        counts = np.bincount(points, minlength=len(seen))
        if len(counts) > len(seen):
            seen = np.concatenate([seen, np.zeros(len(counts) - len(seen), dtype=bool)])
        seen |= counts > 0
    chars = _code_points_to_str(np.flatnonzero(seen))
    vocab = Vocab(chars)
    # Second pass: the ids.
    ids = vocab._encode_chunks(_code_point_chunks(raw, text), n, lambda: "")
    return Corpus(path=path, vocab=vocab, ids=ids, sha256=digest)


def _code_points_to_str(points: np.ndarray) -> str:
    return points.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


def split(ids: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, val): the last floor(N * val_frac) characters are the validation split."""
    n_val = int(len(ids) * val_frac)
    return ids[:len(ids) - n_val], ids[len(ids) - n_val:]


def check_sizes(n_chars: int, val_frac: float, batch_size: int, seq_length: int) -> None:
    """Refuse a corpus too short for one training window per stream and one validation window."""
    need_train = batch_size * (seq_length + 1)  # B streams, each at least T inputs + 1 target
    need_val = seq_length + 1
    n_val = int(n_chars * val_frac)
    if n_chars - n_val >= need_train and n_val >= need_val:
        return
    # The shortest corpus that satisfies both, for the message.
    n = max(math.ceil(need_val / val_frac), math.ceil(need_train / (1 - val_frac)))
    while int(n * val_frac) < need_val or n - int(n * val_frac) < need_train:
        n += 1
    raise CharnnError(
        f"the corpus has {n_chars} characters, too few for --batch-size {batch_size}, --seq-length "
        f"{seq_length} and --val-frac {val_frac}: training needs {need_train} (B x (T+1)) and validation "
        f"{need_val} (T+1), so at least {n} characters; use a longer text or lower --batch-size/--seq-length"
    )


def windows_per_epoch(n_train: int, batch_size: int, seq_length: int) -> int:
    """Steps in one pass over a training split of n_train characters (see BatchStream)."""
    return (n_train // batch_size - 1) // seq_length


class BatchStream:
    """B contiguous streams over the training ids, read T characters at a time.

    The text is cut into B equal pieces (the last N mod B characters are left out); stream b is
    piece b. Window k of a pass is columns [kT, kT+T] of every stream: inputs are the first T,
    targets the T after them. A pass ends when a stream has fewer than T+1 characters left (those
    are not used in that pass), and the next starts again at column 0.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_length: int):
        self.B, self.T = batch_size, seq_length
        n = len(ids) // batch_size  # characters per stream
        self.streams = ids[:batch_size * n].reshape(batch_size, n)  # (B, n) view, no copy
        self.windows_per_epoch = windows_per_epoch(len(ids), batch_size, seq_length)
        assert self.windows_per_epoch >= 1, "check_sizes() guarantees one window per stream"
        self.epoch = 0  # completed passes
        self.window = 0  # next window within this pass

    def peek(self) -> tuple[np.ndarray, np.ndarray]:
        """The next window, (inputs (T, B), targets (T, B)), without moving on."""
        start = self.window * self.T
        block = self.streams[:, start:start + self.T + 1].T  # (T+1, B), time-major
        return np.ascontiguousarray(block[:-1]), np.ascontiguousarray(block[1:])

    def next(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """(inputs (T, B), targets (T, B), first): `first` says a pass starts here, so the
        carried hidden state must be reset."""
        first = self.window == 0
        inputs, targets = self.peek()
        self.window += 1
        if self.window == self.windows_per_epoch:
            self.window, self.epoch = 0, self.epoch + 1
        return inputs, targets, first

    @property
    def position(self) -> float:
        """Passes over the training split completed so far, fractional."""
        return self.epoch + self.window / self.windows_per_epoch


def in_vocab(corpus: Corpus, vocab: Vocab) -> Corpus:
    """The corpus with its ids in a vocabulary that holds all its characters, and perhaps more (a
    fine-tuned model's: its parent's characters and the text's own); itself if vocab is its own."""
    if vocab == corpus.vocab:
        return corpus
    new_ids = vocab.encode(corpus.vocab.chars)  # (V_corpus,) each of the corpus's ids in vocab
    return dataclasses.replace(corpus, vocab=vocab, ids=new_ids[corpus.ids])
