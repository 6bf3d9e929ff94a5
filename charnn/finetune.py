"""Fine-tuning: a new run that starts from a trained model (`charnn train NEW.txt --init-from CHECKPOINT`).

The run gets its own folder and the parent's architecture (dropout may change: it only acts in
training). It starts at step 0 with a fresh optimizer state: Adam's moments describe the old
text's gradients, and its step count would skip the bias correction the new moments need. The
parent is named in the new checkpoints' header ("parent"), which `charnn info` shows.

The vocabulary becomes the parent's plus the characters of the new text it lacks, in code-point
order as every vocabulary is (so the ids of old characters may move; their weights move with
them). Each old character keeps its row of layer 0's input weights, its column of the output
weights and its output bias. A new character's input row is drawn as model.init_params draws
layer 0's rows, N(0, 1); its output column is zero and its bias the lowest bias of the old
characters: at first it is as likely as the least likely old character would be without the
context its weights read, and the old characters' logits are exactly what they were, so the model
predicts the old text as before (tested).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from charnn import checkpoint, train
from charnn.config import TrainConfig
from charnn.data import Vocab
from charnn.errors import CharnnError
from charnn.reports import Reporter

# The default learning rate of a fine-tuning run: a third of a new run's (config.TrainConfig). Adam
# moves every weight by about the learning rate per step whatever its gradient's size, and its
# moments start from zero here, so at a new run's rate the first steps move the trained weights as
# far as they moved early in the parent's training: measured (README, Fine-tuning), that rate
# learns a small new text fastest, then overfits it, and forgets the parent's text most; a tenth
# keeps the most of the parent and learns the new text slowest; a third is nearly as good as the
# full rate on the new text, steadier, and forgets less.
LEARNING_RATE = 1e-3
ARCHITECTURE = ("model", "hidden_size", "num_layers")  # what a fine-tuned model keeps from its parent


def grow(params: dict, old: Vocab, new: Vocab, rng: np.random.Generator) -> dict:
    """The parameters for vocabulary `new`, a superset of `old`: every old character's weights at
    its new id; new characters' input rows drawn N(0, 1) from rng, output columns zero, output bias
    the lowest old bias."""
    at = new.encode(old.chars).astype(np.intp)  # (V_old,) where each old id goes
    fresh = np.setdiff1d(np.arange(new.size), at)  # the new characters' ids
    Wxh, Why, by = params["l0.Wxh"], params["Why"], params["by"]  # (V_old, G*H), (H, V_old), (V_old,)
    grown = dict(params)
    grown["l0.Wxh"] = np.empty((new.size, Wxh.shape[1]), Wxh.dtype)  # (V, G*H)
    grown["l0.Wxh"][at] = Wxh
    grown["l0.Wxh"][fresh] = rng.standard_normal(size=(len(fresh), Wxh.shape[1]))
    grown["Why"] = np.zeros((Why.shape[0], new.size), Why.dtype)  # (H, V)
    grown["Why"][:, at] = Why
    grown["by"] = np.full(new.size, by.min(), by.dtype)  # (V,)
    grown["by"][at] = by
    return grown


def fine_tune(checkpoint_path: str, corpus_path, train_config: TrainConfig, model_options: dict | None = None,
              checkpoint_dir="checkpoints", run_name: str | None = None, reporter: Reporter | None = None,
              cache_dir: str | None = None, use_cache: bool = True) -> train.Result:
    """Train a new run on the text at corpus_path, starting from the checkpoint's model.
    model_options: ModelConfig fields given by the user; the architecture's must be the parent's,
    dropout may change. The learning rate is train_config's (the CLI's default for a fine-tuning
    run is LEARNING_RATE). The text's ids come from its id cache, as in train.train."""
    config = train_config.validate()
    parent = checkpoint.load(checkpoint_path)
    old_config = parent.model_config
    changed = [k for k, v in (model_options or {}).items() if k in ARCHITECTURE and getattr(old_config, k) != v]
    if changed:
        raise CharnnError(f"a fine-tuned model keeps its parent's architecture ({old_config.model}, "
                          f"{old_config.num_layers} layer(s) of {old_config.hidden_size}): drop "
                          f"{', '.join('--' + k.replace('_', '-') for k in changed)}")
    corpus, source = train.load_corpus(corpus_path, cache_dir, use_cache, reporter)
    vocab = Vocab.from_text(parent.vocab.chars + corpus.vocab.chars)
    corpus, source = train.in_vocab(corpus, source, vocab)
    dropout = (model_options or {}).get("dropout", old_config.dropout)
    model_config = dataclasses.replace(old_config, vocab_size=vocab.size, dropout=dropout).validate()
    rng = np.random.default_rng(config.random_seed)
    params = {k: p.astype(config.dtype) for k, p in grow(parent.params, parent.vocab, vocab, rng).items()}
    added = parent.vocab.unknown(corpus.vocab.chars)
    record = {"path": os.path.abspath(checkpoint_path), "step": parent.header["step"],
              "corpus": parent.header["corpus"]["path"], "added": added}
    note = (f"fine-tuning {checkpoint_path} (step {parent.header['step']:,}) on {corpus_path}: "
            f"{f'{len(added)} new character(s) {added!r}' if added else 'no new characters'}, "
            f"learning rate {config.learning_rate:g}, a fresh optimizer")
    return train.new_run(corpus, source, model_config, config, params, rng, checkpoint_dir, run_name, reporter,
                         parent=record, opening_note=note)
