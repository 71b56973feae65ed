"""The one check of what a tensor summary is asked for: the tensor, ``bins`` and the
histogram ``edges``. Every failure is a typed error naming the argument. No numba here:
the public face validates with these before anything compiles.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np

from ..errors import InvalidArgumentError, InvalidTypeError
from .fields import MAX_BINS, MODE_SEARCH, MODE_UNIFORM

_DTYPE_OK: dict[np.dtype, bool] = {}


def tensor_array(tensor, argument: str = "tensor") -> np.ndarray:
    """``tensor`` as a numpy array the kernels read, in place when its memory allows:
    numpy arrays, objects with ``__dlpack__`` or ``__array__`` (a CPU torch tensor),
    lists and numbers. A torch tensor on another device is copied to the host first,
    non-native byte order is converted (a copy). dtypes: bool, int, uint, float16/32/64."""
    if type(tensor) is not np.ndarray:
        tensor = as_array(tensor, argument)
    dt = tensor.dtype
    ok = _DTYPE_OK.get(dt)
    if ok is None:
        ok = _DTYPE_OK[dt] = dt.kind in "biuf" and dt.itemsize <= 8 and dt.fields is None
    if not ok:
        raise InvalidTypeError(argument, f"dtype {dt} is not supported (bool, int, uint, float16/32/64 only)")
    if not dt.isnative:
        tensor = tensor.astype(dt.newbyteorder("="))   # numba reads native byte order only
    return tensor


def as_array(tensor, argument: str) -> np.ndarray:
    """``tensor`` as a numpy array of any dtype (the conversion of ``tensor_array``
    without its dtype check), for callers that read array-likes for other uses."""
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
    if hasattr(tensor, "__array__") or isinstance(tensor, (list, tuple, numbers.Number, np.generic)):
        try:
            return np.asarray(tensor)
        except (TypeError, ValueError) as exc:
            raise InvalidTypeError(argument, f"cannot be read as an array: {exc}") from None
    raise InvalidTypeError(argument, f"must be an array or tensor, got {type(tensor).__name__}")


def bins_count(bins) -> int:
    if isinstance(bins, (bool, np.bool_)):
        raise InvalidTypeError("bins", f"must be a positive int, got {bins!r}")
    try:
        nbins = operator.index(bins)
    except TypeError:
        raise InvalidTypeError("bins", f"must be a positive int, got {type(bins).__name__}") from None
    if not 0 < nbins <= MAX_BINS:
        raise InvalidArgumentError("bins", f"must be an int in [1, {MAX_BINS}], got {nbins}")
    return nbins


def edges_array(edges) -> np.ndarray:
    """Histogram edges as a private read-only float64 array: 1-d, 2 to MAX_BINS + 1
    numbers (int, uint or float), finite, strictly increasing."""
    try:
        e = np.asarray(edges)
    except Exception as exc:   # noqa: BLE001 - anything numpy cannot read is a type error
        raise InvalidTypeError("edges", f"must be a 1-d float array, got {type(edges).__name__}") from exc
    if e.dtype.kind not in "iuf":
        raise InvalidTypeError("edges", f"must be a 1-d float array, got dtype {e.dtype}")
    if e.ndim != 1:
        raise InvalidArgumentError("edges", f"must be 1-d, got shape {e.shape}")
    if e.shape[0] < 2:
        raise InvalidArgumentError("edges", f"needs at least 2 values, got {e.shape[0]}")
    if e.shape[0] > MAX_BINS + 1:
        raise InvalidArgumentError("edges", f"holds at most {MAX_BINS + 1} values ({MAX_BINS} bins), got {e.shape[0]}")
    e = np.array(e, dtype=np.float64)           # a private contiguous copy
    if not np.isfinite(e).all():
        raise InvalidArgumentError("edges", "must be finite")
    if not (e[1:] > e[:-1]).all():
        raise InvalidArgumentError("edges", "must be strictly increasing")
    e.flags.writeable = False
    return e


def edges_mode(e: np.ndarray) -> int:
    """MODE_UNIFORM when checked edges are close enough to uniform for the uniform
    formula plus a correction step, else MODE_SEARCH (binary search)."""
    n = e.shape[0] - 1
    width = (e[-1] - e[0]) / n
    if np.isfinite(width):
        uniform = e[0] + np.arange(n + 1) * width
        if (np.abs(e - uniform) <= width).all():
            return MODE_UNIFORM
    return MODE_SEARCH


def histogram_args(bins, edges) -> tuple[int, np.ndarray | None, int]:
    """-> (bins, checked edges or None when derived from [min, max], edge mode);
    ``bins`` is checked but ignored when edges are given."""
    nbins = bins_count(bins)
    if edges is None:
        return nbins, None, MODE_UNIFORM
    e = edges_array(edges)
    return e.shape[0] - 1, e, edges_mode(e)
