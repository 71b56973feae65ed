"""Argument checks and conversions for the public API. Every failure names the argument.

The rules in brief (README, "What steplog accepts", has them in full):

- A scalar is a Python number, a numpy scalar, or an array or tensor (numpy, torch,
  jax) holding exactly one element, whatever its shape: what TensorBoard's add_scalar
  takes. A metric value is a real scalar, bool, or any object with ``__float__``
  (Decimal, Fraction); a step is an integer scalar (no bool, no float, not even 3.0);
  a context value is a str, int, float, bool or None scalar, stored as plain JSON.
- Params and tags become plain JSON: numpy scalars and arrays become numbers and lists,
  tuples lists, sets sorted lists, datetimes ISO 8601 text, paths str, Enums their value.
- Names, keys and values are bounded by the MAX_* limits below.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import math
import numbers
import operator
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction

import numpy as np

from .engine.errors import InvalidArgumentError, InvalidTypeError
from .engine.tensorstats.validate import as_array

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
CONTEXT_VALUE_TYPES = (str, int, float, bool, type(None))

# Limits, in characters (code points). MLflow's 250-character keys and 6,000-character
# param values are the reference; params here are JSON, so the JSON text is measured.
MAX_NAME_CHARS = 250             # metric, experiment and run names; param, tag and context keys (each level)
MAX_CONTEXT_VALUE_CHARS = 250    # a str value of a context: it names a series, like a metric name
MAX_VALUE_CHARS = 8_000          # the JSON text of one param or tag value, and of a whole context
MAX_MAPPING_CHARS = 250_000      # the JSON text of all the params (or all the tags) of a run
MAX_DEPTH = 32                   # dicts and lists nested in params or tags, the outer dict counted

# C0 controls but tab, DEL, NEL and the Unicode line and paragraph separators: names are
# shown in tables, terminals and exported files, where these break lines or hide text.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_NUMPY_INTS = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
_INT_TYPES = frozenset((int,) + _NUMPY_INTS)
_REAL_TYPES = frozenset((int, bool, np.float64, np.float32, np.float16, np.bool_) + _NUMPY_INTS)
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_NS_PER_UNIT = {"W": Fraction(604_800 * 10**9), "D": Fraction(86_400 * 10**9), "h": Fraction(3_600 * 10**9),
                "m": Fraction(60 * 10**9), "s": Fraction(10**9), "ms": Fraction(10**6), "us": Fraction(10**3),
                "ns": Fraction(1), "ps": Fraction(1, 10**3), "fs": Fraction(1, 10**6), "as": Fraction(1, 10**9)}


# -- names and text ------------------------------------------------------------------

def name_arg(value, argument: str) -> str:
    """A name or key: a str of 1 to MAX_NAME_CHARS characters, not blank, without
    control characters (tab allowed) or line breaks, valid unicode; as a plain str."""
    return _text(_str(value, argument), argument, MAX_NAME_CHARS, blank=False)


def optional_name_arg(value, argument: str) -> str | None:
    return None if value is None else name_arg(value, argument)


def lookup_name_arg(value, argument: str) -> str:
    """A name to look up (reads): only type, emptiness and unicode are checked, so that
    names stored before the limits existed can still be read."""
    text = _str(value, argument)
    if not text:
        raise InvalidArgumentError(argument, "must not be empty")
    _check_unicode(text, argument)
    return text


def _str(value, argument: str) -> str:
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)   # np.str_, a str Enum: kept as the plain str
    raise InvalidTypeError(argument, f"must be a str, got {type(value).__name__}")


def _text(text: str, argument: str, limit: int, blank: bool) -> str:
    if not text and not blank:
        raise InvalidArgumentError(argument, "must not be empty")
    if len(text) > limit:
        raise InvalidArgumentError(argument, f"is {len(text)} characters long; at most {limit} are allowed")
    if not blank and text.isspace():
        raise InvalidArgumentError(argument, "must not be blank (whitespace only)")
    bad = _CONTROL.search(text)
    if bad is not None:
        raise InvalidArgumentError(argument, f"must not hold control characters or line breaks "
                                             f"(found {bad.group()!r} at index {bad.start()})")
    _check_unicode(text, argument)
    return text


def _check_unicode(text: str, argument: str) -> None:
    """Arrow and every consumer want valid UTF-8: refuse lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(argument, "must be valid unicode (it holds a lone surrogate)") from None


def _quote(key: str) -> str:
    """A key as it appears in a path such as params["model"]["act"] (long keys cut)."""
    return json.dumps(key if len(key) <= 60 else key[:60] + "...", ensure_ascii=False)


# -- scalars: values, steps ----------------------------------------------------------

def _scalar(value, argument: str):
    """numpy scalars and one-element arrays or tensors as the Python scalar they hold;
    anything else unchanged."""
    if isinstance(value, np.generic):
        if isinstance(value, (np.datetime64, np.timedelta64)):   # timedelta64 is a numpy integer
            raise InvalidTypeError(argument, f"must be a number, got {type(value).__name__}")
        return value if isinstance(value, np.longdouble) else value.item()
    shape = getattr(value, "shape", None)
    if shape is None or isinstance(value, type):
        return value
    try:
        size = math.prod(shape)
    except TypeError:
        return value
    if size != 1:
        raise InvalidTypeError(argument, f"must be a scalar or hold one element, got shape {tuple(shape)}")
    if getattr(getattr(value, "dtype", None), "kind", None) in ("m", "M"):
        raise InvalidTypeError(argument, f"must be a number, got an array of {value.dtype}")
    if not callable(getattr(value, "item", None)):
        return value
    try:
        return value.item()   # torch and jax too; a GPU tensor is copied to the host
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidTypeError(argument, f"cannot be read as a scalar: {exc}") from None


def value_arg(value, argument: str = "value") -> float:
    """A metric value as float64. NaN and inf are values, not errors."""
    if type(value) in _REAL_TYPES:   # the common types, in one set lookup
        try:
            return float(value)
        except OverflowError:
            raise InvalidArgumentError(argument, "does not fit in float64") from None
    return _real(_scalar(value, argument), argument)


def _real(value, argument: str) -> float:
    kind = type(value)
    if isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real):
        raise InvalidTypeError(argument, f"must be a real number, got {kind.__name__}")
    if isinstance(value, (str, bytes, bytearray, np.ndarray)) or not (
            hasattr(kind, "__float__") or hasattr(kind, "__index__")):
        raise InvalidTypeError(argument, f"must be a real number, got {kind.__name__}")
    try:
        result = float(value)
    except OverflowError:
        raise InvalidArgumentError(argument, "does not fit in float64") from None
    except ValueError as exc:   # Decimal("sNaN")
        raise InvalidArgumentError(argument, f"cannot be a float64: {exc}") from None
    except TypeError as exc:
        raise InvalidTypeError(argument, f"cannot be a float64: {exc}") from None
    if math.isinf(result) and _is_finite(value):
        raise InvalidArgumentError(argument, "does not fit in float64")
    return result


def _is_finite(value) -> bool:
    """Whether a number that float() may round to inf (Decimal, long double) is finite."""
    if isinstance(value, Decimal):
        return value.is_finite()
    return isinstance(value, np.floating) and bool(np.isfinite(value))


def step_arg(value, argument: str = "step") -> int:
    """A step as an int: an integer scalar (numpy, 0-d tensor) in int64; bool and
    float refused, 3.0 too, as TensorBoard and MLflow (protobuf int64) refuse them."""
    if type(value) in _INT_TYPES:
        step = int(value)
    else:
        step = _integer(_scalar(value, argument), argument)
    if not INT64_MIN <= step <= INT64_MAX:
        raise InvalidArgumentError(argument, f"{step} does not fit in int64")
    return step


def _integer(value, argument: str) -> int:
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        hint = ""
        if isinstance(value, float) and value.is_integer():
            hint = " (an integral float too: pass int(step))"
        raise InvalidTypeError(argument, f"must be an int, got {type(value).__name__}{hint}")
    try:
        return operator.index(value)
    except (TypeError, ValueError) as exc:   # an object array holding an array, say
        raise InvalidTypeError(argument, f"must be an int: {exc}") from None


# -- contexts ------------------------------------------------------------------------

def context_arg(context, limits: bool = True) -> str:
    """Canonical JSON of a context dict ('' for none): the identity of a series.
    Keys are names; values str, int, float, bool or None, numpy scalars and
    one-element tensors included, stored as the plain JSON value (so that
    {"rank": np.int64(3)} and {"rank": 3} are one series). limits=False (reads) skips
    the limits, so that contexts stored before them can still be read."""
    if context is None:
        return ""
    if not isinstance(context, dict):
        raise InvalidTypeError("context", f"must be a dict, got {type(context).__name__}")
    if not context:
        return ""
    plain = {}
    for key, val in context.items():
        if not isinstance(key, str):
            raise InvalidTypeError("context", f"keys must be str, got {type(key).__name__}")
        key = name_arg(key, "context key") if limits else lookup_name_arg(key, "context key")
        plain[key] = _context_value(val, f"context[{_quote(key)}]", limits)
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    if limits and len(text) > MAX_VALUE_CHARS:
        raise InvalidArgumentError("context", f"its JSON text is {len(text)} characters; at most "
                                              f"{MAX_VALUE_CHARS} are allowed")
    return text


def context_hashes_by_value(context) -> bool:
    """Whether a context dict may key a cache: its values hash and compare by value
    (plain types, numpy scalars). A 0-d array does not hash; a tensor hashes by
    identity, so a cache keyed by it would grow with every call."""
    return all(type(value) in CONTEXT_VALUE_TYPES or isinstance(value, np.generic) for value in context.values())


def _context_value(value, argument: str, limits: bool):
    if type(value) not in CONTEXT_VALUE_TYPES:
        value = _scalar(value, argument)
        if isinstance(value, str):
            value = str.__str__(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            value = int.__index__(value)
        elif isinstance(value, float):
            value = float.__float__(value)
        elif not isinstance(value, (bool, type(None))):
            raise InvalidTypeError(argument, f"must be a str, int, float, bool or None, got {type(value).__name__}")
    if type(value) is str:
        if limits:
            _text(value, argument, MAX_CONTEXT_VALUE_CHARS, blank=True)
        else:
            _check_unicode(value, argument)
    return value


# -- params and tags -----------------------------------------------------------------

def mapping_arg(value, argument: str) -> dict:
    """params or tags as a plain JSON dict (the conversions are in _json_value), within
    the limits, with no two key paths that flatten to one name (engine.catalog.flatten
    joins keys with "."). Other objects raise InvalidTypeError naming the key path,
    e.g. params["model"]["act"]."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidTypeError(argument, f"must be a dict, got {type(value).__name__}")
    plain = _json_dict(value, argument, 1)
    _check_mapping(plain, argument)
    return plain


def merge_params(stored: dict, new: dict, argument: str) -> dict:
    """``stored`` with ``new`` (from mapping_arg) merged in, for log_params and set_tags;
    neither is changed. A dict merges into a dict key by key (so an empty dict adds
    nothing); any other value replaces what was there: a scalar or list replaces a
    scalar, and also a dict, and a dict replaces a scalar (the last write wins, as for
    scalars). The result is checked like mapping_arg's: collisions and total size."""
    merged = _merge(stored, new)
    _check_mapping(merged, argument)
    return merged


def _merge(old: dict, new: dict) -> dict:
    merged = dict(old)
    for key, value in new.items():
        before = merged.get(key)
        merged[key] = _merge(before, value) if isinstance(before, dict) and isinstance(value, dict) else value
    return merged


def _check_mapping(plain: dict, argument: str) -> None:
    seen: dict[str, str] = {}
    for flat, spelled in _flat_names(plain, "", argument):
        first = seen.setdefault(flat, spelled)
        if first != spelled:
            raise InvalidArgumentError(argument, f"{first} and {spelled} both flatten to {_quote(flat)}; "
                                                 f"use one spelling")
    size = len(json.dumps(plain, ensure_ascii=False))
    if size > MAX_MAPPING_CHARS:
        raise InvalidArgumentError(argument, f"its JSON text is {size} characters; at most "
                                             f"{MAX_MAPPING_CHARS} are allowed")


def _flat_names(mapping: dict, prefix: str, path: str):
    """(flattened name, key path) of every leaf, as engine.catalog.flatten() names columns."""
    for key, value in mapping.items():
        spelled = f"{path}[{_quote(key)}]"
        if isinstance(value, dict) and value:
            yield from _flat_names(value, f"{prefix}{key}.", spelled)
        else:
            yield f"{prefix}{key}", spelled


def _check_depth(path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidArgumentError(path, f"nests more than {MAX_DEPTH} levels of dicts and lists")


def _json_dict(mapping: Mapping, path: str, depth: int) -> dict:
    _check_depth(path, depth)
    plain = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise InvalidTypeError(path, f"keys must be str, got {type(key).__name__} {key!r:.60}")
        child = f"{path}[{_quote(key)}]"
        key = name_arg(key, child)
        value = _json_value(value, child, depth + 1)
        if not (type(value) is dict and value):   # a leaf: one value, one column of runs()
            size = len(json.dumps(value, ensure_ascii=False))
            if size > MAX_VALUE_CHARS:
                raise InvalidArgumentError(child, f"its JSON text is {size} characters; at most "
                                                  f"{MAX_VALUE_CHARS} are allowed")
        plain[key] = value
    return plain


def _json_value(value, path: str, depth: int):
    """A param or tag value as plain JSON, converted as W&B converts its config."""
    kind = type(value)
    if kind is str:
        _check_unicode(value, path)
        return value
    if kind in (int, float, bool) or value is None:
        return value
    if isinstance(value, enum.Enum):
        return _json_value(value.value, path, depth)
    if isinstance(value, Mapping):
        return _json_dict(value, path, depth)
    if isinstance(value, (list, tuple, set, frozenset)):
        _check_depth(path, depth)
        items = [_json_value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
        return _sorted(items) if isinstance(value, (set, frozenset)) else items
    return _json_scalar(value, path, depth)


def _sorted(items: list) -> list:
    """A set as a list in a stable order: sorted, or by JSON text when the types mix."""
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))


def _json_scalar(value, path: str, depth: int):
    if isinstance(value, str):
        return _json_value(str.__str__(value), path, depth)
    if isinstance(value, int):   # bool is exact, so this is an int subclass
        return int.__index__(value)
    if isinstance(value, float):   # np.float64
        return float.__float__(value)
    if isinstance(value, np.generic):
        return _json_numpy_scalar(value, path)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return _json_value(os.fspath(value), path, depth)
    if isinstance(value, np.ndarray) or hasattr(value, "__dlpack__") or hasattr(value, "__array__"):
        return _json_array(as_array(value, path), path, depth)
    raise InvalidTypeError(path, f"cannot be stored as JSON: {type(value).__name__} (a param or tag is a str, "
                                 f"number, bool, None, list or dict, or one of the converted types)")


def _json_numpy_scalar(value: np.generic, path: str):
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value))   # ISO 8601 at the value's own unit
    if isinstance(value, np.timedelta64) or not isinstance(value, (np.bool_, np.integer, np.floating)):
        raise InvalidTypeError(path, f"cannot be stored as JSON: {type(value).__name__}")
    return value.item() if not isinstance(value, np.floating) else float(value)


def _json_array(array: np.ndarray, path: str, depth: int):
    if array.size > MAX_VALUE_CHARS // 2:   # each element takes a digit and a comma at least
        raise InvalidArgumentError(path, f"has {array.size} elements: its JSON text would pass "
                                         f"{MAX_VALUE_CHARS} characters")
    if array.dtype.kind == "M":
        return np.datetime_as_string(array).tolist()
    return _json_value(array.tolist(), path, depth)


# -- columns (log_batch) -------------------------------------------------------------

def column_arg(values, argument: str, dtype) -> np.ndarray:
    """A 1-d numpy column of ``dtype`` for log_batch: int64 steps, float64 values. Any
    iterable: an array, list, tuple, generator, pandas Series, torch or jax tensor; a
    column of objects is read element by element with step_arg or value_arg."""
    array = _column(values, argument)
    if array.dtype.kind == "O":
        convert = step_arg if dtype == np.int64 else value_arg
        return _object_column(array, argument, dtype, convert)
    if dtype == np.int64:
        return _int64_column(array, argument)
    return _float64_column(array, argument)


def times_arg(times, argument: str = "times") -> np.ndarray:
    """log_batch times as int64 ns since the epoch: integers (already ns), datetime64
    of any unit (UTC; finer than ns is truncated), or timezone-aware datetime objects
    (pandas Timestamps too); a naive datetime is refused, its zone unknown."""
    array = _column(times, argument)
    kind = array.dtype.kind
    if kind == "M":
        return _datetime64_ns(array, argument)
    if kind == "O":
        return _object_column(array, argument, np.int64, _time_ns)
    return _int64_column(array, argument)


def _column(values, argument: str) -> np.ndarray:
    """``values`` as a 1-d array, of objects where numpy cannot read it."""
    if isinstance(values, (str, bytes, bytearray, Mapping, set, frozenset)) or values is None:
        raise InvalidTypeError(argument, f"must be a 1-d sequence or array, got {type(values).__name__}")
    if isinstance(values, np.ndarray):
        array = values
    elif hasattr(values, "__dlpack__") or (hasattr(values, "detach") and hasattr(values, "device")):
        array = as_array(values, argument)
    else:
        if not hasattr(values, "__len__") and not hasattr(values, "__array__") and hasattr(values, "__iter__"):
            values = list(values)   # a generator: read once
        try:
            array = np.asarray(values)
        except (TypeError, ValueError, RuntimeError) as exc:   # ragged, or tensors numpy cannot read
            if not isinstance(values, (list, tuple)):
                raise InvalidTypeError(argument, f"cannot be read as a 1-d array: {exc}") from None
            array = _objects(values)
    if array.ndim > 1 and isinstance(values, (list, tuple)) and not any(
            isinstance(item, (list, tuple)) for item in values):
        array = _objects(values)   # one-element arrays or tensors: each is a scalar
    if array.ndim != 1:
        raise InvalidArgumentError(argument, f"must be 1-d, got shape {array.shape}")
    return array


def _objects(values) -> np.ndarray:
    array = np.empty(len(values), object)
    for i, item in enumerate(values):
        array[i] = item
    return array


def _object_column(array: np.ndarray, argument: str, dtype, convert) -> np.ndarray:
    column = np.empty(len(array), dtype)
    for i, item in enumerate(array):
        column[i] = convert(item, f"{argument}[{i}]")
    return column


def _int64_column(array: np.ndarray, argument: str) -> np.ndarray:
    kind = array.dtype.kind
    if kind not in "iu" and not (kind == "f" and array.size == 0):   # [] reads as float64
        raise InvalidTypeError(argument, f"must hold integers, got dtype {array.dtype}")
    if kind == "u" and array.size and array.max() > INT64_MAX:
        raise InvalidArgumentError(argument, "holds values that do not fit in int64")
    return np.array(array, dtype=np.int64, copy=True)


def _float64_column(array: np.ndarray, argument: str) -> np.ndarray:
    if array.dtype.kind not in "iufb":
        raise InvalidTypeError(argument, f"must hold real numbers, got dtype {array.dtype}")
    with np.errstate(over="ignore"):
        column = np.array(array, dtype=np.float64, copy=True)
    if array.dtype.itemsize > 8 and array.dtype.kind == "f" and np.any(np.isinf(column) & np.isfinite(array)):
        raise InvalidArgumentError(argument, "holds values that do not fit in float64")
    return column


def time_arg(value, argument: str = "time") -> int:
    """A point's time: int ns since the epoch, an aware datetime or a datetime64."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, _dt.datetime, np.datetime64, _dt.date)):
        raise InvalidTypeError(argument, f"must be int ns since the epoch or an aware datetime, "
                                         f"got {type(value).__name__}")
    return _time_ns(value, argument)


def _time_ns(value, argument: str) -> int:
    """One time of an object column: an aware datetime, a datetime64 or int64 ns."""
    if isinstance(value, _dt.datetime):
        if value.utcoffset() is None:
            raise InvalidArgumentError(argument, "is a naive datetime, its time zone unknown: give it one "
                                                 "(datetime.now(timezone.utc)) or pass datetime64 (read as UTC)")
        micros = (value - _EPOCH) // _dt.timedelta(microseconds=1)
        return step_arg(micros * 1000 + getattr(value, "nanosecond", 0), argument)   # pandas keeps ns
    if isinstance(value, np.datetime64):
        return int(_datetime64_ns(np.array([value]), argument)[0])
    if isinstance(value, _dt.date):
        raise InvalidTypeError(argument, "is a date: pass a datetime with a time zone")
    return step_arg(value, argument)


def _datetime64_ns(array: np.ndarray, argument: str) -> np.ndarray:
    if array.size == 0:
        return np.empty(0, np.int64)
    if np.isnat(array).any():
        raise InvalidArgumentError(argument, "holds NaT (not a time)")
    unit, count = np.datetime_data(array.dtype)
    if unit in ("Y", "M"):   # months and years have no fixed length: as days first
        array, unit, count = array.astype("datetime64[D]"), "D", 1
    ticks = array.view(np.int64)
    factor = _NS_PER_UNIT[unit] * count
    if factor.denominator != 1:
        return np.floor_divide(ticks, factor.denominator) * factor.numerator
    limit = INT64_MAX // factor.numerator
    if ticks.max() > limit or ticks.min() < -limit:
        raise InvalidArgumentError(argument, "holds times outside int64 ns since the epoch (years 1678 to 2262)")
    return ticks * factor.numerator
