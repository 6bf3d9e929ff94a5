"""The loss of a model on a whole text, every character scored, the state carried through it.

One stream through a long text is slow (a batch of 1 leaves the matrix products tiny), so the
text is cut into S = EVAL_STREAMS contiguous pieces run side by side as a batch. Each piece starts
from a zero state and carries it to its end, so only the first few characters of each piece are
scored without context; S is fixed (not tied to the training batch or window), so the figure
depends on the text and the model alone. Every character after the first is predicted once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from charnn import layers, model
from charnn.config import ModelConfig
from charnn.data import Vocab
from charnn.errors import CharnnError

EVAL_STREAMS = 32
WINDOW = 256  # steps per forward call: bounds the memory of the activations


def mean_loss(params, config: ModelConfig, ids: np.ndarray, streams: int = EVAL_STREAMS) -> float:
    """Mean cross-entropy in nats per predicted character of ids[1:] given what precedes it.

    ids: (N,) with N >= 2. The N-1 predictions are split into S pieces of n or n+1 (the first r
    pieces are one longer); piece s starts at a[s] and predicts ids[a[s]+1 : a[s]+len_s+1].
    """
    n_pred = len(ids) - 1
    assert n_pred >= 1, "need two characters to score one"
    S = min(streams, n_pred)
    n, r = divmod(n_pred, S)
    starts = np.arange(S) * n + np.minimum(np.arange(S), r)  # (S,) first input index of each piece
    dtype = params["Why"].dtype
    state = model.zero_state(config, S, dtype)
    total = 0.0  # summed nats, float64
    for t0 in range(0, n, WINDOW):
        steps = np.arange(t0, min(t0 + WINDOW, n))[:, None]  # (W, 1)
        idx = starts[None, :] + steps  # (W, S) input positions
        logits, _, state, _ = model.forward(params, config, ids[idx], state)  # no targets: no gradient made
        total += layers.cross_entropy(logits, ids[idx + 1].reshape(-1))
    if r:  # the last input of the r longer pieces
        idx = (starts[:r] + n)[None, :]  # (1, r)
        tail = {name: s[:, :r] for name, s in state.items()}
        logits, _, _, _ = model.forward(params, config, ids[idx], tail)
        total += layers.cross_entropy(logits, ids[idx + 1].reshape(-1))
    return total / n_pred


def bits(nats: float) -> float:
    """Nats per character to bits per character."""
    return nats / math.log(2)


@dataclass
class TextScore:
    nats: float  # mean cross-entropy per predicted character
    predicted: int  # characters scored (all known characters but the first)
    skipped: int  # characters outside the model's vocabulary, left out of the text
    unknown: str  # those characters, distinct and sorted

    @property
    def bits(self) -> float:
        return bits(self.nats)

    @property
    def perplexity(self) -> float:
        """exp(nats); inf above about 709.8 nats, where float64 ends (math.exp would raise)."""
        return math.exp(self.nats) if self.nats < math.log(np.finfo(np.float64).max) else math.inf


def score_text(params, config: ModelConfig, vocab: Vocab, text: str) -> TextScore:
    """The model's loss on any text. Characters the vocabulary lacks are counted and left out (the
    text closes up around them), so a stray symbol costs nothing and crashes nothing."""
    ids, unknown, skipped = vocab.encode_known(text)
    if len(ids) < 2:
        raise CharnnError(f"the text has {len(ids)} characters the model knows; it needs at least 2 to score one")
    return TextScore(mean_loss(params, config, ids), len(ids) - 1, skipped, unknown)
