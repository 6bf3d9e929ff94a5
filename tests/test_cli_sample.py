"""The generation commands through the command line: `sample`'s options, `prompt` (also through a
real pipe), fine-tuning with `train --init-from`, and how generated text is flushed."""

import os
import signal
import subprocess
import sys

import pytest

from charnn import checkpoint, cli as cli_mod
from charnn.decoding import generators

from test_cli import TINY, assert_clean_error, run, trained, workdir  # noqa: F401  (fixtures)

BEST = os.path.join("checkpoints", "tiny-lstm-1", "best.npz")


def test_many_samples_are_printed_one_after_another(trained):
    r = run("sample", "--seed", "the ", "--length", 30, "--num-samples", 3, "--separator", "\\n==\\n", "--random-seed", 4)
    assert r.exit_code == 0, r.stderr
    parts = r.stdout[:-1].split("\n==\n")
    assert len(parts) == 3 and all(p.startswith("the ") and len(p) == 4 + 30 for p in parts) and r.stdout.endswith("\n")
    assert len(set(parts)) == 3
    one = run("sample", "--seed", "the ", "--length", 30, "--random-seed", 4)
    assert one.stdout == parts[0] + "\n"  # sample 0 is the same alone or in a batch
    assert run("sample", "--seed", "the ", "--length", 30, "--num-samples", 3, "--separator", "\\n==\\n",
               "--random-seed", 4).stdout == r.stdout
    bare = run("sample", "--seed", "the ", "--length", 30, "--num-samples", 3, "--separator", "|", "--random-seed", 4,
               "--no-print-seed")
    assert bare.stdout == "|".join(p[4:] for p in parts) + "\n"


def test_the_library_and_the_command_line_draw_the_same_text(trained):
    import charnn
    m = charnn.load(BEST)
    r = run("sample", "--seed", "the ", "--length", 40, "--top-p", 0.9, "--temperature", 0.8, "--random-seed", 11)
    assert r.stdout == "the " + m.generate("the ", 40, temperature=0.8, top_p=0.9, random_seed=11) + "\n"
    many = run("sample", "--seed", "a", "--length", 20, "--num-samples", 4, "--separator", "|", "--random-seed", 2)
    assert many.stdout == "|".join("a" + t for t in m.generate_many(4, "a", 20, random_seed=2)) + "\n"
    assert run("sample", "--seed", "the", "--length", 20, "--beam", 3).stdout == "the" + m.generate("the", 20, beam=3) + "\n"


def test_stop_strings_end_each_sample_before_them(trained):
    full = run("sample", "--seed", "the ", "--length", 60, "--num-samples", 4, "--separator", "|", "--random-seed", 5)
    cut = run("sample", "--seed", "the ", "--length", 60, "--num-samples", 4, "--separator", "|", "--random-seed", 5,
              "--stop", ".", "--stop", "\\n")
    assert cut.exit_code == 0, cut.stderr
    for whole, short in zip(full.stdout[:-1].split("|"), cut.stdout[:-1].split("|")):
        ends = [i for i in (whole.find(".", 4), whole.find("\n", 4)) if i >= 0]
        assert short == (whole[:min(ends)] if ends else whole)
    assert_clean_error(run("sample", "--stop", ""), "--stop string is empty")


def test_prime_file_and_output_file(trained, workdir):
    (workdir / "prime.txt").write_text("the cat\nthe ", encoding="utf-8")
    r = run("sample", "--prime-file", "prime.txt", "--length", 20, "--random-seed", 1)
    assert r.stdout.startswith("the cat\nthe ") and r.stdout == run("sample", "--seed", "the cat\nthe ", "--length", 20,
                                                                     "--random-seed", 1).stdout
    (workdir / "out.txt").write_text("earlier text")
    w = run("sample", "--seed", "the ", "--length", 20, "--random-seed", 1, "--output", "out.txt")
    assert w.exit_code == 0 and w.stdout == ""
    assert (workdir / "out.txt").read_text() == run("sample", "--seed", "the ", "--length", 20, "--random-seed", 1).stdout
    (workdir / "out.txt").write_text("earlier text")
    assert_clean_error(run("sample", "--seed", "the Q", "--output", "out.txt"), "never saw: 'Q'")
    assert (workdir / "out.txt").read_text() == "earlier text"  # a failed run replaces nothing
    assert sorted(os.listdir(workdir)) == ["checkpoints", "out.txt", "prime.txt", "tiny.txt"]  # no temporary left
    assert_clean_error(run("sample", "--seed", "a", "--prime-file", "prime.txt"), "--seed or --prime-file, not both")
    assert_clean_error(run("sample", "--output", "nowhere/out.txt"), "cannot write nowhere/out.txt")


def test_beam_is_deterministic_and_takes_no_sampling_option(trained):
    a = run("sample", "--seed", "the", "--length", 30, "--beam", 4)
    assert a.exit_code == 0 and a.stdout == run("sample", "--seed", "the", "--length", 30, "--beam", 4, "--random-seed", 3).stdout
    assert_clean_error(run("sample", "--beam", 4, "--temperature", 0.5, "--num-samples", 2),
                       "--beam finds the most likely text", "--temperature, --num-samples")
    assert_clean_error(run("sample", "--top-p", 0), "--top-p must be above 0 and at most 1")
    assert_clean_error(run("sample", "--top-p", 1.2), "--top-p must be above 0 and at most 1")


def test_a_folder_of_runs_gives_its_newest_run_and_says_which(trained, workdir):
    r = run("sample", "--checkpoint", "checkpoints", "--seed", "the ", "--length", 10, "--random-seed", 1)
    assert r.exit_code == 0 and r.stderr == f"sampling from {BEST}\n"
    assert r.stdout == run("sample", "--checkpoint", BEST, "--seed", "the ", "--length", 10, "--random-seed", 1).stdout
    os.mkdir(workdir / "empty")
    assert_clean_error(run("sample", "--checkpoint", "empty"), "empty is a folder without best.npz or latest.npz")


# ------------------------------------------------------------------------------------------------
# charnn prompt


def test_prompt_continues_the_whole_text_and_resets(trained):
    """Each line is added to the text and continued; an empty line continues further; /reset
    starts again. With --argmax each continuation is what `sample` writes after the whole text."""
    r = run("prompt", "--length", 15, "--argmax", input="the \n\n/reset\nthe \n")
    assert r.exit_code == 0, r.stderr
    first, more, again = r.stdout.split("\n")[:3]

    def after(text):
        return run("sample", "--seed", text, "--length", 15, "--argmax").stdout[len(text):-1]
    assert first == after("the ") and more == after("the " + first) and again == first
    assert "(the text is forgotten)" in r.stderr and f"writing with {BEST}" in r.stderr


def test_prompt_reports_a_bad_line_and_goes_on(trained):
    r = run("prompt", BEST, "--length", 10, "--random-seed", 1, input="\nthe QZ\nthe \n")
    assert r.exit_code == 0
    assert "Error: there is no text to continue yet" in r.stderr and "never saw: 'QZ'" in r.stderr
    assert r.stdout == run("sample", "--seed", "the ", "--length", 10, "--random-seed", 1).stdout[4:]


def test_prompt_through_a_real_pipe(trained):
    """As a process reading a pipe (not a terminal): one continuation per line, on stdout alone;
    the end of the input ends it cleanly."""
    proc = subprocess.run([sys.executable, "-m", "charnn", "prompt", BEST, "--length", "12", "--stop", "\\n",
                           "--random-seed", "3"], input="the cat\n the\n/reset\nthe dog\n", capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert len(lines) == 4 and lines[-1] == "" and "Traceback" not in proc.stderr
    assert "> " not in proc.stderr  # no prompt is drawn for a pipe


def test_ctrl_c_leaves_the_prompt_cleanly(trained):
    """Ctrl-C while the prompt waits for a line: it leaves with status 0 and no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "charnn", "prompt", BEST, "--length", "5", "--random-seed", "1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write("the \n")
    proc.stdin.flush()
    first = proc.stdout.readline()  # the first turn is done: it waits for the next line
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err and len(first) == 6 and out == ""


# ------------------------------------------------------------------------------------------------
# Fine-tuning


def test_init_from_fine_tunes_at_a_lower_rate_and_info_names_the_parent(trained, workdir):
    (workdir / "new.txt").write_text("The cat sat on the mat 1. The dog sat on the log 2. " * 60)
    r = run("train", "new.txt", "--init-from", "checkpoints", "--steps", 20, "--eval-every", 20, "--seq-length", 16,
            "--batch-size", 4)
    assert r.exit_code == 0, r.stderr
    assert f"fine-tuning {BEST} (step 40) on new.txt: 3 new character(s) '12T', learning rate 0.001" in r.stderr
    ckpt = checkpoint.load("checkpoints/new-lstm-1/best.npz")
    assert ckpt.train_config.learning_rate == 1e-3 and ckpt.model_config.hidden_size == 16
    info = run("info", "checkpoints/new-lstm-1/best.npz").stdout
    assert f"parent      {os.path.abspath(BEST)} (step 40, trained on " in info and "added 3 character(s): 12T" in info
    assert_clean_error(run("train", "new.txt", "--init-from", BEST, "--hidden-size", 8), "drop --hidden-size")
    assert_clean_error(run("train", "--resume", BEST, "--init-from", BEST), "drop --init-from")
    r = run("train", "new.txt", "--init-from", BEST, "--steps", 10, "--eval-every", 10, "--seq-length", 16,
            "--batch-size", 4, "--learning-rate", 0.01)
    assert r.exit_code == 0 and checkpoint.load("checkpoints/new-lstm-2/best.npz").train_config.learning_rate == 0.01


# ------------------------------------------------------------------------------------------------
# Flushing


class Recorder:
    """A stream that records what reaches it, write by write, and what it held at each flush."""

    def __init__(self, tty):
        self.tty, self.writes, self.flushes, self.text = tty, [], [], ""

    def isatty(self):
        return self.tty

    def write(self, text):
        self.writes.append(text)
        self.text += text

    def flush(self):
        self.flushes.append(self.text)


@pytest.mark.parametrize("tty", [True, False])
def test_text_is_written_per_character_only_to_a_terminal(tty, monkeypatch):
    """Into a pipe the text reaches the stream a line at a time (or after FLUSH_SECONDS without a
    newline), in one write: even an unbuffered stdout (PYTHONUNBUFFERED=1) then makes no system
    call per character."""
    f = Recorder(tty)
    clock = [0.0]
    monkeypatch.setattr(cli_mod.time, "monotonic", lambda: clock[0])
    out = cli_mod._TextOut(f)
    for ch in "ab\ncd":
        out.write(ch)
    if tty:
        assert f.flushes == ["a", "ab", "ab\n", "ab\nc", "ab\ncd"] and f.writes == list("ab\ncd")
    else:
        assert f.flushes == ["ab\n"] and f.writes == ["ab\n"]  # at the newline only
        clock[0] = cli_mod.FLUSH_SECONDS
        out.write("e")
        assert f.flushes == ["ab\n", "ab\ncde"] and f.writes == ["ab\n", "cde"]  # and when no newline came for a while


def test_generators_are_the_documented_ones():
    """`--random-seed s` draws sample i with generators(s, n)[i] (what the README and help say)."""
    assert generators(0, 2)[1].random() == generators(0, 5)[1].random()



def test_the_sampling_benchmark_measures_what_it_says(tmp_path):
    """Not a timing test: the sampling figures of `charnn bench` (one stream, a batch, a pipe) run
    on a tiny model and count the characters they were asked for."""
    from charnn import bench
    path = bench.sampling_checkpoint(str(tmp_path), "lstm", 1, 8)
    assert checkpoint.load(path).vocab.size == bench.VOCAB
    assert bench.time_sampling(path, 50, 4)["chars_per_sec"] > 0
    pipe = bench.time_pipe(path, 300)
    assert pipe["chars"] == 1 + 300 + 1 and pipe["chars_per_sec"] > 0  # the seed, the text, the closing newline
