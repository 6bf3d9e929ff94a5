"""The command line through click's CliRunner (stdout and stderr apart), and as a real process
for `python -m charnn` and Ctrl-C."""

import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import click
from click.testing import CliRunner

from charnn import checkpoint, model
from charnn.cli import cli

from conftest import TINY_TEXT

TINY = ["--hidden-size", "16", "--num-layers", "1", "--seq-length", "16", "--batch-size", "4",
        "--learning-rate", "0.03"]
VAL_LINE = re.compile(r"^step \d+  val loss \d+\.\d{3} nats/char  \d+\.\d{3} bits/char")


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh folder as the current directory, holding tiny.txt; checkpoints/ goes here."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    return tmp_path


@pytest.fixture
def trained(workdir):
    r = run("train", "tiny.txt", *TINY, "--steps", 40, "--eval-every", 20)
    assert r.exit_code == 0, r.stderr
    return r


def test_train_reports_on_stderr_only(trained, workdir):
    assert trained.stdout == ""
    lines = [l for l in re.split(r"[\r\n]", trained.stderr) if VAL_LINE.match(l)]  # the bar redraws with \r
    assert [l.split()[1] for l in lines] == ["20", "40"]
    assert "char/s" in trained.stderr and "loss" in trained.stderr  # the progress bar
    assert "done: 40 steps in " in trained.stderr and "best val loss" in trained.stderr
    assert sorted(os.listdir(workdir / "checkpoints" / "tiny-lstm-1")) == ["best.npz", "latest.npz", "metrics.jsonl"]


def test_sample_streams_the_seed_and_its_continuation(trained):
    r = run("sample", "--seed", "the ", "--length", 30, "--random-seed", 3)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("the ") and len(r.stdout) == len("the ") + 30 + 1 and r.stdout.endswith("\n")
    assert r.stderr.strip() == f"sampling from {os.path.join('checkpoints', 'tiny-lstm-1', 'best.npz')}"
    again = run("sample", "--seed", "the ", "--length", 30, "--random-seed", 3)
    other = run("sample", "--seed", "the ", "--length", 30, "--random-seed", 4)
    assert again.stdout == r.stdout and other.stdout != r.stdout
    explicit = run("sample", "--checkpoint", "checkpoints/tiny-lstm-1/best.npz", "--seed", "the ", "--length", 30,
                   "--random-seed", 3)
    assert explicit.stdout == r.stdout and explicit.stderr == ""  # nothing to name: it was given


def test_sample_default_seed_and_options(trained):
    r = run("sample", "--length", 20, "--top-k", 3, "--temperature", 0.5, "--random-seed", 1)
    assert r.exit_code == 0 and r.stdout.startswith("\n") and len(r.stdout) == 1 + 20 + 1
    a = run("sample", "--seed", "the", "--argmax", "--length", 25)
    b = run("sample", "--seed", "the", "--argmax", "--length", 25, "--random-seed", 9)
    assert a.exit_code == b.exit_code == 0 and len(a.stdout) == 3 + 25 + 1 and a.stdout == b.stdout


def test_hello_through_the_cli(workdir):
    (workdir / "hello.txt").write_text("hello" * 40)
    r = run("train", "hello.txt", "--model", "rnn", "--hidden-size", 16, "--num-layers", 1, "--seq-length", 10,
            "--batch-size", 2, "--steps", 150, "--eval-every", 150, "--learning-rate", 0.02)
    assert r.exit_code == 0, r.stderr
    r = run("sample", "--seed", "h", "--argmax", "--length", 4)
    assert r.stdout == "hello\n"


@pytest.mark.parametrize("command", ["train", "resume", "sample", "prompt", "gradcheck", "bench", "info", "eval",
                                     "corpus"])
def test_help_explains_every_option_with_its_default(command):
    r = run(command, "--help")
    assert r.exit_code == 0
    blocks = re.split(r"\n  (?=-)", r.stdout.split("Options:")[1])[1:]
    assert blocks[-1].startswith("-h, --help")
    for block in blocks[:-1]:
        name, _, text = block.strip().partition("  ")
        assert text.strip(), f"{name} has no help text"
        if "--argmax" not in name and "--sample / --no-sample" not in name:
            assert "default" in block, block
    if command == "resume":  # a resumed run's settings are its own, not train's defaults
        from charnn.config import RESUMABLE
        assert " ".join(r.stdout.split()).count("[default: the run's own]") == len(RESUMABLE)


# ------------------------------------------------------------------------------------------------
# Every bad input: exit status 1 (or click's 2 for usage), one "Error:" line, no traceback, stdout empty


def assert_clean_error(r, *fragments, code=1):
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    assert r.stdout == "" and "Traceback" not in r.stderr
    error_lines = [l for l in r.stderr.splitlines() if l.startswith("Error:")]
    assert len(error_lines) == 1, r.stderr
    for f in fragments:
        assert f in error_lines[0], (f, error_lines[0])


def test_bad_corpora(workdir):
    (workdir / "empty.txt").write_text("")
    (workdir / "short.txt").write_text("just a few words")
    (workdir / "latin1.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    assert_clean_error(run("train", "missing.txt"), "missing.txt: no such file")
    assert_clean_error(run("train", "."), "is a folder")
    assert_clean_error(run("train", "empty.txt"), "is empty")
    assert_clean_error(run("train", "short.txt"), "16 characters, too few", "at least", "--batch-size")
    assert_clean_error(run("train", "latin1.txt"), "not valid UTF-8: byte 0xe9 at offset 3")
    assert not (workdir / "checkpoints").exists() or not os.listdir(workdir / "checkpoints")


@pytest.mark.parametrize("option,value,message", [
    ("--hidden-size", 0, "--hidden-size must be a positive whole number"),
    ("--num-layers", -1, "--num-layers must be a positive whole number"),
    ("--seq-length", 0, "--seq-length must be a positive whole number"),
    ("--batch-size", 0, "--batch-size must be a positive whole number"),
    ("--steps", 0, "--steps must be a positive whole number"),
    ("--eval-every", 0, "--eval-every must be a positive whole number"),
    ("--epochs", -2, "--epochs must be a positive number"),
    ("--learning-rate", 0, "--learning-rate must be a positive number"),
    ("--grad-clip", -1, "--grad-clip must be 0 (off) or a positive number"),
    ("--val-frac", 0, "--val-frac must be between 0 and 1"),
    ("--val-frac", 1, "--val-frac must be between 0 and 1"),
    ("--val-frac", 1.5, "--val-frac must be between 0 and 1"),
])
def test_bad_training_options(workdir, option, value, message):
    assert_clean_error(run("train", "tiny.txt", option, value), message)


def test_unwritable_checkpoint_folder(workdir):
    (workdir / "afile").write_text("x")
    assert_clean_error(run("train", "tiny.txt", *TINY, "--checkpoint-dir", "afile/sub"),
                       "cannot write checkpoints to afile/sub")


def test_bad_sampling_options(trained):
    assert_clean_error(run("sample", "--temperature", 0), "--temperature must be above 0")
    assert_clean_error(run("sample", "--temperature", -0.5), "--temperature must be above 0")
    assert_clean_error(run("sample", "--top-k", 0), "--top-k must be at least 1")
    assert_clean_error(run("sample", "--seed", "the QZ€"), "never saw: 'QZ€'")


def test_no_checkpoint_to_sample_from(workdir):
    assert_clean_error(run("sample"), "no checkpoint found in checkpoints/", "charnn train")


def test_bad_checkpoint_files(trained, workdir):
    good = workdir / "checkpoints" / "tiny-lstm-1" / "best.npz"
    (workdir / "notes.txt").write_text("not a checkpoint")
    assert_clean_error(run("sample", "--checkpoint", "notes.txt"), "not a charnn checkpoint")
    (workdir / "cut.npz").write_bytes(good.read_bytes()[:5000])
    assert_clean_error(run("sample", "--checkpoint", "cut.npz"), "truncated or damaged")
    with np.load(good, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    header = json.loads(str(arrays["header"]))
    np.savez(workdir / "v2.npz", **dict(arrays, header=np.array(json.dumps(dict(header, version=2)))))
    assert_clean_error(run("sample", "--checkpoint", "v2.npz"), "format version 2")
    np.savez(workdir / "pickled.npz", allow_pickle=True, **dict(arrays, **{"param/by": np.array([{}], dtype=object)}))
    assert_clean_error(run("sample", "--checkpoint", "pickled.npz"), "pickled objects")
    assert_clean_error(run("sample", "--checkpoint", "nothing.npz"), "no such checkpoint")


def test_persistent_nan_stops_with_a_clear_error(workdir, monkeypatch):
    """NaN from step 11 on: the update before it is undone five times, then a clear stop with the last
    good state (step 9) kept."""
    real = model.loss_and_grads
    calls = []

    def poisoned(*args, **kwargs):
        calls.append(1)  # calls 1 and 2 are the pre-flight's dry steps; call k+2 is step k
        loss, grads, state = real(*args, **kwargs)
        return (math.nan if len(calls) >= 13 else loss), grads, state
    monkeypatch.setattr(model, "loss_and_grads", poisoned)
    r = run("train", "tiny.txt", *TINY, "--steps", 30, "--eval-every", 5)
    assert_clean_error(r, "the loss was still NaN or infinite after 5 rollbacks in a row",
                       "latest.npz holds the last good state (step 9)", "--learning-rate")
    assert r.stderr.count("rolled back to step 9, learning rate halved") == 5
    assert checkpoint.load("checkpoints/tiny-lstm-1/latest.npz").header["step"] == 9


def test_gradcheck_command(monkeypatch):
    r = run("gradcheck", "--model", "rnn", "--num-layers", 2)
    assert r.exit_code == 0 and "passed" in r.stdout and r.stdout.count(" ok") == 8
    from charnn import layers
    real = layers.lstm_backward
    monkeypatch.setattr(layers, "lstm_backward", lambda d, c: (lambda g: (g[0] * 1.01,) + g[1:])(real(d, c)))
    r = run("gradcheck", "--model", "lstm", "--num-layers", 1)
    assert r.exit_code == 1 and "FAILED" in r.stdout and "FAIL" in r.stdout


def test_resume_info_and_eval_commands(trained, workdir):
    latest = "checkpoints/tiny-lstm-1/latest.npz"
    r = run("resume", latest, "--steps", 50, "--learning-rate", 0.01)
    assert r.exit_code == 0, r.stderr
    assert "resuming checkpoints/tiny-lstm-1/latest.npz at step 40; changed: --steps 40 -> 50, --learning-rate 0.03 -> 0.01" in r.stderr
    r = run("train", "--resume", latest, "--steps", 60)
    assert r.exit_code == 0 and "at step 50; changed: --steps 50 -> 60" in r.stderr
    assert checkpoint.load(latest).header["step"] == 60
    assert_clean_error(run("resume", latest, "--steps", 70, "--hidden-size", 8), "No such option", code=2)
    assert_clean_error(run("train", "--resume", latest, "--steps", 70, "--batch-size", 8), "cannot change --batch-size")
    assert_clean_error(run("resume", latest), "already reached its step limit")

    r = run("info", latest)
    assert r.exit_code == 0 and r.stderr == ""
    for part in ("lstm, 1 layer(s) of 16", "parameters", "vocabulary  16 characters: \\n ,.acdeghlmnost",
                 "tiny.txt: 2,680 characters", "step 60", "best ", "unigram", "5-gram", "curve "):
        assert part in r.stdout, part
    curve = [l for l in r.stdout.splitlines() if l.startswith("curve")][0]
    assert len(curve.split()[1]) == 4 and set(curve.split()[1]) <= set("▁▂▃▄▅▆▇█")  # evaluations 20, 40, 50, 60

    (workdir / "other.txt").write_text("the cat sat on the mat. ZZ the dog! Ω\n")
    r = run("eval", latest, "other.txt")
    assert r.exit_code == 0, r.stderr
    assert re.match(r"other.txt: \d+\.\d{4} nats/char  \d+\.\d{4} bits/char  perplexity \d+\.\d{3}  "
                    r"\(33 characters predicted\)\n$", r.stdout)
    assert r.stderr == "4 characters outside the model's vocabulary were left out: !ZΩ\n"
    assert_clean_error(run("eval", latest, "missing.txt"), "no such file")


def test_bad_time_budget(workdir):
    r = run("train", "tiny.txt", "--time-budget", "10 parsecs")
    assert r.exit_code == 2 and "Invalid value for '--time-budget'" in r.stderr and "Traceback" not in r.stderr


def test_bench_refuses_two_benchmarks_at_once(workdir):
    r = run("bench", "--corpus-mb", 1, "--workers", 2)
    assert r.exit_code == 1 and "--corpus-mb and --workers are two different benchmarks" in r.stderr
    assert "Traceback" not in r.stderr and [p.name for p in workdir.iterdir()] == ["tiny.txt"]  # nothing written


def test_bench_runs_on_a_tiny_configuration(workdir):
    """Not a timing test: the benchmark runs end to end and reports what it measured."""
    from charnn import bench as bench_mod
    r = run("bench", "--model", "lstm", "--num-layers", 1, "--hidden-size", 8, "--batch-size", 2,
            "--seq-length", 4, "--steps", 2, "--warmup", 1, "--no-sample", "--encode-mb", 1,
            "--torch-python", sys.executable if importlib.util.find_spec("torch") else "/nonexistent/python",
            "--json", "bench.json")
    assert r.exit_code == 0, r.stderr
    results = json.loads((workdir / "bench.json").read_text())
    row = results["train"][0]
    assert row["name"] == "LSTM 1 x 8, B 2, T 4" and row["charnn"]["seconds"] > 0 and row["charnn"]["peak_rss"] > 0
    # Counted by hand, 2 FLOPs a multiply-add, each product three times (forward, input gradient,
    # weight gradient), B*T = 8 rows; layer 0's one-hot input is a row lookup and is not counted:
    #   h @ Whh  (8 x 8) @ (8 x 4*8):  2 * 8 * 8 * 32 = 4,096, times 3 = 12,288
    #   h @ Why  (8 x 8) @ (8 x 65):   2 * 8 * 8 * 65 = 8,320, times 3 = 24,960
    assert row["flops"] == 37_248
    # Two layers, as above with B*T = 3 * 5 = 15 rows, H = 10, V = 7: layer 1 adds its input product.
    #   one (15 x 10) @ (10 x G*10) product: 2 * 15 * 10 * 10 * G = 3,000 G, times 3 = 9,000 G
    #   layer 0's Whh, layer 1's Wxh and Whh: 3 * 9,000 G;  h @ Why (15 x 10) @ (10 x 7): 3 * 2,100 = 6,300
    for name, expected in (("rnn", 33_300), ("lstm", 114_300), ("gru", 87_300)):  # G = 1, 4, 3
        assert bench_mod.matrix_flops(bench_mod.Config(name, 2, 10, 3, seq=5, vocab=7)) == expected, name
    assert [e["mixed"] for e in results["encode"]] == [False, True] and results["encode"][1]["vocab"] > 256
    assert "| LSTM 1 x 8, B 2, T 4 |" in r.stdout and "| mixed scripts |" in r.stdout
    if results["torch"] is None:
        assert "skipped" in r.stderr


# ------------------------------------------------------------------------------------------------
# As a real process


def test_python_m_charnn():
    r = subprocess.run([sys.executable, "-m", "charnn", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout and "sample" in r.stdout


def test_ctrl_c_saves_and_exits_130(workdir):
    proc = subprocess.Popen([sys.executable, "-m", "charnn", "train", "tiny.txt", *TINY, "--steps", "1000000"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    err = []

    def read():
        for ch in iter(lambda: proc.stderr.read(1), ""):
            err.append(ch)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.time() + 60
    while not re.search(r"\| *[1-9]\d*/1000000", "".join(err)):  # tqdm shows a finished step
        assert time.time() < deadline and proc.poll() is None, "".join(err)
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    reader.join(timeout=5)
    text = "".join(err)
    assert "interrupted: saved the state after step" in text and "Traceback" not in text
    assert proc.stdout.read() == ""
    step = int(re.search(r"after step (\d+)", text).group(1))
    assert checkpoint.load("checkpoints/tiny-lstm-1/latest.npz").header["step"] == step >= 1


def test_the_resumable_options_are_those_of_the_library():
    """config.RESUMABLE is the one list: `resume` offers exactly it (and where the corpus's cache is,
    and how many processes run it), `train` offers it too."""
    from charnn.cli import _RUN_OPTIONS, resume, train
    from charnn.config import RESUMABLE
    assert set(_RUN_OPTIONS) == set(RESUMABLE)
    resume_options = [p.name for p in resume.params if isinstance(p, click.Option) and p.name != "help"]
    assert resume_options == list(RESUMABLE) + ["cache_dir", "use_cache", "workers"]
    assert set(RESUMABLE) <= {p.name for p in train.params}


def test_the_readme_names_the_resumable_options():
    from charnn.config import RESUMABLE
    readme = open(os.path.join(os.path.dirname(__file__), os.pardir, "README.md"), encoding="utf-8").read()
    section = readme.split("### `charnn resume CHECKPOINT [CORPUS]`", 1)[1].split("\n### ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("`--steps`")]
    assert len(lines) == 1, "the resume section lists the options a resumed run may change on one line"
    assert re.findall(r"`--([a-z-]+)`", lines[0]) == [name.replace("_", "-") for name in RESUMABLE]


@pytest.mark.parametrize("name", ["../elsewhere", ""])
def test_a_run_name_with_a_path_is_refused(workdir, name):
    r = run("train", "tiny.txt", *TINY, "--steps", 2, "--run-name", name)
    assert_clean_error(r, "--run-name", "plain folder name")
    assert not (workdir / "elsewhere").exists()


def test_corpus_shows_what_the_trainer_will_see(workdir, cache_dir):
    (workdir / "odd.txt").write_bytes("\ufeffab\r\ncab\tbb\n\x00a\u00a0b\nbbb\n".encode("utf-8") * 20)
    r = run("corpus", "odd.txt", "--val-frac", 0.2, "--val-chars", 20)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "file        odd.txt: 480 bytes, 420 characters"
    listing = " ".join(l.strip() for l in lines[1:lines.index([l for l in lines if l.startswith("odd")][0])])
    assert listing == ("vocabulary  9 distinct characters, rarest first: '\\x00' 20, '\\t' 20, '\\r' 20, 'c' 20, "
                       "'\\xa0' 20, '\\ufeff' 20, 'a' 60, '\\n' 80, 'b' 160")
    odd = {l.split()[0]: l for l in lines if l.startswith("  '")}
    assert odd["'\\ufeff'"].endswith("byte-order mark (BOM): 20 times, first at character 0 (line 1, column 1)")
    assert odd["'\\r'"].endswith("20 times, first at character 3 (line 1, column 4)")
    assert odd["'\\t'"].endswith("first at character 8 (line 2, column 4)")
    assert odd["'\\x00'"].endswith("NUL: 20 times, first at character 12 (line 3, column 1)")
    assert "no-break space" in odd["'\\xa0'"] and "'c'" not in odd and "'\\n'" not in odd
    assert "split       at --val-frac 0.2: 336 training characters, 84 validation; an evaluation scores a fixed " \
           "subset of 20 of them, in 20 pieces" in r.stdout
    assert re.search(r"^cache       .*odd-[0-9a-f]{16}\.ids: built now in \d+\.\d\d s, 0\.4 KB$", r.stdout, re.M)
    again = run("corpus", "odd.txt")
    assert "reused, checked in" in again.stdout and "scores all 41 of them, in 32 pieces" in again.stdout
    assert len(os.listdir(cache_dir)) == 1
    assert "none kept (--no-cache)" in run("corpus", "tiny.txt", "--no-cache").stdout and len(os.listdir(cache_dir)) == 1
    assert_clean_error(run("corpus", "missing.txt"), "no such file")
    assert_clean_error(run("corpus", "tiny.txt", "--val-chars", 0), "--val-chars must be a positive whole number")


def test_cache_options_and_a_bounded_eval(workdir, cache_dir):
    r = run("train", "tiny.txt", *TINY, "--steps", 4, "--eval-every", 2, "--no-cache", "--val-chars", "all")
    assert r.exit_code == 0, r.stderr
    assert "ids encoded in " in r.stderr and "(--no-cache); the ids in memory, 2.7 KB" in r.stderr and os.listdir(cache_dir) == []
    r = run("train", "tiny.txt", *TINY, "--steps", 4, "--eval-every", 2, "--cache-dir", "mine")
    assert r.exit_code == 0 and os.listdir(workdir / "mine") and os.listdir(cache_dir) == []
    assert "id cache built in" in r.stderr and "mine" + os.sep + "tiny-" in r.stderr
    r = run("eval", "checkpoints/tiny-lstm-2/best.npz", "tiny.txt", "--chars", 100, "--cache-dir", "mine")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.endswith("(100 characters predicted of 2,680)\n")
    assert_clean_error(run("train", "tiny.txt", "--val-chars", "many"), "'many' is not a whole number or 'all'", code=2)


def test_the_documents_name_no_path_of_one_machine():
    """README.md and docs/ show paths a reader has (path/to/python, corpus.txt), never one that
    exists only where they were written."""
    root = os.path.join(os.path.dirname(__file__), "..")
    for name in ["README.md"] + [os.path.join("docs", n) for n in sorted(os.listdir(os.path.join(root, "docs")))
                                if n.endswith(".md")]:  # not docs/explain.png
        with open(os.path.join(root, name), encoding="utf-8") as f:
            found = re.findall(r"(?<![\w.])/(?:work|tmp|home|root|Users|opt|mnt|srv|var)/\S*", f.read())
        assert not found, (name, found)
