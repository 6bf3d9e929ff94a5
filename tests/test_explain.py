"""charnn explain: its numbers against `charnn eval` and an independent forward pass, the Finder on a
planted unit, bad inputs, the terminal and JSON outputs, and the page's self-containment."""

import json
import math
import re

import numpy as np
import pytest

from charnn import checkpoint, data, explain, explain_views, model, reference
from charnn.config import ModelConfig

from conftest import TINY_TEXT, random_params_and_state, run_cli as run


def page_json(html):
    """The data block of a page, as the page's script reads it."""
    block = re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S).group(1)
    return json.loads(block)


def test_surprisals_average_to_the_loss_charnn_eval_reports(explain_run, tmp_path):
    ckpt_path, _ = explain_run
    text = TINY_TEXT[:700]
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    r = run("eval", ckpt_path, path)
    assert r.exit_code == 0, r.stderr
    eval_nats = float(re.search(r": (\d+\.\d+) nats/char", r.stdout).group(1))
    # eval scores data.pieces of the text, each from a zero state; explain shows each piece as one
    # stretch from a zero state: the same characters with the same context.
    ckpt = checkpoint.load(str(ckpt_path))
    pieces = data.pieces(len(text))
    total = 0.0
    for start, length in zip(pieces.starts, pieces.lengths):
        ex = explain.explain(str(ckpt_path), ckpt, str(path), offset=int(start), max_chars=int(length) + 1)
        assert len(ex.ids) == length + 1 and np.isnan(ex.bits[0])
        total += ex.bits[1:].sum()
    assert total / pieces.predicted * math.log(2) == pytest.approx(eval_nats, abs=6e-5)
    # the page's rounded surprisals average to explain's own figure
    out = tmp_path / "page.html"
    assert run("explain", ckpt_path, path, "-o", out).exit_code == 0
    d = page_json(out.read_text(encoding="utf-8"))
    whole = explain.explain(str(ckpt_path), ckpt, str(path))
    assert d["bits"][0] is None and np.mean(d["bits"][1:]) == pytest.approx(d["totals"]["model"], abs=3e-3)
    assert d["totals"]["model"] == pytest.approx(whole.mean_bits(whole.bits))


def reference_inside(params, config, ids):
    """{"l{l}.{channel}": (T, H)} from charnn/reference.py's step functions, one stream, zero state."""
    H, out = config.hidden_size, {}
    x = None  # (T, 1, H) the layer below's hidden states
    for l in range(config.num_layers):
        Wxh, Whh, bh = params[f"l{l}.Wxh"], params[f"l{l}.Whh"], params[f"l{l}.bh"]
        xw = reference.embedding_forward(ids[:, None], Wxh, bh)[0] if l == 0 else x @ Wxh + bh  # (T, 1, G*H)
        h0 = np.zeros((1, H))
        if config.model == "lstm":
            hs, cs, caches = reference.lstm_forward(xw, h0, h0, Whh)
            for k, g in enumerate("oifg"):
                out[f"l{l}.{g}"] = np.stack([c[2 + k][0] for c in caches])
            out[f"l{l}.c"] = np.tanh(cs[1:, 0])
        elif config.model == "gru":
            hs, caches = reference.gru_forward(xw, h0, Whh, params[f"l{l}.bhn"])
            for k, g in enumerate("rzn"):
                out[f"l{l}.{g}"] = np.stack([c[1 + k][0] for c in caches])
        else:
            hs, _ = reference.rnn_forward(xw, h0, Whh)
        out[f"l{l}.h"] = hs[1:, 0]
        x = hs[1:]
    return out


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_activations_equal_an_independent_forward_pass(kind, rng):
    config = ModelConfig(model=kind, hidden_size=6, num_layers=2, vocab_size=7, dropout=0.0)
    params, _ = random_params_and_state(config, rng, 1)
    ids = rng.integers(0, 7, size=explain.CHUNK + 40)  # more than one forward call: the state carries over
    bits, top_ids, top_p, acts = explain.run(params, config, ids)
    want = reference_inside(params, config, ids)
    assert acts.keys() == want.keys() == {f"l{l}.{c}" for l in range(2) for c in model.CHANNELS[kind]}
    for k in want:
        np.testing.assert_allclose(acts[k], want[k], atol=1e-6, err_msg=k)
    # surprisal and the top 5 against the model's own logits
    logits, _, _, _ = model.forward(params, config, ids[:, None], model.zero_state(config, 1, "float64"))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(bits[1:], -np.log2(p[np.arange(len(ids) - 1), ids[1:]]), rtol=1e-6)
    assert np.array_equal(top_ids[1:], np.argsort(-p[:-1], axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(top_p[1:], np.sort(p[:-1], axis=1)[:, ::-1][:, :5], rtol=1e-6)


def test_a_vocabulary_smaller_than_five_shows_only_its_own_guesses(rng):
    config = ModelConfig(model="rnn", hidden_size=4, num_layers=1, vocab_size=3, dropout=0.0)
    params, _ = random_params_and_state(config, rng, 1)
    _, top_ids, top_p, _ = explain.run(params, config, rng.integers(0, 3, size=20))
    assert top_ids.shape == top_p.shape == (20, 3)  # no padding with character 0 at 0%
    assert all(sorted(row) == [0, 1, 2] for row in top_ids[1:])
    np.testing.assert_allclose(top_p[1:].sum(axis=1), 1.0)


def test_gate_saturation_fractions(rng):
    acts = {"l0.o": np.array([[0.05, 0.5], [0.95, 0.5], [0.02, 0.99], [0.5, 0.91]])}  # (N=4, H=2)
    acts.update({"l0.i": acts["l0.o"], "l0.f": acts["l0.o"]})
    sat = explain.saturation(ModelConfig(model="lstm", num_layers=1, hidden_size=2, vocab_size=3), acts)
    np.testing.assert_allclose(sat["l0.o"], [[0.5, 0.0], [0.25, 0.5]])  # (left, right) x unit


def test_the_finder_ranks_a_planted_unit_first(rng):
    """An RNN whose unit 5 is driven hard by the character 'x' alone: the Finder, given the regex x,
    puts it first with r near 1, and the line-position pattern is computed as columns."""
    vocab = data.Vocab("\n abx")
    config = ModelConfig(model="rnn", hidden_size=8, num_layers=1, vocab_size=vocab.size, dropout=0.0)
    params = model.init_params(config, rng, "float64")
    params["l0.Wxh"] *= 0.1
    params["l0.Wxh"][:, 5] = -3.0
    params["l0.Wxh"][vocab.encode("x")[0], 5] = 3.0
    params["l0.Whh"][:, 5] = 0.0  # nothing else reaches it
    text = "".join(rng.choice(list("ab x\n"), size=400))
    _, _, _, acts = explain.run(params, config, vocab.encode(text))
    pats = explain.patterns(text, ["x"])
    top = explain.find_units(acts, pats["/x/"])
    assert top[0][:2] == ("l0.h", 5) and top[0][2] > 0.99
    assert abs(top[1][2]) < 0.5
    assert pats["line position"].tolist()[:8] == explain._line_position(text)[:8].tolist()
    assert explain._line_position("ab\ncd")[3:].tolist() == [0, 1] and explain._line_position("ab\ncd")[2] == 2


def test_correlations_are_pearsons_r_of_every_unit(rng):
    acts = {"l0.h": rng.standard_normal((50, 3)).astype(np.float32),
            "l0.c": rng.standard_normal((50, 3)).astype(np.float32)}
    acts["l0.c"][:, 1] = 0.25  # a unit that never changes: r = 0, not nan
    values = rng.standard_normal(50) + acts["l0.h"][:, 2]
    keys, r = explain.correlations(acts, values)
    assert keys == ["l0.h", "l0.c"] and r.shape == (2, 3) and r[1, 1] == 0
    for k, key in enumerate(keys):
        for u in range(3):
            if (k, u) != (1, 1):
                np.testing.assert_allclose(r[k, u], np.corrcoef(acts[key][:, u], values)[0, 1], rtol=1e-6)


def test_built_in_patterns():
    text = 'a "b c" (d [e]) f\ng'
    inside = explain.regex_mask(r'"[^"\n]*"', text)
    assert "".join(c for c, m in zip(text, inside) if m) == '"b c"'
    brackets = explain._inside_brackets(text)
    assert "".join(c for c, m in zip(text, brackets) if m) == "(d [e]"  # the closing ) ends it
    assert explain.BUILT_IN["after a newline"](text).tolist() == [0] * (len(text) - 1) + [1]
    assert "inside double quotes" not in explain.patterns("no quotes here\n", [])  # a constant is left out


def test_unknown_characters_are_named_and_left_out(explain_run, tmp_path):
    ckpt_path, _ = explain_run
    path = tmp_path / "odd.txt"
    path.write_text("the cat§ sat on the mat. ü the dog", encoding="utf-8")
    out = tmp_path / "p.html"
    r = run("explain", ckpt_path, path, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "2 characters outside the model's vocabulary were left out: §ü" in r.stderr
    d = page_json(out.read_text(encoding="utf-8"))
    assert "".join(d["vocab"][i] for i in d["ids"]) == "the cat sat on the mat.  the dog"
    assert d["skipped"] == 2


@pytest.mark.parametrize("args, message", [
    (["--unit", "2:0", "--terminal"], "--unit 2:0: out of range; this model has layers 0..1 and units 0..15"),
    (["--unit", "0:16", "--terminal"], "out of range"),
    (["--unit", "zero", "--terminal"], "give LAYER:UNIT"),
    (["--unit", "0:1"], "add --terminal"),
    (["--find", "(unclosed"], "is not a regular expression"),
    (["--find", "QQQ"], "matches nothing in the text shown"),
    (["--find", "(?s).*"], "matches every character"),
    (["--channel", "z", "--terminal", "--unit", "0:0"], "--channel z: a lstm has h, c, o, i, f, g"),
    (["--channel", "c", "--terminal"], "add --unit L:U"),
    (["--offset", "999999"], "is past the end of"),
])
def test_bad_options_get_one_line(explain_run, args, message, tmp_path):
    ckpt_path, text = explain_run
    r = run("explain", ckpt_path, text, "-o", tmp_path / "p.html", *args)
    assert r.exit_code == 1 and r.stdout == ""
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "p.html").exists()


def test_bad_files_get_one_line(explain_run, tmp_path):
    ckpt_path, _ = explain_run
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    unknown = tmp_path / "greek.txt"
    unknown.write_text("αβγ δ", encoding="utf-8")
    for path, message in ((empty, "is empty"), (unknown, "has 1 characters the model knows"),
                          (tmp_path / "none.txt", "no such file")):
        r = run("explain", ckpt_path, path, "-o", tmp_path / "p.html")
        assert r.exit_code == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run("explain", ckpt_path, explain_run[1], "--corpus", tmp_path / "none.txt", "-o", tmp_path / "p.html")
    assert r.exit_code == 1 and "no such file" in r.stderr


def test_terminal_colours_each_character(explain_run):
    ckpt_path, text = explain_run
    r = run("explain", ckpt_path, text, "--terminal", "--max-chars", 120)
    assert r.exit_code == 0, r.stderr
    backgrounds = re.findall(r"\x1b\[48;5;(\d+)m", r.stdout)
    assert len(backgrounds) == 120 and len(set(backgrounds)) > 2  # one cell each, shaded by surprisal
    plain = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout).replace("\u21b5", "")
    assert plain.rstrip("\n") == TINY_TEXT[:120].rstrip("\n")
    assert "bits/char on these 119 characters" in r.stderr and "5-gram" in r.stderr
    assert not (text.parent / "report.html").exists()  # --terminal alone writes no page
    by_unit = run("explain", ckpt_path, text, "--terminal", "--max-chars", 120, "--unit", "1:3", "--channel", "c")
    assert by_unit.exit_code == 0 and "layer 1 unit 3, tanh(c)" in by_unit.stderr
    assert re.findall(r"\x1b\[48;5;(\d+)m", by_unit.stdout) != backgrounds


def test_json_holds_the_arrays(explain_run, tmp_path):
    ckpt_path, text = explain_run
    out = tmp_path / "x.json"
    r = run("explain", ckpt_path, text, "--json", out, "--max-chars", 300, "--find", "cat")
    assert r.exit_code == 0, r.stderr
    d = json.loads(out.read_text(encoding="utf-8"))
    assert d["text"] == TINY_TEXT[:300] and len(d["surprisal_bits"]) == 300 and d["surprisal_bits"][0] is None
    assert d["top5"][0] is None and all(len(g) == 5 for g in d["top5"][1:])
    probs = [p for _, p in d["top5"][7]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert set(d["activations"]) == {f"l{l}.{c}" for l in range(2) for c in "hcoifg"}
    assert np.array(d["activations"]["l1.c"]).shape == (300, 16)
    assert set(d["saturation"]) == {f"l{l}.{g}" for l in range(2) for g in "oif"}
    assert "/cat/" in d["finder"] and len(d["finder"]["/cat/"]) == explain.FOUND
    assert d["totals"]["model"] == pytest.approx(np.mean(d["surprisal_bits"][1:]), abs=1e-4)
    assert not (tmp_path / "report.html").exists()


def test_the_page_is_self_contained(explain_run, tmp_path):
    ckpt_path, text = explain_run
    out = tmp_path / "page.html"
    r = run("explain", ckpt_path, text, "-o", out, "--max-chars", 200)
    assert r.exit_code == 0 and f"wrote {out}" in r.stderr
    html = out.read_text(encoding="utf-8")
    assert not re.search(r"<link|\bsrc=|@import|url\(|fetch\(|XMLHttpRequest", html)  # nothing loaded from elsewhere
    assert "/*CSS*/" not in html and "/*JS*/" not in html and "/*DATA*/" not in html
    d = page_json(html)
    assert len(d["ids"]) == 200 and d["model"] == {"kind": "lstm", "layers": 2, "hidden": 16}
    q = d["acts"]["l0.h"]["q"]
    assert len(q) == 200 * 16 and set(q) <= set(explain_views.ALPHABET.tobytes().decode())
    assert d["training"]["val"] and d["training"]["train"]  # metrics.jsonl beside the checkpoint


def test_a_run_folder_given_shows_its_training_curves(explain_run, tmp_path):
    ckpt_path, text = explain_run
    out = tmp_path / "page.html"
    r = run("explain", ckpt_path.parent, text, "-o", out, "--max-chars", 50)  # the folder: its best.npz is used
    assert r.exit_code == 0, r.stderr
    d = page_json(out.read_text(encoding="utf-8"))
    assert d["checkpoint"] == "r/best.npz" and d["training"]["val"] and d["training"]["train"]


def test_the_data_block_holds_no_markup(explain_run, tmp_path):
    """Strings the page carries (a --find pattern, the file's name) cannot end or escape its
    data block: "<!--" and "<script" in the data would make the block swallow the page's script."""
    ckpt_path, text = explain_run
    ex = explain.explain(str(ckpt_path), checkpoint.load(str(ckpt_path)), str(text), max_chars=100)
    ex.found["/<!--|<script>|</script>/"] = ex.found["line position"]
    html = explain_views.page(ex)
    block = re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S).group(1)
    assert "<" not in block and "/<!--|<script>|</script>/" in page_json(html)["found"]


def test_an_output_that_fails_half_way_leaves_the_file_that_was_there(tmp_path):
    from charnn import cli
    from charnn.errors import CharnnError
    target = tmp_path / "report.html"
    target.write_text("the old page")

    def half(f):
        f.write("half a new page")
        raise OSError(28, "No space left on device")

    with pytest.raises(CharnnError, match="cannot write .*No space left on device"):
        cli._write(str(target), half)
    assert target.read_text() == "the old page" and [p.name for p in tmp_path.iterdir()] == ["report.html"]
    cli._write(str(target), lambda f: f.write("the new page"))
    assert target.read_text() == "the new page" and [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_json_writes_a_nan_activation_as_null(explain_run, tmp_path):
    ckpt_path, text = explain_run
    ckpt = checkpoint.load(str(ckpt_path))
    ex = explain.explain(str(ckpt_path), ckpt, str(text), max_chars=50)
    ex.acts["l0.h"][3, 2] = np.nan
    out = tmp_path / "x.json"
    with open(out, "w", encoding="utf-8") as f:
        explain_views.write_json(ex, f)
    d = json.loads(out.read_text())  # strict JSON: Python's parser takes NaN, so check the text too
    assert d["activations"]["l0.h"][3][2] is None and "NaN" not in out.read_text()


def test_quantise_round_trip(rng):
    a = rng.uniform(-1, 1, size=(50, 3)).astype(np.float32)
    q = explain_views.quantise(a, -1.0, 1.0)
    levels = np.array([explain_views.ALPHABET.tobytes().index(c.encode()) for c in q]).reshape(3, 50).T
    np.testing.assert_allclose(-1 + levels * 2 / (explain_views.LEVELS - 1), a, atol=1 / (explain_views.LEVELS - 1) + 1e-6)
