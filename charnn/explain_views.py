"""How an Explanation (explain.py) is shown: the offline HTML page, the terminal, JSON for notebooks.

The page is explain_page.html with explain_page.css and explain_page.js inlined and the data as
one JSON block: no network, no CDN, one file that opens from disk. Activations go in quantised to
LEVELS steps, one character each (the base64 alphabet): a 2 x 384 LSTM has 6 channels x 768 units,
so 1,000 characters make 4.6 M values, which as decimal JSON would be ~30 MB; as one character
each they are 4.6 MB, and 64 steps are more than a colour scale can show.
"""

from __future__ import annotations

import html
import json
import os
from importlib import resources

import numpy as np

from charnn import evaluate
from charnn.explain import SATURATED, SIGMOID_GATES, Explanation

LEVELS = 64  # quantisation steps of an activation on the page (one base64 character each)
ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", np.uint8)
CHANNEL_NAMES = {"h": "h (hidden state)", "c": "tanh(c) (cell)", "o": "output gate", "i": "input gate",
                 "f": "forget gate", "g": "candidate g", "r": "reset gate", "z": "update gate", "n": "candidate n"}


def value_range(key: str) -> tuple[float, float]:
    """The range of a channel's activations: sigmoid gates [0, 1], the rest (tanh) [-1, 1]."""
    return (0.0, 1.0) if key.split(".")[1] in "".join(SIGMOID_GATES.values()) else (-1.0, 1.0)


def quantise(a: np.ndarray, lo: float, hi: float) -> str:
    """(N, H) in [lo, hi] -> a string of H*N characters, unit by unit (unit u: [u*N, (u+1)*N)),
    each one of LEVELS steps; the page maps step q back to lo + q (hi - lo) / (LEVELS - 1)."""
    q = np.rint((a.T - lo) * ((LEVELS - 1) / (hi - lo))).clip(0, LEVELS - 1).astype(np.uint8)  # (H, N)
    return ALPHABET[q.ravel()].tobytes().decode("ascii")


def _rounded(a: np.ndarray | None, digits: int):
    """A float array as a JSON list, rounded, nan as null."""
    if a is None:
        return None
    return [None if not np.isfinite(v) else round(float(v), digits) for v in np.asarray(a).ravel()]


def totals(ex: Explanation) -> dict:
    """Bits per character on the shown text: the model's and the baselines', and the checkpoint's own
    validation figures beside them."""
    h = ex.header
    b = h.get("baselines") or {}
    best = h.get("best_val_loss")
    return {"model": ex.mean_bits(ex.bits), "ngram": ex.mean_bits(ex.ngram_bits), "unigram": ex.mean_bits(ex.unigram_bits),
            "order": ex.ngram_order, "predicted": len(ex.ids) - 1,
            "val_model": evaluate.bits(best) if best is not None else None,
            "val_ngram": b.get("ngram_bits"), "val_unigram": b.get("unigram_bits")}


def page_data(ex: Explanation) -> dict:
    """What the page's script reads."""
    c = ex.config
    train = [r for r in ex.metrics if r["event"] == "train" and r.get("train_loss") is not None]
    val = [r for r in ex.metrics if r["event"] == "eval" and r.get("val_loss") is not None]
    return {
        "checkpoint": os.path.basename(os.path.dirname(os.path.abspath(ex.checkpoint))) + "/" + os.path.basename(ex.checkpoint),
        "file": os.path.basename(ex.file), "offset": ex.offset, "skipped": ex.skipped, "unknown": ex.unknown,
        "model": {"kind": c.model, "layers": c.num_layers, "hidden": c.hidden_size},
        "vocab": list(ex.vocab.chars), "ids": [int(i) for i in ex.ids],
        "bits": _rounded(ex.bits, 2), "ngram": _rounded(ex.ngram_bits, 2), "ngram_note": ex.ngram_note,
        "top": [[int(i) for i in row] for row in ex.top_ids], "top_p": [_rounded(row, 3) for row in ex.top_p],
        "totals": totals(ex),
        "channels": [k.split(".")[1] for k in ex.acts if k.startswith("l0.")],
        "channel_names": CHANNEL_NAMES, "levels": LEVELS,
        "acts": {k: {"range": value_range(k), "q": quantise(a, *value_range(k))} for k, a in ex.acts.items()},
        "saturation": {k: {"left": _rounded(s[0], 3), "right": _rounded(s[1], 3)} for k, s in ex.saturation.items()},
        "saturated": SATURATED,
        "found": {name: [{"layer": int(k.split(".")[0][1:]), "channel": k.split(".")[1], "unit": u, "r": round(r, 3)}
                         for k, u, r in units] for name, units in ex.found.items()},
        "training": {"train": [[r["step"], r["time"], evaluate.bits(r["train_loss"])] for r in train],
                     "val": [[r["step"], r["time"], evaluate.bits(r["val_loss"])] for r in val]},
    }


def _asset(name: str) -> str:
    return resources.files("charnn").joinpath(name).read_text(encoding="utf-8")


def page(ex: Explanation) -> str:
    """The self-contained HTML page."""
    data = json.dumps(page_data(ex), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # No "<" in the data block at all (JSON has it only inside strings, where \u003c is the same
    # character): "</script>" would end the block, and "<!--" then "<script" (a --find for HTML
    # comments, say) would make the browser read the block's own "</script>" as text.
    data = data.replace("<", "\\u003c")
    title = html.escape(f"charnn explain: {os.path.basename(ex.file)}")
    out = _asset("explain_page.html")
    for mark, text in (("/*CSS*/", _asset("explain_page.css")), ("/*JS*/", _asset("explain_page.js")),
                       ("/*DATA*/", data), ("TITLE", title)):
        assert out.count(mark) == 1, mark
        out = out.replace(mark, text)
    return out


def json_data(ex: Explanation) -> dict:
    """--json without the activations: the arrays for notebooks (4 decimals), keyed as the page's."""
    return {
        "checkpoint": ex.checkpoint, "file": ex.file, "offset": ex.offset, "skipped": ex.skipped, "unknown": ex.unknown,
        "model": {"kind": ex.config.model, "layers": ex.config.num_layers, "hidden": ex.config.hidden_size},
        "text": ex.text,
        "surprisal_bits": _rounded(ex.bits, 4), "ngram_bits": _rounded(ex.ngram_bits, 4),
        "unigram_bits": _rounded(ex.unigram_bits, 4), "ngram_order": ex.ngram_order, "ngram_note": ex.ngram_note,
        "top5": [[[ex.vocab.chars[i], round(float(p), 4)] for i, p in zip(ids, ps)] if t else None
                 for t, (ids, ps) in enumerate(zip(ex.top_ids, ex.top_p))],
        "totals": totals(ex),
        "saturation": {k: {"left": _rounded(s[0], 4), "right": _rounded(s[1], 4)} for k, s in ex.saturation.items()},
        "finder": {name: [{"channel": k, "unit": u, "r": round(r, 4)} for k, u, r in units]
                   for name, units in ex.found.items()},
    }


def write_json(ex: Explanation, f) -> None:
    """--json into the open text file f: json_data and "activations", {"l{l}.{channel}": N rows of H}.
    The activations are written a row at a time: as one list of Python floats, a 2 x 384 LSTM's on
    20,000 characters (92 M values) would take gigabytes of memory."""
    head = json.dumps(json_data(ex), ensure_ascii=False, allow_nan=False)
    f.write(head[:-1] + ', "activations": {')
    for n, (key, a) in enumerate(ex.acts.items()):
        f.write(f'{", " if n else ""}"{key}": [')
        has_nan = bool(np.isnan(a).any())  # a diverged model's: null, as JSON has no NaN
        for t, row in enumerate(np.round(a.astype(np.float64), 4)):
            values = [None if v != v else v for v in row.tolist()] if has_nan else row.tolist()
            f.write(("," if t else "") + json.dumps(values, allow_nan=False))
        f.write("]")
    f.write("}}")


# ---------------------------------------------------------------------------------------------
# The terminal: each character on a background from a 256-colour palette, black text on it.

HEAT = [231, 230, 229, 228, 221, 214, 208, 202, 196, 160]  # surprisal, 0 bits (white) .. HEAT_MAX and up (red)
HEAT_MAX = 10.0
DIVERGING = [21, 27, 33, 75, 117, 153, 189, 231, 224, 217, 210, 203, 197, 161, 160]  # -1 blue .. 0 white .. +1 red


def _cell(ch: str, colour: int) -> str:
    if ch == "\n":
        return f"\x1b[48;5;{colour}m\x1b[38;5;16m\u21b5\x1b[0m\n"  # the newline's cell is shown, then taken
    shown = ch if ch.isprintable() else repr(ch)[1:-1]
    return f"\x1b[48;5;{colour}m\x1b[38;5;16m{shown}"


def terminal(ex: Explanation, unit: tuple[int, int] | None = None, channel: str = "h") -> tuple[str, str]:
    """(the coloured text, a legend line): by surprisal, or by one unit's activation."""
    text = ex.text
    if unit is None:
        level = lambda t: 0 if t == 0 else min(len(HEAT) - 1, int(ex.bits[t] / HEAT_MAX * (len(HEAT) - 1) + 0.5))
        cells = [_cell(ch, HEAT[level(t)]) for t, ch in enumerate(text)]
        t = totals(ex)
        base = f", {ex.ngram_order}-gram {t['ngram']:.3f}" if t["ngram"] is not None else ""
        legend = (f"surprisal: white 0 bits .. red {HEAT_MAX:g}+ bits; {t['model']:.3f} bits/char on these "
                  f"{t['predicted']:,} characters{base}")
    else:
        key = f"l{unit[0]}.{channel}"
        lo, hi = value_range(key)
        a = (ex.acts[key][:, unit[1]] - (lo + hi) / 2) / ((hi - lo) / 2)  # (N,) in [-1, 1]
        idx = np.rint((a + 1) / 2 * (len(DIVERGING) - 1)).clip(0, len(DIVERGING) - 1).astype(int)
        cells = [_cell(ch, DIVERGING[i]) for ch, i in zip(text, idx)]
        legend = (f"layer {unit[0]} unit {unit[1]}, {CHANNEL_NAMES[channel]}: blue {lo:g} .. white {(lo + hi) / 2:g} "
                  f".. red {hi:g}")
    return "".join(cells) + "\x1b[0m", legend


def unknown_note(ex: Explanation) -> str | None:
    if not ex.skipped:
        return None
    return (f"{ex.skipped:,} characters outside the model's vocabulary were left out: "
            f"{repr(ex.unknown)[1:-1]}")
