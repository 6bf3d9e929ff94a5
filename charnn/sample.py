"""Generating text: prime the model with a seed, then draw one character at a time, on one stream
or on N streams at once.

Each generated character is fed back as the next input (Karpathy 2015, "The unreasonable
effectiveness of recurrent neural networks"); how it is drawn is decoding.py's. N samples are
one batch of N streams through model.Stepper, the model's one step: each step is one matrix
product per layer for all of them, and each stream draws with its own generator, so sample i is
the text a single run with that generator makes. A stream ends at its length or when its text
ends with a stop string; the stop string is not part of the text (the characters that could
begin one are held back until that is known). beam.py finds the most likely text instead.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from charnn import model
from charnn.config import ModelConfig
from charnn.data import Vocab
from charnn.decoding import Decoding, draw
from charnn.errors import CharnnError

PRIME_WINDOW = 1024  # characters per forward pass when priming: bounds the memory of its caches


def prime(params, config: ModelConfig, vocab: Vocab, text: str, state: dict | None = None):
    """Feed text through the model from state (default: zero), a window at a time: (logits (V,) of
    the character after it, the state after it, each (L, 1, H)). Raises CharnnError for an empty
    text or characters the vocabulary lacks (named), before anything is computed."""
    if not text:
        raise CharnnError("the seed text is empty; give at least one character")
    ids = vocab.encode(text)  # (T,)
    if state is None:
        state = model.zero_state(config, 1, params["Why"].dtype)
    for start in range(0, len(ids), PRIME_WINDOW):
        logits, _, state, _ = model.forward(params, config, ids[start:start + PRIME_WINDOW, None], state)
    return logits[-1], state


def check_stops(stop: Iterable[str]) -> tuple[str, ...]:
    stop = tuple(stop)
    if any(not s for s in stop):
        raise CharnnError("a --stop string is empty; give at least one character")
    return stop


def check_length(length: int) -> None:
    if length < 0:
        raise CharnnError(f"--length must be 0 or more, got {length}")


class StopAt:
    """One stream's text, cut at the first stop string it ends with (the stop string left out).

    add(ch) returns what can be printed now: the characters that could begin a stop string are
    held back until the next characters show whether they do."""

    def __init__(self, stop: tuple[str, ...]):
        self.stop = sorted(stop, key=len, reverse=True)  # the longest first: a match leaves out all of it
        self.held = ""  # the longest end of the text that begins some stop string
        self.done = False

    def add(self, ch: str) -> str:
        if not self.stop:
            return ch
        text = self.held + ch
        for s in self.stop:
            if text.endswith(s):  # a stop string begins within held (held is the longest candidate)
                self.done, self.held = True, ""
                return text[:len(text) - len(s)]
        keep = next((k for k in range(len(text), 0, -1) if any(s.startswith(text[-k:]) for s in self.stop)), 0)
        self.held = text[len(text) - keep:]
        return text[:len(text) - keep]

    def flush(self) -> str:
        """At the end of the length: the held characters were not a stop string after all."""
        held, self.held = self.held, ""
        return held


def samples(params, config: ModelConfig, vocab: Vocab, seed: str, length: int, rngs: list[np.random.Generator],
            decoding: Decoding = Decoding(), stop: Iterable[str] = ()) -> Iterator[tuple[int, str, bool]]:
    """N = len(rngs) samples continuing seed, made together. Yields (sample, text, ended) as the
    text is made: sample i's pieces in order, interleaved with the others'; `ended` on its last
    piece. Each sample is at most `length` characters (stop strings included, then left out).
    Bad options or seeds raise CharnnError here, before anything is yielded."""
    decoding.check()
    check_length(length)
    stop = check_stops(stop)
    n = len(rngs)
    if n < 1:
        raise CharnnError(f"--num-samples must be at least 1, got {n}")
    last, state = prime(params, config, vocab, seed)
    stepper = model.Stepper(params, config, n, {k: np.repeat(s, n, axis=1) for k, s in state.items()})
    return _decode(params, config, vocab, stepper, np.broadcast_to(last, (n, len(last))), rngs, decoding, length, stop)


def _decode(params, config, vocab, stepper, logits, rngs, decoding, length, stop, step_last=False):
    """The generation loop: draw for every stream still going, print what can be printed, step.
    logits: (B, V) for the stepper's B streams. step_last: also feed the last character drawn, so
    the stepper's state and output hold the whole text (TextStream continues from them)."""
    n = len(rngs)
    if length == 0:
        for i in range(n):
            yield i, "", True
        return
    stops = [StopAt(stop) for _ in range(n)]
    rows = list(range(n))  # rows[r]: the sample the stepper's row r carries
    going = rows  # the rows whose sample goes on
    for k in range(length):
        if len(going) == len(rows):
            ids = draw(logits, [rngs[i] for i in rows], decoding)  # (B,)
        else:  # an ended row steps on with any id until the batch narrows
            ids = np.zeros(len(rows), np.intp)
            ids[going] = draw(logits[going], [rngs[rows[r]] for r in going], decoding)
        last, picked, still = k + 1 == length, ids.tolist(), []
        for r in going:
            i = rows[r]
            text = stops[i].add(vocab.chars[picked[r]]) if stop else vocab.chars[picked[r]]
            ended = last or stops[i].done
            if ended and not stops[i].done:
                text += stops[i].flush()
            if text or ended:
                yield i, text, ended
            if not ended:
                still.append(r)
        going = still
        if not going and not step_last:
            return
        if 0 < len(going) <= len(rows) // 2:  # half the streams have ended: step only the others
            stepper = model.Stepper(params, config, len(going), {name: s[:, going] for name, s in stepper.state.items()})
            rows, ids, going = [rows[r] for r in going], ids[going], list(range(len(going)))
        out = stepper.step(int(ids[0]) if stepper.B == 1 else ids)  # (V,) or (B, V)
        logits = out.reshape(stepper.B, -1)
        if not going:
            return


def generate(params, config: ModelConfig, vocab: Vocab, seed: str, length: int, rng: np.random.Generator,
             decoding: Decoding = Decoding(), stop: Iterable[str] = ()) -> Iterator[str]:
    """One sample: the pieces of text continuing seed, as they are made (see samples)."""
    return (text for _, text, _ in samples(params, config, vocab, seed, length, [rng], decoding, stop))


def texts(events: Iterable[tuple[int, str, bool]], n: int) -> list[str]:
    """The n whole texts of samples' events."""
    parts = [[] for _ in range(n)]
    for i, text, _ in events:
        parts[i].append(text)
    return ["".join(p) for p in parts]


def printed(events: Iterable[tuple[int, str, bool]], n: int, seed: str, separator: str) -> Iterator[str]:
    """What `charnn sample` prints of n samples: each as seed (the seed, or "" when it is not
    shown) and its continuation, one after another, separator between two. The first streams as
    it is made; a later one's text is held until the ones before it have ended."""
    held = [[] for _ in range(n)]
    ended = [False] * n
    current = 0
    yield seed
    for i, text, end in events:
        if i == current:
            yield text
        else:
            held[i].append(text)
        ended[i] = ended[i] or end
        while ended[current] and current + 1 < n:
            current += 1
            yield separator + seed + "".join(held[current])


class TextStream:
    """One text the user and the model write in turns (`charnn prompt`): feed(text) reads the
    user's part, extend(length) writes the model's, from the state all of it left."""

    def __init__(self, params, config: ModelConfig, vocab: Vocab, rng: np.random.Generator,
                 decoding: Decoding = Decoding(), stop: Iterable[str] = ()):
        self.params, self.config, self.vocab, self.rng = params, config, vocab, rng
        self.decoding, self.stop = decoding.check(), check_stops(stop)
        self.stepper = model.Stepper(params, config)
        self.logits = None  # (1, V): what follows the text so far; None before any text

    @property
    def started(self) -> bool:
        return self.logits is not None

    def feed(self, text: str) -> None:
        """Read text (CharnnError for characters the model never saw; the state is then unchanged)."""
        last, state = prime(self.params, self.config, self.vocab, text, self.stepper.state)
        self.stepper.set_state(state)
        self.logits = last[None]

    def extend(self, length: int) -> Iterator[str]:
        """Up to length characters more (less at a stop string), as they are made."""
        check_length(length)
        if not self.started:
            raise CharnnError("there is no text to continue yet; type some first")
        for _, text, _ in _decode(self.params, self.config, self.vocab, self.stepper, self.logits, [self.rng],
                                  self.decoding, length, self.stop, step_last=True):
            yield text
        if length:
            self.logits = self.stepper.out.reshape(1, -1)

    def reset(self) -> None:
        """Forget the text: back to the zero state, nothing to continue."""
        self.stepper.reset()
        self.logits = None


def default_seed(vocab: Vocab, rng: np.random.Generator) -> str:
    """A newline, the natural start of a text, if the model knows it; else a random character."""
    return "\n" if "\n" in vocab.chars else vocab.chars[int(rng.integers(vocab.size))]
