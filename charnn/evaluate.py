"""The loss of a model on a text: its characters scored in pieces, the state carried through each.

One stream through a long text is slow (a batch of 1 leaves the matrix products tiny), so the
text is scored as S = EVAL_STREAMS contiguous pieces run side by side as a batch (data.pieces).
Each piece starts from a zero state and carries it to its end, so only the first few characters
of each piece are scored without context; S is fixed (not tied to the training batch or window),
so the figure depends on the text, the model and how many characters are scored. Scored whole,
every character after the first is predicted once; a bounded subset (--val-chars, `eval --chars`)
is S pieces spread evenly over the text, the same ones every time.

summed_loss scores any block of the pieces, so the processes of a data-parallel run can each
score their share and add up the sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from charnn import layers, model
from charnn.config import ModelConfig
from charnn.data import EVAL_STREAMS, Corpus, Pieces, Vocab, pieces as make_pieces  # noqa: F401 (EVAL_STREAMS: still here)
from charnn.errors import CharnnError

# Steps per forward call. 64, the default T, keeps an evaluation's activations no larger than a
# training step's, and measured 15-20% faster than 256 (smaller arrays stay in cache).
WINDOW = 64


def summed_loss(params, config: ModelConfig, ids: np.ndarray, pieces: Pieces, lut: np.ndarray | None = None) -> float:
    """Summed cross-entropy in nats of the predictions of `pieces` of ids (N,) (in memory or a map;
    only the pieces' characters are read). lut, if given, maps each id of ids to the model's id.

    The pieces run side by side, WINDOW steps per forward call; their lengths are non-increasing,
    so once the shorter ones end the longer ones go on as the first k columns of the batch.
    """
    def read(idx):  # ids at the positions idx, as the model's ids
        return ids[idx] if lut is None else lut[ids[idx]]

    lengths = pieces.lengths
    state = model.zero_state(config, len(lengths), params["Why"].dtype)
    total, t0 = 0.0, 0  # summed nats (float64); the step every running piece is at
    while len(lengths) and t0 < lengths[0]:
        k = int(np.count_nonzero(lengths > t0))  # pieces still running: the first k
        w = min(WINDOW, int(lengths[k - 1]) - t0)  # steps they all have left, at most WINDOW
        idx = pieces.starts[:k][None, :] + np.arange(t0, t0 + w)[:, None]  # (w, k) input positions
        state = {name: s[:, :k] for name, s in state.items()}
        logits, _, state, _ = model.forward(params, config, read(idx), state)  # no targets: no gradient made
        total += layers.cross_entropy(logits, read(idx + 1).reshape(-1))
        t0 += w
    return total


def mean_loss(params, config: ModelConfig, ids: np.ndarray, pieces: Pieces | None = None) -> float:
    """Mean cross-entropy in nats per predicted character of `pieces` of ids (N,); by default every
    character of ids after the first (N >= 2)."""
    pieces = pieces or make_pieces(len(ids))
    return summed_loss(params, config, ids, pieces) / pieces.predicted


def bits(nats: float) -> float:
    """Nats per character to bits per character."""
    return nats / math.log(2)


CLOSE_UP_CHUNK = 1 << 22  # ids translated at a time when closing up a text around unknown characters


@dataclass
class TextScore:
    nats: float  # mean cross-entropy per predicted character
    predicted: int  # characters scored (all known characters but the first, unless limited)
    known: int  # characters of the text the model knows
    skipped: int  # characters outside the model's vocabulary, left out of the text
    unknown: str  # those characters, distinct and sorted

    @property
    def bits(self) -> float:
        return bits(self.nats)

    @property
    def perplexity(self) -> float:
        """e^nats; inf above 709.78 nats, where a float64 overflows."""
        try:
            return math.exp(self.nats)
        except OverflowError:
            return math.inf


def score_corpus(params, config: ModelConfig, vocab: Vocab, corpus: Corpus, max_chars: int | None = None) -> TextScore:
    """The model's loss on any corpus, at most max_chars characters of it (all if None) scored in
    pieces spread over it. Characters the vocabulary lacks are counted and left out (the text
    closes up around them), so a stray symbol costs nothing and crashes nothing."""
    lut = corpus.vocab.ids_in(vocab)  # (V_text,) the model's id of each of the text's ids, -1 if unknown
    missing = np.flatnonzero(lut < 0)
    ids, skipped, unknown = corpus.ids, 0, ""
    if len(missing):  # close up: the known characters' model ids, in memory (one pass over the text)
        known = []
        for i in range(0, len(corpus.ids), CLOSE_UP_CHUNK):
            chunk = lut[corpus.ids[i:i + CLOSE_UP_CHUNK]]
            known.append(chunk[chunk >= 0].astype(vocab.dtype))
        ids = np.concatenate(known)
        skipped, unknown = len(corpus.ids) - len(ids), corpus.vocab.decode(missing)
    lut = None if len(missing) or corpus.vocab == vocab else lut.astype(vocab.dtype)  # None: ids are the model's
    if len(ids) < 2:
        raise CharnnError(f"the text has {len(ids)} characters the model knows; it needs at least 2 to score one")
    pieces = make_pieces(len(ids), max_chars)
    nats = summed_loss(params, config, ids, pieces, lut) / pieces.predicted
    return TextScore(nats, pieces.predicted, len(ids), skipped, unknown)


def score_text(params, config: ModelConfig, vocab: Vocab, text: str, max_chars: int | None = None) -> TextScore:
    """score_corpus for a text in memory, a string."""
    if not text:
        raise CharnnError("the text has 0 characters the model knows; it needs at least 2 to score one")
    own = Vocab.from_text(text)
    return score_corpus(params, config, vocab, Corpus(path="", vocab=own, ids=own.encode(text), sha256="", size=0),
                        max_chars)
