"""charnn explain: what a model paid for each character of a text, what it expected instead, and
what its units and gates did, computed once here; explain_views.py shows it (page, terminal, JSON).

The views follow the figures that made character models famous: Karpathy's "The Unreasonable
Effectiveness of Recurrent Neural Networks" (2015: the top guesses under each character, text
coloured by one cell), Karpathy, Johnson & Fei-Fei, "Visualizing and Understanding Recurrent
Networks" (2015: tanh(c), gate saturation, the LSTM against an n-gram model) and LSTMVis
(Strobelt et al. 2017: units found by how they follow a stretch of text).

The text shown is N characters of FILE (at most max_chars from offset), read by one stream from a
zero state, as evaluation reads each of its pieces (evaluate.py): character 0 is input only and
characters 1..N-1 are predicted. Row t of every activation is the state after reading character t.
The activations come from the model's own forward pass (model.forward, model.inside): the cache it
keeps for backward already holds them, so training records nothing and pays nothing.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from charnn import baselines, idcache, layers, model, textfile
from charnn.checkpoint import Checkpoint
from charnn.data import Vocab
from charnn.errors import CharnnError
from charnn.runs import METRICS

MAX_CHARS = 1000  # default characters shown: a 2 x 384 LSTM's page stays a few MB (explain_views.LEVELS)
CHUNK = 256  # steps per forward call: the caches of a long text are never all in memory at once
TOP = 5  # guesses shown under each character, as Karpathy's figure
SATURATED = (0.1, 0.9)  # a gate is left- / right-saturated below / above these (Karpathy et al. 2015)
FOUND = 10  # units the Finder keeps per pattern
SIGMOID_GATES = {"lstm": "oif", "gru": "rz", "rnn": ""}  # the gates that saturate at 0 and 1


@dataclass
class Explanation:
    checkpoint: str  # paths as given
    file: str
    config: model.ModelConfig
    vocab: Vocab
    offset: int  # of the first shown character in FILE, in characters
    ids: np.ndarray  # (N,) the shown characters' ids
    bits: np.ndarray  # (N,) float64 surprisal -log2 p(char t | chars before it); nan at t = 0
    top_ids: np.ndarray  # (N, K) the model's K = min(TOP, V) most likely characters at t, best first; row 0 unused
    top_p: np.ndarray  # (N, K) their probabilities
    acts: dict[str, np.ndarray]  # "l{l}.{channel}" -> (N, H) float32, model.CHANNELS
    saturation: dict[str, np.ndarray]  # "l{l}.{gate}" -> (2, H): fractions of t left / right saturated
    patterns: dict[str, np.ndarray]  # pattern name -> (N,) float64 values (a 0/1 mask, or line position)
    found: dict[str, list]  # pattern name -> up to FOUND (channel key, unit, r), by |r| descending
    skipped: int = 0  # characters of the stretch outside the model's vocabulary, left out
    unknown: str = ""  # those characters, distinct and sorted
    ngram_bits: np.ndarray | None = None  # (N,) the n-gram baseline's surprisal, nan at 0; None: no text
    unigram_bits: np.ndarray | None = None  # (N,) the add-one unigram's
    ngram_order: int = baselines.ORDER
    ngram_note: str = ""  # what the baselines were fitted on, or why there are none
    header: dict = field(default_factory=dict)  # the checkpoint's header (baselines, validation)
    metrics: list = field(default_factory=list)  # metrics.jsonl's train and eval records, if found

    @property
    def text(self) -> str:
        return self.vocab.decode(self.ids)

    def mean_bits(self, per_char: np.ndarray | None) -> float | None:
        """Mean of a surprisal array over the predicted characters 1..N-1."""
        return None if per_char is None else float(np.mean(per_char[1:]))


def read_stretch(path: str, vocab: Vocab, offset: int, max_chars: int) -> tuple[np.ndarray, int, str]:
    """(ids (N,), skipped, unknown): characters offset .. offset+max_chars of the file at path, those
    the vocabulary lacks left out and counted (as `charnn eval` does). Needs N >= 2."""
    stretch, length = textfile.read_slice(path, offset, max_chars)  # CharnnError: missing, empty, not UTF-8
    if length is not None and offset >= length:
        raise CharnnError(f"--offset {offset} is past the end of {path} ({length:,} characters)")
    unknown = vocab.unknown(stretch)
    known = stretch.translate({ord(c): None for c in unknown}) if unknown else stretch
    if len(known) < 2:
        raise CharnnError(f"{path} has {len(known)} characters the model knows from --offset {offset}; "
                          "it needs at least 2 to predict one")
    return vocab.encode(known), len(stretch) - len(known), unknown


def run(params, config, ids: np.ndarray):
    """The model over ids (N,) as one stream from a zero state, CHUNK steps per forward call.

    Returns (bits (N,), top_ids (N, K), top_p (N, K), acts {"l{l}.{channel}": (N, H) float32}),
    K = min(TOP, V): a vocabulary of fewer than TOP characters has only V guesses to show.
    """
    N, H = len(ids), config.hidden_size
    K = min(TOP, params["Why"].shape[1])
    bits = np.full(N, np.nan)
    top_ids = np.zeros((N, K), np.int64)
    top_p = np.zeros((N, K))
    acts = {}
    state = model.zero_state(config, 1, params["Why"].dtype)
    for t0 in range(0, N, CHUNK):
        chunk = ids[t0:t0 + CHUNK]
        logits, _, state, cache = model.forward(params, config, chunk[:, None], state)  # logits (w, V)
        for name, a in model.inside(config, cache).items():  # each (w, 1, H)
            acts.setdefault(name, np.empty((N, H), np.float32))[t0:t0 + len(chunk)] = a[:, 0]
        log_p = layers.log_softmax(logits.astype(np.float64))  # (w, V): row j predicts character t0+j+1
        n = min(len(chunk), N - 1 - t0)  # rows whose next character is in the text
        bits[t0 + 1:t0 + 1 + n] = -log_p[np.arange(n), ids[t0 + 1:t0 + 1 + n]] / math.log(2)
        best = np.argsort(-log_p[:n], axis=1, kind="stable")[:, :K]  # (n, K)
        top_ids[t0 + 1:t0 + 1 + n] = best
        top_p[t0 + 1:t0 + 1 + n] = np.exp(np.take_along_axis(log_p[:n], best, axis=1))
    return bits, top_ids, top_p, acts


def saturation(config, acts: dict) -> dict[str, np.ndarray]:
    """Each sigmoid gate's fraction of time left (< 0.1) and right (> 0.9) saturated: {"l{l}.{g}": (2, H)}."""
    lo, hi = SATURATED
    out = {}
    for l in range(config.num_layers):
        for g in SIGMOID_GATES[config.model]:
            a = acts[f"l{l}.{g}"]  # (N, H)
            out[f"l{l}.{g}"] = np.stack([(a < lo).mean(axis=0), (a > hi).mean(axis=0)])
    return out


# ---------------------------------------------------------------------------------------------
# The Finder. A pattern gives each character a value (1 inside, 0 outside; or a number, the
# position in the line); each unit is scored by the Pearson correlation, over the shown text, of its
# activation after reading character t with the pattern's value at t.


def _line_position(text: str) -> np.ndarray:
    """Characters since the last newline (0 for the newline itself and the text's first)."""
    pos, col = np.empty(len(text)), 0
    for t, ch in enumerate(text):
        pos[t] = col
        col = 0 if ch == "\n" else col + 1
    return pos


def _inside_brackets(text: str) -> np.ndarray:
    """1 from an opening ( [ { up to (not including) its closing one, nested; 0 elsewhere."""
    mask, depth = np.zeros(len(text)), 0
    for t, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        mask[t] = depth > 0
    return mask


def regex_mask(pattern: str, text: str) -> np.ndarray:
    """1 on the characters of every match of pattern (multiline: ^ and $ at each line), 0 elsewhere.
    The mask is over [start, end): the state after the closing character of a match is outside."""
    mask = np.zeros(len(text))
    for m in re.finditer(pattern, text, re.MULTILINE):
        mask[m.start():m.end()] = 1
    return mask


BUILT_IN = {
    "line position": _line_position,
    "inside double quotes": lambda text: regex_mask(r'"[^"\n]*"', text),
    "inside brackets": _inside_brackets,
    "after a newline": lambda text: np.array([t > 0 and text[t - 1] == "\n" for t in range(len(text))], float),
}


def check_regex(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as e:
        raise CharnnError(f"--find {pattern!r} is not a regular expression: {e}") from None


def patterns(text: str, finds: list[str]) -> dict[str, np.ndarray]:
    """The built-in patterns that vary over text, then each --find regex (one that matches nothing or
    every character is refused: a constant has no correlation)."""
    out = {}
    for name, make in BUILT_IN.items():
        values = make(text)
        if values.std() > 0:
            out[name] = values
    for pattern in finds:
        check_regex(pattern)
        mask = regex_mask(pattern, text)
        if not mask.any():
            raise CharnnError(f"--find {pattern!r} matches nothing in the text shown; try another pattern, "
                              "--offset or --max-chars")
        if mask.all():
            raise CharnnError(f"--find {pattern!r} matches every character shown; the Finder needs a pattern "
                              "that is true in some places only")
        out[f"/{pattern}/"] = mask
    return out


def correlations(acts: dict, values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(keys, r (K, H)): the Pearson correlation of every unit of every channel with values (N,).
    A unit that never changes gets r = 0."""
    keys = list(acts)
    v = values - values.mean()  # (N,)
    r = np.zeros((len(keys), next(iter(acts.values())).shape[1]))  # (K, H)
    for i, key in enumerate(keys):  # a channel at a time: float64 copies of one (N, H), not of all K
        a = acts[key].astype(np.float64)  # (N, H)
        a -= a.mean(axis=0)
        norm = np.sqrt(np.einsum("nh,nh->h", a, a)) * np.sqrt(v @ v)  # (H,)
        np.divide(v @ a, norm, out=r[i], where=norm > 0)
    return keys, r


def find_units(acts: dict, values: np.ndarray, keep: int = FOUND) -> list[tuple[str, int, float]]:
    """The `keep` units whose activation correlates most strongly (either sign) with values."""
    keys, r = correlations(acts, values)
    order = np.argsort(-np.abs(r), axis=None, kind="stable")[:keep]
    return [(keys[i // r.shape[1]], int(i % r.shape[1]), float(r.flat[i])) for i in order]


# ---------------------------------------------------------------------------------------------
# Baselines per character and the training log.


def ngram_surprisal(header: dict, vocab: Vocab, ids: np.ndarray, corpus_path: str | None):
    """(ngram bits (N,), unigram bits (N,), order, note), or (None, None, order, note) when the text
    to fit them on cannot be read. Fitted as training fits its baselines (baselines.py): on the
    first baselines.FIT_CHARS characters of the training split of the text the model was trained on
    (corpus_path, by default the checkpoint's corpus path), and scored on the shown characters,
    each with the shown characters before it as context."""
    path = corpus_path or header["corpus"]["path"]
    try:
        corpus, _ = idcache.load_corpus(path)
    except CharnnError as e:
        if corpus_path:
            raise
        return None, None, baselines.ORDER, f"no n-gram baseline: the training text is not readable ({e})"
    lut = corpus.vocab.ids_in(vocab)  # (V_text,) model id of each of the text's ids, -1 if unknown
    train_chars = header["corpus"]["train_chars"] if corpus.sha256 == header["corpus"]["sha256"] else \
        len(corpus.ids) - int(len(corpus.ids) * header["train"]["val_frac"])
    train = lut[np.asarray(corpus.ids[:min(train_chars, baselines.FIT_CHARS)])]
    train = train[train >= 0]
    if len(train) == 0:
        raise CharnnError(f"{path} has no character the model knows; give the text it was trained on (--corpus)")
    fitted = baselines.fit_ngram(train.astype(vocab.dtype), vocab.size, baselines.ORDER)
    p = baselines.ngram_probs(fitted, ids)  # (N,)
    ngram, unigram = -np.log2(p), -np.log2(fitted.unigram[ids])
    ngram[0] = unigram[0] = np.nan
    note = f"{fitted.order}-gram and unigram fitted on the first {len(train):,} training characters of {os.path.basename(path)}"
    return ngram, unigram, fitted.order, note


def read_metrics(checkpoint_path: str) -> list[dict]:
    """The train and eval records of the metrics.jsonl beside the checkpoint ([] if there is none);
    lines that are not whole records (a crash mid-write) are left out."""
    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), METRICS)
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if isinstance(r, dict) and r.get("event") in ("train", "eval"):
                    records.append(r)
    except OSError:
        return []
    return records


def parse_unit(spec: str, config) -> tuple[int, int]:
    """--unit L:U -> (layer, unit), both counted from 0, checked against the model."""
    m = re.fullmatch(r"(\d+):(\d+)", spec.strip())
    if not m:
        raise CharnnError(f"--unit {spec!r}: give LAYER:UNIT, such as 0:17 (both counted from 0)")
    l, u = int(m.group(1)), int(m.group(2))
    if l >= config.num_layers or u >= config.hidden_size:
        raise CharnnError(f"--unit {spec}: out of range; this model has layers 0..{config.num_layers - 1} "
                          f"and units 0..{config.hidden_size - 1}")
    return l, u


def explain(checkpoint_path: str, ckpt: Checkpoint, file: str, offset: int = 0, max_chars: int = MAX_CHARS,
            finds: list[str] = (), corpus_path: str | None = None) -> Explanation:
    """Everything the views show, for max_chars characters of file from offset."""
    for pattern in finds:  # before the work: a typo should not cost a forward pass
        check_regex(pattern)
    ids, skipped, unknown = read_stretch(file, ckpt.vocab, offset, max_chars)
    bits, top_ids, top_p, acts = run(ckpt.params, ckpt.model_config, ids)
    pats = patterns(ckpt.vocab.decode(ids), list(finds))
    ngram, unigram, order, note = ngram_surprisal(ckpt.header, ckpt.vocab, ids, corpus_path)
    return Explanation(
        checkpoint=checkpoint_path, file=file, config=ckpt.model_config, vocab=ckpt.vocab, offset=offset, ids=ids,
        bits=bits, top_ids=top_ids, top_p=top_p, acts=acts, saturation=saturation(ckpt.model_config, acts),
        patterns=pats, found={name: find_units(acts, values) for name, values in pats.items()},
        skipped=skipped, unknown=unknown, ngram_bits=ngram, unigram_bits=unigram, ngram_order=order,
        ngram_note=note, header=ckpt.header, metrics=read_metrics(checkpoint_path))
