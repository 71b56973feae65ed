"""Argument checks for the public API. Every failure names the argument."""

from __future__ import annotations

import json
import numbers

import numpy as np

from .engine.errors import InvalidArgumentError, InvalidTypeError

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
CONTEXT_VALUE_TYPES = (str, int, float, bool, type(None))


def name_arg(value, argument: str) -> str:
    if not isinstance(value, str):
        raise InvalidTypeError(argument, f"must be a str, got {type(value).__name__}")
    if not value:
        raise InvalidArgumentError(argument, "must not be empty")
    _check_unicode(value, argument)
    return value


def _check_unicode(text: str, argument: str) -> None:
    """Arrow and every consumer want valid UTF-8: refuse lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(argument, "must be valid unicode (it holds a lone surrogate)") from None


def optional_name_arg(value, argument: str) -> str | None:
    return None if value is None else name_arg(value, argument)


def step_arg(value, argument: str = "step") -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise InvalidTypeError(argument, f"must be an int, got {type(value).__name__}")
    step = int(value)
    if not INT64_MIN <= step <= INT64_MAX:
        raise InvalidArgumentError(argument, f"{step} does not fit in int64")
    return step


def value_arg(value, argument: str = "value") -> float:
    """A metric value as float64. NaN and inf are values, not errors."""
    if isinstance(value, (str, bytes)) or value is None:
        raise InvalidTypeError(argument, f"must be a real number, got {type(value).__name__}")
    if isinstance(value, np.ndarray):
        if value.ndim != 0:
            raise InvalidTypeError(argument, f"must be a scalar, got an array of shape {value.shape}")
        value = value[()]
    if isinstance(value, (numbers.Real, np.number)) and not isinstance(value, (complex, np.complexfloating)):
        try:
            return float(value)
        except OverflowError:
            raise InvalidArgumentError(argument, "does not fit in float64") from None
    raise InvalidTypeError(argument, f"must be a real number, got {type(value).__name__}")


def context_arg(context) -> str:
    """Canonical JSON of a context dict ('' for none): the identity of a series."""
    if context is None:
        return ""
    if not isinstance(context, dict):
        raise InvalidTypeError("context", f"must be a dict, got {type(context).__name__}")
    for key, val in context.items():
        if not isinstance(key, str):
            raise InvalidTypeError("context", f"keys must be str, got {type(key).__name__}")
        if not isinstance(val, CONTEXT_VALUE_TYPES):
            raise InvalidTypeError("context", f"value of {key!r} must be str, int, float, bool or None")
    return json.dumps(context, sort_keys=True, separators=(",", ":")) if context else ""


def mapping_arg(value, argument: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidTypeError(argument, f"must be a dict, got {type(value).__name__}")
    for key in value:
        name_arg(key, f"{argument} key")
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(argument, f"values must be JSON-serialisable: {exc}") from None
    _check_unicode(text, argument)
    return value


def column_arg(values, argument: str, dtype) -> np.ndarray:
    """A 1-d numpy column of ``dtype`` for log_batch (int64 steps and times, float64 values)."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(argument, f"must be a 1-d array: {exc}") from None
    if array.ndim != 1:
        raise InvalidArgumentError(argument, f"must be 1-d, got shape {array.shape}")
    kind = array.dtype.kind
    if dtype == np.int64:
        if kind not in "iu" and not (kind == "f" and array.size == 0):
            raise InvalidTypeError(argument, f"must hold integers, got dtype {array.dtype}")
        if kind == "u" and array.size and array.max() > INT64_MAX:
            raise InvalidArgumentError(argument, "holds values that do not fit in int64")
    elif kind not in "iufb":
        raise InvalidTypeError(argument, f"must hold real numbers, got dtype {array.dtype}")
    return np.array(array, dtype=dtype, copy=True)


def tensor_arg(tensor, argument: str) -> np.ndarray:
    """A tensor as a numpy array, read in place when its memory allows: numpy arrays,
    objects with ``__dlpack__`` or ``__array__`` (a CPU torch tensor). A torch tensor
    on another device is copied to the host first."""
    if isinstance(tensor, np.ndarray):
        return tensor
    if hasattr(tensor, "detach") and hasattr(tensor, "device"):   # torch: no autograd, host memory
        tensor = tensor.detach()
        if getattr(tensor.device, "type", "cpu") != "cpu":
            tensor = tensor.cpu()
    if hasattr(tensor, "__dlpack__"):
        try:
            return np.from_dlpack(tensor)
        except (TypeError, ValueError, RuntimeError, BufferError):
            pass
    if hasattr(tensor, "__array__") or isinstance(tensor, (list, tuple, numbers.Number)):
        try:
            return np.asarray(tensor)
        except (TypeError, ValueError) as exc:
            raise InvalidTypeError(argument, f"cannot be read as an array: {exc}") from None
    raise InvalidTypeError(argument, f"must be an array or tensor, got {type(tensor).__name__}")


def edges_arg(edges) -> np.ndarray:
    """Histogram edges: 1-d, at least 2, finite, strictly increasing; kept as float64."""
    try:
        array = np.array(edges, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError("edges", f"must be a 1-d array of numbers: {exc}") from None
    if array.ndim != 1 or len(array) < 2:
        raise InvalidArgumentError("edges", f"must be 1-d with at least 2 entries, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or not np.all(np.diff(array) > 0):
        raise InvalidArgumentError("edges", "must be finite and strictly increasing")
    array.setflags(write=False)
    return array
