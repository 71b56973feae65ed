"""Which values of one Arrow array a comparison with one literal keeps: the value rules
of the search language (docs/SEARCH.md, "Values and comparisons"), vectorized with
pyarrow.compute. Each function answers with a numpy bool array, false where the array is
null; query/search.py combines the answers of a ref's arrays and of a filter's clauses.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Literal(NamedTuple):
    kind: str       # "number" | "str" | "bool" | "time" (microseconds since the epoch)
    value: object


_COMPARE = {"=": pc.equal, "<": pc.less, "<=": pc.less_equal, ">": pc.greater, ">=": pc.greater_equal}


def present(arrays: list, n: int) -> np.ndarray:
    """Rows where one of the arrays holds a value (NaN included)."""
    result = np.zeros(n, bool)
    for array in arrays:
        result |= as_numpy(array.is_valid())
    return result


def as_numpy(mask) -> np.ndarray:
    """A pyarrow bool result as numpy, null read as false."""
    return mask.fill_null(False).to_numpy(zero_copy_only=False)


def array_kind(array: pa.Array) -> str:
    t = array.type
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "str"
    if pa.types.is_timestamp(t):
        return "time"
    return "null" if pa.types.is_null(t) else "other"


def match_any(array: pa.Array, op: str, literals: list, fold: bool) -> np.ndarray:
    """Rows of one array that op keeps; "in" keeps a row equal to any literal."""
    kind = array_kind(array)
    if kind in ("null", "other") or array.null_count == len(array):
        return np.zeros(len(array), bool)
    if op != "in":
        return _match(array, kind, op, literals[0], fold)
    strings = [lit.value for lit in literals if lit.kind == "str"]
    if kind == "str" and len(strings) == len(literals):   # the common case, in one pass
        if fold:
            array, strings = pc.utf8_lower(array), [s.lower() for s in strings]
        return as_numpy(pc.is_in(array, pa.array(strings, pa.string())))
    result = np.zeros(len(array), bool)
    for lit in literals:
        result |= _match(array, kind, "=", lit, fold)
    return result


def _match(array: pa.Array, kind: str, op: str, lit: Literal, fold: bool) -> np.ndarray:
    if op in ("like", "ilike"):
        return as_numpy(pc.match_like(_text(array, kind), _like_pattern(lit.value),
                                    ignore_case=op == "ilike" or fold))
    if lit.kind == "bool":   # only = reaches here: the parser refuses < with true/false
        if kind == "bool":
            return as_numpy(pc.equal(array, lit.value))
        if kind == "str":
            return as_numpy(pc.equal(pc.utf8_lower(array), "true" if lit.value else "false"))
        return np.zeros(len(array), bool)
    if lit.kind in ("number", "time"):
        return _match_number(array, kind, op, lit)
    return _match_text(array, kind, op, lit.value, fold)


def _match_number(array, kind: str, op: str, lit: Literal) -> np.ndarray:
    value = lit.value
    if kind == "time":
        if lit.kind == "number":
            value = value * 1000   # MLflow's milliseconds; the column holds microseconds
        return _compare_ints(microseconds(array), op, value)
    if kind == "int":
        return _compare_ints(array.cast(pa.int64()), op, value)
    if kind == "float":
        return _compare_floats(array, op, value)
    if kind == "str":
        return _compare_floats(_parse_numbers(array), op, value)
    return np.zeros(len(array), bool)   # a bool is no number


def _match_text(array, kind: str, op: str, value: str, fold: bool) -> np.ndarray:
    if kind == "time":
        return np.zeros(len(array), bool)
    if kind == "bool" and op == "=":   # true = 'TRUE' too
        fold = True
    if kind in ("int", "float") and op == "=":
        return _equal_number_text(array, kind, value)
    text = _text(array, kind)
    if fold:
        text, value = pc.utf8_lower(text), value.lower()
    return as_numpy(_COMPARE[op](text, pa.scalar(value, pa.string())))


def _equal_number_text(array, kind: str, value: str) -> np.ndarray:
    """Which numbers have ``value`` as their text, without writing each one's text: only
    the number that value reads as can, and only when value is that number's own text."""
    zeros = np.zeros(len(array), bool)
    try:
        number = int(value) if kind == "int" else float(value)
    except ValueError:
        return zeros
    if (str(number) if kind == "int" else repr(number)) != value:
        return zeros
    if kind == "int":
        return _compare_ints(array, "=", number)
    if math.isnan(number):
        return as_numpy(pc.is_nan(array))
    equal = as_numpy(pc.equal(array, number))
    if number == 0:   # "0.0" is not the text of -0.0
        equal &= np.signbit(array.to_numpy(zero_copy_only=False)) == (math.copysign(1, number) < 0)
    return equal


_INT64 = (-(1 << 63), (1 << 63) - 1)


def _compare_ints(array: pa.Array, op: str, value) -> np.ndarray:
    """Exact comparison of int64 values with an int or float literal (no rounding of
    big ints through float64)."""
    if isinstance(value, float):
        if math.isnan(value):
            return np.zeros(len(array), bool)
        if math.isinf(value):
            return _constant(array, op, value > 0)
        if value.is_integer():
            value = int(value)
        elif op == "=":
            return np.zeros(len(array), bool)
        elif op in ("<", "<="):
            op, value = "<=", math.floor(value)
        else:
            op, value = ">=", math.ceil(value)
    if not _INT64[0] <= value <= _INT64[1]:
        return _constant(array, op, value > 0)
    return as_numpy(_COMPARE[op](array, pa.scalar(value, pa.int64())))


def _constant(array: pa.Array, op: str, above: bool) -> np.ndarray:
    """Every value is below the literal (above=True) or above it, like a comparison
    with inf or with an int past int64."""
    keep = op in ("<", "<=") if above else op in (">", ">=")
    return as_numpy(array.is_valid()) if keep else np.zeros(len(array), bool)


def _compare_floats(array: pa.Array, op: str, value) -> np.ndarray:
    """An int literal that no float64 holds (past 2**53, or past float64's range) still
    compares exactly: no float lies between it and the float nearest to it."""
    try:
        number = float(value)
    except OverflowError:
        number = math.inf if value > 0 else -math.inf
    if number != value and not math.isnan(number):   # only an int literal can differ
        if op == "=":
            return np.zeros(len(array), bool)
        below = op in ("<", "<=")
        op = ("<" if below else ">=") if number > value else ("<=" if below else ">")
    return as_numpy(_COMPARE[op](array.cast(pa.float64()), pa.scalar(number, pa.float64())))


def microseconds(array: pa.Array) -> pa.Array:
    if array.type.unit != "us":
        array = array.cast(pa.timestamp("us", array.type.tz), safe=False)
    return array.cast(pa.int64())


# A str reads as a number when it is written as one: digits with an optional sign,
# point and exponent, or inf / infinity / nan (any case). Arrow's cast reads each the
# way Python's float() does.
NUMBER_TEXT = r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity|nan))$"


def _parse_numbers(array: pa.Array) -> pa.Array:
    """float64 of each str that reads as a number, else null; read once per distinct str."""
    encoded = pc.dictionary_encode(array)
    words = encoded.dictionary
    readable = pc.if_else(pc.match_substring_regex(words, NUMBER_TEXT), words, pa.scalar(None, pa.string()))
    return readable.cast(pa.float64()).take(encoded.indices)


def _text(array: pa.Array, kind: str) -> pa.Array:
    """The text of each value: a str as is, str() of an int, repr() of a float, true /
    false for a bool."""
    if kind == "str":
        return array
    if kind == "int":
        return array.cast(pa.string())
    if kind == "bool":
        return pc.if_else(array, "true", "false")
    if kind == "float":   # Arrow writes 1.0 as "1"; repr per distinct value instead
        encoded = pc.dictionary_encode(array)
        texts = [None if v is None else repr(v) for v in encoded.dictionary.to_pylist()]
        return pa.array(texts, pa.string()).take(encoded.indices)
    return pa.nulls(len(array), pa.string())


def _like_pattern(pattern: str) -> str:
    """Arrow drops a trailing lone backslash; steplog reads it as a backslash."""
    trailing = len(pattern) - len(pattern.rstrip("\\"))
    return pattern + "\\" if trailing % 2 else pattern
