"""Generating text: prime the model with a seed, then draw one character at a time.

Each generated character is fed back as the next input (Karpathy 2015, "The unreasonable
effectiveness of recurrent neural networks"). The distribution of the next character is
softmax(logits / temperature), optionally cut to the top_k most likely; argmax takes the most
likely character every time, which makes the output deterministic.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from charnn import layers, model
from charnn.config import ModelConfig
from charnn.data import Vocab
from charnn.errors import CharnnError


def choose(logits: np.ndarray, rng: np.random.Generator, temperature=1.0, top_k=None, argmax=False) -> int:
    """Pick the next id from logits: (V,). Inverse-CDF sampling: the first id whose cumulative
    probability exceeds a uniform draw."""
    if argmax:
        return int(np.argmax(logits))
    if top_k is not None and top_k < len(logits):
        cutoff = np.partition(logits, -top_k)[-top_k]  # the k-th largest logit
        logits = np.where(logits < cutoff, -np.inf, logits)  # (V,)
    cdf = np.cumsum(layers.softmax(logits, temperature))  # (V,)
    i = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return min(i, len(logits) - 1)  # guards the (measure-zero) draw of exactly cdf[-1]


def check_options(temperature: float, top_k: int | None, length: int) -> None:
    if not temperature > 0:
        raise CharnnError(f"--temperature must be above 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise CharnnError(f"--top-k must be at least 1, got {top_k}")
    if length < 0:
        raise CharnnError(f"--length must be 0 or more, got {length}")


def generate(params, config: ModelConfig, vocab: Vocab, seed: str, length: int, rng: np.random.Generator,
             temperature=1.0, top_k=None, argmax=False) -> Iterator[str]:
    """Yield `length` characters continuing `seed` (which must be non-empty and use only the
    vocabulary's characters: CharnnError names the others)."""
    check_options(temperature, top_k, length)
    if not seed:
        raise CharnnError("the seed text is empty; give at least one character")
    ids = vocab.encode(seed)[:, None]  # (T, 1)
    dtype = params["Why"].dtype
    # Priming: the whole seed in one forward pass; its last logits predict the first new character.
    logits, _, state, _ = model.forward(params, config, ids, model.zero_state(config, 1, dtype))
    last = logits[-1]  # (V,)
    stepper = model.Stepper(params, config, 1, state)
    for k in range(length):
        next_id = choose(last, rng, temperature, top_k, argmax)
        yield vocab.chars[next_id]
        if k + 1 < length:
            last = stepper.step(next_id)


def default_seed(vocab: Vocab, rng: np.random.Generator) -> str:
    """A newline, the natural start of a text, if the model knows it; else a random character."""
    return "\n" if "\n" in vocab.chars else vocab.chars[int(rng.integers(vocab.size))]
