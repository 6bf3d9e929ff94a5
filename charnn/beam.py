"""Beam search: the most likely continuation of a seed, where sampling gives a random one.

The most likely text of n characters is not found one character at a time (the most likely first
character may lead nowhere likely). Beam search keeps the `width` most likely texts so far (the
beams) as `width` streams of model.Stepper; each step extends every beam by every character and
keeps the `width` most likely of those. Width 1 is greedy decoding (argmax); a width of V**(n-1)
or more tries every text. It is deterministic: ties go to the earlier beam, then the lower id.

A text's score is its log-probability per character (length-normalised; Wu et al. 2016, "Google's
neural machine translation system", use a softer form of the same idea): a text that ends early
at a stop string competes with full-length ones on the mean, so it does not win by having fewer
probabilities multiplied. Beams still going all have the same length, so among them the sum
orders as the mean does.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from charnn import layers, model
from charnn.config import ModelConfig
from charnn.data import Vocab
from charnn.errors import CharnnError
from charnn.sample import check_length, check_stops, prime


def beam_search(params, config: ModelConfig, vocab: Vocab, seed: str, length: int, width: int,
                stop: Iterable[str] = ()) -> str:
    """The continuation of seed, up to length characters (or to a stop string, which is left out),
    with the best log-probability per character that a beam of this width finds."""
    check_length(length)
    stop = sorted(check_stops(stop), key=len, reverse=True)  # the longest first: a match leaves out all of it
    if width < 1:
        raise CharnnError(f"--beam must be at least 1, got {width}")
    K = width
    last, state = prime(params, config, vocab, seed)
    V = len(last)
    stepper = model.Stepper(params, config, K, {k: np.repeat(s, K, axis=1) for k, s in state.items()})
    logp = layers.log_softmax(np.broadcast_to(last, (K, V)).astype(np.float64))  # (K, V)
    scores = np.full(K, -np.inf)  # (K,) log-probability of each beam's text; at first one beam, the seed
    scores[0] = 0.0
    beams = [""] * K  # the text of each beam (the characters after the seed)
    ended = []  # (score per character, text) of every text that is finished
    for k in range(length):
        total = (scores[:, None] + logp).ravel()  # (K*V,) every beam extended by every character
        rows, ids, kept = [], [], []  # the parent row, the character and the text of each beam kept
        for c in np.argsort(-total, kind="stable"):
            if len(kept) == K or total[c] == -np.inf:
                break
            row, ch = divmod(int(c), V)
            text = beams[row] + vocab.chars[ch]
            hit = next((s for s in stop if text.endswith(s)), None)
            if hit is not None:  # finished: it leaves the beam
                ended.append((total[c] / (k + 1), text[:len(text) - len(hit)]))
            else:
                rows.append(row)
                ids.append(ch)
                kept.append(text)
        new_scores = total[np.array(rows, dtype=np.intp) * V + np.array(ids, dtype=np.intp)]
        if k + 1 == length or not kept:
            ended += [(s / length, text) for s, text in zip(new_scores, kept)]
            break
        pad = K - len(kept)  # fewer candidates than beams (V < K at first, or stop strings): empty rows
        rows, ids = np.array(rows + [rows[0]] * pad), np.array(ids + [ids[0]] * pad)
        scores = np.concatenate([new_scores, np.full(pad, -np.inf)])
        beams = kept + [""] * pad
        stepper.set_state({name: s[:, rows] for name, s in stepper.state.items()})  # each beam takes its parent's state
        logits = stepper.step(int(ids[0]) if K == 1 else ids).reshape(K, V)
        logp = layers.log_softmax(logits.astype(np.float64))
    if not ended:
        return ""
    return max(ended, key=lambda e: e[0])[1]  # the first of equals: deterministic
