"""The run search language: MLflow's filter strings, with OR, NOT and metric aggregates.

``parse_filter("params.lr < 0.01 and metrics.loss.min < 0.2")`` reads a filter;
``parse_order_by(["metrics.loss.min ASC"])`` an ordering; ``select`` evaluates both over
a table of runs whose columns a caller resolves (``columns(ref)``), vectorized with
pyarrow.compute. This module touches no store: it knows names (``Ref``), not where their
values live. docs/SEARCH.md is the language reference; the rules a user relies on are
there, the reasons are here.

A value reaches ``select`` as one or two arrays per ref (query/runs.py: a typed column
and a text column for a key whose runs disagree in kind, at most one non-null in a row).
Each predicate is evaluated on each array (query/predicates.py), false where the array
is null, and the arrays' answers are OR-ed: a row is kept when the array that holds its
value says so.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..engine.errors import InvalidArgumentError, InvalidTypeError
from .predicates import Literal, array_kind, as_numpy, match_any, microseconds, present

__all__ = ["Ref", "OrderKey", "Filter", "parse_filter", "parse_order_by", "select",
           "AGGREGATES", "ATTRIBUTES"]

AGGREGATES = ("last", "first", "min", "max", "mean", "count")

# MLflow's attribute names (and steplog's own column names) -> steplog's run columns.
ATTRIBUTES = {"run_id": "id", "id": "id", "run_uuid": "id",
              "run_name": "name", "name": "name",
              "run name": "name", "status": "status", "start_time": "start_time", "created": "start_time",
              "end_time": "end_time",
              "experiment_id": "experiment", "experiment": "experiment",
              "parent": "parent", "parent_run_id": "parent", "kind": "kind"}
TIME_ATTRIBUTES = ("start_time", "end_time")
MAX_DEPTH = 64
_ATTRIBUTE_LIST = ", ".join(sorted(name for name in ATTRIBUTES if " " not in name))

_PREFIXES = {"params": "param", "param": "param", "parameter": "param", "parameters": "param",
             "metrics": "metric", "metric": "metric",
             "tags": "tag", "tag": "tag", "resources": "resource", "resource": "resource",
             "attributes": "attribute", "attribute": "attribute", "attr": "attribute",
             "run": "attribute"}


class Ref(NamedTuple):
    """A column the filter or the ordering needs (hashable)."""
    kind: str                   # "param" | "tag" | "resource" | "attribute" | "metric"
    key: str                    # flattened key, attribute column name, or metric name
    agg: str | None = None      # metrics only: one of AGGREGATES
    context: tuple = ()         # metrics only: sorted ((key, value), ...) of str; () = none

    def __str__(self) -> str:
        if self.kind != "metric":
            return f"{self.kind}s.{self.key}" if self.kind != "attribute" else f"attributes.{self.key}"
        context = ", ".join(f"{k}={v!r}" for k, v in self.context)
        return f"metrics.{self.key}" + (f"{{{context}}}" if context else "") + f".{self.agg}"


class OrderKey(NamedTuple):
    ref: Ref
    descending: bool = False


_Columns = Callable[[Ref], Sequence[pa.Array]]
_NEGATED = {"!=": "=", "not in": "in", "not like": "like", "not ilike": "ilike"}


# ---------------------------------------------------------------- the expression tree

class Filter:
    """A parsed filter: ``refs`` are the columns it reads, ``mask(columns, n)`` the rows it
    keeps. ``parse_filter`` makes one; ``str()`` gives back the text it was read from."""

    def __init__(self, node: "_Node | None", text: str = ""):
        self._node = node
        self.text = text
        self.refs: frozenset[Ref] = frozenset() if node is None else frozenset(node.refs())

    @property
    def keeps_all(self) -> bool:
        """True for the filter of None or a blank string."""
        return self._node is None

    def mask(self, columns: _Columns, n: int) -> np.ndarray:
        """A bool array of length n: which rows the filter keeps."""
        if self._node is None:
            return np.ones(n, bool)
        return self._node.evaluate(_cached(columns, n), n)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"


class _Node:
    def refs(self):
        raise NotImplementedError

    def evaluate(self, get, n: int) -> np.ndarray:
        raise NotImplementedError


class _Bool(_Node):
    def __init__(self, op: str, parts: list):
        self.op, self.parts = op, parts

    def refs(self):
        return {ref for part in self.parts for ref in part.refs()}

    def evaluate(self, get, n):
        both = self.op == "and"
        result = self.parts[0].evaluate(get, n)
        for part in self.parts[1:]:
            if not result.any() if both else result.all():   # the rest cannot change it
                break
            result = (result & part.evaluate(get, n)) if both else (result | part.evaluate(get, n))
        return result


class _Not(_Node):
    def __init__(self, part: _Node):
        self.part = part

    def refs(self):
        return self.part.refs()

    def evaluate(self, get, n):
        return ~self.part.evaluate(get, n)


class _Clause(_Node):
    """ref op literal(s). ``fold``: compare text case-insensitively (attributes.status)."""

    def __init__(self, ref: Ref, op: str, literals: list, fold: bool = False):
        self.ref, self.op, self.literals, self.fold = ref, op, literals, fold

    def refs(self):
        return {self.ref}

    def evaluate(self, get, n):
        arrays = get(self.ref)
        if self.op in ("is null", "is not null"):
            found = present(arrays, n)
            return found if self.op == "is not null" else ~found
        if self.op in _NEGATED:
            positive = _Clause(self.ref, _NEGATED[self.op], self.literals, self.fold)
            return present(arrays, n) & ~positive.evaluate(get, n)
        result = np.zeros(n, bool)
        for array in arrays:
            result |= match_any(array, self.op, self.literals, self.fold)
        return result


def _cached(columns: _Columns, n: int):
    """columns(ref) once per ref, as a list of plain arrays of length n."""
    cache: dict[Ref, list[pa.Array]] = {}

    def get(ref: Ref) -> list[pa.Array]:
        if ref not in cache:
            found = columns(ref)
            found = [found] if isinstance(found, (pa.Array, pa.ChunkedArray)) else list(found)
            arrays = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in found]
            for array in arrays:
                if len(array) != n:
                    raise ValueError(f"columns({ref}) gave {len(array)} values for {n} runs")
            cache[ref] = [a.dictionary_decode() if pa.types.is_dictionary(a.type) else a for a in arrays]
        return cache[ref]

    return get


# ---------------------------------------------------------------- the parser

class _Parser:
    """Recursive descent over the text; ``pos`` moves forward only."""

    def __init__(self, text: str, argument: str):
        self.text, self.argument, self.pos, self.depth = text, argument, 0, 0

    def fail(self, message: str, pos: int | None = None):
        pos = self.pos if pos is None else pos
        shown, column = _excerpt(re.sub(r"\s", " ", self.text), pos)   # one line: the caret lines up
        raise InvalidArgumentError(self.argument, f"{message} at position {pos}:\n  {shown}\n  {' ' * column}^")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos:self.pos + 1]

    def at_end(self) -> bool:
        return self.peek() == ""

    def word(self, *words: str) -> str | None:
        """Takes the next word when it is one of ``words`` (any case)."""
        self.skip()
        match = _WORD.match(self.text, self.pos)
        if match and match.group().lower() in words:
            self.pos = match.end()
            return match.group().lower()
        return None

    # expression := conjunction (OR conjunction)* ; conjunction := negation (AND negation)*
    def expression(self) -> _Node:
        parts = [self.conjunction()]
        while self.word("or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else _Bool("or", parts)

    def conjunction(self) -> _Node:
        parts = [self.negation()]
        while self.word("and"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else _Bool("and", parts)

    def negation(self) -> _Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:   # well before Python's recursion limit
            self.fail(f"nested deeper than {MAX_DEPTH} parentheses or NOTs")
        try:
            return self.negated_or_grouped()
        finally:
            self.depth -= 1

    def negated_or_grouped(self) -> _Node:
        if self.word("not"):
            return _Not(self.negation())
        if self.peek() != "(":
            return self.clause()
        opened = self.pos
        self.pos += 1
        inner = self.expression()
        if self.peek() != ")":
            if self.at_end():
                self.fail("unbalanced '(': no ')' closes it", opened)
            self.fail("expected AND, OR or ')'")
        self.pos += 1
        return inner

    def clause(self) -> _Node:
        ref = self.ref()
        op, op_at = self.operator(ref)
        if op in ("is null", "is not null"):
            return _Clause(ref, op, [])
        if op in ("in", "not in"):
            literals = self.literal_list(op)
        else:
            literals = [self.literal(op)]
        if ref.kind == "attribute" and ref.key in TIME_ATTRIBUTES and op in _LIKES:
            self.fail(f"{op.upper()} needs text; {ref} is a time", op_at)
        for lit, at in literals:
            self.check_literal(ref, op, lit, at)
        literals = [self.convert(ref, lit, at) for lit, at in literals]
        return _Clause(ref, op, literals, fold=ref == Ref("attribute", "status"))

    # ref := prefix '.' segment ('.' segment)* [context] ['.' aggregate] | attribute name
    def ref(self) -> Ref:
        self.skip()
        start = self.pos
        if self.text[start:start + 1] == "`":   # MLflow's `Run Name` and the like, alone
            name, _, _ = self.segment()
            if name.lower() not in ATTRIBUTES:
                self.fail(f"unknown attribute {name!r}; one of {_ATTRIBUTE_LIST}", start)
            return Ref("attribute", ATTRIBUTES[name.lower()])
        match = _WORD.match(self.text, self.pos)
        if not match:
            quoted = self.text[self.pos:self.pos + 1] in ("'", '"')
            self.fail("expected a name (params.x, metrics.x, tags.x, attributes.x)"
                      + ("" if self.pos < len(self.text) else ", not the end")
                      + (", not a quoted value: a clause is name op value" if quoted else ""))
        head = match.group().lower()
        self.pos = match.end()
        if head in _PREFIXES and self.text[self.pos:self.pos + 1] == ".":
            self.pos += 1
            return self.prefixed(_PREFIXES[head], start)
        if head in ATTRIBUTES:
            return Ref("attribute", ATTRIBUTES[head])
        if head in _PREFIXES:
            self.fail(f"expected '.' and a name after {match.group()!r}")
        self.fail(f"unknown name {match.group()!r}: expected params., metrics., tags. or "
                  f"attributes. before a name, or one of {_ATTRIBUTE_LIST}", start)

    def prefixed(self, kind: str, start: int) -> Ref:
        segments = self.segments()
        if kind == "attribute":
            if len(segments) > 1 or segments[0][0].lower() not in ATTRIBUTES:
                self.fail(f"unknown attribute; one of {_ATTRIBUTE_LIST}", segments[0][2])
            return Ref("attribute", ATTRIBUTES[segments[0][0].lower()])
        if kind != "metric":
            if self.text[self.pos:self.pos + 1] == "{":
                self.fail("a context {...} belongs to metrics only")
            return Ref(kind, ".".join(s[0] for s in segments))
        return self.metric(segments)

    def metric(self, segments: list) -> Ref:
        last, quoted, last_at = segments[-1]
        if self.text[self.pos:self.pos + 1] != "{":
            if len(segments) > 1 and not quoted and last in AGGREGATES:
                return Ref("metric", ".".join(s[0] for s in segments[:-1]), last)
            return Ref("metric", ".".join(s[0] for s in segments), "last")
        if len(segments) > 1 and not quoted and last in AGGREGATES:
            self.fail(f"the aggregate goes after the context: metrics.name{{...}}.{last}", last_at)
        context = self.context()
        agg = "last"
        if self.text[self.pos:self.pos + 1] == ".":
            self.pos += 1
            at = self.pos
            match = _WORD.match(self.text, self.pos)
            if not match or match.group() not in AGGREGATES:
                self.fail(f"unknown aggregate; one of {', '.join(AGGREGATES)}", at)
            self.pos, agg = match.end(), match.group()
        return Ref("metric", ".".join(s[0] for s in segments), agg, context)

    def segments(self) -> list[tuple[str, bool, int]]:
        """Name segments joined by '.', each bare or quoted: (text, quoted, position)."""
        segments = [self.segment()]
        while self.text[self.pos:self.pos + 1] == ".":
            self.pos += 1
            segments.append(self.segment())
        return segments

    def segment(self) -> tuple[str, bool, int]:
        at = self.pos
        if self.text[at:at + 1] in ("`", '"'):
            text = self.quoted()
            if not text:
                self.fail("empty name", at)
            return text, True, at
        match = _SEGMENT.match(self.text, at)
        if not match:
            self.fail("expected a name after '.' (quote it with ` or \" if it holds other characters)")
        self.pos = match.end()
        return match.group(), False, at

    def quoted(self) -> str:
        """A quoted string from pos: a backslash before the quote or a backslash stands
        for it, a doubled quote for one quote; any other backslash stays."""
        quote, start = self.text[self.pos], self.pos
        out, i = [], self.pos + 1
        while i < len(self.text):
            ch = self.text[i]
            if ch == "\\" and self.text[i + 1:i + 2] in (quote, "\\"):
                out.append(self.text[i + 1])
                i += 2
            elif ch == quote and self.text[i + 1:i + 2] == quote:
                out.append(quote)
                i += 2
            elif ch == quote:
                self.pos = i + 1
                return "".join(out)
            else:
                out.append(ch)
                i += 1
        self.fail(f"unterminated string: no closing {quote} for this quote", start)

    # context := '{' key '=' value (',' key '=' value)* '}'
    def context(self) -> tuple:
        self.pos += 1
        pairs: dict[str, str] = {}
        while self.peek() != "}":
            if pairs and not self.take(","):
                self.fail("expected ',' or '}' in the context")
            self.skip()
            key_at = self.pos
            key = self.context_word("a context key")
            if key in pairs:
                self.fail(f"context key {key!r} given twice", key_at)
            if not self.take("="):
                self.fail(f"expected '=' after the context key {key!r}")
            pairs[key] = self.context_word(f"a value for the context key {key!r}")
        self.pos += 1
        return tuple(sorted(pairs.items()))

    def context_word(self, what: str) -> str:
        self.skip()
        if self.text[self.pos:self.pos + 1] in ("'", '"', "`"):
            return self.quoted()
        match = _CONTEXT_WORD.match(self.text, self.pos)
        if not match:
            self.fail(f"expected {what}" + ("" if self.pos < len(self.text) else "; the context has no '}'"))
        self.pos = match.end()
        return match.group()

    def take(self, symbol: str) -> bool:
        if self.peek() == symbol:
            self.pos += 1
            return True
        return False

    def operator(self, ref: Ref) -> tuple[str, int]:
        self.skip()
        at = self.pos
        for symbol, op in (("!=", "!="), ("<>", "!="), ("<=", "<="), (">=", ">="), ("==", "="),
                           ("=", "="), ("<", "<"), (">", ">")):
            if self.text.startswith(symbol, at):
                self.pos += len(symbol)
                return op, at
        word = self.word("like", "ilike", "in", "not", "is")
        if word in ("like", "ilike", "in"):
            return word, at
        if word == "not":
            second = self.word("like", "ilike", "in")
            if second:
                return f"not {second}", at
            self.fail("expected IN, LIKE or ILIKE after NOT")
        if word == "is":
            negated = self.word("not")
            if not self.word("null"):
                self.fail("expected NULL or NOT NULL after IS")
            return ("is not null" if negated else "is null"), at
        self.fail(f"expected an operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN, IS NULL) after {ref}")

    def literal_list(self, op: str) -> list[tuple[Literal, int]]:
        if not self.take("("):
            self.fail(f"expected '(' and a list of values after {op.upper()}")
        literals = []
        while True:
            if self.peek() == ")" and not literals:
                self.fail(f"{op.upper()} needs at least one value")
            literals.append(self.literal(op if not literals else ","))
            if self.take(")"):
                return literals
            if not self.take(","):
                self.fail("expected ',' or ')' in the list" if not self.at_end()
                          else "unbalanced '(': the list has no ')'")

    def literal(self, after: str) -> tuple[Literal, int]:
        self.skip()
        at = self.pos
        if self.text[at:at + 1] in ("'", '"'):
            return Literal("str", self.quoted()), at
        match = _NUMBER.match(self.text, at)
        if match:
            self.pos = match.end()
            return Literal("number", _number(match.group())), at
        match = _WORD.match(self.text, at)
        word = match.group().lower() if match else None
        if word in ("true", "false"):
            self.pos = match.end()
            return Literal("bool", word == "true"), at
        if word == "null":
            self.fail("NULL is no value: use IS NULL or IS NOT NULL", at)
        shown = after.upper() if after[0].isalpha() else after
        self.fail(f"expected a value after {shown!r} (a number, a quoted string, true or false)", at)

    def check_literal(self, ref: Ref, op: str, lit: Literal, at: int) -> None:
        if op in _LIKES and lit.kind != "str":
            self.fail(f"{op.upper()} needs a quoted pattern", at)
        if lit.kind == "bool" and op not in ("=", "!=", "in", "not in"):
            self.fail(f"{op} has no meaning for {str(lit.value).lower()}; use = or !=", at)

    def convert(self, ref: Ref, lit: Literal, at: int) -> Literal:
        """A time attribute compared with a string reads it as ISO-8601."""
        if ref.kind != "attribute" or ref.key not in TIME_ATTRIBUTES:
            return lit
        if lit.kind == "bool":
            self.fail(f"{ref} is a time: compare it with milliseconds since the epoch or an ISO-8601 string", at)
        if lit.kind == "str":
            return Literal("time", _iso_microseconds(lit.value, lambda: self.fail(
                f"{lit.value!r} is no ISO-8601 time (e.g. '2024-05-01T12:00:00Z')", at)))
        return lit


_LIKES = ("like", "ilike", "not like", "not ilike")
_WORD = re.compile(r"\w+")
_SEGMENT = re.compile(r"[\w/\-]+")            # a bare name segment: train/loss, my-param
_CONTEXT_WORD = re.compile(r"[\w/.+\-]+")     # a bare context key or value: val, 0, 0.5
_NUMBER = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?(?![\w.])"
                     r"|(?i:infinity|inf|nan)(?!\w))")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def _excerpt(text: str, pos: int, width: int = 100) -> tuple[str, int]:
    """At most ``width`` characters of a long text around pos, and pos in them."""
    if len(text) <= width:
        return text, pos
    start = max(0, min(pos - width // 2, len(text) - width))
    head, tail = ("..." if start else ""), ("..." if start + width < len(text) else "")
    return head + text[start:start + width] + tail, pos - start + len(head)


def _number(text: str):
    if re.fullmatch(r"[+-]?[0-9]+", text):
        return int(text)
    return float(text)


def _iso_microseconds(text: str, fail) -> int:
    try:
        moment = _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        fail()
    if moment.tzinfo is None:   # a time without a zone is UTC, like the stored times
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return (moment - _EPOCH) // _dt.timedelta(microseconds=1)


# ---------------------------------------------------------------- public entry points

def parse_filter(text: str | None, argument: str = "where") -> Filter:
    """Reads a filter; None or a blank string keeps every run. A syntax error raises
    InvalidArgumentError naming ``argument``, quoting the text with a caret under the
    position (counted from 0)."""
    if text is None:
        return Filter(None)
    if not isinstance(text, str):
        raise InvalidTypeError(argument, f"expected a filter string or None, got {type(text).__name__}")
    parser = _Parser(text, argument)
    if parser.at_end():
        return Filter(None, text)
    node = parser.expression()
    if not parser.at_end():
        if parser.peek() == ")":
            parser.fail("unbalanced ')': no '(' opens it")
        parser.fail("expected AND, OR or the end")
    return Filter(node, text)


def parse_order_by(items, argument: str = "order_by") -> list[OrderKey]:
    """items: None, one str or a list of str, each "<name> [ASC|DESC]" (ASC when left out)."""
    if items is None:
        return []
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, (list, tuple)):
        raise InvalidTypeError(argument, f"expected a str or a list of str, got {type(items).__name__}")
    keys = []
    for i, item in enumerate(items):
        label = argument if len(items) == 1 else f"{argument}[{i}]"
        if not isinstance(item, str):
            raise InvalidTypeError(label, f"expected a str like 'metrics.loss.min ASC', got {type(item).__name__}")
        parser = _Parser(item, label)
        ref = parser.ref()
        direction = parser.word("asc", "desc")
        if not parser.at_end():
            comma = parser.text[parser.pos:parser.pos + 1] == ","
            parser.fail("expected ASC, DESC or the end" + (
                "; give several keys as a list: ['params.lr DESC', 'metrics.loss.min']" if comma else ""))
        keys.append(OrderKey(ref, direction == "desc"))
    return keys


def select(filter: Filter, order: list[OrderKey], limit: int | None, columns: _Columns, n: int) -> np.ndarray:
    """The row indices (int64) of the rows of a table of n runs that ``filter`` keeps,
    sorted by ``order`` (nulls last in either direction, then NaN before them; ties keep
    the table's order), at most ``limit`` of them (None: all).

    ``columns(ref)`` gives the values of a ref for all n rows: one or two arrays of
    length n, at most one non-null in a row (query/runs.py); it is called once per ref."""
    if limit is not None and (type(limit) is not int and not isinstance(limit, np.integer)):
        raise InvalidTypeError("limit", f"expected an int or None, got {type(limit).__name__}")
    if limit is not None and limit < 0:
        raise InvalidArgumentError("limit", f"expected an int >= 0 or None, got {limit}")
    get = _cached(columns, n)
    rows = np.arange(n, dtype=np.int64) if filter.keeps_all else np.flatnonzero(filter._node.evaluate(get, n))
    if order and len(rows) > 1:
        if limit is not None and limit < len(rows):
            rows = _may_make_the_cut(get(order[0].ref), order[0].descending, rows, n, limit)
        rows = rows[_ordering(get, order, rows, n, limit)]
    return rows.astype(np.int64, copy=False)[:limit]


# ---------------------------------------------------------------- ordering

_SORT_CLASSES = {"int": 0, "float": 0, "time": 0, "bool": 1, "str": 2}


def _ordering(get, order: list[OrderKey], rows: np.ndarray, n: int, limit: int | None) -> np.ndarray:
    """Positions in ``rows`` in the wanted order (the first ``limit`` of them at least)."""
    m = len(rows)
    taken = pa.array(rows)
    keys = [_sort_key([a if m == n else a.take(taken) for a in get(key.ref)], key.descending, m)
            for key in order]
    if math.prod(size for _, size in keys) >= 1 << 62:   # too many keys to fold into one int64
        return np.lexsort([np.arange(m)] + [key for key, _ in keys[::-1]])
    combined = keys[0][0]
    for key, size in keys[1:]:
        combined = combined * size + key
    if limit is not None and limit < m:   # sort only the rows that can make the cut
        cut = np.partition(combined, limit)[limit] if limit else -1
        candidates = np.flatnonzero(combined <= cut)
        return candidates[np.argsort(combined[candidates], kind="stable")]
    return np.argsort(combined, kind="stable")


def _may_make_the_cut(arrays: list, descending: bool, rows: np.ndarray, n: int, limit: int) -> np.ndarray:
    """The rows that can be among the first ``limit`` when the first sort key is one
    numeric array (a top 10 by val_loss): a partition on its values, no ranking. Their
    float64 copies keep the order (maybe merging ties), so nothing that belongs is cut."""
    arrays = [a for a in arrays if a.null_count < len(a)]
    if len(arrays) != 1 or array_kind(arrays[0]) not in ("int", "float", "time"):
        return rows
    array = arrays[0] if len(rows) == n else arrays[0].take(pa.array(rows))
    if array_kind(array) == "time":
        array = microseconds(array)
    values = array.to_numpy(zero_copy_only=False).astype(np.float64)   # a null reads as NaN
    if descending:
        values = -values
    values[np.isnan(values)] = np.inf   # NaN and nulls sort last either way
    if limit == 0:
        return rows[:0]
    return rows[values <= np.partition(values, limit - 1)[limit - 1]]


def _sort_key(arrays: list, descending: bool, m: int) -> tuple[np.ndarray, int]:
    """(an int64 key per row whose ascending order is the wanted order, its bound):
    numbers (and times) before bools before text, reversed for DESC, then NaN, then
    nulls, whatever the direction."""
    key = np.zeros(m, np.int64)
    nan = np.zeros(m, bool)
    valid_any = np.zeros(m, bool)
    total = 0
    for group in _group_by_class(arrays):
        ranks = pc.rank(group, sort_keys="ascending", tiebreaker="dense").to_numpy().astype(np.int64)
        valid = as_numpy(group.is_valid())
        if pa.types.is_floating(group.type):
            nan |= as_numpy(pc.is_nan(group))
            valid &= ~nan
        key[valid] = total + ranks[valid]
        total += int(ranks[valid].max(initial=0))
        valid_any |= valid
    if descending:
        key[valid_any] = total + 1 - key[valid_any]
    key[~valid_any] = total + 2     # null
    key[nan] = total + 1
    return key, total + 3


def _group_by_class(arrays: list) -> list[pa.Array]:
    """The arrays of one sort class merged into one (numbers, bools, text), in class order."""
    groups: dict[int, list] = {}
    for array in arrays:
        kind = array_kind(array)
        if kind in _SORT_CLASSES:
            if kind == "time":
                array = microseconds(array)
            groups.setdefault(_SORT_CLASSES[kind], []).append(array)
    merged = []
    for cls in sorted(groups):
        members = groups[cls]
        if len(members) > 1:
            common = pa.float64() if any(pa.types.is_floating(a.type) for a in members) else members[0].type
            members = [pc.coalesce(*[a.cast(common) for a in members])]
        merged.append(members[0])
    return merged
