"""The rules that choose the next character from the model's logits, and the generators they draw with.

A row of logits (V,) becomes a distribution in three cuts, in the order Hugging Face's `generate`
applies them:
    1. temperature:  softmax(logits / temperature); lower is more conservative, higher more varied
    2. top_k:        only the k most likely characters keep their probability (ties at the k-th kept)
    3. top_p:        nucleus sampling (Holtzman et al. 2020, "The curious case of neural text
                     degeneration"): of what is left, only the smallest set of most likely
                     characters whose probability reaches p
then one character is drawn from it by inverse-CDF sampling. argmax takes the most likely
character instead (deterministic). Every rule works on a batch of rows, (B, V), each row drawn
with its own generator, so a batch of B samples draws exactly what B single samples would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charnn import layers
from charnn.errors import CharnnError


@dataclass(frozen=True)
class Decoding:
    """How the next character is chosen (the options of `charnn sample`)."""

    temperature: float = 1.0
    top_k: int | None = None  # None: every character
    top_p: float | None = None  # None: no nucleus cut (the same as 1)
    argmax: bool = False  # take the most likely character; the others are then unused

    def check(self) -> "Decoding":
        if not self.temperature > 0:
            raise CharnnError(f"--temperature must be above 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise CharnnError(f"--top-k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CharnnError(f"--top-p must be above 0 and at most 1, got {self.top_p}")
        return self


def generators(random_seed: int | None, n: int) -> list[np.random.Generator]:
    """The n per-sample generators of a seed: numpy's SeedSequence children (independent
    streams). Child i depends only on the seed and i, so sample i is the same text whether it is
    made alone or in a batch of any size; None: fresh entropy."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(random_seed).spawn(n)]


def distribution(logits: np.ndarray, decoding: Decoding) -> np.ndarray:
    """The weights the next character is drawn from: logits (B, V) -> (B, V) float64, zero outside
    what top_k and top_p allow. The rows are not renormalised after the cuts (draw scales by each
    row's sum)."""
    V = logits.shape[-1]
    k = decoding.top_k
    if k is not None and k < V:
        cutoff = np.partition(logits, -k, axis=-1)[..., -k, None]  # (B, 1): the k-th largest logit
        logits = np.where(logits < cutoff, -np.inf, logits)
    p = layers.softmax(logits, decoding.temperature)  # (B, V)
    if decoding.top_p is not None and decoding.top_p < 1:
        order = np.argsort(-p, axis=-1, kind="stable")  # (B, V) most likely first
        ranked = np.take_along_axis(p, order, axis=-1)
        before = np.zeros_like(ranked)  # (B, V) the probability of the more likely characters
        np.cumsum(ranked[..., :-1], axis=-1, out=before[..., 1:])
        inside = np.empty(p.shape, bool)  # the nucleus: a character is in it while the ones before fall short of p
        np.put_along_axis(inside, order, before < decoding.top_p, axis=-1)
        p[~inside] = 0
    return p


def draw(logits: np.ndarray, rngs: list[np.random.Generator], decoding: Decoding) -> np.ndarray:
    """The next id of each row: logits (B, V), one generator per row -> (B,) ids. Each row uses
    one uniform draw of its own generator: the first id whose cumulative weight exceeds it."""
    if decoding.argmax:
        return np.argmax(logits, axis=-1)
    cdf = distribution(logits, decoding).cumsum(axis=-1)  # (B, V)
    # (B,) uniform in [0, row sum): random() <= 1 - 2**-53, and that times a float rounds below it
    u = np.array([rng.random() for rng in rngs]) * cdf[:, -1]
    return np.add.reduce(cdf <= u[:, None], axis=-1)  # (B,) an id with no weight is never taken: the cdf is flat there
