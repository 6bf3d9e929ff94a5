"""The PyTorch side of `charnn bench` (optional): the same models and steps, timed the same way.

Run by charnn.bench in a separate process, with whichever Python has torch installed; it imports
nothing from charnn, and charnn never imports it. Prints one JSON object.

    python bench_torch.py train MODEL LAYERS HIDDEN BATCH SEQ VOCAB STEPS WARMUP THREADS
    python bench_torch.py sample MODEL LAYERS HIDDEN VOCAB LENGTH THREADS

Training step: one-hot input -> nn.LSTM / nn.GRU / nn.RNN (tanh) -> nn.Linear, mean cross-entropy, Adam,
clip_grad_norm_(5), the hidden state carried (detached) from one step to the next.
"""

import json
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn


def build(model, layers, hidden, vocab):
    cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[model]
    return cls(vocab, hidden, layers), nn.Linear(hidden, vocab)


def train(model, layers, hidden, batch, seq, vocab, steps, warmup, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rnn, out = build(model, layers, hidden, vocab)
    params = list(rnn.parameters()) + list(out.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(0, vocab, size=(seq + 1, batch)))
    x = nn.functional.one_hot(ids[:-1], vocab).float()  # (T, B, V)
    y = ids[1:].reshape(-1)
    state = None
    times = []
    for k in range(warmup + steps):
        t0 = time.perf_counter()
        h, state = rnn(x, state)
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        loss = nn.functional.cross_entropy(out(h).reshape(-1, vocab), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "version": torch.__version__}


def sample(model, layers, hidden, vocab, length, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rnn, out = build(model, layers, hidden, vocab)
    x = torch.zeros(1, 1, vocab)
    state, idx = None, 0
    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(length):
            x.zero_()
            x[0, 0, idx] = 1
            h, state = rnn(x, state)
            p = torch.softmax(out(h[0, 0]), dim=-1)
            idx = int(torch.multinomial(p, 1))
        seconds = time.perf_counter() - t0
    return {"chars_per_sec": length / seconds, "version": torch.__version__}


if __name__ == "__main__":
    kind, model, *nums = sys.argv[1:]
    nums = [int(n) for n in nums]
    print(json.dumps(train(model, *nums) if kind == "train" else sample(model, *nums)))
