"""Two simple models to hold a validation loss up against: "is my validation loss good?"

Both are fitted on the training split only (on its first FIT_CHARS characters, so that their time
and memory stay bounded whatever the corpus's size) and score the characters the model's
evaluation scores (data.Pieces), in bits per character (the unit evaluate.bits reports the
model's loss in).

- unigram_bits: add-one (Laplace) smoothed character frequencies. What a model gets for learning
  only which characters are common; a fresh model starts near log2 V, above it.
- ngram_bits: an interpolated Witten-Bell character n-gram model (Witten & Bell 1991, in the
  interpolated form of Chen & Goodman 1998, "An empirical study of smoothing techniques for
  language modeling", section 2.5):

      P_k(w | h) = (c(h w) + N1+(h .) P_{k-1}(w | h')) / (c(h) + N1+(h .))   if c(h) > 0
      P_k(w | h) = P_{k-1}(w | h')                                            if c(h) = 0

  h is the k characters before w, h' drops the oldest of them, P_0 is the add-one unigram;
  c(h w) counts h w in the training split, c(h) = sum_w c(h w) counts h followed by a character
  (so each P_k sums to 1 over the vocabulary) and N1+(h .) is the number of distinct characters
  seen after h. A character-level RNN that cannot beat an order-5 n-gram model has not yet learned
  much beyond a few characters of context.

Counting is vectorised (one pass per order, no Python loop per character): an n-gram is the
integer whose base-V digits are its ids, oldest first, so
    key(h w) = key(h) * V + w,   key(h) = key(h w) // V,   key(h') = key(h) mod V**(k-1).
Distinct keys and their counts come from np.unique (sorted), and the validation n-grams are
looked up with np.searchsorted. Keys are uint64, so an order needs V**order <= 2**64: for a large
vocabulary the order is lowered to the largest that fits and the order used is returned. Memory
is a few arrays the length of the text (the distinct n-grams), never V**order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np

from charnn import data

KEY_BITS = 64  # keys are uint64
# Training characters the baselines are fitted on, at most, so their time and memory are bounded
# whatever the corpus's size. Fitting costs about 24 bytes a character at its peak (np.unique of
# 8-byte keys, one order at a time). Measured on a 100 MB text of prose and code: 5 M characters,
# 2.1 s and 106 MB, 5-gram 1.879 bits/char; 10 M, 3.5 s and 237 MB, 1.856; 20 M, 5.6 s and 504 MB,
# 1.842. 10 M keeps a first run's memory within its bound (400 MB beyond the model) with room to
# spare. Tiny shakespeare's 1,003,855 training characters are all used.
FIT_CHARS = 10_000_000
ORDER = 5  # the n-gram baseline's order: training's and charnn explain's


class NgramBits(NamedTuple):
    bits: float  # mean bits per validation character
    order: int  # the order used: the one asked for, or lower if V**order does not fit in KEY_BITS


@dataclass(frozen=True)
class OrderCounts:
    """Training counts of the n-grams with k characters of context (n = k + 1), sorted by key."""

    keys: np.ndarray  # (U,) uint64 distinct keys of the n-grams h w
    counts: np.ndarray  # (U,) int64 c(h w)
    contexts: np.ndarray  # (C,) uint64 distinct keys of the contexts h
    context_counts: np.ndarray  # (C,) int64 c(h) = sum_w c(h w)
    followers: np.ndarray  # (C,) int64 N1+(h .), distinct characters seen after h


@dataclass(frozen=True)
class NgramModel:
    vocab_size: int  # V
    order: int  # n: up to n-1 characters of context
    unigram: np.ndarray  # (V,) float64 add-one probabilities, P_0
    tables: tuple[OrderCounts, ...]  # tables[k-1] for k = 1 .. n-1 characters of context


def max_order(vocab_size: int) -> int:
    """The largest n with V**n <= 2**64, so every key of n ids fits in a uint64 (at least 3:
    a vocabulary is at most 0x110000 code points). Unbounded for V = 1; capped at 64 there."""
    n = 1
    while n < KEY_BITS and vocab_size ** (n + 1) <= 2 ** KEY_BITS:
        n += 1
    return n


def unigram_probs(train_ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """(V,) float64 add-one smoothed frequencies: (c(w) + 1) / (N + V)."""
    _check_ids(train_ids, vocab_size)
    counts = np.bincount(train_ids, minlength=vocab_size)  # (V,) int64
    return (counts + 1) / (len(train_ids) + vocab_size)


def unigram_bits(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int) -> float:
    """Mean bits per character of all of val_ids under the add-one unigram of train_ids.

    train_ids: (N,), val_ids: (M,) with M >= 1, ids in [0, V).
    """
    _check_ids(val_ids, vocab_size)
    assert len(val_ids) >= 1, "need a validation character to score"
    p = unigram_probs(train_ids, vocab_size)
    return float(-np.mean(np.log2(p[val_ids])))


def ngram_keys(ids: np.ndarray, vocab_size: int, max_n: int) -> Iterator[tuple[int, np.ndarray]]:
    """(n, keys) for n = 1 .. max_n: keys (len(ids) - n + 1,) uint64, keys[i] the n-gram ids[i:i+n].

    Each order extends the last by one digit (key * V + next id), so only three arrays live at a
    time. ids are cast to uint64 first: a uint8 id times V would wrap, and uint64 mixed with a
    signed type gives float64.
    """
    assert vocab_size ** max_n <= 2 ** KEY_BITS, "see max_order"
    V = np.uint64(vocab_size)  # a numpy scalar: a Python int would make numpy 1.x promote to float
    ids = ids.astype(np.uint64)  # (N,)
    keys = ids  # (N,) the 1-grams
    for n in range(1, max_n + 1):
        yield n, keys
        keys = keys[:-1] * V + ids[n:]  # (N - n,)


def fit_ngram(train_ids: np.ndarray, vocab_size: int, order: int = ORDER, progress=None) -> NgramModel:
    """Count the 2- to order-grams of train_ids (N,). order is lowered to max_order(V) if higher.
    progress(1) is called after each order."""
    _check_ids(train_ids, vocab_size)
    if order < 1:
        raise ValueError(f"an n-gram order is at least 1, got {order}")
    order = min(order, max_order(vocab_size))
    V = np.uint64(vocab_size)
    tables = []
    for n, keys in ngram_keys(train_ids, vocab_size, order):
        if n == 1:
            continue  # the unigram is P_0, smoothed apart
        keys, counts = np.unique(keys, return_counts=True)  # (U,) sorted distinct n-grams
        ctx = keys // V  # (U,) key(h): sorted too, so each context's n-grams are one run
        first = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]]) if len(ctx) else np.empty(0, np.intp)
        counts = counts.astype(np.int64)
        tables.append(OrderCounts(
            keys=keys,
            counts=counts,
            contexts=ctx[first],  # (C,)
            context_counts=np.add.reduceat(counts, first) if len(first) else np.empty(0, np.int64),
            followers=np.diff(np.r_[first, len(keys)]).astype(np.int64),  # run lengths
        ))
        if progress:
            progress(1)
    return NgramModel(vocab_size, order, unigram_probs(train_ids, vocab_size), tuple(tables))


def _find(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(i, found), both (Q,): where each query is in the non-empty sorted_keys, and whether it is."""
    i = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return i, sorted_keys[i] == queries


def _interpolate(table: OrderCounts, keys: np.ndarray, lower: np.ndarray, vocab_size: int) -> np.ndarray:
    """(Q,) P_k(w | h) from the n-gram keys (Q,) of h w and lower = P_{k-1}(w | h') (Q,)."""
    if len(table.keys) == 0:
        return lower  # a training split shorter than n: no context was seen
    i, found = _find(table.keys, keys)
    c_hw = np.where(found, table.counts[i], 0)  # (Q,)
    j, seen = _find(table.contexts, keys // np.uint64(vocab_size))  # key(h); seen: c(h) > 0
    c_h = np.where(seen, table.context_counts[j], 0)  # (Q,)
    n1 = np.where(seen, table.followers[j], 0)  # (Q,)
    # An unseen context backs off entirely (there c(h) = N1+ = 0 and the formula is 0/0).
    return np.where(seen, (c_hw + n1 * lower) / np.maximum(c_h + n1, 1), lower)


def ngram_probs(model: NgramModel, ids: np.ndarray) -> np.ndarray:
    """(M,) P(ids[t] | ids[t-n+1 : t]) for every t of ids (M,); for t < n-1 the context is the t
    ids before it (the lower orders alone)."""
    _check_ids(ids, model.vocab_size)
    p = model.unigram[ids]  # (M,) P_0
    for n, keys in ngram_keys(ids, model.vocab_size, model.order):
        if n > 1:  # keys[i] is the n-gram ending at t = i + n - 1
            p[n - 1:] = _interpolate(model.tables[n - 2], keys, p[n - 1:], model.vocab_size)
    return p


def next_char_probs(model: NgramModel, history: np.ndarray) -> np.ndarray:
    """(V,) P(. | the last n-1 ids of history), the distribution the model predicts after it."""
    _check_ids(history, model.vocab_size)
    V = model.vocab_size
    context = history[len(history) - min(len(history), model.order - 1):]  # (k,) the ids that count
    p = model.unigram.copy()  # (V,) P_0
    w = np.arange(V, dtype=np.uint64)  # (V,) every candidate next character
    key_h = 0  # key of the last k context characters, a Python int (exact; < V**k)
    for k in range(1, len(context) + 1):
        key_h += int(context[-k]) * V ** (k - 1)  # the next older character is the top digit
        p = _interpolate(model.tables[k - 1], np.uint64(key_h) * np.uint64(V) + w, p, V)
    return p


def ngram_bits(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int, order: int = ORDER) -> NgramBits:
    """Mean bits per character of all of val_ids (M,), M >= 1, under the interpolated Witten-Bell
    model of train_ids (N,), and the order used (lowered if V**order does not fit in a uint64).

    val_ids[t] is scored given val_ids[t-order+1 : t]: the first order-2 characters of val get the
    shorter context that precedes them in val (never the end of train), so every one is scored once.
    """
    assert len(val_ids) >= 1, "need a validation character to score"
    model = fit_ngram(train_ids, vocab_size, order)
    p = ngram_probs(model, val_ids)
    return NgramBits(float(-np.mean(np.log2(p))), model.order)


def baselines(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int, order: int = ORDER,
              pieces: data.Pieces | None = None, fit_chars: int | None = None, progress=None) -> dict:
    """Both baselines, as plain JSON values for a checkpoint header: {"unigram_bits", "ngram_bits",
    "ngram_order", "fit_chars", "scored_chars"}.

    Fitted on the first fit_chars characters of train_ids (all of them if None or fewer). Scored on
    what the model's evaluation scores: the predictions of `pieces` of val_ids (by default every
    character of val_ids after the first, data.pieces). Each piece is scored on its own, its first
    character the first context, as the model starts each piece from a zero state. progress(1) is
    called after each n-gram order is fitted and once scoring is done (work_units of them).
    """
    fit = train_ids[:fit_chars] if fit_chars is not None else train_ids
    pieces = pieces or data.pieces(len(val_ids))
    model = fit_ngram(np.asarray(fit), vocab_size, order, progress)
    unigram_total = ngram_total = 0.0  # summed bits
    for start, length in zip(pieces.starts, pieces.lengths):
        piece = np.asarray(val_ids[start:start + length + 1])  # (length + 1,) its inputs and the last target
        unigram_total -= float(np.log2(model.unigram[piece[1:]]).sum())
        ngram_total -= float(np.log2(ngram_probs(model, piece)[1:]).sum())
    if progress:
        progress(1)
    return {"unigram_bits": unigram_total / pieces.predicted, "ngram_bits": ngram_total / pieces.predicted,
            "ngram_order": model.order, "fit_chars": len(fit), "scored_chars": pieces.predicted}


def work_units(vocab_size: int, order: int = ORDER) -> int:
    """How many progress(1) calls baselines() makes: one per n-gram order fitted, one for scoring."""
    return min(order, max_order(vocab_size))


def _check_ids(ids: np.ndarray, vocab_size: int) -> None:
    """ids must be 1-D integers in [0, V): keys are formed without sign or range checks."""
    if ids.ndim != 1 or ids.dtype.kind not in "ui":
        raise ValueError(f"ids must be a 1-D integer array (see data.id_dtype), got {ids.dtype} {ids.shape}")
    if vocab_size < 1 or (len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size)):
        raise ValueError(f"ids must be in [0, {vocab_size})")
