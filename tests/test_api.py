"""The Python API (charnn.load, Model.step, Model.reset) and the scores it and the CLI report."""

import math

import numpy as np
import pytest
from click.testing import CliRunner

import charnn
from charnn import checkpoint, evaluate
from charnn.cli import cli

from test_checkpoint import make_checkpoint


def unlikely_checkpoint(path, rng):
    """A saved checkpoint whose output bias makes every character but the newline very unlikely."""
    ckpt = make_checkpoint(rng)
    ckpt.params["by"][:] = 0
    ckpt.params["by"][ckpt.vocab.chars.index("\n")] = 2000.0
    checkpoint.save(str(path), ckpt)
    return ckpt


def test_perplexity_of_a_huge_loss_is_inf():
    """exp(709.8) is the largest float64: above it math.exp raises, and the perplexity is inf."""
    assert evaluate.TextScore(nats=800.0, predicted=3, skipped=0, unknown="").perplexity == math.inf
    assert evaluate.TextScore(nats=2.0, predicted=3, skipped=0, unknown="").perplexity == pytest.approx(math.exp(2))


def test_eval_reports_an_infinite_perplexity(tmp_path, rng):
    unlikely_checkpoint(tmp_path / "c.npz", rng)
    (tmp_path / "t.txt").write_text("abab", encoding="utf-8")
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "c.npz"), str(tmp_path / "t.txt")])
    assert result.exit_code == 0, result.output
    assert "perplexity inf" in result.output and "nats/char" in result.output
