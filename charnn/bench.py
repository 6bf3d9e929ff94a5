"""`charnn bench`: how fast charnn trains and samples on this machine, against the machine's
float32 matrix-multiply rate (the ceiling) and, when it is installed, PyTorch.

Every measurement runs in a fresh process (`python -m charnn.bench worker ...`), so each peak
resident memory figure belongs to one configuration alone, and one run's heap does not slow the
next. A training step is what `charnn train` does: forward, full BPTT, global-norm clipping and an
Adam update, the state carried to the next step; its time is the median over `steps` steps after
`warmup` steps. Sampling is timed from a checkpoint (a model trained for one step, so every
figure is of a real file): one stream in the library, N streams at once in the library, and one
stream through `charnn sample` into a pipe, the reader being this process. PyTorch runs the same
models (charnn/bench_torch.py) with the same B, T, H, layers and thread count, in the Python
given by --torch-python (or this one, if it can import torch).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from charnn import checkpoint, data, decoding, model, optim, parallel, sample, textfile, train
from charnn.config import ModelConfig, TrainConfig

VOCAB = 65  # tiny shakespeare's
SEQ = 64
# (model, layers, hidden, batch): the reference configurations of `make bench`.
REFERENCE = [("lstm", 1, 128, 32), ("lstm", 2, 256, 64), ("lstm", 2, 512, 64),
             ("rnn", 1, 128, 32), ("rnn", 2, 256, 64), ("rnn", 2, 512, 64)]
SAMPLE_CONFIG = ("lstm", 2, 512)
SAMPLE_LENGTH = 2000
SAMPLE_BATCH = 32  # streams of the batched sampling figure
ENCODE_BYTES = 100 * 2**20


@dataclasses.dataclass(frozen=True)
class Config:
    model: str
    layers: int
    hidden: int
    batch: int
    seq: int = SEQ
    vocab: int = VOCAB

    @property
    def name(self) -> str:
        return f"{self.model.upper()} {self.layers} x {self.hidden}, B {self.batch}, T {self.seq}"


def matrix_flops(c: Config) -> float:
    """Matrix FLOPs of one training step: every product is 2*M*K*N, and each weight appears in
    three (forward, input gradient, weight gradient). Layer 0's one-hot input product is a row
    lookup (no FLOPs) and its gradient a scatter, so it is not counted."""
    G = model.GATES[c.model]
    N = c.seq * c.batch  # rows: T*B characters
    per_layer = 3 * 2 * N * c.hidden * G * c.hidden  # h @ Whh
    above = 3 * 2 * N * c.hidden * G * c.hidden  # x @ Wxh for layers above the first
    output = 3 * 2 * N * c.hidden * c.vocab
    return c.layers * per_layer + (c.layers - 1) * above + output


# -------------------------------------------------------------------------------------------------
# Workers: each runs in its own process and prints one JSON object.


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def time_training(c: Config, steps: int, warmup: int, team=None) -> dict:
    """The median training step (forward, BPTT, clip, Adam) of c, as train.py makes it. team: this
    process's share of a data-parallel job (bench_workers.py: it trains its block of the streams and
    the gradients are summed, as in train.py); by default one process, which shares nothing."""
    team = team or parallel.Solo()
    mc = ModelConfig(model=c.model, vocab_size=c.vocab, hidden_size=c.hidden, num_layers=c.layers, dropout=0.0)
    rng = np.random.default_rng(0)
    params = model.init_params(mc, rng)
    opt_state = optim.init_state("adam", params)
    ids = rng.integers(0, c.vocab, size=c.batch * (c.seq * (steps + warmup) + 1)).astype(data.id_dtype(c.vocab))
    rows = team.rows(c.batch)  # (b0, b1): this process's streams
    stream = data.BatchStream(ids, c.batch, c.seq, rows)
    state = model.zero_state(mc, rows[1] - rows[0])
    weight = (rows[1] - rows[0]) / c.batch
    times, reduce_times = [], []
    team.barrier()
    for k in range(warmup + steps):
        t0, r0 = time.perf_counter(), team.allreduce_seconds
        inputs, targets, _ = stream.next()
        loss, grads, state = model.loss_and_grads(params, mc, inputs, targets, state)
        loss, grads = team.sum_step(loss, grads, weight)
        optim.clip_by_global_norm(grads, 5.0)
        optim.update("adam", params, grads, opt_state, 2e-3, k + 1)
        if k >= warmup:
            times.append(time.perf_counter() - t0)
            reduce_times.append(team.allreduce_seconds - r0)
    return {"seconds": statistics.median(times), "allreduce_in_step": statistics.median(reduce_times),
            "peak_rss": _peak_rss()}


def sampling_checkpoint(folder: str, model_name: str, layers: int, hidden: int) -> str:
    """A checkpoint of the sampling configuration with V = VOCAB (a newline and 64 printable
    ASCII characters, so a character is a byte), trained one step on random text: its best.npz."""
    chars = np.array(["\n"] + [chr(32 + i) for i in range(VOCAB - 1)])
    path = os.path.join(folder, "text.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(chars) + "".join(np.random.default_rng(0).choice(chars, 4000)))
    mc = ModelConfig(model=model_name, hidden_size=hidden, num_layers=layers, dropout=0.0)
    tc = TrainConfig(steps=1, batch_size=1, seq_length=8, eval_every=1, val_frac=0.01)
    return train.train(path, mc, tc, folder, "sampling").best


def time_sampling(path: str, length: int, batch: int) -> dict:
    """Characters per second, all streams together, of `batch` samples of `length` made at once."""
    ckpt = checkpoint.load(path)
    t0 = time.perf_counter()
    events = sample.samples(ckpt.params, ckpt.model_config, ckpt.vocab, "\n", length, decoding.generators(0, batch))
    n = sum(len(text) for _, text, _ in events)
    return {"chars_per_sec": n / (time.perf_counter() - t0), "batch": batch}


def time_pipe(path: str, length: int) -> dict:
    """Characters per second of `charnn sample` writing into a pipe that this process reads as fast
    as it can, from the first piece read to the end (start-up and loading excluded)."""
    cmd = [sys.executable, "-m", "charnn", "sample", "--checkpoint", path, "--length", str(length), "--random-seed", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.read1(1 << 16)
    t0, n = time.perf_counter(), 0
    while piece := proc.stdout.read1(1 << 16):
        n += len(piece)
    seconds = time.perf_counter() - t0
    if proc.wait() != 0 or not first:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return {"chars_per_sec": n / seconds, "chars": len(first) + n}


def time_encoding(path: str) -> dict:
    before = _current_rss()
    t0 = time.perf_counter()
    found, ids = textfile.read_ids(path)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_extra": _peak_rss() - before, "vocab": found.vocab.size,
            "chars": len(ids), "bytes": os.path.getsize(path)}


def matmul_rate(m: int, k: int, n: int, repeat: int = 20) -> float:
    """GFLOP/s of numpy's float32 (m, k) @ (k, n), the best of `repeat` products."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    np.matmul(a, b, out=out)
    best = min(_timed(lambda: np.matmul(a, b, out=out)) for _ in range(repeat))
    return 2 * m * k * n / best / 1e9


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def _worker(args: list[str]) -> dict:
    kind, rest = args[0], args[1:]
    if kind == "train":
        m, layers, hidden, batch, seq, vocab, steps, warmup = rest[0], *map(int, rest[1:])
        return time_training(Config(m, layers, hidden, batch, seq, vocab), steps, warmup)
    if kind == "sample":
        return time_sampling(rest[0], int(rest[1]), int(rest[2]))
    if kind == "encode":
        return time_encoding(rest[0])
    raise SystemExit(f"unknown worker {kind}")


# -------------------------------------------------------------------------------------------------
# The orchestrator


def find_torch_python(given: str | None) -> str | None:
    """The Python to run PyTorch in: the one given, else this one if it has torch, else none."""
    if given:
        return given
    return sys.executable if importlib.util.find_spec("torch") is not None else None


def _run(cmd: list[str], env: dict | None = None) -> dict:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    except OSError as e:  # e.g. a --torch-python that does not exist
        raise RuntimeError(f"{cmd[0]}: {e.strerror}") from None
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _charnn(*args) -> dict:
    return _run([sys.executable, "-m", "charnn.bench", "worker", *map(str, args)])


def _torch(python: str, *args) -> dict:
    return _run([python, os.path.join(os.path.dirname(__file__), "bench_torch.py"), *map(str, args)])


def write_text(path: str, mixed: bool, size: int, rng: np.random.Generator) -> None:
    """A text of about `size` bytes: ASCII words and lines, or a mix of scripts whose vocabulary
    is over 256 characters (Latin, Greek, Cyrillic, CJK, emoji)."""
    if mixed:
        alphabet = ([chr(c) for c in range(0x20, 0x7F)] + [chr(c) for c in range(0x391, 0x3C9)]
                    + [chr(c) for c in range(0x410, 0x44F)] + [chr(c) for c in range(0x4E00, 0x4E64)]
                    + [chr(c) for c in range(0x1F600, 0x1F620)] + ["\n"])
    else:
        alphabet = [chr(c) for c in range(0x20, 0x7F)] + ["\n"]
    points = np.array([ord(a) for a in alphabet], dtype="<u4")
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        while written < size:
            chunk = points[rng.integers(0, len(points), size=1 << 20)].tobytes().decode("utf-32-le")
            f.write(chunk)
            written += len(chunk.encode("utf-8"))


def _summary(runs: list[dict]) -> dict:
    """Several timings of one configuration: the median time and the largest peak memory."""
    return {"seconds": statistics.median(r["seconds"] for r in runs), "peak_rss": max(r["peak_rss"] for r in runs),
            "rounds": [r["seconds"] for r in runs]}


def run(configs: list[Config], steps=20, warmup=3, torch_python=None, sample_cfg=SAMPLE_CONFIG,
        encode_bytes=ENCODE_BYTES, rounds=1, progress=lambda line: None) -> dict:
    """Every measurement; a JSON-able dict. progress(line) is told what is being measured.

    With rounds > 1 each training configuration is timed that many times, charnn and PyTorch taking
    turns, and the median is kept: on a shared machine a slow spell then falls on both sides."""
    threads = os.cpu_count() or 1
    torch_python = find_torch_python(torch_python)
    results = {"machine": {"cpus": threads, "numpy": np.__version__}, "torch": None, "train": [], "sample": None,
               "encode": [], "rounds": rounds}
    if torch_python:
        try:
            results["torch"] = _torch(torch_python, "sample", "lstm", 1, 8, VOCAB, 2, threads)["version"]
        except RuntimeError as e:
            progress(f"PyTorch is not usable in {torch_python}, skipped: {str(e).splitlines()[-1]}")
            torch_python = None
    big = max(configs, key=lambda c: c.hidden) if configs else Config("lstm", 2, 512, 64)
    G = model.GATES[big.model]
    progress("numpy float32 matrix-multiply rate")
    results["ceiling"] = {
        "large": matmul_rate(big.seq * big.batch, big.hidden, G * big.hidden),  # (T*B, H) @ (H, G*H)
        "step": matmul_rate(big.batch, big.hidden, G * big.hidden, repeat=200),  # (B, H) @ (H, G*H)
        "shape_large": [big.seq * big.batch, big.hidden, G * big.hidden],
        "shape_step": [big.batch, big.hidden, G * big.hidden]}
    for c in configs:
        progress(f"training {c.name}")
        row = {"config": dataclasses.asdict(c), "name": c.name, "flops": matrix_flops(c)}
        ours, theirs = [], []
        for _ in range(rounds):
            ours.append(_charnn("train", c.model, c.layers, c.hidden, c.batch, c.seq, c.vocab, steps, warmup))
            if torch_python:
                theirs.append(_torch(torch_python, "train", c.model, c.layers, c.hidden, c.batch, c.seq, c.vocab,
                                     steps, warmup, threads))
        row["charnn"] = _summary(ours)
        if torch_python:
            row["torch"] = _summary(theirs)
        results["train"].append(row)
    if sample_cfg:
        progress(f"sampling {SAMPLE_LENGTH} characters, {sample_cfg[0].upper()} {sample_cfg[1]} x {sample_cfg[2]}: "
                 f"one stream, {SAMPLE_BATCH} at once, through a pipe")
        with tempfile.TemporaryDirectory() as tmp:
            path = sampling_checkpoint(tmp, *sample_cfg)
            results["sample"] = {"config": list(sample_cfg), "charnn": _charnn("sample", path, SAMPLE_LENGTH, 1),
                                 "batch": _charnn("sample", path, SAMPLE_LENGTH, SAMPLE_BATCH),
                                 "pipe": time_pipe(path, SAMPLE_LENGTH)}
        if torch_python:
            results["sample"]["torch"] = _torch(torch_python, "sample", *sample_cfg, VOCAB, SAMPLE_LENGTH, threads)
    if encode_bytes:
        with tempfile.TemporaryDirectory() as tmp:
            for mixed in (False, True):
                path = os.path.join(tmp, "text.txt")
                progress(f"reading and encoding a {encode_bytes / 2**20:.0f} MB {'mixed-script' if mixed else 'ASCII'} text")
                write_text(path, mixed, encode_bytes, np.random.default_rng(1))
                results["encode"].append(dict(_charnn("encode", path), mixed=mixed))
                os.unlink(path)
    return results


def markdown(results: dict) -> str:
    """The results as markdown tables (what `charnn bench` prints; docs/speed.md keeps a whole run of it)."""
    torch_v = results["torch"]
    ceiling = results["ceiling"]
    lines = [f"Training step (forward, BPTT, clip, Adam), V {VOCAB}, float32, {results['machine']['cpus']} threads; "
             f"median of the timed steps (and of {results['rounds']} rounds, charnn and PyTorch taking turns). Ceiling: numpy float32 matmul {ceiling['large']:.0f} GFLOP/s at "
             f"{' x '.join(map(str, ceiling['shape_large']))} ({ceiling['step']:.0f} GFLOP/s at "
             f"{' x '.join(map(str, ceiling['shape_step']))})."
             + ("" if torch_v else " PyTorch: not installed, skipped (give --torch-python)."), ""]
    head = "| configuration | charnn chars/s | matrix GFLOP/step | charnn GFLOP/s | of ceiling | charnn peak MB |"
    sep = "| --- | ---: | ---: | ---: | ---: | ---: |"
    if torch_v:
        head += f" PyTorch {torch_v} chars/s | charnn / PyTorch | PyTorch peak MB |"
        sep += " ---: | ---: | ---: |"
    lines += [head, sep]
    for row in results["train"]:
        c, ours = row["config"], row["charnn"]
        chars = c["seq"] * c["batch"]
        rate = row["flops"] / ours["seconds"] / 1e9
        cells = [row["name"], f"{chars / ours['seconds']:,.0f}", f"{row['flops'] / 1e9:.2f}", f"{rate:.0f}",
                 f"{rate / ceiling['large']:.0%}", f"{ours['peak_rss'] / 2**20:.0f}"]
        if torch_v:
            theirs = row["torch"]
            cells += [f"{chars / theirs['seconds']:,.0f}", f"{theirs['seconds'] / ours['seconds']:.2f}x",
                      f"{theirs['peak_rss'] / 2**20:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    s = results["sample"]
    if s:
        m, layers, hidden = s["config"]
        one, many, pipe = s["charnn"]["chars_per_sec"], s["batch"]["chars_per_sec"], s["pipe"]["chars_per_sec"]
        lines += ["", f"Sampling {SAMPLE_LENGTH} characters one at a time, batch 1, {m.upper()} {layers} x {hidden}, "
                  f"temperature 1: charnn {one:,.0f} chars/s"
                  + (f", PyTorch {s['torch']['chars_per_sec']:,.0f} chars/s "
                     f"({one / s['torch']['chars_per_sec']:.1f}x)" if "torch" in s else "") + ".",
                  "",
                  "| charnn sampling | chars/s | against one stream in the library |",
                  "| --- | ---: | ---: |",
                  f"| one stream, in the library | {one:,.0f} | 1.00x |",
                  f"| one stream, `charnn sample` into a pipe | {pipe:,.0f} | {pipe / one:.2f}x |",
                  f"| {s['batch']['batch']} streams at once (`--num-samples {s['batch']['batch']}`), in all | {many:,.0f} | "
                  f"{many / one:.2f}x |"]
    if results["encode"]:
        lines += ["", "| read and encode | size | vocabulary | seconds | peak extra memory | of file size |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for e in results["encode"]:
            lines.append(f"| {'mixed scripts' if e['mixed'] else 'ASCII'} | {e['bytes'] / 2**20:.0f} MB | {e['vocab']} | "
                         f"{e['seconds']:.2f} | {e['peak_extra'] / 2**20:.0f} MB | {e['peak_extra'] / e['bytes']:.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        print(json.dumps(_worker(sys.argv[2:])))
