"""Fine-tuning: the grown vocabulary and weights, and a fine-tuned run against one from scratch."""

import numpy as np
import pytest

from charnn import checkpoint, data, finetune, idcache, model, train
from charnn.config import ModelConfig
from charnn.data import Vocab
from charnn.errors import CharnnError

from conftest import TINY_TEXT, random_params_and_state, tiny_configs

# Text B: text A's words and structure, with characters A lacks (capitals, digits, ';' and '!').
B_TEXT = "The cat sat on the mat 1. The dog sat on the log 2. " * 30 + "A cat and a dog; the mat and the log!\n" * 15


@pytest.fixture
def texts(tmp_path):
    (tmp_path / "a.txt").write_text(TINY_TEXT)
    (tmp_path / "b.txt").write_text(B_TEXT)
    return tmp_path


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_grow_keeps_every_old_weight_at_its_new_id(rng, name):
    old, new = Vocab("\nadz"), Vocab("\n!Aadez")  # "A", "e" and "!" are new; "a", "d", "z" move
    config = ModelConfig(name, vocab_size=old.size, hidden_size=3, num_layers=2)
    params, _ = random_params_and_state(config, rng, 1)
    grown = finetune.grow(params, old, new, np.random.default_rng(9))
    G = model.gates(config)
    assert grown["l0.Wxh"].shape == (7, G * 3) and grown["Why"].shape == (3, 7) and grown["by"].shape == (7,)
    for old_id, ch in enumerate(old.chars):
        i = new.chars.index(ch)
        np.testing.assert_array_equal(grown["l0.Wxh"][i], params["l0.Wxh"][old_id])
        np.testing.assert_array_equal(grown["Why"][:, i], params["Why"][:, old_id])
        assert grown["by"][i] == params["by"][old_id]
    fresh = [new.chars.index(c) for c in "!Ae"]  # in id order
    np.testing.assert_array_equal(grown["l0.Wxh"][fresh], np.random.default_rng(9).standard_normal((3, G * 3)))
    assert (grown["Why"][:, fresh] == 0).all() and (grown["by"][fresh] == params["by"].min()).all()
    for k in params:
        if k not in ("l0.Wxh", "Why", "by"):
            assert grown[k] is params[k]


def test_the_grown_model_predicts_the_old_text_as_before(rng):
    """On text of old characters, the old characters' logits are the parent's and every new
    character's is the lowest old bias: unlikely, and the old predictions unchanged."""
    old, new = Vocab("\nadz"), Vocab("\n!Aadez")
    config = ModelConfig("lstm", vocab_size=old.size, hidden_size=5, num_layers=2)
    params, _ = random_params_and_state(config, rng, 1)
    grown = finetune.grow(params, old, new, rng)
    text = "zad\nada"
    before, _, _, _ = model.forward(params, config, old.encode(text)[:, None], model.zero_state(config, 1, "float64"))
    big = ModelConfig("lstm", vocab_size=new.size, hidden_size=5, num_layers=2)
    after, _, _, _ = model.forward(grown, big, new.encode(text)[:, None], model.zero_state(big, 1, "float64"))
    np.testing.assert_allclose(after[:, new.encode(old.chars)], before, rtol=1e-12)
    np.testing.assert_array_equal(after[:, new.encode("!Ae")], params["by"].min())


def test_fine_tuning_beats_training_from_scratch(texts):
    """A model trained on text A, then fine-tuned on text B (which has characters A lacks) for 30
    steps at a third of the rate, reaches a lower validation loss on B than the same model trained
    on B from scratch for 30 steps at the full rate. Seeded, so it is the same comparison on every
    run; it fails if the grown weights lose what the parent learned (e.g. old rows at wrong ids)."""
    mc, parent_config = tiny_configs(steps=150, eval_every=150)
    parent = train.train(texts / "a.txt", mc, parent_config, texts / "ck")
    _, scratch_config = tiny_configs(steps=30, eval_every=30)
    _, tune_config = tiny_configs(steps=30, eval_every=30, learning_rate=scratch_config.learning_rate / 3)
    scratch = train.train(texts / "b.txt", mc, scratch_config, texts / "ck")
    tuned = finetune.fine_tune(parent.best, texts / "b.txt", tune_config, {}, texts / "ck")
    assert tuned.best_val_loss < scratch.best_val_loss - 0.2, (tuned.best_val_loss, scratch.best_val_loss)

    assert tuned.run_dir not in (parent.run_dir, scratch.run_dir)
    ckpt = checkpoint.load(tuned.best)
    parent_ckpt = checkpoint.load(parent.best)
    assert ckpt.vocab.chars == "".join(sorted(set(TINY_TEXT) | set(B_TEXT)))
    assert ckpt.header["parent"] == {"path": str(parent.best), "step": 150, "corpus": str(texts / "a.txt"),
                                     "added": "!12;AT"}
    assert ckpt.header["step"] == 30 and ckpt.train_config.learning_rate == scratch_config.learning_rate / 3
    assert ckpt.model_config == mc.__class__(**{**mc.to_dict(), "vocab_size": len(ckpt.vocab.chars)})
    assert parent_ckpt.header.get("parent") is None


def test_a_fine_tuned_run_resumes_in_its_grown_vocabulary(texts):
    mc, config = tiny_configs(steps=20, eval_every=20)
    parent = train.train(texts / "a.txt", mc, config, texts / "ck")
    tuned = finetune.fine_tune(parent.best, texts / "b.txt", config, {"dropout": 0.1}, texts / "ck")
    resumed = train.resume(tuned.latest, {"steps": 30})
    ckpt = checkpoint.load(resumed.latest)
    assert ckpt.header["step"] == 30 and ckpt.header["parent"]["added"] == "!12;AT" and ckpt.model_config.dropout == 0.1


def test_a_fine_tuned_model_keeps_its_architecture(texts):
    mc, config = tiny_configs(steps=10, eval_every=10)
    parent = train.train(texts / "a.txt", mc, config, texts / "ck")
    with pytest.raises(CharnnError, match=r"keeps its parent's architecture \(lstm, 2 layer\(s\) of 16\): drop --hidden-size, --model"):
        finetune.fine_tune(parent.best, texts / "b.txt", config, {"hidden_size": 8, "model": "gru", "num_layers": 2},
                           texts / "ck")


def test_in_vocab_moves_the_ids_into_a_larger_vocabulary(texts, monkeypatch):
    corpus, source = idcache.load_corpus(texts / "b.txt")
    assert data.in_vocab(corpus, corpus.vocab) is corpus
    assert train.in_vocab(corpus, source, corpus.vocab) == (corpus, source)
    bigger = Vocab.from_text(TINY_TEXT + B_TEXT + "€")
    monkeypatch.setattr(data, "REMAP_CHUNK", 7)  # translated in many chunks
    moved, where = train.in_vocab(corpus, source, bigger)
    assert moved.vocab is bigger and moved.ids.dtype == bigger.dtype and bigger.decode(moved.ids) == B_TEXT
    assert where.in_memory and where.nbytes == moved.ids.nbytes and not source.in_memory
