"""The command line: parse, call one library function, report. No math and no file formats here.

Generated text alone goes to stdout; progress and diagnostics go to stderr. A CharnnError (the
user's input, files or settings) becomes one `Error: ...` line and exit status 1.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager

import click
import numpy as np
from click.core import ParameterSource
from tqdm import tqdm

from charnn import __version__, beam as beam_mod, bench as bench_mod, bench_corpus, bench_workers, checkpoint, describe
from charnn import evaluate, explain as explain_mod, explain_views
from charnn import finetune, gradcheck as gradcheck_mod, idcache, launch, parallel, sample as sample_mod, schedule
from charnn import model as model_mod, reports, scaling, survey, textfile
from charnn import train as train_mod
from charnn.decoding import Decoding, generators
from charnn.config import DEFAULT_STEPS, DTYPES, MODELS, OPTIMIZERS, RESUMABLE, ModelConfig, TrainConfig
from charnn.errors import CharnnError

EXIT_INTERRUPTED = 130  # the shell's convention for a process stopped by Ctrl-C (128 + SIGINT)
FLUSH_SECONDS = 0.1  # generated text going into a pipe or file waits at most this long for a newline

_defaults = TrainConfig()
_model_defaults = ModelConfig()


class _ProgressBar(train_mod.Reporter):
    """A tqdm bar on stderr with the loss and characters per second; notes print above it."""

    def __init__(self):
        self.bar = None
        self.rate = None  # smoothed characters per second

    def task(self, description, total, unit="it"):
        """A bar for a long part of the start; it shows only if the part takes over a second, and
        leaves no line behind."""
        return tqdm(total=total, desc=description, unit=unit, unit_scale=True,
                    unit_divisor=1024 if unit == "B" else 1000, file=sys.stderr, dynamic_ncols=True, leave=False,
                    delay=1.0, mininterval=0.5)

    def start(self, total_steps, first_step):
        self.bar = tqdm(total=total_steps, initial=first_step, file=sys.stderr, unit="step", dynamic_ncols=True,
                        mininterval=0.5)

    def step(self, p):
        self.rate = p.chars_per_sec if self.rate is None else 0.9 * self.rate + 0.1 * p.chars_per_sec
        if p.total_steps != self.bar.total:  # a time budget's estimate moved
            self.bar.total = p.total_steps
        self.bar.set_postfix_str(f"loss {p.loss:.3f}, {self.rate:,.0f} char/s, epoch {p.epoch:.2f}", refresh=False)
        self.bar.update(p.step - self.bar.n)

    def note(self, line):
        if self.bar is None:
            click.echo(line, err=True)
        else:
            tqdm.write(line, file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _fail(e: CharnnError):
    raise click.ClickException(str(e)) from None


def _val_chars(ctx, param, value):
    """--val-chars N, or "all" (None: the whole validation split)."""
    if value == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a whole number or 'all'") from None


def cache_options(f):
    """--cache-dir and --cache/--no-cache: where a corpus's id cache lives (idcache.py)."""
    f = click.option("--cache/--no-cache", "use_cache", default=True,
                     help="Keep the corpus's ids in a cache file that later runs map instead of reading the text "
                          "again; --no-cache encodes them in memory and writes nothing.")(f)
    return click.option("--cache-dir", type=click.Path(file_okay=False, path_type=str), default=None,
                        help=f"Folder of the id caches  [default: ${idcache.ENV}, else $XDG_CACHE_HOME/charnn, "
                             "else ~/.cache/charnn]")(f)


def _duration(ctx, param, value):
    try:
        return None if value is None else schedule.parse_duration(value)
    except CharnnError as e:
        raise click.BadParameter(str(e).split(" takes ", 1)[-1]) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="charnn")
def cli():
    """charnn: train character-level RNN, LSTM and GRU language models on a CPU, and sample from them.

    \b
    charnn train data/tinyshakespeare.txt      train an LSTM, checkpoints in checkpoints/
    charnn sample --seed "ROMEO:"               continue a text with the newest model
    charnn prompt                               type a text, the model continues it, in turns
    charnn train NEW.txt --init-from CKPT       fine-tune a trained model on another text
    charnn resume checkpoints/RUN/latest.npz    continue a stopped run exactly
    charnn info checkpoints/RUN/best.npz        what a checkpoint holds, its validation curve
    charnn eval checkpoints/RUN/best.npz FILE   the model's loss on any text
    charnn explain checkpoints/RUN/best.npz FILE  an offline page: what each character cost, units, gates
    charnn corpus FILE                          what the trainer will see in a text, its id cache
    charnn gradcheck --model rnn                check the gradients against finite differences
    """


# The options a resumed run may change (config.RESUMABLE, in its order), shared by `train` and
# `resume`: field -> (click type, the default of a new run, help). `resume` shows "the run's own".
_RUN_OPTIONS = {
    "steps": (int, None, f"Stop at this many updates in all  [default: {DEFAULT_STEPS} unless --epochs or "
                         "--time-budget is given]"),
    "epochs": (float, None, "Stop after this many passes over the training split (with --steps or --time-budget "
                            "too, whichever comes first)  [default: no limit]"),
    "time_budget": (None, None, "Stop when training has taken this long (90s, 10m, 2h, 1h30m), then evaluate and "
                                "save  [default: no limit]"),
    "learning_rate": (float, None, f"The base step size of the optimizer  [default: {_defaults.learning_rate:g}; "
                                   f"{finetune.LEARNING_RATE:g} with --init-from]"),
    "lr_schedule": (click.Choice(schedule.SCHEDULES), _defaults.lr_schedule,
                    "constant; cosine down to a tenth; step: /10 at half the run, /100 at three quarters."),
    "warmup_steps": (click.IntRange(min=0), _defaults.warmup_steps, "Steps of linear warm-up first."),
    "grad_clip": (float, _defaults.grad_clip, "Maximum global gradient norm; 0 turns clipping off."),
    "eval_every": (int, _defaults.eval_every,
                   "Steps between validation passes; each writes latest.npz (and best.npz when it improves)."),
    "patience": (int, None, "Stop after this many evaluations without a better validation loss  [default: never]"),
    "sample_every": (int, None, "Steps between short samples printed on stderr  [default: none]"),
    "keep_every": (int, None, "Steps between snapshots kept as step-NNNNNNN.npz  [default: none, only best and latest]"),
}


def run_options(resuming: bool):
    """Decorate a command with the run options; for `resume`, every default is the run's own."""
    def decorate(f):
        for field in reversed(RESUMABLE):
            kind, default, text = _RUN_OPTIONS[field]
            name = "--" + field.replace("_", "-")
            extra = {"callback": _duration} if field == "time_budget" else {"type": kind}
            if resuming:
                text = text.split("  [default:")[0] + "  [default: the run's own]"
                f = click.option(name, default=None, show_default=False, help=text, **extra)(f)
            else:
                f = click.option(name, default=default, show_default=default is not None, help=text, **extra)(f)
        return f
    return decorate


def _given(ctx, names) -> dict:
    """The options among `names` the user typed on the command line (not defaults)."""
    return {n: ctx.params[n] for n in names if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE}


def _report(result):
    team = parallel.team()
    if team.leader:  # the one line on how the run ended: rank 0's (every rank ends the same way)
        click.echo(f"Error: {result.message}" if result.status == "diverged" else result.message, err=True)
    # Under MPI a rank's non-zero exit aborts the job: wait until rank 0 has said its line.
    team.barrier()
    if result.status in ("diverged", "interrupted"):
        sys.exit(1 if result.status == "diverged" else EXIT_INTERRUPTED)


def workers_option(f):
    return click.option("--workers", type=click.IntRange(min=1), default=1,
                        help="Train data-parallel in this many processes on this machine (MPI ranks, each on "
                             f"B/N of the streams; needs {parallel.INSTALL}); N must divide --batch-size.")(f)


def _launch(workers: int, batch_size) -> None:
    """With --workers N > 1: run this command as N MPI ranks (launch.py) and exit with its status.
    batch_size: B, or a function that gives it (a resumed run's, read from its checkpoint only then)."""
    if workers == 1:
        return
    try:
        parallel.check_divides(batch_size() if callable(batch_size) else batch_size, workers)
        launch.check_available()
        status = launch.run(sys.argv[1:], workers)
    except CharnnError as e:
        _fail(e)
    sys.exit(status)


def _run(call):
    """Run a training call with a progress bar; turn its outcome into messages and exit codes."""
    bar = _ProgressBar()
    try:
        try:
            result = call(bar)
        finally:
            bar.close()
    except CharnnError as e:
        _fail(e)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now; checkpoints are written atomically
        click.echo("interrupted again: stopped without saving; the checkpoints on disk are intact", err=True)
        sys.exit(EXIT_INTERRUPTED)
    _report(result)


@cli.command()
@click.argument("corpus", type=click.Path(path_type=str), required=False)
@click.option("--resume", "resume_from", type=click.Path(path_type=str), default=None,
              help="Continue the run of this checkpoint (the same as `charnn resume`); CORPUS is then optional  "
                   "[default: a new run]")
@click.option("--init-from", type=click.Path(path_type=str), default=None,
              help="Fine-tune: a new run on CORPUS that starts from this checkpoint's model (a file, a run folder or "
                   "a folder of runs), its architecture kept, its vocabulary grown by CORPUS's new characters, the "
                   "optimizer fresh  [default: a new model]")
@click.option("--model", type=click.Choice(MODELS), default=_model_defaults.model, help="Recurrent cell.")
@click.option("--hidden-size", type=int, default=_model_defaults.hidden_size, help="H: units per layer.")
@click.option("--num-layers", type=int, default=_model_defaults.num_layers,
              help="L: stacked layers; layer l reads layer l-1's hidden state.")
@click.option("--seq-length", type=int, default=_defaults.seq_length,
              help="T: characters per window; backprop runs through all T steps.")
@click.option("--batch-size", type=int, default=_defaults.batch_size, help="B: parallel contiguous streams.")
@click.option("--dropout", type=float, default=_model_defaults.dropout,
              help="Probability of dropping each unit between layers and before the output layer, in training.")
@run_options(resuming=False)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=_defaults.optimizer, help="The update rule.")
@click.option("--val-frac", type=float, default=_defaults.val_frac, help="The last fraction of the text held out for validation.")
@click.option("--val-chars", callback=_val_chars, default=str(_defaults.val_chars), metavar="N|all",
              help="Validation characters each evaluation scores at most: a fixed subset spread over the split "
                   "(all of it when smaller); 'all' scores the whole split.")
@cache_options
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=str), default="checkpoints",
              help="Each run writes into its own new folder here.")
@click.option("--run-name", default=None, help="The run's folder name  [default: CORPUS-MODEL-N, the first free N]")
@click.option("--random-seed", type=click.IntRange(min=0), default=_defaults.random_seed,
              help="Same seed, corpus and options: identical checkpoints.")
@click.option("--dtype", type=click.Choice(DTYPES), default=_defaults.dtype, help="Floating-point type of training.")
@workers_option
@click.pass_context
def train(ctx, corpus, resume_from, init_from, cache_dir, use_cache, workers, **options):
    """Train a new model on CORPUS, a UTF-8 text file (or, with --init-from, fine-tune a trained one).

    Prints a validation line such as `step 400  val loss 1.812 nats/char  2.614 bits/char` every
    --eval-every steps and at the end. Ctrl-C saves the last finished step and exits with 130;
    `charnn resume` continues from there.
    """
    if resume_from is not None:
        placed = _given(ctx, ["checkpoint_dir", "run_name", "init_from"])
        if placed:
            _fail(CharnnError(f"a resumed run continues in its own folder: drop {', '.join('--' + n.replace('_', '-') for n in placed)}"))
        _launch(workers, lambda: _batch_size_of(resume_from))
        _run(lambda bar: train_mod.resume(resume_from, _given(ctx, options), corpus, reporter=bar, cache_dir=cache_dir,
                                          use_cache=use_cache))
        return
    if corpus is None:
        _fail(CharnnError("give the CORPUS to train on (or --resume CHECKPOINT)"))
    o = options
    _launch(workers, o["batch_size"])
    if o["steps"] is None and o["epochs"] is None and o["time_budget"] is None:
        o["steps"] = DEFAULT_STEPS
    if o["learning_rate"] is None:
        o["learning_rate"] = finetune.LEARNING_RATE if init_from else _defaults.learning_rate
    model_options = {name: o.pop(name) for name in ("model", "hidden_size", "num_layers", "dropout")}
    checkpoint_dir, run_name = o.pop("checkpoint_dir"), o.pop("run_name")
    train_config = TrainConfig(**o)
    if init_from is not None:
        try:
            parent = checkpoint.find(init_from)  # the run note names the file
        except CharnnError as e:
            _fail(e)
        given = _given(ctx, model_options)
        _run(lambda bar: finetune.fine_tune(parent, corpus, train_config, given, checkpoint_dir, run_name, reporter=bar,
                                            cache_dir=cache_dir, use_cache=use_cache))
        return
    model_config = ModelConfig(**model_options)
    _run(lambda bar: train_mod.train(corpus, model_config, train_config, checkpoint_dir, run_name, reporter=bar,
                                     cache_dir=cache_dir, use_cache=use_cache))


@cli.command()
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=str))
@click.argument("corpus", type=click.Path(path_type=str), required=False)
@run_options(resuming=True)
@cache_options
@workers_option
@click.pass_context
def resume(ctx, checkpoint_path, corpus, cache_dir, use_cache, workers, **options):
    """Continue a run exactly where CHECKPOINT (usually its latest.npz) left it.

    The settings are the run's own; an option given here replaces one (the change is reported).
    --steps counts the run's total steps. CORPUS defaults to the path the run was trained on; it
    must be the same text. Any --workers that divides the run's batch size continues it.
    """
    _launch(workers, lambda: _batch_size_of(checkpoint_path))
    _run(lambda bar: train_mod.resume(checkpoint_path, _given(ctx, options), corpus, reporter=bar, cache_dir=cache_dir,
                                      use_cache=use_cache))


def _batch_size_of(checkpoint_path: str) -> int:
    try:
        return checkpoint.load(checkpoint_path).train_config.batch_size
    except CharnnError as e:
        _fail(e)


def _find(checkpoint_path: str | None, doing: str) -> str:
    """The checkpoint file to use (checkpoint.find); named on stderr when it is not the path given."""
    path = checkpoint.find(checkpoint_path)
    if path != checkpoint_path:
        click.echo(f"{doing} {path}", err=True)
    return path


def _unescape(text: str) -> str:
    """\n, \t and \\ in an option's text as the characters they name (a newline is awkward to type)."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


class _TextOut:
    """Generated text on its way to stdout. A person watching a terminal sees each character as it
    is made. Into a pipe, a write per character costs a system call and a wake-up of the reader
    every character, so there the text is held here and goes out at each newline, or FLUSH_SECONDS
    after the last write when no newline comes (held here, not in stdout's buffer, which
    PYTHONUNBUFFERED=1 turns off)."""

    def __init__(self, f):
        self.f, self.each, self.last, self.held = f, f.isatty(), time.monotonic(), []

    def write(self, text: str) -> None:
        self.held.append(text)
        if self.each or "\n" in text or time.monotonic() - self.last >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.f.write("".join(self.held))
        self.f.flush()
        self.held.clear()
        self.last = time.monotonic()


@contextmanager
def _output(path: str | None):
    """stdout, or the file at path: written under a temporary name beside it and renamed over it
    when the block ends without an error, so an interrupted run never replaces a file with less."""
    if path is None:
        out = _TextOut(sys.stdout)
        yield out
        out.flush()
        return
    try:
        fd, tmp = checkpoint.create_temporary(os.path.dirname(os.path.abspath(path)), ".txt.tmp")
    except OSError as e:
        raise CharnnError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    except OSError as e:
        raise CharnnError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def decoding_options(f):
    """The options that choose each character, shared by `sample` and `prompt`."""
    options = [
        click.option("--temperature", type=float, default=1.0,
                     help="Above 0; lower is more conservative, higher more varied."),
        click.option("--top-k", type=int, default=None, help="Draw only from the K most likely characters  [default: all]"),
        click.option("--top-p", type=float, default=None,
                     help="Nucleus sampling: draw only from the fewest most likely characters whose probability "
                          "reaches P (0 < P <= 1), after --temperature and --top-k  [default: 1, all]"),
        click.option("--argmax", is_flag=True, help="Always take the most likely character (deterministic)."),
        click.option("--stop", multiple=True, metavar="STRING",
                     help="End a text where it ends with STRING (repeatable; \\n, \\t and \\\\ are understood). The "
                          "stop string is not printed: the text ends just before it  [default: none]"),
        click.option("--random-seed", type=click.IntRange(min=0), default=None,
                     help="Same seed: same text  [default: different each run]"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@cli.command()
@click.option("--checkpoint", "checkpoint_path", type=click.Path(path_type=str), default=None,
              help="A checkpoint file, a run folder (its best.npz), or a folder of runs (its newest run's)  "
                   "[default: the best checkpoint of the newest run in checkpoints/]")
@click.option("--seed", default=None,
              help="Text fed through the model before generating, printed first  "
                   "[default: a newline, or a random known character if the model has no newline]")
@click.option("--prime-file", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Read the seed from this UTF-8 file instead  [default: none, --seed]")
@click.option("--print-seed/--no-print-seed", default=True, help="Print the seed before each sample.")
@click.option("--length", type=int, default=500, help="Characters to generate (not counting the seed).")
@decoding_options
@click.option("--num-samples", type=click.IntRange(min=1), default=1,
              help="Samples made together as one batch, each with its own generator derived from --random-seed "
                   "(sample i is the same whatever the number), printed one after another.")
@click.option("--separator", default="\\n",
              help="Printed between two samples (\\n, \\t and \\\\ are understood); a newline ends the last.")
@click.option("--beam", type=click.IntRange(min=1), default=None,
              help="Instead of sampling, print the most likely continuation a beam search of this width finds "
                   "(deterministic; scores are log-probabilities per character)  [default: sample]")
@click.option("--output", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write the text to this file instead of stdout; it is replaced once the text is complete  "
                   "[default: stdout]")
@click.pass_context
def sample(ctx, checkpoint_path, seed, prime_file, print_seed, length, temperature, top_k, top_p, argmax, stop, random_seed,
           num_samples, separator, beam, output):
    """Generate text from a trained model, streamed to stdout as it is made."""
    try:
        if seed is not None and prime_file is not None:
            raise CharnnError("give --seed or --prime-file, not both")
        clash = _given(ctx, ["temperature", "top_k", "top_p", "argmax", "num_samples"]) if beam else {}
        if clash:
            raise CharnnError(f"--beam finds the most likely text and draws nothing: drop "
                              f"{', '.join('--' + n.replace('_', '-') for n in clash)}")
        decoding = Decoding(temperature, top_k, top_p, argmax).check()
        stop = [_unescape(s) for s in stop]
        sample_mod.check_length(length)
        ckpt = checkpoint.load(_find(checkpoint_path, "sampling from"))
        if prime_file is not None:
            seed = textfile.read_text(prime_file)
        elif seed is None:
            seed = sample_mod.default_seed(ckpt.vocab, np.random.default_rng(random_seed))
        shown = seed if print_seed else ""
        if beam:
            pieces = [shown + beam_mod.beam_search(ckpt.params, ckpt.model_config, ckpt.vocab, seed, length, beam, stop)]
        else:
            events = sample_mod.samples(ckpt.params, ckpt.model_config, ckpt.vocab, seed, length,
                                        generators(random_seed, num_samples), decoding, stop)
            pieces = sample_mod.printed(events, num_samples, shown, _unescape(separator))
        with _output(output) as out:
            for piece in pieces:
                out.write(piece)
            out.write("\n")
    except CharnnError as e:
        _fail(e)
    except BrokenPipeError:  # e.g. `charnn sample | head`: the reader is gone, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted{f': {output} was not written' if output else ''}", err=True)
        sys.exit(EXIT_INTERRUPTED)


@cli.command()
@click.argument("checkpoint_path", metavar="[CHECKPOINT]", type=click.Path(path_type=str), required=False)
@click.option("--length", type=click.IntRange(min=0), default=200,
              help="Characters the model writes after each line (fewer at a stop string).")
@decoding_options
def prompt(checkpoint_path, length, temperature, top_k, top_p, argmax, stop, random_seed):
    """Write a text in turns with the model: type a line, the model continues it.

    \b
    a line of text    added to the text; the model continues from there
    an empty line     the model continues its own text further
    /reset            forget the text and start again
    Ctrl-D, Ctrl-C    leave

    The whole text so far is what the model continues (its state carries it). Each continuation
    goes to stdout, ending with a newline; the rest goes to stderr. The input may be a pipe: one
    line a turn. CHECKPOINT is as `sample --checkpoint` takes it  [default: the newest run's best].
    """
    try:
        ckpt = checkpoint.load(_find(checkpoint_path, "writing with"))
        text = sample_mod.TextStream(ckpt.params, ckpt.model_config, ckpt.vocab, generators(random_seed, 1)[0],
                                     Decoding(temperature, top_k, top_p, argmax), [_unescape(s) for s in stop])
        sample_mod.check_length(length)
    except CharnnError as e:
        _fail(e)
    typing = sys.stdin.isatty()
    if typing:
        try:
            import readline  # noqa: F401  (line editing and history for input(), where Python has it)
        except ImportError:
            pass
        click.echo("Type a line and press Enter; an empty line continues, /reset starts again, Ctrl-D leaves.", err=True)
    out = _TextOut(sys.stdout)
    try:
        while True:
            if typing:
                click.echo("> ", err=True, nl=False)
            try:
                line = input()
            except EOFError:
                break
            try:
                if line == "/reset":
                    text.reset()
                    click.echo("(the text is forgotten)", err=True)
                    continue
                if line:
                    text.feed(line)
                for piece in text.extend(length):
                    out.write(piece)
                out.write("\n")
            except CharnnError as e:  # this line is left out; the session goes on
                click.echo(f"Error: {e}", err=True)
    except KeyboardInterrupt:
        click.echo("", err=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@cli.command()
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=str))
def info(checkpoint_path):
    """What CHECKPOINT holds: the model, vocabulary, corpus, settings, progress, validation losses,
    baselines and the validation curve."""
    try:
        path = checkpoint.find(checkpoint_path)
        for line in describe.describe(path, checkpoint.load(path)):
            click.echo(line)
    except CharnnError as e:
        _fail(e)


@cli.command(name="eval")
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=str))
@click.argument("text_file", metavar="FILE", type=click.Path(path_type=str))
@click.option("--chars", type=click.IntRange(min=1), default=None,
              help="Score at most this many characters, in pieces spread evenly over the text  [default: all]")
@cache_options
def eval_command(checkpoint_path, text_file, chars, cache_dir, use_cache):
    """The model's loss on FILE, any UTF-8 text: nats and bits per character and perplexity.

    Characters the model never saw are counted, reported and left out.
    """
    bar = _ProgressBar()
    try:
        ckpt = checkpoint.load(_find(checkpoint_path, "scoring with"))
        corpus, _ = idcache.load_corpus(text_file, cache_dir, use_cache, reporter=bar)
        score = evaluate.score_corpus(ckpt.params, ckpt.model_config, ckpt.vocab, corpus, chars)
    except CharnnError as e:
        _fail(e)
    of = "" if score.predicted == score.known - 1 else f" of {score.known:,}"
    click.echo(f"{text_file}: {score.nats:.4f} nats/char  {score.bits:.4f} bits/char  perplexity {score.perplexity:.3f}  "
               f"({score.predicted:,} characters predicted{of})")
    if score.skipped:
        click.echo(f"{score.skipped:,} characters outside the model's vocabulary were left out: "
                   f"{describe.printable(score.unknown)}", err=True)


@cli.command()
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=str))
@click.argument("text_file", metavar="FILE", type=click.Path(path_type=str))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str), default="report.html",
              help="The page to write (with --terminal or --json, only if given).")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="First character of FILE to show.")
@click.option("--max-chars", type=click.IntRange(min=2), default=explain_mod.MAX_CHARS,
              help="Characters to show at most (the page grows with them: about 4.7 KB a character for a 2 x 384 LSTM).")
@click.option("--find", "finds", multiple=True, metavar="REGEX",
              help="A pattern for the Finder besides the built-in ones (Python regex, ^ and $ at each line), "
                   "such as '\"[^\"]*\"'; may be given more than once.")
@click.option("--terminal", is_flag=True, help="Print the text coloured by surprisal (or by --unit) with 256-colour codes.")
@click.option("--unit", default=None, metavar="L:U", help="With --terminal: colour by this unit of layer L (both from 0).")
@click.option("--channel", type=click.Choice(list("hcoifgrzn")), default="h",
              help="With --unit: h, or for the LSTM c (tanh(c)), o, i, f, g; for the GRU r, z, n.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Also write the arrays (surprisal, top 5, n-gram bits, activations, Finder) as JSON here.")
@click.option("--corpus", "corpus_path", type=click.Path(path_type=str), default=None,
              help="The text the n-gram baseline is fitted on  [default: the checkpoint's training text, if it is still there]")
@click.pass_context
def explain(ctx, checkpoint_path, text_file, output, offset, max_chars, finds, terminal, unit, channel, json_path,
            corpus_path):
    """See inside the model on FILE: one offline HTML page with the views Surprisal (bits paid for
    each character, the top 5 guesses), Neurons (any unit's h, tanh(c), gates), Finder (units that
    follow a pattern), Gates (saturation) and Training (the run's curves).

    Characters the model never saw are named and left out, as `charnn eval` does.
    """
    try:
        checkpoint_path = _find(checkpoint_path, "explaining with")  # a run folder: its best.npz (metrics.jsonl beside it)
        ckpt = checkpoint.load(checkpoint_path)
        config = ckpt.model_config
        where = explain_mod.parse_unit(unit, config) if unit is not None else None
        if unit is not None and not terminal:
            raise CharnnError("--unit colours the terminal's text: add --terminal (the page has every unit)")
        if unit is None and ctx.get_parameter_source("channel") is not ParameterSource.DEFAULT:
            raise CharnnError("--channel chooses what --unit shows: add --unit L:U")
        if channel not in model_mod.CHANNELS[config.model]:
            raise CharnnError(f"--channel {channel}: a {config.model} has {', '.join(model_mod.CHANNELS[config.model])}")
        ex = explain_mod.explain(checkpoint_path, ckpt, text_file, offset, max_chars, list(finds), corpus_path)
        note = explain_views.unknown_note(ex)
        if note:
            click.echo(note, err=True)
        if terminal:
            coloured, legend = explain_views.terminal(ex, where, channel)
            click.echo(coloured, color=True)  # asked for: coloured into a pipe too (less -R shows it)
            click.echo(legend, err=True)
        if json_path:
            _write(json_path, lambda f: explain_views.write_json(ex, f))
            click.echo(f"wrote {json_path}", err=True)
        if not (terminal or json_path) or ctx.get_parameter_source("output") is not ParameterSource.DEFAULT:
            page = explain_views.page(ex)
            _write(output, lambda f: f.write(page))
            click.echo(f"wrote {output} ({reports.megabytes(len(page.encode('utf-8')))}): open it in a browser", err=True)
    except CharnnError as e:
        _fail(e)


def _write(path: str, write) -> None:
    """write(f) into the text file at path, whole or not at all: into a temporary file beside it,
    renamed over path when done, so a failure half-way (a full disk, an error) leaves whatever was
    at path before. A CharnnError if it cannot be written."""
    tmp = None
    try:
        fd, tmp = checkpoint.create_temporary(os.path.dirname(os.path.abspath(path)), ".part")
        with open(fd, "w", encoding="utf-8") as f:
            write(f)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise CharnnError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            os.unlink(tmp)


@cli.command(name="corpus")
@click.argument("text_file", metavar="FILE", type=click.Path(path_type=str))
@click.option("--val-frac", type=float, default=_defaults.val_frac, help="The validation fraction to show the split at.")
@click.option("--val-chars", callback=_val_chars, default=str(_defaults.val_chars), metavar="N|all",
              help="Validation characters an evaluation would score ('all': the whole split).")
@cache_options
def corpus_command(text_file, val_frac, val_chars, cache_dir, use_cache):
    """What the trainer will see in FILE: its size, vocabulary with counts (rarest first), odd
    characters and where they first occur, the split, and the id cache.

    Builds the id cache if there is none (so a later `charnn train FILE` starts at once), unless
    --no-cache.
    """
    try:
        TrainConfig(steps=1, val_frac=val_frac, val_chars=val_chars).validate()
        lines = survey.survey(text_file, val_frac, val_chars, cache_dir, use_cache, reporter=_ProgressBar())
    except CharnnError as e:
        _fail(e)
    for line in lines:
        click.echo(line)


@cli.command()
@click.option("--model", type=click.Choice(MODELS), default="lstm", help="Recurrent cell.")
@click.option("--num-layers", type=click.IntRange(min=1), default=2, help="L: stacked layers.")
@click.option("--hidden-size", type=click.IntRange(min=1), default=5, help="H: units per layer.")
@click.option("--seq-length", type=click.IntRange(min=1), default=4, help="T: steps backprop runs through.")
@click.option("--batch-size", type=click.IntRange(min=1), default=3, help="B: parallel streams.")
@click.option("--vocab-size", type=click.IntRange(min=1), default=7, help="V: characters in the random problem.")
@click.option("--dropout", type=float, default=0.0, help="Check the training loss with dropout (fixed masks).")
@click.option("--random-seed", type=click.IntRange(min=0), default=0, help="Seed of the random problem.")
def gradcheck(model, num_layers, hidden_size, seq_length, batch_size, vocab_size, dropout, random_seed):
    """Check the model's BPTT gradients against float64 finite differences.

    Prints the worst relative error of every parameter; exits 1 if any is above the threshold.
    """
    try:
        t0 = time.perf_counter()
        errors = gradcheck_mod.check_model(model, num_layers, hidden_size, seq_length, batch_size, vocab_size,
                                           random_seed, dropout)
    except CharnnError as e:
        _fail(e)
    click.echo(f"{model}, {num_layers} layer(s) of {hidden_size}, T={seq_length}, B={batch_size}, V={vocab_size}"
               f"{f', dropout {dropout:g}' if dropout else ''}: "
               f"worst relative error per parameter (threshold {gradcheck_mod.THRESHOLD:g})")
    for name, err in errors.items():
        click.echo(f"  {name:10s} {err:.2e}  {'ok' if err <= gradcheck_mod.THRESHOLD else 'FAIL'}")
    worst = max(errors.values())
    click.echo(f"{'passed' if worst <= gradcheck_mod.THRESHOLD else 'FAILED'}: worst {worst:.2e} "
               f"({time.perf_counter() - t0:.1f} s)")
    if worst > gradcheck_mod.THRESHOLD:
        sys.exit(1)


@cli.command()
@click.option("--model", type=click.Choice(MODELS), default=None,
              help="Time one configuration of your own instead of the reference set  [default: the reference set]")
@click.option("--num-layers", type=click.IntRange(min=1), default=2, help="L, with --model.")
@click.option("--hidden-size", type=click.IntRange(min=1), default=512, help="H, with --model.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, help="B, with --model.")
@click.option("--seq-length", type=click.IntRange(min=1), default=bench_mod.SEQ, help="T, with --model.")
@click.option("--steps", type=click.IntRange(min=1), default=20, help="Timed training steps per configuration (the median is kept).")
@click.option("--warmup", type=click.IntRange(min=0), default=3, help="Untimed steps first.")
@click.option("--rounds", type=click.IntRange(min=1), default=1, help="Time each configuration this many times, charnn and PyTorch "
              "taking turns, and keep the median (steadier on a busy machine).")
@click.option("--sample/--no-sample", default=True, help="Also time sampling (2,000 characters, LSTM 2 x 512).")
@click.option("--encode-mb", type=int, default=100, help="Also time reading and encoding a text this large; 0: skip.")
@click.option("--torch-python", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="A Python with PyTorch to compare with  [default: this Python if it can import torch, else skipped]")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Also write the measurements as JSON here  [default: none]")
@click.option("--corpus-mb", type=click.FloatRange(min=1), default=None,
              help="Instead, measure what a corpus of this many MB costs at the default settings: the time to the "
                   "first step (first and cached run), memory beyond the model, an evaluation's cost  [default: off]")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="With --corpus-mb: where to write the text and its cache (a text already there of that size is "
                   "reused)  [default: a temporary folder]")
@click.option("--keep/--no-keep", default=False, help="With --corpus-mb: keep the text and its cache afterwards.")
@click.option("--workers", type=click.IntRange(min=2), default=None,
              help="Instead, time a training step in one process against this many data-parallel workers (and "
                   "PyTorch), with the Allreduce's share and each worker's peak memory, on "
                   f"{len(bench_workers.REFERENCE)} reference configurations or --model's  [default: off]")
def bench(model, num_layers, hidden_size, batch_size, seq_length, steps, warmup, rounds, sample, encode_mb, torch_python,
          json_path, corpus_mb, work_dir, keep, workers):
    """Measure training and sampling speed, memory and encoding time; print markdown tables.

    Each measurement runs in its own process. Beside charnn's figures: the machine's float32
    matrix-multiply rate (the ceiling) and, if PyTorch can be imported, the same models in PyTorch.
    With --corpus-mb N, measure a large corpus's costs instead. Do not run it while the machine is
    busy with something else.
    """
    if json_path and not os.path.isdir(os.path.dirname(os.path.abspath(json_path))):
        _fail(CharnnError(f"--json {json_path}: its folder does not exist"))
    if corpus_mb is not None and workers:
        _fail(CharnnError("--corpus-mb and --workers are two different benchmarks: give one of them"))
    if corpus_mb is not None:
        _bench_corpus(corpus_mb, work_dir, keep, json_path)
        return
    configs = ([bench_mod.Config(model, num_layers, hidden_size, batch_size, seq_length)] if model
               else [bench_mod.Config(*c) for c in bench_mod.REFERENCE])
    if workers:
        _bench_workers([bench_mod.Config(*c) for c in bench_workers.REFERENCE] if not model else configs, workers,
                       steps, warmup, torch_python, rounds, json_path)
        return
    try:
        results = bench_mod.run(configs, steps=steps, warmup=warmup, torch_python=torch_python,
                                sample_cfg=bench_mod.SAMPLE_CONFIG if sample else None,
                                encode_bytes=max(0, encode_mb) * 2**20, rounds=rounds,
                                progress=lambda line: click.echo(line, err=True))
    except RuntimeError as e:  # a worker process failed: its last line says why
        _fail(CharnnError(f"a benchmark worker failed: {str(e).strip().splitlines()[-1]}"))
    if results["torch"] is None:
        click.echo("PyTorch is not installed here: its columns are skipped (see --torch-python)", err=True)
    click.echo(bench_mod.markdown(results))
    if json_path:
        _write_json(json_path, results)


def _bench_workers(configs, workers, steps, warmup, torch_python, rounds, json_path):
    try:
        results = bench_workers.run(configs, workers, steps=steps, warmup=warmup, torch_python=torch_python,
                                    rounds=rounds, progress=lambda line: click.echo(line, err=True))
    except CharnnError as e:
        _fail(e)
    except RuntimeError as e:  # a worker process failed: its last line says why
        _fail(CharnnError(f"a benchmark worker failed: {str(e).strip().splitlines()[-1]}"))
    if results["torch"] is None:
        click.echo("PyTorch is not installed here: its columns are skipped (see --torch-python)", err=True)
    click.echo(bench_workers.markdown(results))
    click.echo("\n" + scaling.markdown([scaling.calibration(row) for row in results["train"]]))
    if json_path:
        _write_json(json_path, results)


def _write_json(json_path: str, results: dict) -> None:
    """A benchmark's --json: written whole or not at all (_write)."""
    try:
        _write(json_path, lambda f: json.dump(results, f, indent=1))
    except CharnnError as e:
        _fail(e)


def _bench_corpus(corpus_mb, work_dir, keep, json_path):
    try:
        with tempfile.TemporaryDirectory(prefix="charnn-bench-") as tmp:
            results = bench_corpus.run(corpus_mb, work_dir or tmp, keep=keep and work_dir is not None,
                                       progress=lambda line: click.echo(line, err=True))
    except RuntimeError as e:  # a worker process failed: its last line says why
        _fail(CharnnError(f"a benchmark worker failed: {str(e).strip().splitlines()[-1]}"))
    click.echo(bench_corpus.markdown(results))
    if json_path:
        _write_json(json_path, results)


def main():
    cli(prog_name="charnn")
