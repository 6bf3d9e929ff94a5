"""The scaling model's arithmetic (scaling.py), by hand."""

import math

import pytest

from charnn import scaling


def test_ring_allreduce_by_hand():
    assert scaling.allreduce_seconds(1e6, 1, 10e9, 25e-6) == 0  # one machine sends nothing
    # 4 machines, 1 MB: each sends 2 * 3/4 * 8e6 bits = 1.2e7 bits, 1.2 ms at 10 Gb/s; 6 latencies of 25 us
    assert scaling.allreduce_seconds(1e6, 4, 10e9, 25e-6) == pytest.approx(1.2e-3 + 150e-6)
    assert scaling.allreduce_seconds(1e6, 4, 100e9, 25e-6) == pytest.approx(1.2e-4 + 150e-6)


def test_step_and_efficiency_by_hand():
    # compute 0.8 s on one machine, 8 machines: 0.1 s each, plus the Allreduce
    ar = scaling.allreduce_seconds(4e6, 8, 10e9, 0)  # 2 * 7/8 * 3.2e7 / 1e10 = 5.6 ms
    assert ar == pytest.approx(5.6e-3)
    assert scaling.step_seconds(0.8, 8, 4e6, 10e9, 0) == pytest.approx(0.1 + 5.6e-3)
    assert scaling.efficiency(0.8, 8, 4e6, 10e9, 0) == pytest.approx(0.1 / 0.1056)
    assert scaling.efficiency(0.8, 1, 4e6, 10e9, 0) == 1


def test_the_smallest_batch_per_machine_is_the_edge_of_the_target():
    compute, batch, nbytes, bps, lat = 0.64, 64, 13.3e6, 10e9, 25e-6
    for machines in (2, 8, 64):
        b = scaling.smallest_batch(compute, batch, machines, nbytes, bps, lat)
        per_stream = compute / batch

        def eff(streams):  # machines each with `streams` streams: compute per machine streams * per_stream
            return scaling.efficiency(streams * per_stream * machines, machines, nbytes, bps, lat)
        assert eff(b) >= scaling.TARGET - 1e-12 and eff(b - 1) < scaling.TARGET


def test_ten_and_a_hundred_gigabits_differ_where_the_allreduce_counts():
    big = {"name": "big", "compute": 0.6, "nbytes": 13.3e6, "batch": 64, "seq": 64}
    at10, at100 = (scaling.efficiency(big["compute"], 64, big["nbytes"], bps, lat) for _, bps, lat in scaling.NETWORKS)
    assert at10 < 0.5 < at100  # 9.4 ms of compute per machine against 21 ms or 2.5 ms of Allreduce
    text = scaling.markdown([big])
    tables = text.split("Expected at ")[1:]
    assert len(tables) == 2 and tables[0].split("\n", 1)[1] != tables[1].split("\n", 1)[1]
    assert "| big (600 ms, 13.30 MB) | 100.0%, 7 k |" in tables[0]  # 64 x 64 chars / 0.6 s = 6,827 a second
    assert math.isclose(scaling.efficiency(0.6, 2, 13.3e6, 10e9, 25e-6), 0.3 / (0.3 + scaling.allreduce_seconds(
        13.3e6, 2, 10e9, 25e-6)))


def test_the_readme_table_of_gradients_is_the_model_s():
    """README's table of gradient sizes and Allreduce times: parameter counts and the formula."""
    import os
    import numpy as np
    from charnn import model
    from charnn.config import ModelConfig
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    for kind, layers, hidden in (("lstm", 1, 128), ("lstm", 2, 256), ("lstm", 2, 512), ("rnn", 2, 512)):
        shapes = model.param_shapes(ModelConfig(model=kind, num_layers=layers, hidden_size=hidden, vocab_size=65))
        n = sum(int(np.prod(s)) for s in shapes.values())
        g = 4 * n
        at10, at100 = (scaling.allreduce_seconds(g, 64, bps, lat) * 1e3 for _, bps, lat in scaling.NETWORKS)
        row = f"| {kind.upper()} {layers} x {hidden} | {n:,} | {g / 1e6:.2f} MB | {at10:.2f} ms | {at100:.2f} ms |"
        assert row in readme, row
