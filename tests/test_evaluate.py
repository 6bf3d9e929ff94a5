"""Scoring a text: the figures `charnn eval` prints, including a model that is very wrong."""

import math

import numpy as np
from click.testing import CliRunner

from charnn import checkpoint, evaluate
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
