"""From a corpus to the integer arrays the model trains and is scored on.

- Vocab: the sorted set of the text's characters (Unicode code points, not bytes), as min-char-rnn
  builds it but in a fixed order (`sorted(set(text))`), so the same text always gives the same ids.
  A corpus file is read and encoded in chunks by textfile.py, and its ids cached by idcache.py.
- split: the last val_frac of the text is the validation split; nothing else decides it.
- BatchStream: B contiguous streams over the training split, char-rnn style; step k of a pass takes
  the k-th window of T characters from every stream, so a stream's hidden state can be carried from
  one window to the next. It reads only those windows, so the ids can be a memory map of a corpus
  of any size; a process of a data-parallel run reads only its own block of streams.
- Pieces: the validation characters an evaluation scores, as S contiguous pieces run side by side.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from charnn.errors import CharnnError

EVAL_STREAMS = 32  # S: pieces an evaluation runs side by side (see pieces())
REMAP_CHUNK = 1 << 22  # ids translated at a time by in_vocab (an 8-byte index copy of them: 32 MB)


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id (1 byte per character for V <= 256)."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise AssertionError("a vocabulary is at most 0x110000 code points")


def code_points(text: str) -> np.ndarray:
    """(N,) uint32 code points of `text`, without a Python loop per character."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def chars_of(points: np.ndarray) -> str:
    """The text of an array of code points (the inverse of code_points)."""
    return np.asarray(points).astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


class Vocab:
    """The model's characters in sorted order; a character's id is its index in `chars`."""

    def __init__(self, chars: str):
        if not chars or list(chars) != sorted(set(chars)):
            raise CharnnError("a vocabulary must be a non-empty string of distinct characters in sorted order")
        self.chars = chars
        self.size = len(chars)  # V
        self.dtype = id_dtype(self.size)
        self.points = code_points(chars)  # (V,) code point of each id, ascending
        # Lookup table code point -> id + 1 (0 marks a character outside the vocabulary).
        self._lut = np.zeros(int(self.points[-1]) + 1, dtype=np.uint32)
        self._lut[self.points] = np.arange(1, self.size + 1, dtype=np.uint32)

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
        points = code_points(text)  # (N,)
        mapped = self._lut[np.minimum(points, len(self._lut) - 1)]  # (N,) id + 1, or 0
        if not (mapped.all() and (points < len(self._lut)).all()):
            raise CharnnError(f"the text has characters the model never saw: {self.unknown(text)!r}")
        return (mapped - 1).astype(self.dtype)

    def ids_in(self, other: "Vocab") -> np.ndarray:
        """(V,) the id in `other` of each of this vocabulary's characters, -1 where other lacks it."""
        lut = other._lut[np.minimum(self.points, len(other._lut) - 1)].astype(np.int64)  # id + 1, or 0
        lut[self.points >= len(other._lut)] = 0
        return lut - 1

    def decode(self, ids) -> str:
        """The text of a sequence of ids (the inverse of encode)."""
        return chars_of(self.points[np.asarray(ids, dtype=np.intp)])


@dataclass
class Corpus:
    path: str
    vocab: Vocab
    ids: np.ndarray  # (N,) ids of every character of the file, dtype from id_dtype(V): a read-only
    #                  map of the id cache (idcache.py), or an array in memory (--no-cache)
    sha256: str  # of the file's bytes: a resumed run checks it trains on the same text
    size: int  # bytes of the file


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

    def __init__(self, ids: np.ndarray, batch_size: int, seq_length: int, rows: tuple[int, int] | None = None):
        """ids: (N,) the training split, in memory or a memory map. rows (b0, b1): read only streams
        b0 .. b1-1, the block one process of a data-parallel run owns (default: all B); the layout,
        and so the windows of a pass, are those of all B streams whatever the block."""
        self.B, self.T = batch_size, seq_length
        self.rows = rows or (0, batch_size)
        b0, b1 = self.rows
        assert 0 <= b0 < b1 <= batch_size, f"rows {self.rows} are not a block of the {batch_size} streams"
        n = len(ids) // batch_size  # characters per stream
        self.streams = ids[:batch_size * n].reshape(batch_size, n)[b0:b1]  # (b1 - b0, n) view: nothing read yet
        self.windows_per_epoch = windows_per_epoch(len(ids), batch_size, seq_length)
        assert self.windows_per_epoch >= 1, "check_sizes() guarantees one window per stream"
        self.epoch = 0  # completed passes
        self.window = 0  # next window within this pass

    def peek(self) -> tuple[np.ndarray, np.ndarray]:
        """The next window, (inputs (T, B'), targets (T, B')) with B' = b1 - b0 streams, without
        moving on. Only these (T+1) x B' ids are read (and copied) from the ids."""
        start = self.window * self.T
        block = self.streams[:, start:start + self.T + 1].T  # (T+1, B'), time-major
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
    def drawn(self) -> int:
        """Batches drawn so far in the run: the next batch's number (masks.py seeds its masks with it)."""
        return self.epoch * self.windows_per_epoch + self.window

    @property
    def position(self) -> float:
        """Passes over the training split completed so far, fractional."""
        return self.epoch + self.window / self.windows_per_epoch


@dataclass(frozen=True)
class Pieces:
    """What an evaluation scores: S contiguous pieces of a text, run side by side as a batch, each
    from a zero state. Piece s reads ids[starts[s] : starts[s] + lengths[s]] as inputs and predicts
    the character after each, so it scores lengths[s] characters."""

    starts: np.ndarray  # (S,) int64, the first input position of each piece
    lengths: np.ndarray  # (S,) int64, the characters each piece predicts; non-increasing

    @property
    def predicted(self) -> int:
        """Characters scored in all."""
        return int(self.lengths.sum())

    def block(self, s0: int, s1: int) -> "Pieces":
        """Pieces s0 .. s1-1: one process's share when the processes of a data-parallel run split an
        evaluation (the sum of their summed losses, over the whole's `predicted`, is the mean)."""
        return Pieces(self.starts[s0:s1], self.lengths[s0:s1])


def pieces(n_chars: int, max_predicted: int | None = None, streams: int = EVAL_STREAMS) -> Pieces:
    """The pieces that score m = min(max_predicted, n_chars - 1) characters of a text of n_chars.

    S = min(streams, m) pieces of n or n + 1 predictions (the first r one longer), in order, with
    the n_chars - 1 - m characters left unscored spread evenly between them (piece s starts after
    s/S of them): the same characters every time, spread over the whole text. Scoring everything
    (max_predicted None, or at least n_chars - 1) leaves no gaps: the pieces tile the text and every
    character after the first is predicted once. S is fixed (not tied to the training batch or
    window), so the figure depends only on the text, the model and m.
    """
    n_pred = n_chars - 1
    m = n_pred if max_predicted is None else min(max_predicted, n_pred)
    assert m >= 1, "need two characters to score one"
    S = min(streams, m)
    s = np.arange(S, dtype=np.int64)
    n, r = divmod(m, S)
    before = s * n + np.minimum(s, r)  # predictions of the pieces before piece s
    return Pieces(starts=s * (n_pred - m) // S + before, lengths=n + (s < r))


def in_vocab(corpus: Corpus, vocab: Vocab) -> Corpus:
    """The corpus with its ids in a vocabulary that holds all its characters, and perhaps more (a
    fine-tuned model's: its parent's characters and the text's own); itself if vocab is its own.
    The new ids are in memory (N of vocab.dtype), made REMAP_CHUNK at a time."""
    if vocab == corpus.vocab:
        return corpus
    new_ids = vocab.encode(corpus.vocab.chars)  # (V_corpus,) each of the corpus's ids in vocab
    ids = np.empty(len(corpus.ids), dtype=vocab.dtype)  # (N,)
    for i in range(0, len(ids), REMAP_CHUNK):
        ids[i:i + REMAP_CHUNK] = new_ids[corpus.ids[i:i + REMAP_CHUNK]]
    return dataclasses.replace(corpus, vocab=vocab, ids=ids)
