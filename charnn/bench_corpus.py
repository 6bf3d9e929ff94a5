"""`charnn bench --corpus-mb N`: what a large corpus costs before training starts, and while it runs.

For a text of N MB (English-like prose and Python code with some non-ASCII, written by
write_corpus), at charnn's default settings (LSTM 2 x 384, B 32, T 64, --val-chars 150,000):
- the time from launching `charnn train` to its first training step, on a first run (the id cache
  is built, the baselines fitted) and on a cached run (the cache is checked, the baselines
  remembered);
- the peak resident memory of those runs beyond the model: their peak minus that of the same run
  on a small text with the same vocabulary (so the model, its optimizer state, its activations and
  Python's own memory are in both and cancel);
- a periodic evaluation's time against the training time between two evaluations (eval_every
  steps, from the median time of a step).
Each run is a fresh process, as a user's would be. The time of a run is from the moment the
benchmark launches its process, so Python's start and imports are in it.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter

import numpy as np

from charnn.config import DEFAULT_STEPS, ModelConfig, TrainConfig

SMALL_BYTES = 1 << 20  # the reference text for the memory beyond the model
BLOCK_TOKENS = 1 << 19  # tokens drawn at a time by write_corpus
STEP_ROUNDS = 10  # timed training steps for the evaluation's cost (after 2 untimed)
NON_ASCII = [" café", " naïve", " Zürich", " señor", " déjà vu", " Ελληνικά", " русский", " 中文", " 日本語", " —",
             " “quoted”", " €5", " 😀", " ½", " façade"]


# -------------------------------------------------------------------------------------------------
# The text


def _tokens() -> tuple[list[str], np.ndarray]:
    """The pieces write_corpus draws, and their probabilities: the words of charnn's own sources
    (by frequency), punctuation and line ends, whole lines of its code, and a few non-ASCII words."""
    folder = os.path.dirname(os.path.abspath(__file__))
    source = "\n".join(open(os.path.join(folder, name), encoding="utf-8").read()
                       for name in sorted(os.listdir(folder)) if name.endswith(".py"))
    words = Counter(re.findall(r"[A-Za-z][a-z']*", source))
    lines = sorted({line.rstrip() for line in source.splitlines() if line.strip() and line.isascii()})
    n_words = sum(words.values())
    tokens = [" " + w for w in words] + [",", ".", ";", ":", "?", ".\n", "\n\n"] + ["\n" + l for l in lines] + NON_ASCII
    weights = ([c / n_words * 0.85 for c in words.values()] + [0.04, 0.05, 0.005, 0.005, 0.002, 0.01, 0.003]
               + [0.04 / len(lines)] * len(lines) + [0.005 / len(NON_ASCII)] * len(NON_ASCII))
    weights = np.array(weights)
    return tokens, weights / weights.sum()


def write_corpus(path: str, size: int, seed: int = 0) -> None:
    """About `size` bytes of English-like prose and code with some non-ASCII, the same for the
    same seed. Its first line holds every character the rest can hold, so texts of any size share
    a vocabulary."""
    tokens, p = _tokens()
    encoded = [t.encode("utf-8") for t in tokens]
    flat = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    lengths = np.array([len(t) for t in encoded])  # (K,)
    starts = np.cumsum(lengths) - lengths  # (K,) where each token is in flat
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        written = f.write(("".join(sorted(set("".join(tokens)) - {"\n"})) + "\n").encode("utf-8"))
        while written < size:
            idx = rng.choice(len(tokens), size=BLOCK_TOKENS, p=p)  # (n,) the tokens of this block
            n = lengths[idx]
            at = np.cumsum(n) - n  # (n,) where each goes in the block
            block = flat[np.repeat(starts[idx] - at, n) + np.arange(n.sum())].tobytes()  # (sum n,) bytes
            written += f.write(block[:size - written] if written + len(block) > size else block)
    # A cut block may end inside a character: drop the partial character, if any.
    with open(path, "rb+") as f:
        f.seek(max(0, size - 4))
        tail = f.read()
        f.truncate(size - (len(tail) - len(tail.decode("utf-8", "ignore").encode("utf-8"))))


# -------------------------------------------------------------------------------------------------
# Workers: each runs in its own process and prints one JSON object.


class _FirstStep(Exception):
    """Raised when the run is about to make its first step: the startup is measured."""


def time_startup(corpus: str, cache_dir: str, checkpoint_dir: str, launched: float) -> dict:
    """Start `charnn train corpus` at the default settings and stop at its first step: seconds
    since `launched` (time.time() when the process was launched), and the peak resident memory."""
    from charnn import train
    from charnn.reports import Reporter

    class StopAtFirstStep(Reporter):
        def start(self, total_steps, first_step):
            raise _FirstStep(time.time() - launched)

    try:
        train.train(corpus, ModelConfig(), TrainConfig(steps=DEFAULT_STEPS), checkpoint_dir,
                    reporter=StopAtFirstStep(), cache_dir=cache_dir)
    except _FirstStep as stop:
        return {"seconds": stop.args[0], "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    raise AssertionError("the run ended before its first step")


def time_evaluation(corpus: str, cache_dir: str) -> dict:
    """At the default settings on the corpus: one periodic evaluation (the --val-chars subset of the
    validation split), and the median time of a training step."""
    from charnn import data, evaluate, idcache, masks, model, optim

    corpus_, _ = idcache.load_corpus(corpus, cache_dir)
    tc = TrainConfig(steps=DEFAULT_STEPS)
    mc = ModelConfig(vocab_size=corpus_.vocab.size)
    rng = np.random.default_rng(0)
    params = model.init_params(mc, rng)
    opt = optim.init_state(tc.optimizer, params)
    train_ids, val_ids = data.split(corpus_.ids, tc.val_frac)
    stream = data.BatchStream(train_ids, tc.batch_size, tc.seq_length)
    state = model.zero_state(mc, tc.batch_size)
    times = []
    for k in range(STEP_ROUNDS + 2):
        t0 = time.perf_counter()
        drawn = stream.drawn
        inputs, targets, _ = stream.next()
        dropout = masks.dropout_masks(tc.random_seed, drawn, range(tc.batch_size), mc.num_layers, tc.seq_length,
                                      mc.hidden_size, mc.dropout, tc.dtype)  # as the training loop makes them
        _, grads, state = model.loss_and_grads(params, mc, inputs, targets, state, masks=dropout)
        optim.clip_by_global_norm(grads, tc.grad_clip)
        optim.update(tc.optimizer, params, grads, opt, tc.learning_rate, k + 1)
        times.append(time.perf_counter() - t0)
    pieces = data.pieces(len(val_ids), tc.val_chars)
    t0 = time.perf_counter()
    evaluate.mean_loss(params, mc, val_ids, pieces)
    return {"eval_seconds": time.perf_counter() - t0, "step_seconds": statistics.median(times[2:]),
            "eval_every": tc.eval_every, "val_scored": pieces.predicted, "val_chars": len(val_ids)}


def _worker(args: list[str]) -> dict:
    kind, rest = args[0], args[1:]
    if kind == "startup":
        return time_startup(rest[0], rest[1], rest[2], float(rest[3]))
    if kind == "evaluation":
        return time_evaluation(rest[0], rest[1])
    raise SystemExit(f"unknown worker {kind}")


# -------------------------------------------------------------------------------------------------
# The orchestrator


def _launch(kind: str, *args) -> dict:
    cmd = [sys.executable, "-m", "charnn.bench_corpus", "worker", kind, *map(str, args)]
    if kind == "startup":
        cmd.append(repr(time.time()))  # the launch: the worker counts its time to the first step from here
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(corpus_mb: float, work_dir: str, keep: bool = False, progress=lambda line: None) -> dict:
    """Every measurement for an N MB corpus in work_dir (its texts, caches and runs); a JSON-able
    dict. The texts and caches are deleted at the end unless keep (they can be GBs)."""
    os.makedirs(work_dir, exist_ok=True)
    size = int(corpus_mb * 2**20)
    big, small = os.path.join(work_dir, f"corpus-{corpus_mb:g}mb.txt"), os.path.join(work_dir, "corpus-small.txt")
    cache_dir, checkpoint_dir = os.path.join(work_dir, "cache"), os.path.join(work_dir, "checkpoints")
    made = []
    try:
        for path, n in ((big, size), (small, SMALL_BYTES)):
            if not os.path.exists(path) or os.path.getsize(path) > n or os.path.getsize(path) < n - 4:
                progress(f"writing a {n / 2**20:g} MB text: {path}")
                write_corpus(path, n)
                made.append(path)
        _clear(cache_dir)
        progress("first run: building the id cache and fitting the baselines, to the first step")
        first = _launch("startup", big, cache_dir, checkpoint_dir)
        progress("cached run, to the first step")
        cached = _launch("startup", big, cache_dir, checkpoint_dir)
        progress("the same run on a 1 MB text with the same vocabulary (the memory of the model itself)")
        _launch("startup", small, cache_dir, checkpoint_dir)  # builds its cache: the next is a cached run
        reference = _launch("startup", small, cache_dir, checkpoint_dir)
        progress("a periodic evaluation against the training between two")
        evaluation = _launch("evaluation", big, cache_dir)
    finally:
        if not keep:
            _clear(cache_dir)
            for path in made:
                os.unlink(path)
    return {"corpus_bytes": size, "first": first, "cached": cached, "reference": reference,
            "evaluation": evaluation, "command": f"charnn bench --corpus-mb {corpus_mb:g}"}


def _clear(folder: str) -> None:
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))


def markdown(results: dict) -> str:
    mb = results["corpus_bytes"] / 2**20
    ref = results["reference"]["peak_rss"]
    beyond = {k: (results[k]["peak_rss"] - ref) / 2**20 for k in ("first", "cached")}
    e = results["evaluation"]
    between = e["eval_every"] * e["step_seconds"]
    size = f"{mb / 1024:g} GB" if mb >= 1024 else f"{mb:g} MB"
    return "\n".join([
        "| corpus | first run: time to the first training step | cached run: time to the first step "
        "| peak resident memory beyond the model (first / cached) |",
        "| --- | ---: | ---: | ---: |",
        f"| {size} | {results['first']['seconds']:.1f} s | {results['cached']['seconds']:.1f} s "
        f"| {beyond['first']:.0f} MB / {beyond['cached']:.0f} MB |",
        "",
        f"A periodic evaluation at the defaults (LSTM 2 x 384, {e['val_scored']:,} of the {e['val_chars']:,} validation "
        f"characters): {e['eval_seconds']:.1f} s, against {between:.0f} s of training between two evaluations "
        f"({e['eval_every']} steps of {e['step_seconds']:.3f} s): {e['eval_seconds'] / between:.1%} of it.",
    ])


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        print(json.dumps(_worker(sys.argv[2:])))
