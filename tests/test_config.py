"""ModelConfig's checks of --dropout, and checkpoint headers written before it existed."""

import math

import pytest

from charnn.config import ModelConfig
from charnn.errors import CharnnError


@pytest.mark.parametrize("p", [0.0, 0, 0.25, 0.9])
def test_dropout_accepts_probabilities_below_one(p):
    assert ModelConfig(dropout=p).validate().dropout == p


@pytest.mark.parametrize("p", [1.0, 1.5, -0.1, math.nan, math.inf, True, "0.5", None])
def test_dropout_refuses_the_rest_with_the_option_name(p):
    with pytest.raises(CharnnError, match=r"--dropout must be .* below 1, got"):
        ModelConfig(dropout=p).validate()


def test_a_header_without_dropout_loads_as_no_dropout():
    old = {"model": "lstm", "vocab_size": 65, "hidden_size": 256, "num_layers": 2}
    assert ModelConfig.from_dict(old).dropout == 0.0
    assert ModelConfig.from_dict(ModelConfig("gru", dropout=0.5).to_dict()) == ModelConfig("gru", dropout=0.5)


def test_fields_a_checkpoint_predates_mean_what_the_old_charnn_did():
    """A header written before dropout and schedules existed trained with neither, whatever the
    tuned defaults are now."""
    from charnn.config import TrainConfig
    old_model = {"model": "lstm", "vocab_size": 65, "hidden_size": 256, "num_layers": 2}
    assert ModelConfig().dropout > 0 and ModelConfig.from_dict(old_model).dropout == 0.0
    old_train = {k: v for k, v in TrainConfig(steps=10).to_dict().items()
                 if k not in ("lr_schedule", "warmup_steps", "time_budget", "patience", "sample_every", "keep_every")}
    tc = TrainConfig.from_dict(old_train)
    assert TrainConfig().lr_schedule == "cosine" and tc.lr_schedule == "constant" and tc.warmup_steps == 0
