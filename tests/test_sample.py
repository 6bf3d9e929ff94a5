"""Generation: priming, stop strings, N samples as one batch, the text stream of `charnn prompt`."""

import numpy as np
import pytest

from charnn import model, sample
from charnn.config import ModelConfig
from charnn.data import Vocab
from charnn.decoding import Decoding, generators
from charnn.errors import CharnnError

from conftest import random_params_and_state

ARGMAX = Decoding(argmax=True)


def make(rng, dtype="float32"):
    vocab = Vocab("\nabc")
    config = ModelConfig("lstm", vocab_size=4, hidden_size=8, num_layers=2)
    return model.init_params(config, rng, dtype), config, vocab


def text(params, config, vocab, seed, length, rng, decoding=Decoding(), stop=()):
    return "".join(sample.generate(params, config, vocab, seed, length, rng, decoding, stop))


def test_generate_is_reproducible_and_counts_only_new_characters(rng):
    params, config, vocab = make(rng)
    a = text(params, config, vocab, "ab", 40, np.random.default_rng(5))
    b = text(params, config, vocab, "ab", 40, np.random.default_rng(5))
    c = text(params, config, vocab, "ab", 40, np.random.default_rng(6))
    assert a == b and a != c and len(a) == 40 and set(a) <= set(vocab.chars)


def test_generate_primes_with_the_whole_seed(rng):
    """The first draw comes from the logits after the last seed character."""
    params, config, vocab = make(rng)
    state = model.zero_state(config, 1)
    for ch in "abca":
        logits, state = model.step(params, config, vocab.encode(ch).astype(np.intp), state)
    assert text(params, config, vocab, "abca", 1, rng, ARGMAX) == vocab.chars[int(np.argmax(logits[0]))]


def test_priming_a_window_at_a_time_is_priming_at_once(rng, monkeypatch):
    """A long seed goes through the model PRIME_WINDOW characters at a time, the state carried:
    the same logits and state as one pass (so a long --prime-file needs little memory)."""
    config = ModelConfig("gru", vocab_size=4, hidden_size=6, num_layers=2)
    params, _ = random_params_and_state(config, rng, 1)
    vocab = Vocab("\nabc")
    seed = "".join(rng.choice(list(vocab.chars), 50))
    whole = sample.prime(params, config, vocab, seed)
    monkeypatch.setattr(sample, "PRIME_WINDOW", 7)
    windows = sample.prime(params, config, vocab, seed)
    np.testing.assert_allclose(windows[0], whole[0], rtol=1e-12)
    np.testing.assert_allclose(windows[1]["h"], whole[1]["h"], rtol=1e-12)


def test_bad_options_and_seeds(rng):
    params, config, vocab = make(rng)
    with pytest.raises(CharnnError, match=r"never saw: 'xz'"):
        text(params, config, vocab, "abzx", 5, rng)
    with pytest.raises(CharnnError, match="--temperature must be above 0"):
        text(params, config, vocab, "a", 5, rng, Decoding(temperature=0))
    with pytest.raises(CharnnError, match="seed text is empty"):
        text(params, config, vocab, "", 5, rng)
    with pytest.raises(CharnnError, match="--length must be 0 or more"):
        text(params, config, vocab, "a", -1, rng)
    with pytest.raises(CharnnError, match="--stop string is empty"):
        text(params, config, vocab, "a", 5, rng, stop=["b", ""])
    with pytest.raises(CharnnError, match="--num-samples must be at least 1"):
        sample.samples(params, config, vocab, "a", 5, [])


def test_default_seed(rng):
    assert sample.default_seed(Vocab("\nab"), rng) == "\n"
    seeds = {sample.default_seed(Vocab("ab"), np.random.default_rng(k)) for k in range(20)}
    assert seeds == {"a", "b"}  # one random character, either of them


# ------------------------------------------------------------------------------------------------
# Stop strings


def feed(stopper, chars):
    """What StopAt lets out for each character, and whether it stopped."""
    return [stopper.add(ch) for ch in chars], stopper.done


def test_stop_at_holds_back_only_what_could_begin_a_stop_string():
    out, done = feed(sample.StopAt(("\n",)), "ab\n")
    assert out == ["a", "b", ""] and done
    s = sample.StopAt(("abc",))
    out, done = feed(s, "xabd")
    assert out == ["x", "", "", "abd"] and not done  # "ab" could have begun "abc"; "abd" cannot
    out, done = feed(s, "zabc")
    assert out == ["z", "", "", ""] and done and s.held == ""
    s = sample.StopAt(("ab", "b!"))
    out, done = feed(s, "aab")
    assert out == ["", "a", ""] and done  # ends at "ab", with nothing of it printed
    s = sample.StopAt(("xyz",))
    assert feed(s, "axy")[0] == ["a", "", ""] and s.flush() == "xy"  # the length ran out: not a stop string
    s = sample.StopAt(("b", "ab"))
    assert feed(s, "cab")[0] == ["c", "", ""]  # both end here: the longer is left out whole


@pytest.mark.parametrize("stop", [["a"], ["\n"], ["cb", "ba"], ["abc"]])
def test_a_stop_string_ends_the_text_exactly_there(rng, stop):
    """With the same generator, the text with stop strings is the text without them, cut just
    before the first place where one ends (and never containing one)."""
    params, config, vocab = make(rng)
    for k in range(5):
        full = text(params, config, vocab, "ab", 200, np.random.default_rng(k))
        cut = text(params, config, vocab, "ab", 200, np.random.default_rng(k), stop=stop)
        ends = [i + 1 for i in range(len(full)) if any(full[:i + 1].endswith(s) for s in stop)]
        if ends:
            first = ends[0]
            matched = max((s for s in stop if full[:first].endswith(s)), key=len)
            assert cut == full[:first - len(matched)]
        else:
            assert cut == full
        assert not any(s in cut for s in stop)


def test_only_the_generated_text_is_matched_against_the_stop_strings(rng):
    """A stop string that ends across the seed and the first generated character does not stop it."""
    params, config, vocab = make(rng)
    full = text(params, config, vocab, "ab", 40, np.random.default_rng(1))
    stop = "b" + full[0]
    expected = full[:full.index(stop)] if stop in full else full
    assert expected and text(params, config, vocab, "ab", 40, np.random.default_rng(1), stop=[stop]) == expected


# ------------------------------------------------------------------------------------------------
# N samples at once


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_a_batch_of_n_is_n_single_runs(rng, name, monkeypatch):
    """Sample i of a batch made with seed s is the text one run makes with the i-th generator of s,
    also when the streams end at different times (stop strings; the batch then narrows to the
    streams still going, a new Stepper each time half of them have ended)."""
    config = ModelConfig(name, vocab_size=4, hidden_size=8, num_layers=2)
    params, _ = random_params_and_state(config, rng, 1)
    vocab = Vocab("\nabc")
    sizes = []  # the batch size of every Stepper made
    real = model.Stepper
    monkeypatch.setattr(model, "Stepper", lambda p, c, B=1, state=None: sizes.append(B) or real(p, c, B, state))
    for stop, decoding in (((), Decoding()), (("\n", "cc"), Decoding(0.8, 3, 0.9))):
        sizes.clear()
        together = sample.texts(sample.samples(params, config, vocab, "ab", 60, generators(7, 9), decoding, stop), 9)
        narrowed = sizes[1:]
        alone = [text(params, config, vocab, "ab", 60, g, decoding, stop) for g in generators(7, 9)]
        assert together == alone
        assert len(set(together)) > 1  # different generators, different texts
    assert narrowed and narrowed[0] <= 4  # with stop strings the batch of 9 narrowed


def test_a_zero_length_batch_ends_every_sample(rng):
    params, config, vocab = make(rng)
    assert sample.texts(sample.samples(params, config, vocab, "ab", 0, generators(1, 3)), 3) == ["", "", ""]


def test_printed_streams_the_first_sample_and_holds_the_others():
    events = [(1, "x", False), (0, "a", False), (2, "z", True), (0, "b", True), (1, "y", True)]
    pieces = list(sample.printed(iter(events), 3, "S", "|"))
    assert "".join(pieces) == "Sab|Sxy|Sz"
    assert pieces[:2] == ["S", "a"]  # sample 0's first piece goes out before any of sample 1's
    assert "".join(sample.printed(iter([(0, "", True)]), 1, "S", "|")) == "S"


# ------------------------------------------------------------------------------------------------
# The text stream of `charnn prompt`


def test_a_text_stream_continues_the_whole_text(rng):
    """What the stream writes is what the model writes after the whole text so far (the user's
    lines and its own continuations); reset forgets it."""
    params, config, vocab = make(rng, "float64")
    stream = sample.TextStream(params, config, vocab, np.random.default_rng(0), ARGMAX)
    with pytest.raises(CharnnError, match="no text to continue"):
        list(stream.extend(5))
    stream.feed("ab")
    first = "".join(stream.extend(12))
    assert first == text(params, config, vocab, "ab", 12, rng, ARGMAX)
    stream.feed("ca")
    second = "".join(stream.extend(12))
    assert second == text(params, config, vocab, "ab" + first + "ca", 12, rng, ARGMAX)
    more = "".join(stream.extend(5))
    assert more == text(params, config, vocab, "ab" + first + "ca" + second, 5, rng, ARGMAX)
    with pytest.raises(CharnnError, match="never saw"):
        stream.feed("az")  # refused whole: the state is as it was
    assert "".join(stream.extend(5)) == text(params, config, vocab, "ab" + first + "ca" + second + more, 5, rng, ARGMAX)
    stream.reset()
    stream.feed("ca")
    assert "".join(stream.extend(12)) == text(params, config, vocab, "ca", 12, rng, ARGMAX)


def test_a_text_stream_draws_as_a_sample_does_and_keeps_its_stop_strings(rng):
    """Its first continuation is the one `sample` makes with the same generator; a stop string
    ends a turn but stays in the text the model continues."""
    params, config, vocab = make(rng, "float64")
    stream = sample.TextStream(params, config, vocab, generators(3, 1)[0], Decoding(0.9))
    stream.feed("ab")
    assert "".join(stream.extend(30)) == text(params, config, vocab, "ab", 30, generators(3, 1)[0], Decoding(0.9))
    full = text(params, config, vocab, "ab", 40, rng, ARGMAX)
    stop = full[2:4]  # a stop string the text reaches
    stream = sample.TextStream(params, config, vocab, np.random.default_rng(0), ARGMAX, stop=[stop])
    stream.feed("ab")
    cut = "".join(stream.extend(40))
    assert cut == full[:full.index(stop)]
    stream.feed("a")
    assert "".join(stream.extend(8)) == text(params, config, vocab, "ab" + cut + stop + "a", 8, rng, ARGMAX).split(stop)[0]
