"""What `charnn corpus FILE` says: what the trainer will see in a text, before it trains on it.

Its size in bytes and characters; the vocabulary with each character's count, rarest first, so
stray characters stand out; the odd characters (control characters such as CR, NUL and tabs, a
byte-order mark, unusual spaces, the replacement character) with where each first occurs; the split
at --val-frac and what an evaluation scores; and the id cache. It reads the ids (from the cache,
which it builds if needed) in chunks, so any size of text is fine. The lines are returned; the CLI
prints them.
"""

from __future__ import annotations

import unicodedata

import numpy as np

from charnn import data, idcache
from charnn.reports import Reporter, home_short, megabytes, seconds

CHUNK = 1 << 22  # ids counted at a time (np.bincount makes an 8-byte copy of them: 32 MB)
WIDTH = 100  # characters a line of the vocabulary listing fills at most
NAMES = {"\r": "carriage return (CR: Windows line ends?)", "\t": "tab", "\x00": "NUL",
         "\ufeff": "byte-order mark (BOM)", "\ufffd": "replacement character (from a bad conversion?)",
         "\u00a0": "no-break space"}


def odd(ch: str) -> str | None:
    """What is odd about a character for a training text, or None if nothing is."""
    if ch in NAMES:
        return NAMES[ch]
    category = unicodedata.category(ch)
    if ch in "\n " or category[0] not in "CZ":
        return None
    kind = {"Cc": "control character", "Cf": "invisible format character", "Co": "private-use character",
            "Cn": "unassigned code point", "Cs": "surrogate"}.get(category, "unusual space or separator")
    name = unicodedata.name(ch, "")
    return f"{kind} U+{ord(ch):04X}" + (f" {name.lower()}" if name else "")


def survey(path, val_frac: float, val_chars: int | None, cache_dir: str | None = None, use_cache: bool = True,
           reporter: Reporter | None = None) -> list[str]:
    reporter = reporter or Reporter()
    corpus, source = idcache.load_corpus(path, cache_dir, use_cache, reporter=reporter)
    ids, vocab = corpus.ids, corpus.vocab
    counts = np.zeros(vocab.size, dtype=np.int64)  # (V,)
    with reporter.task("counting", len(ids), "char") as bar:
        for i in range(0, len(ids), CHUNK):
            counts += np.bincount(ids[i:i + CHUNK], minlength=vocab.size)
            bar.update(min(CHUNK, len(ids) - i))
    lines = [f"file        {path}: {corpus.size:,} bytes, {len(ids):,} characters"]
    lines += _listing(f"vocabulary  {vocab.size} distinct characters, rarest first: ",
                      [f"{ch!r} {counts[i]:,}" for i, ch in ((i, vocab.chars[i]) for i in np.argsort(counts, kind="stable"))])
    oddities = [(i, odd(ch)) for i, ch in enumerate(vocab.chars) if odd(ch)]
    lines.append("odd         none" if not oddities else f"odd         {len(oddities)} kind(s) of character a text rarely "
                 "means to hold, with where each first occurs:")
    for i, what in oddities:
        at = _first(ids, i)
        line, column = _line_and_column(ids, at, vocab)
        lines.append(f"  {vocab.chars[i]!r} {what}: {counts[i]:,} times, first at character {at:,} "
                     f"(line {line:,}, column {column:,})")
    lines.append(_split(len(ids), val_frac, val_chars))
    if source.cache is None:
        lines.append("cache       none kept (--no-cache)")
    else:
        how = "reused, checked in" if source.status == "reused" else f"{source.status} now in"
        lines.append(f"cache       {home_short(source.cache)}: {how} {seconds(source.seconds)}, {megabytes(source.nbytes)}")
    return lines


def _listing(head: str, entries: list[str]) -> list[str]:
    """head then the entries, comma-separated, wrapped at WIDTH with a 2-space indent."""
    lines, line = [], head
    for k, entry in enumerate(entries):
        piece = entry + ("," if k < len(entries) - 1 else "")
        if len(line) + len(piece) + 1 > WIDTH and line.strip():
            lines.append(line.rstrip())
            line = "  "
        line += piece + " "
    return lines + [line.rstrip()]


def _first(ids: np.ndarray, i: int) -> int:
    """The position of the first id i (which occurs) in ids."""
    for start in range(0, len(ids), CHUNK):
        found = np.flatnonzero(ids[start:start + CHUNK] == i)
        if len(found):
            return start + int(found[0])
    raise AssertionError("the id occurs: it is in the vocabulary")


def _line_and_column(ids: np.ndarray, at: int, vocab: data.Vocab) -> tuple[int, int]:
    """1-based line and column of position `at`, counting newlines before it."""
    if "\n" not in vocab.chars:
        return 1, at + 1
    nl = vocab.chars.index("\n")
    lines, last = 1, -1  # newlines before `at`, and the position of the last of them
    for start in range(0, at, CHUNK):
        found = np.flatnonzero(ids[start:min(start + CHUNK, at)] == nl)
        lines += len(found)
        if len(found):
            last = start + int(found[-1])
    return lines, at - last


def _split(n_chars: int, val_frac: float, val_chars: int | None) -> str:
    n_val = int(n_chars * val_frac)
    head = f"split       at --val-frac {val_frac:g}: {n_chars - n_val:,} training characters, {n_val:,} validation"
    if n_val < 2:
        return head + " (too few to validate: raise --val-frac)"
    pieces = data.pieces(n_val, val_chars)
    scored = "all" if pieces.predicted == n_val - 1 else "a fixed subset of"
    return head + f"; an evaluation scores {scored} {pieces.predicted:,} of them, in {len(pieces.starts)} pieces"
