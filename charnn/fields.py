"""Describing a JSON value once: what it may hold, what it means, what its absence means.

A description is a tree of rules (Whole, Number, OneOf, Text, Maybe, ListOf, Record). Each rule
checks a value and returns it (a Record returns a copy with its absent fields filled in), or raises
Invalid naming the field, what it holds and what was expected; each also says in words what it
accepts, so the README's tables are made from the same description as the checks.

Used for the checkpoint header (header.py) and the two config records (config.py), whose fields a
hand-edited or foreign checkpoint may have changed in any way JSON allows: a value of another
type, null, NaN or infinity (Python's json reads both), a number of any size, a missing field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from charnn.errors import CharnnError

# Counts and amounts are at most 2**53: JSON readers keep whole numbers exactly up to there, and a
# larger one would overflow where charnn turns it into a float (steps per epoch, an epoch fraction).
MAX_COUNT = 2 ** 53
MISSING = object()  # the value of a field that is not there
REQUIRED = object()  # Field.absent of a field every checkpoint has
SHOWN = 40  # characters of a value quoted in a message


def shown(value) -> str:
    """A value as JSON (NaN and Infinity as Python's json writes them), shortened for a one-line
    message."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # not a JSON value, or an int too long for str()
        text = f"a {type(value).__name__}"
    return text if len(text) <= SHOWN else text[:SHOWN - 3] + "..."


class Invalid(CharnnError):
    """A field whose value does not fit its description."""

    def __init__(self, name: str, value, expected: str):
        self.name, self.value, self.expected = name, value, expected
        holds = "is missing" if value is MISSING else f"holds {shown(value)}"
        super().__init__(f"{name} {holds}; expected {expected}")


@dataclass(frozen=True)
class Field:
    rule: "Rule"
    text: str  # what the field holds, for the README
    absent: object = REQUIRED  # what the field means in a file written before it existed


class Rule:
    doc: str  # what the rule accepts, in words: "a positive whole number"

    def check(self, value, name: str):
        """value, or a normalised copy of it; raises Invalid(name, value, ...) if it does not fit."""
        raise NotImplementedError


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # True is an int to Python


class Whole(Rule):
    """A whole number (a JSON integer, not 3.0) from lo to hi."""

    def __init__(self, lo: int = 0, hi: int = MAX_COUNT, doc: str | None = None):
        self.lo, self.hi = lo, hi
        self.doc = doc or ("a positive whole number" if lo == 1 and hi == MAX_COUNT else
                           f"a whole number >= {lo}" if hi == MAX_COUNT else f"a whole number from {lo} to {hi}")

    def check(self, value, name):
        if not (isinstance(value, int) and not isinstance(value, bool) and self.lo <= value <= self.hi):
            over = isinstance(value, int) and value > self.hi
            raise Invalid(name, value, self.doc + (f", at most {self.hi}" if over else ""))
        return value


class Number(Rule):
    """A finite number between lo and hi; above=True excludes lo, below=True excludes hi."""

    def __init__(self, lo: float = 0.0, hi: float = MAX_COUNT, above=False, below=False, doc: str | None = None):
        self.lo, self.hi, self.above, self.below = lo, hi, above, below
        lower = f"above {lo:g}" if above else f"at least {lo:g}"
        upper = f" and {'below' if below else 'at most'} {hi:g}" if hi != MAX_COUNT else ""
        self.doc = doc or ("a positive number" if above and lo == 0 and not upper else
                           f"a number >= {lo:g}" if not above and not upper else f"a number {lower}{upper}")

    def check(self, value, name):
        ok = _is_number(value) and math.isfinite(value)
        ok = ok and (value > self.lo if self.above else value >= self.lo)
        ok = ok and (value < self.hi if self.below else value <= self.hi)
        if not ok:
            raise Invalid(name, value, self.doc)
        return value


class OneOf(Rule):
    """One of a few values, of the same type too (1 is not true, 1.0 is not 1)."""

    def __init__(self, *values):
        self.values = values
        self.doc = " or ".join(json.dumps(v) for v in values) if len(values) < 3 else \
            "one of " + ", ".join(str(v) for v in values)

    def check(self, value, name):
        if not any(type(value) is type(v) and value == v for v in self.values):
            raise Invalid(name, value, self.doc)
        return value


class Text(Rule):
    """A string for which valid(value) is true."""

    def __init__(self, doc: str, valid=bool):
        self.doc, self.valid = doc, valid

    def check(self, value, name):
        if not (isinstance(value, str) and self.valid(value)):
            raise Invalid(name, value, self.doc)
        return value


class Maybe(Rule):
    """null, or a value of `rule`."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.doc = f"null or {rule.doc}"

    def check(self, value, name):
        if value is None:
            return None
        try:
            return self.rule.check(value, name)
        except Invalid as e:
            if e.name != name:  # a field inside the value is wrong: that message is the clearer one
                raise
            raise Invalid(name, value, self.doc) from None


class ListOf(Rule):
    """A list (JSON array) of values of `rule`."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.doc = f"a list, each {rule.doc}"

    def check(self, value, name):
        if not isinstance(value, list):
            raise Invalid(name, value, self.doc)
        return [self.rule.check(item, f"{name}[{i}]") for i, item in enumerate(value)]


class Record(Rule):
    """A JSON object with exactly these fields, but for those that may be absent (filled in with
    what their absence means). A field this charnn does not describe is refused: it was written
    by a newer charnn or another program, and whatever it says would be ignored."""

    def __init__(self, fields: dict[str, Field], doc: str = "an object", across=None):
        self.fields, self.doc = fields, doc
        self.across = across  # across(checked, name): the checks between its fields, raising Invalid

    def check(self, value, name):
        if not isinstance(value, dict):
            raise Invalid(name, value, f"{self.doc} with the fields {', '.join(self.fields)}")
        for key in value:
            if key not in self.fields:
                raise Invalid(_join(name, key), value[key], "no such field (this version of charnn does not know it)")
        checked = {}
        for key, field in self.fields.items():
            if key in value:
                checked[key] = field.rule.check(value[key], _join(name, key))
            elif field.absent is REQUIRED:
                raise Invalid(_join(name, key), MISSING, field.rule.doc)
            else:
                checked[key] = field.absent
        if self.across is not None:
            self.across(checked, name)
        return checked


def _join(name: str, key: str) -> str:
    return f"{name}.{key}" if name else key


def rows(fields: dict[str, Field], prefix: str = ""):
    """(dotted name, Field) of every field and, after it, of the fields of the records inside it."""
    for key, field in fields.items():
        yield prefix + key, field
        rule = field.rule.rule if isinstance(field.rule, Maybe) else field.rule
        if isinstance(rule, Record):
            yield from rows(rule.fields, f"{prefix}{key}.")
