import math

import pytest

from charnn import runs, schedule
from charnn.errors import CharnnError


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400),
                                          ("45", 45), (" 2m 30s ", 150), ("1d", 86400)])
def test_parse_duration(text, seconds):
    assert schedule.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "m", "-5", "0", "0s", "ten minutes", "5m junk", "inf"])
def test_parse_duration_refuses_nonsense(text):
    with pytest.raises(CharnnError, match="--time-budget"):
        schedule.parse_duration(text)


def test_format_duration():
    assert [schedule.format_duration(s) for s in (12.4, 90, 7384)] == ["12s", "1m30s", "2h03m"]


def test_constant_and_warmup():
    assert schedule.factor("constant", 50, 0.5) == 1.0
    assert [schedule.factor("constant", s, 0.0, warmup_steps=4) for s in (1, 2, 4, 5)] == [0.25, 0.5, 1.0, 1.0]


def test_cosine_goes_from_one_to_a_tenth():
    assert schedule.factor("cosine", 1, 0.0) == pytest.approx(1.0)
    assert schedule.factor("cosine", 1, 0.5) == pytest.approx(0.55)
    assert schedule.factor("cosine", 1, 1.0) == pytest.approx(schedule.MIN_FRACTION)
    values = [schedule.factor("cosine", 1, p / 10) for p in range(11)]
    assert values == sorted(values, reverse=True)
    # with warm-up taking the first 10% of the run, the decay spans the other 90%
    assert schedule.factor("cosine", 11, 0.1, warmup_steps=10, warmup_progress=0.1) == pytest.approx(1.0)
    assert schedule.factor("cosine", 60, 0.55, warmup_steps=10, warmup_progress=0.1) == pytest.approx(0.55)


def test_step_schedule():
    assert [schedule.factor("step", 1, p) for p in (0.0, 0.49, 0.5, 0.74, 0.75, 1.0)] == [1, 1, 0.1, 0.1, 0.01, 0.01]


def test_learning_rate_is_recorded_in_the_metrics(tmp_path):
    """The schedule reaches training: the logged rates follow a cosine from the base rate."""
    import json
    import os

    from charnn import train
    from conftest import TINY_TEXT, tiny_configs
    corpus = tmp_path / "t.txt"
    corpus.write_text(TINY_TEXT)
    mc, tc = tiny_configs("rnn", steps=40, eval_every=40, lr_schedule="cosine", learning_rate=0.01)
    result = train.train(corpus, mc, tc, tmp_path / "ck")
    lrs = [json.loads(l)["lr"] for l in open(os.path.join(result.run_dir, runs.METRICS)) if '"train"' in l]
    assert len(lrs) == 4 and lrs == sorted(lrs, reverse=True)
    # the rate of update s is set from the progress before it, (s - 1) / 40, on the cosine 0.1 + 0.45 (1 + cos(pi p))
    assert lrs[0] == pytest.approx(0.01 * (0.1 + 0.45 * (1 + math.cos(math.pi * 9 / 40))))
    assert lrs[-1] == pytest.approx(0.01 * (0.1 + 0.45 * (1 + math.cos(math.pi * 39 / 40))))
    assert math.isclose(lrs[-1] / 0.01, 0.1, abs_tol=0.01)
