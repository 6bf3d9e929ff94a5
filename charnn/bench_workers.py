"""`charnn bench --workers N`: a training step in one process against N data-parallel workers
(MPI ranks on this machine, one BLAS thread each), and against PyTorch when it is there.

Each figure comes from a fresh job: one process (`python -m charnn.bench worker train ...`, BLAS
with its default threads, as `charnn train` runs), N ranks (`mpiexec -n N python -m mpi4py -m
charnn.bench_workers ...`), and PyTorch with every core (bench_torch.py); with --rounds the three
take turns and the median is kept. The ranks' step is the training loop's (train.py): forward and
BPTT on B/N streams, the gradients summed by parallel.Workers' Allreduce, clipping, Adam. Besides
the step, the ranks time the Allreduce alone (all ranks released together by a barrier, so no
waiting for a slower rank is counted): with the step time this splits a step into compute and
communication, what scaling.py is calibrated with. Peak memory is each rank's own (ru_maxrss).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time

import numpy as np

from charnn import bench, launch, parallel

# (model, layers, hidden, batch): the rows of the README's workers table.
REFERENCE = [("lstm", 1, 128, 32), ("lstm", 2, 256, 64), ("lstm", 2, 512, 64), ("rnn", 2, 512, 64)]
ALLREDUCE_REPEATS = 30


def time_ranks(c: bench.Config, steps: int, warmup: int) -> dict | None:
    """Run in every rank: the median step (bench.time_training on this rank's streams), the Allreduce
    within it and alone; rank 0 returns them."""
    team = parallel.team()
    step = bench.time_training(c, steps, warmup, team)
    alone = []
    for _ in range(ALLREDUCE_REPEATS):
        team.barrier()
        t0 = time.perf_counter()
        team.comm.Allreduce(team.MPI.IN_PLACE, team.flat, op=team.MPI.SUM)
        alone.append(time.perf_counter() - t0)
    peaks = team.comm.gather(bench._peak_rss(), root=0)
    if not team.leader:
        return None
    return {"seconds": step["seconds"], "allreduce_in_step": step["allreduce_in_step"],
            "allreduce": statistics.median(alone), "gradient_bytes": int(team.flat.nbytes), "peak_rss": max(peaks),
            "peak_rss_ranks": peaks, "workers": team.size}


def _ranks(c: bench.Config, workers: int, steps: int, warmup: int) -> dict:
    cmd = [launch.mpiexec(), "-n", str(workers), sys.executable, "-m", "mpi4py", "-m", "charnn.bench_workers",
           c.model, c.layers, c.hidden, c.batch, c.seq, c.vocab, steps, warmup]
    return bench._run([str(x) for x in cmd], launch.environment())


def run(configs: list[bench.Config], workers: int, steps=20, warmup=3, torch_python=None, rounds=1,
        progress=lambda line: None) -> dict:
    """Every measurement, a JSON-able dict."""
    launch.check_available()
    threads = os.cpu_count() or 1
    torch_python = bench.find_torch_python(torch_python)
    results = {"machine": {"cpus": threads, "numpy": np.__version__}, "workers": workers, "torch": None,
               "rounds": rounds, "train": []}
    if torch_python:
        try:
            results["torch"] = bench._torch(torch_python, "sample", "lstm", 1, 8, bench.VOCAB, 2, threads)["version"]
        except RuntimeError as e:
            progress(f"PyTorch is not usable in {torch_python}, skipped: {str(e).splitlines()[-1]}")
            torch_python = None
    for c in configs:
        parallel.check_divides(c.batch, workers)
        progress(f"training {c.name}: 1 process, {workers} workers" + (", PyTorch" if torch_python else ""))
        one, many, theirs = [], [], []
        for _ in range(rounds):  # taking turns, so a slow spell of a busy machine falls on each
            one.append(bench._charnn("train", c.model, c.layers, c.hidden, c.batch, c.seq, c.vocab, steps, warmup))
            many.append(_ranks(c, workers, steps, warmup))
            if torch_python:
                theirs.append(bench._torch(torch_python, "train", c.model, c.layers, c.hidden, c.batch, c.seq, c.vocab,
                                           steps, warmup, threads))
        row = {"config": dataclasses.asdict(c), "name": c.name, "one": bench._summary(one),
               "workers": dict(bench._summary(many), **{k: statistics.median(r[k] for r in many) for k in
                                                       ("allreduce_in_step", "allreduce")},
                               gradient_bytes=many[0]["gradient_bytes"])}
        if torch_python:
            row["torch"] = bench._summary(theirs)
        results["train"].append(row)
    return results


def markdown(results: dict) -> str:
    n, torch_v = results["workers"], results["torch"]
    lines = [f"Training step (forward, BPTT, clip, Adam), V {bench.VOCAB}, float32, on {results['machine']['cpus']} "
             f"cores: one process (BLAS's own threads) against {n} workers (MPI ranks, one BLAS thread each, B/{n} "
             f"streams each); median of the timed steps and of {results['rounds']} round(s), taking turns. The "
             "Allreduce is timed alone (ranks released together); its share is of the workers' step.", ""]
    head = f"| configuration | 1 process chars/s | {n} workers chars/s | {n} workers / 1 process |"
    sep = "| --- | ---: | ---: | ---: |"
    if torch_v:
        head += f" PyTorch {torch_v} chars/s | {n} workers / PyTorch |"
        sep += " ---: | ---: |"
    head += " Allreduce ms (share) | peak MB: 1 process, each worker |"
    sep += " ---: | ---: |"
    lines += [head, sep]
    for row in results["train"]:
        c, one, many = row["config"], row["one"], row["workers"]
        chars = c["seq"] * c["batch"]
        cells = [row["name"], f"{chars / one['seconds']:,.0f}", f"{chars / many['seconds']:,.0f}",
                 f"{one['seconds'] / many['seconds']:.2f}x"]
        if torch_v:
            cells += [f"{chars / row['torch']['seconds']:,.0f}", f"{row['torch']['seconds'] / many['seconds']:.2f}x"]
        cells += [f"{many['allreduce'] * 1e3:.2f} ({many['allreduce'] / many['seconds']:.1%})",
                  f"{one['peak_rss'] / 2**20:.0f}, {many['peak_rss'] / 2**20:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # one rank of a timed job: model layers hidden batch seq vocab steps warmup
    m, *nums = sys.argv[1:]
    layers, hidden, batch, seq, vocab, steps, warmup = map(int, nums)
    out = time_ranks(bench.Config(m, layers, hidden, batch, seq, vocab), steps, warmup)
    if out is not None:
        print(json.dumps(out))
