"""Model-based test: random API calls against a plain dict-of-lists model.

The model keeps, per series, every point in write order: (step, value bits, lowest and
highest possible time). A read must return exactly the model's points with
start <= step < stop, stably sorted by step (ties in write order), bit for bit.

Beside the points the model keeps, per tensor series, what numpy says the summary of
each logged tensor is (``tensor_expected``). Bucketed reads, ``read_many``, LTTB and
``read_tensor`` (rows and buckets) are checked against numpy computations over the
model. A writer in a real child process (forked by a "zygote" interpreter started with
subprocess, so that no kill waits for numba to load) resumes a run, logs, flushes,
reports each flush and is killed with SIGKILL, sometimes in the middle of its work and
sometimes while it holds points it never flushed: afterwards every point it reported
flushed is in the store, bit for bit, and nothing it did not log.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import steplog

from _helpers import INT64_MAX, INT64_MIN, SPECIAL_VALUES, columns

BLOCK_POINTS = 16
N_RUNS = 2
EXPERIMENTS = ["model", "other"]            # run i belongs to EXPERIMENTS[i % 2]
NAMES = ["loss", "acc", "a/b"]
TENSOR_NAMES = ["w", "grad/fc1"]            # tensor series; never used for scalar points
CONTEXTS = [None, {"split": "train"}, {"split": "val", "fold": 1}]

run_indexes = st.integers(0, N_RUNS - 1)
names = st.sampled_from(NAMES)
tensor_names = st.sampled_from(TENSOR_NAMES)
contexts = st.integers(0, len(CONTEXTS) - 1)
tensor_contexts = st.integers(0, 1)         # fewer tensor series, so that each gets more rows
values = st.one_of(
    st.floats(width=64, allow_nan=True, allow_infinity=True),
    st.sampled_from([float(v) for v in SPECIAL_VALUES]),
    st.integers(0, 2**64 - 1).map(lambda b: float(np.uint64(b).view(np.float64))),
)
explicit_steps = st.one_of(st.integers(-5, 20), st.integers(-5, 20), st.integers(-(1 << 20), 1 << 20),
                           st.sampled_from([INT64_MIN, INT64_MIN + 1, INT64_MAX - 1, INT64_MAX]))
steps = st.one_of(st.none(), explicit_steps)
bounds = st.one_of(st.none(), st.integers(-7, 22), st.sampled_from([INT64_MIN, INT64_MAX]))
times_ns = st.integers(INT64_MIN, INT64_MAX)
bucket_counts = st.one_of(st.integers(1, 4), st.sampled_from([7, 1000]))

# -- tensors ---------------------------------------------------------------------------

TENSOR_DTYPES = [np.float64, np.float32, np.float16, np.int8, np.int64, np.uint8, np.bool_]
SPECIAL_FLOATS = [np.nan, np.inf, -np.inf, 0.0, -0.0]
Q = 2048                                    # quantiles: |error| <= max((max - min) / Q, FLOOR)
FLOOR = 1.2e-305
TINY = 4 * np.finfo(np.float64).smallest_subnormal
QUANTILES = [0.01, 0.05, 0.25, 0.50, 0.75, 0.95, 0.99]
Q_FIELDS = ["q01", "q05", "q25", "q50", "q75", "q95", "q99"]


def _tensor_elements(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        wide = (st.floats(-1e100, 1e100) if dtype.itemsize == 8
                else st.floats(width=8 * dtype.itemsize, allow_nan=False, allow_infinity=False))
        return st.one_of(st.floats(-4, 4, width=8 * dtype.itemsize), wide, st.sampled_from(SPECIAL_FLOATS))
    if dtype.kind == "b":
        return st.booleans()
    info = np.iinfo(dtype)
    return st.one_of(st.integers(-3, 3).filter(lambda v: info.min <= v <= info.max), st.integers(info.min, info.max))


tensor_arrays = st.sampled_from(TENSOR_DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=6),
                          elements=_tensor_elements(dt)))
layouts = st.sampled_from(["as_is", "transposed", "reversed"])
bin_counts = st.sampled_from([1, 3, 8, 64])
edge_lists = st.lists(st.floats(-8, 8), min_size=2, max_size=6, unique=True).map(sorted)
caller_edges = st.one_of(st.none(), edge_lists)
series_edges = st.one_of(st.none(), edge_lists, edge_lists)   # shared edges: histograms that merge


def _laid_out(t: np.ndarray, layout: str) -> np.ndarray:
    if layout == "transposed":
        return t.T
    if layout == "reversed" and t.ndim:
        return t[::-1]
    return t


def tensor_expected(t: np.ndarray, bins: int, edges) -> dict:
    """What read_tensor must say of ``t``, from numpy: counts of the elements, statistics
    of the finite ones as float64, np.quantile (linear), np.histogram over np.linspace
    edges (min - 0.5, max + 0.5 when flat; 0, 1 without finite values) or the caller's."""
    a = np.asarray(t).astype(np.float64).reshape(-1)
    finite = a[np.isfinite(a)]
    exp = {"count": a.size, "nan_count": int(np.isnan(a).sum()), "inf_count": int(np.isinf(a).sum()),
           "finite": finite}
    if finite.size:
        big = float(np.abs(finite).max())
        scale = big if big > 0 else 1.0
        exp.update(min=float(finite.min()), max=float(finite.max()), mean=scale * float(np.mean(finite / scale)),
                   std=scale * float(np.std(finite / scale)), l2=scale * float(np.sqrt(np.sum((finite / scale) ** 2))),
                   zero_fraction=np.count_nonzero(finite == 0) / finite.size,
                   quantiles=np.quantile(finite, QUANTILES, method="linear").tolist())
    else:
        exp.update(min=np.nan, max=np.nan, mean=np.nan, std=np.nan, l2=np.nan, zero_fraction=0.0,
                   quantiles=[np.nan] * len(QUANTILES))
    if edges is None:
        if not finite.size:
            lo, hi = 0.0, 1.0
        elif finite.min() == finite.max():
            lo, hi = float(finite.min()) - 0.5, float(finite.max()) + 0.5
        else:
            lo, hi = float(finite.min()), float(finite.max())
        exp["edges"] = np.linspace(lo, hi, bins + 1)
    else:
        exp["edges"] = np.asarray(edges, dtype=np.float64)
    exp["derived"] = edges is None
    exp["counts"] = np.histogram(finite, bins=exp["edges"])[0]
    return exp


def _close(got: float, want: float, tol: float) -> bool:
    return got == want or abs(got - want) <= tol


def check_tensor_stats(got: dict, exp: dict, where, bucket: bool = False) -> None:
    """One row of read_tensor (or one bucket) against ``tensor_expected`` of its values."""
    for name in ("count", "nan_count", "inf_count"):
        assert got[name] == exp[name], (where, name, got[name], exp[name])
    finite = exp["finite"]
    if not finite.size:
        # known bug: a bucket without finite values has l2 0.0 (a row has NaN), see
        # test_tensor_bucket_without_finite_values_has_nan_l2
        for name in ("min", "max", "mean", "std") + (() if bucket else ("l2",)):
            assert got[name] is None or math.isnan(got[name]), (where, name, got[name])
        assert got["zero_fraction"] == 0.0, (where, got["zero_fraction"])
        return
    mn, mx = exp["min"], exp["max"]
    assert got["min"] == mn and got["max"] == mx, (where, got["min"], got["max"], mn, mx)
    big = max(abs(mn), abs(mx))
    assert _close(got["mean"], exp["mean"], 1e-12 * big + TINY), (where, got["mean"], exp["mean"])
    # known bug: buckets merge std and l2 from unscaled squares, which underflow below
    # 1e-154 and overflow beyond 1e154, see test_tensor_bucket_std_and_l2_do_not_under_or_overflow
    unscaled = bucket and big < 1e150
    if not bucket or (unscaled and (exp["std"] == 0 or exp["std"] > 1e-150)):
        assert _close(got["std"], exp["std"], 1e-9 * exp["std"] + 1e-12 * big + TINY), (where, got["std"], exp["std"])
    if not bucket or (unscaled and (exp["l2"] == 0 or exp["l2"] > 1e-150)):
        assert _close(got["l2"], exp["l2"], 1e-12 * exp["l2"] + TINY), (where, got["l2"], exp["l2"])
    assert _close(got["zero_fraction"], exp["zero_fraction"], 1e-12), (where, got["zero_fraction"])


def check_tensor_quantiles(got: dict, exp: dict, where) -> None:
    if not exp["finite"].size:
        assert all(got[q] is None or math.isnan(got[q]) for q in Q_FIELDS), where
        return
    mn, mx = exp["min"], exp["max"]
    big = max(abs(mn), abs(mx))
    bound = max((mx - mn) / Q, FLOOR) * (1 + 1e-9) + 4e-16 * big + TINY
    for name, want in zip(Q_FIELDS, exp["quantiles"]):
        assert mn <= got[name] <= mx, (where, name, got[name])
        assert abs(got[name] - want) <= bound, (where, name, got[name], want, bound)


def _bits(value: float) -> int:
    return int(np.float64(value).view(np.uint64))


def _float(bits: int) -> float:
    return float(np.uint64(bits).view(np.float64))


def _context_json(ctx: int) -> str | None:
    """FORMAT.md: the canonical JSON of the context (keys sorted, no spaces)."""
    context = CONTEXTS[ctx]
    return json.dumps(context, sort_keys=True, separators=(",", ":")) if context else None


def _next_step_of(steps_in_order: list[int]):
    """The step that step=None gives after these steps, where "the series' last step + 1"
    is unambiguous (the last written step is also the largest); None otherwise."""
    if not steps_in_order:
        return 0
    last = steps_in_order[-1]
    if last != max(steps_in_order) or last == INT64_MAX:
        return None
    return last + 1


def _catch_up_of(steps_in_order: list[int]) -> int:
    """An explicit step after which step=None is unambiguous again."""
    top = max(steps_in_order)
    return top + 1 if top < INT64_MAX else 0


def bucket_mean(vals: list[float]):
    """The mean of the non-NaN values where the order of summation cannot change it
    beyond rounding: (expected, tolerance), or None where it can (overflow)."""
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return math.nan, 0.0
    finite = [v for v in vals if math.isfinite(v)]
    try:
        magnitude = math.fsum(abs(v) for v in finite)
    except OverflowError:
        return None
    if magnitude >= 1e300:
        return None
    infs = {v for v in vals if math.isinf(v)}
    if infs:
        return (math.nan if len(infs) == 2 else infs.pop()), 0.0
    return math.fsum(vals) / len(vals), 4 * len(vals) * 2.3e-16 * magnitude / len(vals) + 1e-300


def pick(data, seq):
    """One element of ``seq`` (None if empty) from one draw whose kind does not depend
    on the model: after a kill the model depends on timing, and Hypothesis must be able
    to replay the same draws."""
    i = data.draw(st.integers(0, 1 << 16))
    return seq[i % len(seq)] if seq else None


# The state machine narrows the range of a bucketed read to [-SAFE_SPAN, SAFE_SPAN), where
# its numpy model computes bucket edges in int64; the tests at the end of this file cover
# ranges over the whole int64 axis.
SAFE_SPAN = 1 << 59


def narrowed(start, stop, steps_in_range: list[int], tight: bool):
    """(start, stop) of a bucketed read kept within [-SAFE_SPAN, SAFE_SPAN]: unchanged if
    it is, else cut to that range (wide: buckets come from coarse rollups) or, if tight,
    to the steps it holds there (so that buckets still split them)."""
    lo = start if start is not None else min(steps_in_range, default=0)
    hi = stop if stop is not None else max(steps_in_range, default=-1) + 1
    if -SAFE_SPAN <= lo and hi <= SAFE_SPAN:
        return start, stop
    safe = [s for s in steps_in_range if -SAFE_SPAN <= s < SAFE_SPAN]
    if not tight or not safe:
        return max(lo, -SAFE_SPAN), min(hi, SAFE_SPAN)
    return min(safe), max(safe) + 1


def bucket_of(starts: list[int], ends: list[int], step: int) -> int | None:
    """The bucket [start, end) that holds ``step``; a last bucket whose end saturated at
    INT64_MAX also holds INT64_MAX (steplog.query.downsample.edges)."""
    b = bisect.bisect_right(starts, step) - 1
    if b < 0:
        return None
    if step < ends[b] or (step == ends[b] == INT64_MAX and b == len(starts) - 1):
        return b
    return None


# -- the child writer --------------------------------------------------------------------

ZYGOTE_TIMEOUT = 60.0
ZYGOTE = r'''
import json, os, sys, tempfile, time, traceback
import numpy as np
import steplog

def as_float(bits):
    return float(np.array([bits], np.uint64).view(np.float64)[0])

def warm_up():
    with tempfile.TemporaryDirectory() as tmp:
        store = steplog.open(tmp, block_points=16, flush_interval=None)
        run = store.start_run()
        for i in range(100):
            run.log("a", float(i), step=i)
            run.log({"b": 1.0, "c": 2.0}, step=i, context={"k": 1})
        run.log_batch("d", np.arange(100), np.arange(100) * 0.5)
        store.flush()
        store.close()

def writer(cmd):
    acks = os.open(cmd["acks"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    store = steplog.open(cmd["path"], block_points=cmd["block_points"], flush_interval=None)
    run = store.run(cmd["run_id"])
    os.write(acks, b"open\n")
    phases = cmd["phases"]
    for i, ops in enumerate(phases):
        for op in ops:
            if op[0] == "log":
                _, name, context, step, bits = op
                run.log(name, as_float(bits), step=step, context=context)
            elif op[0] == "dict":
                _, pairs, context, step = op
                run.log({name: as_float(bits) for name, bits in pairs}, step=step, context=context)
            else:
                _, name, context, steps, bits = op
                run.log_batch(name, np.array(steps, np.int64), np.array(bits, np.uint64).view(np.float64),
                              context=context)
        if i < len(phases) - 1:          # the last phase is never flushed
            store.flush()
            os.write(acks, b"ack %d\n" % i)   # one short write: whole or not at all
    os.write(acks, b"idle\n")
    time.sleep(120)
    return 3

def main():
    warm_up()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                fd = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                sys.stdin.close()
                code = writer(cmd)
            except BaseException:
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        print(json.dumps({"started": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"ended": pid, "status": status}), flush=True)

main()
'''


class Zygote:
    """A fresh interpreter (started with subprocess) that has imported steplog and loaded
    its kernels, and forks one writer process per request."""

    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="steplog-model-zygote-")
        self._err = open(os.path.join(self.workdir, "zygote.err"), "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, cwd=self.workdir)
        self._buf = b""
        try:
            self._message(ZYGOTE_TIMEOUT)["ready"]
        except BaseException:
            self.close()
            raise

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _ready(self, timeout: float) -> bool:
        return b"\n" in self._buf or bool(select.select([self.proc.stdout], [], [], timeout)[0])

    def _message(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise AssertionError(f"zygote silent for {timeout}s; stderr: {self.stderr()}")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"zygote died: {self.stderr()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def stderr(self) -> str:
        with open(os.path.join(self.workdir, "zygote.err"), "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def start(self, **cmd) -> int:
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        return self._message(ZYGOTE_TIMEOUT)["started"]

    def wait_for_line(self, path: str, line: str, log: str) -> None:
        """Until the writer has written ``line`` to its acknowledgement file; fails if it
        ends first (the zygote's report of its end is left for ``wait``)."""
        deadline = time.monotonic() + ZYGOTE_TIMEOUT
        while True:
            if os.path.exists(path):
                with open(path, "rb") as f:
                    if line in f.read().decode().splitlines():
                        return
            if self._ready(0.002):   # the only thing the zygote says now: the writer ended
                raise AssertionError(f"writer ended before {line!r}: {_tail(log)}")
            assert time.monotonic() < deadline, f"writer never wrote {line!r}: {_tail(log)}"

    def wait(self, pid: int) -> int:
        """The wait status of a writer, once the zygote has reaped it."""
        message = self._message(ZYGOTE_TIMEOUT)
        assert message["ended"] == pid, message
        return message["status"]

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.close()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            self.proc.stdout.close()
            if not self.proc.stdin.closed:
                self.proc.stdin.close()
            self._err.close()
            shutil.rmtree(self.workdir, ignore_errors=True)


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


_zygote: Zygote | None = None


def zygote() -> Zygote:
    """One zygote for the whole module (started on first use, replaced if it died)."""
    global _zygote
    if _zygote is not None and not _zygote.alive():
        _zygote.close()
        _zygote = None
    if _zygote is None:
        _zygote = Zygote()
    return _zygote


@atexit.register
def teardown_module(module=None) -> None:
    global _zygote
    if _zygote is not None:
        _zygote.close()
        _zygote = None


# -- the state machine -------------------------------------------------------------------

class StoreModel(RuleBasedStateMachine):
    """One store, N_RUNS runs; series keyed by (run index, name, context index)."""

    @initialize()
    def open_store(self):
        self.dir = tempfile.mkdtemp(prefix="steplog-model-")
        self.aux = tempfile.mkdtemp(prefix="steplog-model-aux-")   # acknowledgement files, writer logs
        self.store = steplog.open(self.dir, block_points=BLOCK_POINTS, flush_interval=None)
        self.runs = [self.store.start_run(experiment=EXPERIMENTS[i % 2]) for i in range(N_RUNS)]
        self.ids = [run.id for run in self.runs]
        self.model: dict[tuple, list[tuple[int, int, int, int]]] = {}
        self.tensors: dict[tuple, list[tuple[int, int, int, dict]]] = {}   # (step, t_lo, t_hi, expected)
        self.dirty: set[tuple] = set()          # series to read back after the current rule
        self.dirty_tensors: set[tuple] = set()
        self.kills = 0
        self.maybe_empty: set[tuple] = set()   # series a killed writer logged to: may exist without points

    def teardown(self):
        try:
            if getattr(self, "store", None) is not None:
                self.store.close()
        finally:
            for folder in ("dir", "aux"):
                if hasattr(self, folder):
                    shutil.rmtree(getattr(self, folder), ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------

    def _next_step(self, key):
        return _next_step_of([p[0] for p in self.model.get(key, [])])

    def _catch_up_step(self, key):
        return _catch_up_of([p[0] for p in self.model[key]])

    def _append(self, key, step, value, t_lo, t_hi):
        self.model.setdefault(key, []).append((step, _bits(value), t_lo, t_hi))
        self.dirty.add(key)

    def _expected(self, key, start, stop):
        points = [p for p in self.model.get(key, []) if (start is None or p[0] >= start)
                  and (stop is None or p[0] < stop)]
        return sorted(points, key=lambda p: p[0])  # sorted() is stable: ties keep write order

    def _expected_tensors(self, key, start, stop):
        rows = [r for r in self.tensors.get(key, []) if (start is None or r[0] >= start)
                and (stop is None or r[0] < stop)]
        return sorted(rows, key=lambda r: r[0])

    def _read(self, key, start=None, stop=None, **kw):
        run_index, name, ctx = key
        try:
            return self.store.read(self.ids[run_index], name, context=CONTEXTS[ctx], start=start, stop=stop, **kw)
        except steplog.NotFoundError as exc:   # only a series that holds nothing is missing
            assert not self.model.get(key) and not self.tensors.get(key), (key, exc)
            assert repr(name) in str(exc)
        return self.store.read(self.ids[run_index], name, context=CONTEXTS[ctx], start=start, stop=stop,
                               missing_ok=True, **kw)

    def _check_read(self, key, start=None, stop=None):
        got_steps, got_times, got_values = columns(self._read(key, start, stop))
        want = self._expected(key, start, stop)
        assert got_steps.tolist() == [p[0] for p in want], (key, start, stop)
        assert got_values.view(np.uint64).tolist() == [p[1] for p in want], (key, start, stop)
        for t, (_, _, lo, hi) in zip(got_times.tolist(), want):
            assert lo <= t <= hi, (key, t, lo, hi)

    def _check_buckets(self, key, start, stop, n):
        """A bucketed read against the model's points: at most n buckets in step order,
        disjoint, within the range, each holding at least one point and every point in
        exactly one; per bucket count, NaN count, min and max (of the non-NaN values,
        NaN when there are none), first and last (smallest step, earliest written; largest
        step, latest written) exact, mean to rounding."""
        self._check_bucket_table(self._read(key, start, stop, buckets=n), key, start, stop, n)

    def _check_bucket_table(self, table, key, start, stop, n):
        assert table.column_names == ["step_start", "step_end", "count", "nan_count", "min", "max", "mean",
                                      "first", "first_step", "last", "last_step"]
        got = table.to_pydict()
        want = self._expected(key, start, stop)
        where = (key, start, stop, n)
        assert table.num_rows <= n, where
        if not want:
            assert table.num_rows == 0, where
            return
        starts, ends = got["step_start"], got["step_end"]
        assert all(s < e for s, e in zip(starts, ends)), (where, starts, ends)
        assert all(e <= s for e, s in zip(ends, starts[1:])), (where, starts, ends)
        lo = want[0][0] if start is None else start
        assert starts[0] >= lo, (where, starts[0])
        if stop is not None:
            assert ends[-1] <= stop, (where, ends[-1])
        groups = [[] for _ in starts]
        for p in want:
            b = bucket_of(starts, ends, p[0])
            assert b is not None, (where, "a point in no bucket", p[0], starts, ends)
            groups[b].append(p)
        for b, group in enumerate(groups):
            at = (where, b, starts[b], ends[b])
            assert group, (at, "an empty bucket")
            vals = [_float(p[1]) for p in group]
            real = [v for v in vals if not math.isnan(v)]
            assert got["count"][b] == len(group), at
            assert got["nan_count"][b] == len(vals) - len(real), at
            for name, want_value in (("min", min(real, default=math.nan)), ("max", max(real, default=math.nan))):
                g = got[name][b]   # exact; either zero of a bucket holding +0.0 and -0.0
                assert _bits(g) == _bits(want_value) or (math.isnan(want_value) and math.isnan(g)) \
                    or (want_value == 0 and g == 0), (at, name, g, want_value)
            first, last = group[0], group[-1]    # stably sorted: ties in write order
            assert (got["first_step"][b], _bits(got["first"][b])) == (first[0], first[1]), (at, "first")
            assert (got["last_step"][b], _bits(got["last"][b])) == (last[0], last[1]), (at, "last")
            mean = bucket_mean(vals)
            if mean is not None:
                m, tol = mean
                g = got["mean"][b]
                assert (math.isnan(m) and math.isnan(g)) or _close(g, m, tol), (at, "mean", g, m)

    def _check_lttb(self, key, start, stop, n):
        """LTTB keeps at most n of the points (n of them when every value is finite: it
        chooses among the finite ones), in step order, the first and the last among them."""
        steps_, _, vals = columns(self._read(key, start, stop, buckets=n, method="lttb"))
        got = list(zip(steps_.tolist(), vals.view(np.uint64).tolist()))
        want = [(p[0], p[1]) for p in self._expected(key, start, stop)]
        where = (key, start, stop, n)
        assert len(got) <= min(n, len(want)), where
        if all(math.isfinite(_float(b)) for _, b in want):
            assert len(got) == min(n, len(want)), where
        assert not Counter(got) - Counter(want), (where, "points that were never logged")
        assert steps_.tolist() == sorted(steps_.tolist()), where
        if want:
            assert got[0] == want[0], where
            if n >= 2:
                assert got[-1] == want[-1], where

    def _check_tensors(self, key, start=None, stop=None):
        run_index, name, ctx = key
        table = self.store.read_tensor(self.ids[run_index], name, context=CONTEXTS[ctx], start=start, stop=stop,
                                       missing_ok=not self.tensors.get(key))
        want = self._expected_tensors(key, start, stop)
        where = (key, start, stop)
        assert table.column("step").to_pylist() == [r[0] for r in want], where
        times = table.column("time_ns").to_pylist()
        rows = table.drop_columns(["time", "time_ns"]).to_pylist()
        for i, (got, (step, t_lo, t_hi, exp)) in enumerate(zip(rows, want)):
            at = (where, i, step)
            assert t_lo <= times[i] <= t_hi, (at, times[i], t_lo, t_hi)
            check_tensor_stats(got, exp, at)
            check_tensor_quantiles(got, exp, at)
            assert got["hist_edges"] == exp["edges"].tolist(), (at, got["hist_edges"], exp["edges"])
            assert got["hist_counts"] == exp["counts"].tolist(), (at, got["hist_counts"], exp["counts"])
            if exp["derived"]:      # derived edges span [min, max]: every finite value is counted
                assert sum(got["hist_counts"]) == exp["finite"].size, at

    def _check_tensor_buckets(self, key, start, stop, n):
        """read_tensor(buckets=n): at most n disjoint step buckets in order, every row in
        exactly one; counts add up, min and max exact, mean, std, l2 and zero fraction of
        all the bucket's finite values, histograms summed where the bucket's rows share
        edges (else null), quantiles only for a bucket of one row."""
        run_index, name, ctx = key
        table = self.store.read_tensor(self.ids[run_index], name, context=CONTEXTS[ctx], start=start, stop=stop,
                                       buckets=n, missing_ok=not self.tensors.get(key))
        want = self._expected_tensors(key, start, stop)
        where = (key, start, stop, n)
        assert table.num_rows <= n, where
        if not want:
            assert table.num_rows == 0, where
            return
        got = table.to_pylist()
        starts, ends = [r["step_start"] for r in got], [r["step_end"] for r in got]
        assert all(s < e for s, e in zip(starts, ends)), (where, starts, ends)
        assert all(e <= s for e, s in zip(ends, starts[1:])), (where, starts, ends)
        groups = [[] for _ in got]
        for r in want:
            b = bucket_of(starts, ends, r[0])
            assert b is not None, (where, "a row in no bucket", r[0], starts, ends)
            groups[b].append(r[3])
        for b, (row, group) in enumerate(zip(got, groups)):
            at = (where, b, starts[b], ends[b])
            assert row["rows"] == len(group) > 0, at
            finite = np.concatenate([e["finite"] for e in group])
            merged = tensor_expected(finite, 1, None)
            merged.update(count=sum(e["count"] for e in group), nan_count=sum(e["nan_count"] for e in group),
                          inf_count=sum(e["inf_count"] for e in group))
            check_tensor_stats(row, merged, at, bucket=True)
            if len(group) == 1:
                check_tensor_quantiles(row, group[0], at)
            else:
                assert all(row[q] is None or math.isnan(row[q]) for q in Q_FIELDS), at
            if all(np.array_equal(e["edges"], group[0]["edges"]) for e in group):
                assert row["hist_edges"] == group[0]["edges"].tolist(), at
                assert row["hist_counts"] == np.sum([e["counts"] for e in group], axis=0).tolist(), at
            else:
                assert row["hist_edges"] is None and row["hist_counts"] is None, at

    def _all_keys(self):
        return [(r, n, c) for r in range(N_RUNS) for n in NAMES for c in range(len(CONTEXTS))]

    def _all_tensor_keys(self):
        return [(r, n, c) for r in range(N_RUNS) for n in TENSOR_NAMES for c in range(2)]

    def check_everything(self):
        for key in self._all_keys():
            self._check_read(key)
        for key in self._all_tensor_keys():
            self._check_tensors(key)

    def _reopen(self):
        self.store.close()
        self.store = steplog.open(self.dir, block_points=BLOCK_POINTS, flush_interval=None)
        self.runs = [self.store.run(run_id) for run_id in self.ids]
        self.dirty.update(self._all_keys())       # every series, so that nothing appeared anywhere
        self.dirty_tensors.update(self._all_tensor_keys())

    # -- rules: scalar points --------------------------------------------------------------

    @rule(run_index=run_indexes, name=names, ctx=contexts, value=values, step=steps)
    def log(self, run_index, name, ctx, value, step):
        key = (run_index, name, ctx)
        if step is None and self._next_step(key) is None:
            step = self._catch_up_step(key)
        expected_step = self._next_step(key) if step is None else step
        t_lo = time.time_ns()
        self.runs[run_index].log(name, value, step=step, context=CONTEXTS[ctx])
        self._append(key, expected_step, value, t_lo, time.time_ns())

    @rule(run_index=run_indexes, metrics=st.dictionaries(names, values, min_size=1, max_size=3), ctx=contexts,
          step=steps)
    def log_dict(self, run_index, metrics, ctx, step):
        keys = [(run_index, name, ctx) for name in metrics]
        if step is None and any(self._next_step(k) is None for k in keys):
            step = max(self._catch_up_step(k) for k in keys if self.model.get(k))
        expected = [self._next_step(k) if step is None else step for k in keys]
        t_lo = time.time_ns()
        self.runs[run_index].log(metrics, step=step, context=CONTEXTS[ctx])
        t_hi = time.time_ns()
        for key, s, value in zip(keys, expected, metrics.values()):
            self._append(key, s, value, t_lo, t_hi)

    @rule(run_index=run_indexes, name=names, ctx=contexts,
          points=st.lists(st.tuples(explicit_steps, values, times_ns), max_size=3 * BLOCK_POINTS),
          given_times=st.booleans(), n=bucket_counts, tight=st.booleans())
    def log_batch(self, run_index, name, ctx, points, given_times, n, tight):
        """Many points of one series; then a bucketed read of the whole series (most
        series hold a few points only, a batch gives the buckets something to split)."""
        key = (run_index, name, ctx)
        batch_steps = np.array([p[0] for p in points], dtype=np.int64)
        batch_values = np.array([p[1] for p in points], dtype=np.float64)
        batch_times = np.array([p[2] for p in points], dtype=np.int64)
        t_lo = time.time_ns()
        self.runs[run_index].log_batch(name, batch_steps, batch_values,
                                       times=batch_times if given_times else None, context=CONTEXTS[ctx])
        t_hi = time.time_ns()
        for s, v, t in points:
            self._append(key, s, v, t if given_times else t_lo, t if given_times else t_hi)
        self._check_buckets(key, *narrowed(None, None, [p[0] for p in self.model.get(key, [])], tight), n)

    # -- rules: tensor summaries -------------------------------------------------------

    def _log_tensor_rows(self, run_index, tensors: dict, ctx, step, bins, edges, one: bool):
        keys = [(run_index, name, ctx) for name in tensors]
        logged = {k: [r[0] for r in self.tensors.get(k, [])] for k in keys}
        if step is None and any(_next_step_of(logged[k]) is None for k in keys):
            step = max(_catch_up_of(logged[k]) for k in keys if logged[k])
        expected_steps = [_next_step_of(logged[k]) if step is None else step for k in keys]
        expected = [tensor_expected(t, bins, edges) for t in tensors.values()]   # before logging
        t_lo = time.time_ns()
        if one:
            ((name, t),) = tensors.items()
            self.runs[run_index].log_tensor(name, t, step=step, context=CONTEXTS[ctx], bins=bins, edges=edges)
        else:
            self.runs[run_index].log_tensors(tensors, step=step, context=CONTEXTS[ctx], bins=bins, edges=edges)
        t_hi = time.time_ns()
        for key, s, exp in zip(keys, expected_steps, expected):
            self.tensors.setdefault(key, []).append((s, t_lo, t_hi, exp))
            self.dirty_tensors.add(key)

    @rule(run_index=run_indexes, name=tensor_names, ctx=tensor_contexts, tensor=tensor_arrays, layout=layouts,
          step=steps, bins=bin_counts, edges=caller_edges)
    def log_tensor(self, run_index, name, ctx, tensor, layout, step, bins, edges):
        self._log_tensor_rows(run_index, {name: _laid_out(tensor, layout)}, ctx, step, bins, edges, one=True)

    @rule(run_index=run_indexes, tensors=st.dictionaries(tensor_names, tensor_arrays, min_size=1), ctx=tensor_contexts,
          step=steps, bins=bin_counts, edges=caller_edges)
    def log_tensors(self, run_index, tensors, ctx, step, bins, edges):
        self._log_tensor_rows(run_index, tensors, ctx, step, bins, edges, one=False)

    @rule(run_index=run_indexes, name=tensor_names, ctx=tensor_contexts,
          rows=st.lists(st.tuples(steps, tensor_arrays), min_size=1, max_size=12), edges=series_edges,
          n=bucket_counts, tight=st.booleans())
    def log_tensor_series(self, run_index, name, ctx, rows, edges, n, tight):
        """Several steps of one tensor series with the same bins or edges; then a bucketed
        read of the whole series, which has rows to merge (and, with edges, histograms to
        add up)."""
        for step, t in rows:
            self._log_tensor_rows(run_index, {name: t}, ctx, step, 8, edges, one=True)
        key = (run_index, name, ctx)
        self._check_tensor_buckets(key, *narrowed(None, None, [r[0] for r in self.tensors[key]], tight), n)

    @rule(data=st.data())
    def kinds_do_not_mix(self, data):
        """A name that holds scalar points refuses a tensor and the other way round;
        nothing is written (the invariant reads both series back)."""
        scalar_key = pick(data, sorted(k for k, p in self.model.items() if p))
        tensor_key = pick(data, sorted(k for k, r in self.tensors.items() if r))
        if scalar_key is not None:
            run_index, name, ctx = key = scalar_key
            try:
                self.runs[run_index].log_tensor(name, np.ones(3), step=0, context=CONTEXTS[ctx])
                raise AssertionError(f"log_tensor into scalar series {key} was accepted")
            except steplog.InvalidArgumentError as error:
                assert isinstance(error, ValueError) and "name" in str(error)
            self.dirty.add(key)
        if tensor_key is not None:
            run_index, name, ctx = key = tensor_key
            try:
                self.runs[run_index].log(name, 1.0, step=0, context=CONTEXTS[ctx])
                raise AssertionError(f"log into tensor series {key} was accepted")
            except steplog.InvalidArgumentError as error:
                assert isinstance(error, ValueError) and "name" in str(error)
            self.dirty_tensors.add(key)

    # -- rules: reads --------------------------------------------------------------------

    @rule(data=st.data())
    def read(self, data):
        how = data.draw(st.sampled_from(["everything", "random_range", "around_logged_step"]))
        random_key = (data.draw(run_indexes), data.draw(names), data.draw(contexts))
        random_start, random_stop = data.draw(bounds), data.draw(bounds)
        logged_key = pick(data, sorted(k for k, p in self.model.items() if p))
        logged = sorted({p[0] for p in self.model.get(logged_key, [])})
        start, stop, open_stop = pick(data, logged), pick(data, logged), data.draw(st.booleans())
        if how == "everything":
            self.check_everything()
        elif how == "random_range" or logged_key is None:
            self._check_read(random_key, random_start, random_stop)
        else:
            stop = None if open_stop else stop
            self._check_read(logged_key, start, stop)
            self._check_read(logged_key, start, None if stop is None else stop + 1 if stop < INT64_MAX else stop)

    def _draw_key_and_range(self, data, model, name_strategy, context_strategy=contexts):
        """A series (mostly one with points) and a range: open, random, or from its steps."""
        any_key = (data.draw(run_indexes), data.draw(name_strategy), data.draw(context_strategy))
        logged_key = pick(data, sorted(k for k, p in model.items() if p))
        key = logged_key if logged_key is not None and data.draw(st.integers(0, 5)) else any_key
        logged = sorted({p[0] for p in model.get(key, [])})
        whole = data.draw(st.integers(0, 2)) == 0     # the whole series, a third of the time
        ends = []
        for shift in (0, 1):
            how, bound, step = data.draw(st.sampled_from(["none", "none", "logged", "logged", "bound"])), \
                data.draw(bounds), pick(data, logged)
            ends.append(None if how == "none" or whole else bound if how == "bound" or step is None
                        else min(step + shift, INT64_MAX))
        return key, ends[0], ends[1]

    @rule(data=st.data(), n=bucket_counts, tight=st.booleans())
    def read_buckets(self, data, n, tight):
        key, start, stop = self._draw_key_and_range(data, self.model, names)
        self._check_lttb(key, start, stop, max(n, 2))   # n=1: known bug, test_lttb_returns_at_most_n_points
        start, stop = narrowed(start, stop, [p[0] for p in self._expected(key, start, stop)], tight)
        self._check_buckets(key, start, stop, n)

    @rule(data=st.data(), tight=st.booleans())
    def read_tensor(self, data, tight):
        key, start, stop = self._draw_key_and_range(data, self.tensors, tensor_names, tensor_contexts)
        self._check_tensors(key, start, stop)
        n = data.draw(bucket_counts)
        start, stop = narrowed(start, stop, [r[0] for r in self._expected_tensors(key, start, stop)], tight)
        self._check_tensor_buckets(key, start, stop, n)

    @rule(runs=st.one_of(st.none(), st.lists(run_indexes, max_size=3)),
          metrics=st.one_of(st.none(), st.lists(st.sampled_from(NAMES + TENSOR_NAMES), max_size=3)),
          experiment=st.one_of(st.none(), st.sampled_from(EXPERIMENTS)), start=bounds, stop=bounds,
          n=st.one_of(st.none(), bucket_counts), flush_first=st.booleans(), tight=st.booleans())
    def read_many(self, runs, metrics, experiment, start, stop, n, flush_first, tight):
        """The long table is the per-series reads, labelled, one after another: each
        selected scalar series with points in the range exactly once, nothing else.
        Bucket edges depend on whether the points are in blocks yet (rollups) or still
        buffered, and the flusher moves them at any time: bucketed tables are checked
        against the model, and against per-series reads only once nothing is buffered."""
        if flush_first:
            self.store.flush()
        run_ids = None if runs is None else [self.ids[r] for r in runs]
        selected_runs = [r for r in range(N_RUNS) if (runs is None or r in runs)
                         and (experiment is None or EXPERIMENTS[r % 2] == experiment)]
        by_label = {(self.ids[r], name, _context_json(c)): (r, name, c)
                    for r in selected_runs for name in NAMES if metrics is None or name in metrics
                    for c in range(len(CONTEXTS))}
        if n is not None:
            start, stop = narrowed(start, stop, [p[0] for key in by_label.values()
                                                 for p in self._expected(key, start, stop)], tight)
        args = dict(runs=run_ids, metrics=metrics, experiment=experiment, start=start, stop=stop, buckets=n)
        try:
            table = self.store.read_many(**args)
        except (steplog.NotFoundError, steplog.InvalidArgumentError) as exc:   # a name no selected run holds
            held = {key[1] for key, points in self.model.items() if points and key[0] in selected_runs}
            assert metrics is not None and not set(metrics) <= held, exc
            table = self.store.read_many(**args, missing_ok=True)
        kw = {} if n is None else {"buckets": n}
        schema = self._read((0, NAMES[0], 0), 0, 1, **kw).column_names
        assert table.column_names == ["run_id", "metric", "context"] + schema
        labels = list(zip(*(table.column(c).to_pylist() for c in ("run_id", "metric", "context"))))
        seen, i = set(), 0
        while i < len(labels):
            j = i
            while j < len(labels) and labels[j] == labels[i]:
                j += 1
            label = labels[i]
            assert label not in seen, (label, "a series in two pieces")
            assert label in by_label, (label, "a series that was not asked for")
            seen.add(label)
            part = table.slice(i, j - i).drop_columns(["run_id", "metric", "context"])
            if n is not None:
                self._check_bucket_table(part, by_label[label], start, stop, n)
            if n is None or flush_first:
                self._same_table(part, self._read(by_label[label], start, stop, **kw), label)
            i = j
        for label, key in by_label.items():
            if label not in seen:
                assert self._read(key, start, stop, **kw).num_rows == 0, (label, "left out of read_many")

    @staticmethod
    def _same_table(got: pa.Table, want: pa.Table, where) -> None:
        assert got.column_names == want.column_names, where
        for name in want.column_names:
            g, w = got.column(name), want.column(name)
            assert g.type == w.type, (where, name)
            if pa.types.is_temporal(w.type):   # as int64: times may lie beyond Python's datetime
                g, w = g.cast(pa.int64()), w.cast(pa.int64())
            if not pa.types.is_floating(w.type):
                assert g.to_pylist() == w.to_pylist(), (where, name)
                continue
            gv, wv = g.to_numpy(), w.to_numpy()
            if name == "mean":   # a sum: the points may have moved from buffers to blocks in between
                for a, b in zip(gv.tolist(), wv.tolist()):
                    assert (math.isnan(a) and math.isnan(b)) or _close(a, b, 1e-9 * abs(b)) \
                        or not (math.isfinite(a) and math.isfinite(b)), (where, name, a, b)
            else:
                assert gv.view(np.uint64).tolist() == wv.view(np.uint64).tolist(), (where, name)

    # -- rules: lifetime -------------------------------------------------------------------

    @rule()
    def flush(self):
        self.store.flush()
        for run_index in range(N_RUNS):
            got = {(r["metric"], r["context"]): (r["kind"], r["count"], r["step_min"], r["step_max"])
                   for r in self.store.metrics(self.ids[run_index]).to_pylist()}
            # A writer killed between creating a series and committing its first block
            # leaves the series with no points; only series it logged to may be so.
            for ri, name, ctx in self.maybe_empty:
                if ri == run_index and got.get((name, _context_json(ctx))) == ("scalar", 0, None, None) \
                        and not self.model.get((ri, name, ctx)):
                    del got[name, _context_json(ctx)]
            want = {}
            for kind, model in (("scalar", self.model), ("tensor", self.tensors)):
                for (ri, name, ctx), points in model.items():
                    if ri == run_index and points:
                        st_ = [p[0] for p in points]
                        want[name, _context_json(ctx)] = (kind, len(points), min(st_), max(st_))
            assert got == want

    @invariant()
    def changed_series_read_back(self):
        """After every rule, each series it wrote to (or all, after a restart) reads back."""
        if not hasattr(self, "dirty"):
            return
        for key in sorted(self.dirty):
            self._check_read(key)
        self.dirty.clear()
        for key in sorted(self.dirty_tensors):
            self._check_tensors(key)
        self.dirty_tensors.clear()

    @rule(how=st.sampled_from(["reopen_store", "end_and_resume"]), run_index=run_indexes)
    def restart(self, how, run_index):
        if how == "reopen_store":   # a plain close and open: everything reads back the same
            self._reopen()
        else:
            self.dirty.update(k for k, p in self.model.items() if p)
            self.dirty_tensors.update(k for k, r in self.tensors.items() if r)
            self.runs[run_index].end()
            self.runs[run_index] = self.store.run(self.ids[run_index])

    # -- rules: a writer in another process, killed --------------------------------------

    def _draw_child_op(self, data, run_index: int, shadow: dict):
        """One call for the child to make, and the points it logs: [(key, step, bits)]."""
        kind = data.draw(st.sampled_from(["log", "dict", "batch"]))
        ctx = data.draw(contexts)
        if kind == "batch":
            name = data.draw(names)
            key = (run_index, name, ctx)
            pts = data.draw(st.lists(st.tuples(explicit_steps, values), max_size=5 * BLOCK_POINTS))
            out = [(key, s, _bits(v)) for s, v in pts]
            op = ["batch", name, CONTEXTS[ctx], [s for s, _ in pts], [b for _, _, b in out]]
        else:
            chosen = [data.draw(names)] if kind == "log" else data.draw(st.lists(names, min_size=1, max_size=3,
                                                                                  unique=True))
            keys = [(run_index, name, ctx) for name in chosen]
            step = data.draw(steps)
            if step is None and any(_next_step_of(shadow.get(k, [])) is None for k in keys):
                step = max(_catch_up_of(shadow[k]) for k in keys if shadow.get(k))
            bits = [_bits(data.draw(values)) for _ in keys]
            out = [(k, _next_step_of(shadow.get(k, [])) if step is None else step, b) for k, b in zip(keys, bits)]
            if kind == "log":
                op = ["log", chosen[0], CONTEXTS[ctx], step, bits[0]]
            else:
                op = ["dict", [[n, b] for n, b in zip(chosen, bits)], CONTEXTS[ctx], step]
        for key, s, _ in out:
            shadow.setdefault(key, []).append(s)
        return op, out

    @rule(data=st.data(), run_index=run_indexes, flushed_phases=st.integers(0, 3),
          kill=st.sampled_from(["idle", "after_ack", "now"]))
    def kill_child_writer(self, data, run_index, flushed_phases, kill):
        """A child process resumes a run and logs in phases, each flushed and then
        acknowledged on a side file, the last one never flushed; it is SIGKILLed once
        idle, right after a given acknowledgement, or at once. Reopened, the store holds
        every acknowledged point exactly, and of the others only points that were logged.
        The test's own store stays open meanwhile (it was flushed first, so that write
        order across the processes is known) and sees the same points."""
        shadow = {k: [p[0] for p in v] for k, v in self.model.items()}   # steps, for step=None
        phases, phase_points = [], []
        for p in range(flushed_phases + 1):
            n_ops = data.draw(st.integers(1 if p < flushed_phases else 0, 3))
            ops, pts = [], []
            for _ in range(n_ops):
                op, out = self._draw_child_op(data, run_index, shadow)
                ops.append(op)
                pts.extend(out)
            phases.append(ops)
            phase_points.append(pts)
        target = data.draw(st.integers(-1, flushed_phases - 1)) if kill == "after_ack" else None
        self.store.flush()
        self.kills += 1
        acks = os.path.join(self.aux, f"acks-{self.kills}")
        log = os.path.join(self.aux, f"writer-{self.kills}.log")
        z = zygote()
        t_lo = time.time_ns()
        pid = z.start(path=self.dir, run_id=self.ids[run_index], phases=phases, acks=acks, log=log,
                      block_points=BLOCK_POINTS)
        try:
            if kill == "idle":
                z.wait_for_line(acks, "idle", log)
            elif kill == "after_ack":
                z.wait_for_line(acks, "open" if target < 0 else f"ack {target}", log)
        finally:
            with contextlib.suppress(ProcessLookupError):   # it may have ended on its own
                os.kill(pid, signal.SIGKILL)
            status = z.wait(pid)
        t_hi = time.time_ns()
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (status, _tail(log))
        lines = []
        if os.path.exists(acks):
            with open(acks) as f:
                lines = f.read().splitlines()
        acked = max([int(line.split()[1]) for line in lines if line.startswith("ack ")], default=-1)
        if kill == "idle":
            assert acked == flushed_phases - 1 and "idle" in lines, lines
        elif kill == "after_ack":
            assert acked >= target, (lines, target)

        must, may = {}, {}
        for p, pts in enumerate(phase_points):
            for key, s, b in pts:
                (must if p <= acked else may).setdefault(key, []).append((s, b))
        self.maybe_empty.update(may)
        for key in sorted(set(must) | set(may)):
            steps_, _, vals = columns(self._read(key))
            got = Counter(zip(steps_.tolist(), vals.view(np.uint64).tolist()))
            before = [(p[0], p[1]) for p in self.model.get(key, [])] + must.get(key, [])
            lost = Counter(before) - got
            assert not lost, (key, "acknowledged or earlier points are missing", sorted(lost))
            extra = got - Counter(before)
            never = extra - Counter(may.get(key, []))
            assert not never, (key, "points that were never logged", sorted(never))
            kept = []
            for s, b in may.get(key, []):   # the unacknowledged points that made it, in write order
                if extra[(s, b)] > 0:
                    extra[(s, b)] -= 1
                    kept.append((s, b))
            for s, b in must.get(key, []) + kept:
                self.model.setdefault(key, []).append((s, b, t_lo, t_hi))
            self._check_read(key)                # order and times, through the store that stayed open
        self._reopen()


# database=None: nothing is written outside the tests' temporary folders.
# Shrinking a failure replays thousands of call sequences against real stores and takes
# minutes, so by default a failure is reported as found (at most 30 calls, printed in
# full); set STEPLOG_MODEL_SHRINK=1 to get a minimal sequence instead.
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("STEPLOG_MODEL_SHRINK") == "1":
    _PHASES.append(Phase.shrink)
StoreModel.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None, database=None,
                                        phases=_PHASES, report_multiple_bugs=False,
                                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TestStoreModel = StoreModel.TestCase


# -- cases the state machine found wrong once; it keeps bucketed reads within SAFE_SPAN ---

def test_bucketed_read_over_the_whole_step_axis(open_store):
    """Steps may be any int64 (README), so a bucketed read of a series whose steps span
    more than 2**63 must still work, buffered and flushed (the bucket width does not fit
    in int64)."""
    store = open_store()
    run = store.start_run()
    run.log("x", 1.0, step=INT64_MIN)
    run.log("x", 2.0, step=INT64_MAX)
    for flushed in (False, True):
        if flushed:
            store.flush()
        for n in (1, 2, 3):
            table = store.read(run.id, "x", buckets=n)
            assert table.num_rows <= n and sum(table.column("count").to_pylist()) == 2, (flushed, n)
            assert min(table.column("min").to_pylist()) == 1.0 and max(table.column("max").to_pylist()) == 2.0


def test_tensor_buckets_over_the_whole_step_axis(open_store):
    """read_tensor(buckets=N) must put every row in a bucket [step_start, step_end), also
    rows at INT64_MAX and at INT64_MIN + 1 and INT64_MAX - 1 (where step_end could wrap)."""
    store = open_store()
    run = store.start_run()
    for name, steps_ in (("edges", [INT64_MIN + 1, INT64_MAX - 1]), ("top", [0, INT64_MAX])):
        for step in steps_:
            run.log_tensor(name, np.ones(2), step=step)
        for n in (2, 3):
            table = store.read_tensor(run.id, name, buckets=n).to_pylist()
            assert sum(row["rows"] for row in table) == 2, (name, n)
            for row in table:
                assert row["step_start"] < row["step_end"], (name, n, row["step_start"], row["step_end"])
            for step in steps_:
                assert any(row["step_start"] <= step < row["step_end"] or step == row["step_end"] == INT64_MAX
                           for row in table), (name, n, step)


def test_tensor_bucket_without_finite_values_has_nan_l2(open_store):
    """A row without finite values has NaN min, max, mean, std and l2; so has a bucket
    that merges such rows."""
    store = open_store()
    run = store.start_run()
    run.log_tensor("w", np.array([np.nan, np.inf]), step=0)
    run.log_tensor("w", np.array([np.nan]), step=1)
    (row,) = store.read_tensor(run.id, "w", buckets=1).to_pylist()
    assert math.isnan(row["mean"]) and math.isnan(row["std"])
    assert math.isnan(row["l2"]), row["l2"]


def test_reading_a_series_as_the_other_kind_is_an_argument_error(open_store):
    """read_tensor of a scalar series and read of a tensor series raise
    InvalidArgumentError naming ``name``, buffered and flushed."""
    store = open_store()
    run = store.start_run()
    run.log("loss", 1.0, step=0)
    run.log_tensor("w", np.ones(3), step=0)
    for flushed in (False, True):
        if flushed:
            store.flush()
        with pytest.raises(steplog.InvalidArgumentError, match="name"):
            store.read_tensor(run.id, "loss")
        with pytest.raises(steplog.InvalidArgumentError, match="name"):
            store.read(run.id, "w")


def test_lttb_returns_at_most_n_points(open_store):
    """method="lttb" keeps at most N raw points, also N=1 on series of 2 and 3 points."""
    store = open_store()
    run = store.start_run()
    run.log_batch("x", np.arange(2), np.array([1.0, 2.0]))
    run.log_batch("y", np.arange(3), np.array([1.0, 2.0, 3.0]))
    assert store.read(run.id, "y", buckets=1, method="lttb").num_rows == 1
    assert store.read(run.id, "x", buckets=1, method="lttb").num_rows == 1


def test_tensor_bucket_std_and_l2_do_not_under_or_overflow(open_store):
    """A row's std and l2 are computed on scaled values when squares would under- or
    overflow (engine/summary.py); a bucket that merges such rows must scale too: no 0.0
    near 1e-200, no inf or overflow warning near 1e200."""
    store = open_store()
    run = store.start_run()
    for name, scale in (("tiny", 1e-200), ("huge", 1e200)):
        run.log_tensor(name, np.array([1.0, 3.0]) * scale, step=0)
        (row,) = store.read_tensor(run.id, name).drop_columns(["time"]).to_pylist()
        (bucket,) = store.read_tensor(run.id, name, buckets=1).to_pylist()
        assert row["std"] == pytest.approx(scale) and row["l2"] == pytest.approx(math.sqrt(10) * scale)
        assert bucket["std"] == pytest.approx(row["std"]), name
        assert bucket["l2"] == pytest.approx(row["l2"]), name
