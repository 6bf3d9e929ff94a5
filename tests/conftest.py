"""Shared helpers: tiny corpora and a tiny, fast training configuration."""

import numpy as np
import pytest

from charnn.config import ModelConfig, TrainConfig

# A short text with some structure (repeated words), long enough for tiny runs.
TINY_TEXT = ("the cat sat on the mat. the dog sat on the log. " * 40
             + "a cat and a dog, the mat and the log.\n" * 20)


@pytest.fixture(autouse=True, scope="session")
def session_cache_dir(tmp_path_factory):
    """Id caches made outside a test's own folder (by fixtures of a wider scope, set up before
    cache_dir) go to a folder of the session: never the user's cache folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHARNN_CACHE_DIR", str(tmp_path_factory.mktemp("session-cache")))
        yield


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch):
    """Every test's id caches go to a folder of its own, never the user's cache folder."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CHARNN_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def tiny_corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


def tiny_configs(model="lstm", steps=30, **train):
    """Tiny settings, every one the tests rely on given (not left to the tuned defaults)."""
    mc = ModelConfig(model=model, hidden_size=16, num_layers=2, dropout=0.0)
    opts = dict(seq_length=16, batch_size=4, steps=steps, eval_every=10, learning_rate=3e-2, lr_schedule="constant")
    opts.update(train)
    return mc, TrainConfig(**opts)


def random_params_and_state(config, rng, batch_size, dtype="float64"):
    """float64 parameters with non-zero biases and a non-zero carried state, for exact comparisons."""
    from charnn import model

    params = model.init_params(config, rng, dtype)
    for p in params.values():
        p += rng.uniform(-0.3, 0.3, size=p.shape).astype(dtype)
    state = {n: rng.uniform(-0.8, 0.8, size=s.shape).astype(dtype)
             for n, s in model.zero_state(config, batch_size, dtype).items()}
    return params, state


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def checkpoint_arrays(path):
    """Every array of a checkpoint file but its header, by its name in the file."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k != "header"}


def assert_same_arrays(a, b):
    """The checkpoint files a and b hold the same arrays, bit for bit (headers aside)."""
    xa, xb = checkpoint_arrays(a), checkpoint_arrays(b)
    assert xa.keys() == xb.keys()
    for k in xa:
        assert xa[k].dtype == xb[k].dtype and xa[k].tobytes() == xb[k].tobytes(), k


def run_cli(*args):
    """charnn's command line in this process (click's CliRunner), stdout and stderr apart."""
    from click.testing import CliRunner

    from charnn.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="session")
def explain_run(tmp_path_factory):
    """A tiny 2-layer LSTM trained for a few steps on TINY_TEXT, for charnn explain's tests:
    (its best checkpoint, the text), with the run's metrics.jsonl beside the checkpoint."""
    folder = tmp_path_factory.mktemp("explain")
    text = folder / "tiny.txt"
    text.write_text(TINY_TEXT, encoding="utf-8")
    r = run_cli("train", text, "--hidden-size", 16, "--num-layers", 2, "--seq-length", 16, "--batch-size", 4,
                "--learning-rate", 0.03, "--steps", 30, "--eval-every", 15, "--checkpoint-dir", folder, "--run-name", "r")
    assert r.exit_code == 0, r.stderr
    return folder / "r" / "best.npz", text
