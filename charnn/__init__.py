"""charnn: character-level RNN, LSTM and GRU language models, trained by full BPTT on numpy.

The Python API mirrors the step interface of Karpathy's "The unreasonable effectiveness of RNNs"
(`y = rnn.step(x)`, the state kept inside):

    import charnn
    m = charnn.load("checkpoints/tinyshakespeare-lstm-1/best.npz")
    p = m.step("h")              # (V,) probabilities of the next character, in m.vocab.chars order
    p = m.step("e")              # the state carries what came before
    m.reset()                    # back to the zero state
    text = m.generate("ROMEO:", length=200, temperature=0.8, top_p=0.9, random_seed=1)
    names = m.generate_many(10, "\n", length=30, stop=["\n"], random_seed=1)
    best = m.generate("ROMEO:", length=50, beam=4)   # the most likely text a beam of 4 finds

Importing charnn has no side effects.
"""

from __future__ import annotations

__version__ = "0.1.0"

import numpy as np

from charnn import beam as _beam
from charnn import checkpoint as _checkpoint
from charnn import decoding as _decoding
from charnn import layers as _layers
from charnn import model as _model
from charnn import sample as _sample
from charnn.config import ModelConfig, TrainConfig
from charnn.data import Vocab
from charnn.errors import CharnnError

__all__ = ["load", "Model", "ModelConfig", "TrainConfig", "Vocab", "CharnnError", "__version__"]


class Model:
    """A trained model with its vocabulary and one stream's recurrent state, kept in its Stepper."""

    def __init__(self, params: dict, config: ModelConfig, vocab: Vocab):
        self.params, self.config, self.vocab = params, config, vocab
        self._stepper = _model.Stepper(params, config)

    @property
    def state(self) -> dict:
        """A copy of the recurrent state: each (L, 1, H)."""
        return self._stepper.state

    def reset(self) -> None:
        """Forget everything stepped so far (the zero state the model was trained to start from)."""
        self._stepper.reset()

    def step(self, char: str) -> np.ndarray:
        """Feed one character; return the probabilities of the next, (V,) float64."""
        if len(char) != 1:
            raise CharnnError(f"step takes one character, got {char!r}")
        return _layers.softmax(self._stepper.step(int(self.vocab.encode(char)[0])))

    def generate(self, seed: str, length: int = 200, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, argmax: bool = False, stop=(), beam: int | None = None,
                 random_seed: int | None = None) -> str:
        """The (at most) `length` characters that follow `seed`, from a fresh state (self.state is
        untouched): drawn with temperature, top_k and top_p (charnn.decoding), or the most likely
        ones with argmax, or the best text a beam search of width `beam` finds (charnn.beam); cut
        before the first of the `stop` strings it produces. The same random_seed gives the same
        text as `charnn sample --random-seed`."""
        if beam is not None:
            return _beam.beam_search(self.params, self.config, self.vocab, seed, length, beam, stop)
        return self.generate_many(1, seed, length, temperature, top_k, top_p, argmax, stop, random_seed)[0]

    def generate_many(self, n: int, seed: str, length: int = 200, temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None, argmax: bool = False, stop=(),
                      random_seed: int | None = None) -> list[str]:
        """n samples made together as one batch (as `charnn sample --num-samples n`); sample i is
        the text generate makes with the i-th generator of random_seed (charnn.decoding.generators)."""
        decoding = _decoding.Decoding(temperature, top_k, top_p, argmax)
        events = _sample.samples(self.params, self.config, self.vocab, seed, length,
                                 _decoding.generators(random_seed, n), decoding, stop)
        return _sample.texts(events, n)


def load(path: str) -> Model:
    """Load a checkpoint (validated; see charnn.checkpoint) as a Model."""
    ckpt = _checkpoint.load(path)
    return Model(ckpt.params, ckpt.model_config, ckpt.vocab)
