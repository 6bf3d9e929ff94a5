"""What data-parallel training would gain on N machines: a model of a step, calibrated with one
machine's measured step (bench_workers.py), for networks it was not measured on.

A synchronous step on N machines of a global batch of B streams is the compute of B/N streams,
then one Allreduce of the gradients (G bytes: 4 per float32 parameter):

    step(N)      = compute / N + allreduce(N)
    allreduce(N) = 2 (N-1)/N * G / bandwidth  +  2 (N-1) * latency

The Allreduce is the ring algorithm's (Patarasuk & Yuan 2009; Thakur, Rabenseifner & Gropp 2005):
a reduce-scatter and an all-gather of N-1 rounds each, every round sending G/N bytes to the next
machine, so each machine sends 2 (N-1)/N * G bytes in all, whatever N, and waits out 2 (N-1)
message latencies. `compute` is one machine's step on all B streams with its cores busy (the
measured N-worker step on one machine, less its measured Allreduce). compute / N assumes a step's
work falls linearly with its streams; a machine with few streams uses its cores less well (small
matrix products), so at large N the model is optimistic.

Efficiency = compute / (N * step(N)): the speed-up over one machine, per machine. It rises with
the streams per machine b = B/N, since compute grows with b and the Allreduce does not; the
smallest b that keeps efficiency at least E is b >= E/(1-E) * allreduce(N) / (compute / B).

Where the bandwidth matters: the bandwidth term is G / bandwidth, at most 2 G / bandwidth; the
latency term is 2 (N-1) latencies. For a small model (LSTM 1 x 128: G = 0.43 MB, 0.7 ms at 10 Gb/s)
the two terms are alike at large N, and if the step is long against both, efficiency is near 100%
at either bandwidth; a table printed at whole percents then shows no difference, although the
Allreduce is 10x shorter. The difference shows where the Allreduce is a real part of a step: large
gradients (LSTM 2 x 512: 13.3 MB, 21 ms a step at 10 Gb/s and 2.1 ms at 100 Gb/s) against a short
compute / N (many machines, few streams each). So the tables give the Allreduce time itself, and
efficiency to a tenth of a percent.
"""

from __future__ import annotations

import math

MACHINES = (1, 2, 4, 8, 16, 32, 64)
# (name, bits per second, latency of one message in seconds): assumptions, not measurements. 10 Gb/s:
# Ethernet, MPI over TCP, tens of microseconds; 100 Gb/s: InfiniBand or RoCE, microseconds.
NETWORKS = (("10 Gb/s", 10e9, 25e-6), ("100 Gb/s", 100e9, 3e-6))
TARGET = 0.9  # the efficiency the batch-per-machine column keeps


def allreduce_seconds(nbytes: float, machines: int, bits_per_second: float, latency: float) -> float:
    """Ring Allreduce of nbytes over `machines` machines (0 for one machine)."""
    n = machines
    return 2 * (n - 1) / n * nbytes * 8 / bits_per_second + 2 * (n - 1) * latency


def step_seconds(compute: float, machines: int, nbytes: float, bits_per_second: float, latency: float) -> float:
    return compute / machines + allreduce_seconds(nbytes, machines, bits_per_second, latency)


def efficiency(compute: float, machines: int, nbytes: float, bits_per_second: float, latency: float) -> float:
    return compute / (machines * step_seconds(compute, machines, nbytes, bits_per_second, latency))


def smallest_batch(compute: float, batch: int, machines: int, nbytes: float, bits_per_second: float, latency: float,
                   target: float = TARGET) -> int:
    """The fewest streams per machine whose step keeps efficiency >= target: compute is one
    machine's step on `batch` streams, taken as linear in the streams."""
    if machines == 1:
        return 1
    per_stream = compute / batch
    return math.ceil(target / (1 - target) * allreduce_seconds(nbytes, machines, bits_per_second, latency) / per_stream)


def calibration(row: dict) -> dict:
    """From a row of bench_workers.run's results: one machine's compute on the row's B streams
    (the workers' step less their Allreduce), the gradient's bytes, B and T."""
    c, workers = row["config"], row["workers"]
    return {"name": row["name"], "compute": workers["seconds"] - workers["allreduce"],
            "nbytes": workers["gradient_bytes"], "batch": c["batch"], "seq": c["seq"],
            "measured_allreduce": workers["allreduce"]}


def markdown(calibrations: list[dict], machines=MACHINES, networks=NETWORKS) -> str:
    """A table per network: for each model, efficiency and throughput at each machine count (the
    global batch kept at the model's B), the Allreduce at the largest count, and the fewest streams
    per machine that keep efficiency >= TARGET there."""
    lines = []
    for label, bps, latency in networks:
        top = machines[-1]
        lines += [f"Expected at {label} (message latency {latency * 1e6:g} us, assumed): efficiency and characters "
                  "per second for the whole job, the model's B streams shared by N machines (-: N does not "
                  "divide B).", "",
                  "| model (compute of a step on one machine, gradient) | "
                  + " | ".join(f"N = {n}" for n in machines)
                  + f" | Allreduce at N = {top} | streams per machine for {TARGET:.0%} at N = {top} |",
                  "| --- |" + " ---: |" * (len(machines) + 2)]
        for cal in calibrations:
            cells = []
            for n in machines:
                if cal["batch"] % n:  # B streams cannot be shared by N machines (parallel.check_divides)
                    cells.append("-")
                    continue
                eff = efficiency(cal["compute"], n, cal["nbytes"], bps, latency)
                rate = cal["batch"] * cal["seq"] / step_seconds(cal["compute"], n, cal["nbytes"], bps, latency)
                cells.append(f"{eff:.1%}, {rate / 1e3:,.0f} k")
            ar = allreduce_seconds(cal["nbytes"], top, bps, latency)
            b = smallest_batch(cal["compute"], cal["batch"], top, cal["nbytes"], bps, latency)
            lines.append(f"| {cal['name']} ({cal['compute'] * 1e3:.0f} ms, {cal['nbytes'] / 1e6:.2f} MB) | "
                         + " | ".join(cells) + f" | {ar * 1e3:.2f} ms | {b} |")
        lines.append("")
    return "\n".join(lines).rstrip()
