"""charnn: character-level RNN, LSTM and GRU language models, trained by full BPTT on numpy.

The Python API mirrors the step interface of Karpathy's "The unreasonable effectiveness of RNNs"
(`y = rnn.step(x)`, the state kept inside):

    import charnn
    m = charnn.load("checkpoints/tinyshakespeare-lstm-1/best.npz")
    p = m.step("h")              # (V,) probabilities of the next character, in m.vocab.chars order
    p = m.step("e")              # the state carries what came before
    m.reset()                    # back to the zero state
    text = m.generate("ROMEO:", length=200, temperature=0.8, random_seed=1)

Importing charnn has no side effects.
"""

from __future__ import annotations

__version__ = "0.1.0"

import numpy as np

from charnn import checkpoint as _checkpoint
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
                 argmax: bool = False, random_seed: int | None = None) -> str:
        """The `length` characters that follow `seed`, from a fresh state (self.state is untouched)."""
        rng = np.random.default_rng(random_seed)
        return "".join(_sample.generate(self.params, self.config, self.vocab, seed, length, rng,
                                        temperature=temperature, top_k=top_k, argmax=argmax))


def load(path: str) -> Model:
    """Load a checkpoint (validated; see charnn.checkpoint) as a Model."""
    ckpt = _checkpoint.load(path)
    return Model(ckpt.params, ckpt.model_config, ckpt.vocab)
