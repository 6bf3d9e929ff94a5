"""Scoring a text: the figures `charnn eval` prints, including a model that is very wrong."""

import math

import numpy as np
import pytest
from click.testing import CliRunner

from charnn import checkpoint, data, evaluate, idcache
from charnn.cli import cli
from test_checkpoint import make_checkpoint


def test_mean_loss_of_a_uniform_model_is_ln_v(rng):
    ckpt = make_checkpoint(rng, "rnn", "float64")
    for name in ("Why", "by"):  # zero logits: every character has probability 1/V
        ckpt.params[name][...] = 0
    ids = rng.integers(0, ckpt.vocab.size, size=50)
    assert math.isclose(evaluate.mean_loss(ckpt.params, ckpt.model_config, ids), math.log(ckpt.vocab.size),
                        rel_tol=1e-12)


def test_a_loss_above_709_nats_has_an_infinite_perplexity(rng, tmp_path):
    """exp(710) overflows a float: the perplexity is then inf, never an OverflowError (a traceback)."""
    assert evaluate.TextScore(nats=800.0, predicted=3, known=4, skipped=0, unknown="").perplexity == math.inf
    ckpt = make_checkpoint(rng, "rnn", "float32")
    ckpt.params["Why"][...] = 0
    ckpt.params["by"][...] = 0
    ckpt.params["by"][ckpt.vocab.chars.index("a")] = -1000  # "a" costs about 1000 nats every time
    path = str(tmp_path / "c.npz")
    checkpoint.save(path, ckpt)
    text = tmp_path / "t.txt"
    text.write_text("aaaaaa", encoding="utf-8")
    result = CliRunner().invoke(cli, ["eval", path, str(text)])
    assert result.exit_code == 0, result.output
    nats = float(result.stdout.split(":")[1].split()[0])
    assert nats > 709 and "perplexity inf" in result.stdout


def test_blocks_of_pieces_add_up_to_the_whole(rng):
    """What the processes of a data-parallel run do: each scores a block of the pieces; the sums add
    up to the whole's (to rounding), whatever the blocks."""
    ckpt = make_checkpoint(rng, "lstm", "float64")
    ids = rng.integers(0, ckpt.vocab.size, size=3001)
    for pieces in (data.pieces(len(ids)), data.pieces(len(ids), 500)):
        whole = evaluate.summed_loss(ckpt.params, ckpt.model_config, ids, pieces)
        S = len(pieces.starts)
        for cuts in ([0, S], [0, 5, S], [0, 1, 17, 30, S]):
            parts = [evaluate.summed_loss(ckpt.params, ckpt.model_config, ids, pieces.block(a, b))
                     for a, b in zip(cuts[:-1], cuts[1:])]
            assert sum(parts) == pytest.approx(whole, rel=1e-12)
        assert evaluate.mean_loss(ckpt.params, ckpt.model_config, ids, pieces) == whole / pieces.predicted


def test_a_subset_scores_the_pieces_characters_only(rng):
    """The loss of a subset is that of its pieces cut out and scored whole, one stream each."""
    ckpt = make_checkpoint(rng, "gru", "float64")
    ids = rng.integers(0, ckpt.vocab.size, size=2000)
    pieces = data.pieces(len(ids), 300, streams=6)
    got = evaluate.mean_loss(ckpt.params, ckpt.model_config, ids, pieces)
    total = sum(evaluate.summed_loss(ckpt.params, ckpt.model_config, ids[a:a + n + 1], data.pieces(n + 1, streams=1))
                for a, n in zip(pieces.starts, pieces.lengths))
    assert got == pytest.approx(total / pieces.predicted, rel=1e-12) and pieces.predicted == 300


def test_score_corpus_through_the_cache_with_a_limit_and_unknown_characters(rng, tmp_path):
    ckpt = make_checkpoint(rng, "rnn", "float64")
    chars = ckpt.vocab.chars
    text = "".join(rng.choice(list(chars[1:]), size=900))  # not every character: the text's ids are not the model's
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    corpus, _ = idcache.load_corpus(str(path))
    assert corpus.vocab != ckpt.vocab
    whole = evaluate.score_corpus(ckpt.params, ckpt.model_config, ckpt.vocab, corpus)
    ids = ckpt.vocab.encode(text)
    assert whole.nats == pytest.approx(evaluate.mean_loss(ckpt.params, ckpt.model_config, ids), rel=1e-12)
    assert (whole.predicted, whole.known, whole.skipped) == (899, 900, 0)
    part = evaluate.score_corpus(ckpt.params, ckpt.model_config, ckpt.vocab, corpus, max_chars=100)
    assert part.predicted == 100 and part.nats == pytest.approx(
        evaluate.mean_loss(ckpt.params, ckpt.model_config, ids, data.pieces(900, 100)), rel=1e-12)
    # Characters the model never saw are left out and the text closes up around them.
    path.write_text("Z" + text[:450] + "ZΩ" + text[450:], encoding="utf-8")
    corpus, _ = idcache.load_corpus(str(path))
    closed = evaluate.score_corpus(ckpt.params, ckpt.model_config, ckpt.vocab, corpus)
    assert (closed.skipped, closed.unknown, closed.known) == (3, "ZΩ", 900) and closed.nats == pytest.approx(whole.nats)
