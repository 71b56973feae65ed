"""Model-based test: random API calls against a plain dict-of-lists model.

The model keeps, per series, every point in write order: (step, value bits, lowest and
highest possible time). A read must return exactly the model's points with
start <= step < stop, stably sorted by step (ties in write order), bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import steplog

from _helpers import INT64_MAX, INT64_MIN, SPECIAL_VALUES, columns

BLOCK_POINTS = 16
N_RUNS = 2
NAMES = ["loss", "acc", "a/b"]
CONTEXTS = [None, {"split": "train"}, {"split": "val", "fold": 1}]

run_indexes = st.integers(0, N_RUNS - 1)
names = st.sampled_from(NAMES)
contexts = st.integers(0, len(CONTEXTS) - 1)
values = st.one_of(
    st.floats(width=64, allow_nan=True, allow_infinity=True),
    st.sampled_from([float(v) for v in SPECIAL_VALUES]),
    st.integers(0, 2**64 - 1).map(lambda b: float(np.uint64(b).view(np.float64))),
)
explicit_steps = st.one_of(st.integers(-5, 20), st.sampled_from([INT64_MIN, INT64_MIN + 1, INT64_MAX - 1, INT64_MAX]))
steps = st.one_of(st.none(), explicit_steps)
bounds = st.one_of(st.none(), st.integers(-7, 22), st.sampled_from([INT64_MIN, INT64_MAX]))
times_ns = st.integers(INT64_MIN, INT64_MAX)


def _bits(value: float) -> int:
    return int(np.float64(value).view(np.uint64))


class StoreModel(RuleBasedStateMachine):
    """One store, N_RUNS runs; series keyed by (run index, name, context index)."""

    @initialize()
    def open_store(self):
        self.dir = tempfile.mkdtemp(prefix="steplog-model-")
        self.store = steplog.open(self.dir, block_points=BLOCK_POINTS, flush_interval=None)
        self.runs = [self.store.start_run(experiment="model") for _ in range(N_RUNS)]
        self.ids = [run.id for run in self.runs]
        self.model: dict[tuple, list[tuple[int, int, int, int]]] = {}
        self.dirty: set[tuple] = set()   # series to read back after the current rule

    def teardown(self):
        try:
            if getattr(self, "store", None) is not None:
                self.store.close()
        finally:
            if hasattr(self, "dir"):
                shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------

    def _next_step(self, key):
        """The step that step=None gives, where "the series' last step + 1" is
        unambiguous (the last written step is also the largest); None otherwise."""
        points = self.model.get(key, [])
        if not points:
            return 0
        last = points[-1][0]
        if last != max(p[0] for p in points) or last == INT64_MAX:
            return None
        return last + 1

    def _catch_up_step(self, key):
        """An explicit step after which step=None is unambiguous again."""
        top = max(p[0] for p in self.model[key])
        return top + 1 if top < INT64_MAX else 0

    def _append(self, key, step, value, t_lo, t_hi):
        self.model.setdefault(key, []).append((step, _bits(value), t_lo, t_hi))
        self.dirty.add(key)

    def _expected(self, key, start, stop):
        points = [p for p in self.model.get(key, []) if (start is None or p[0] >= start)
                  and (stop is None or p[0] < stop)]
        return sorted(points, key=lambda p: p[0])  # sorted() is stable: ties keep write order

    def _check_read(self, key, start=None, stop=None):
        run_index, name, ctx = key
        table = self.store.read(self.ids[run_index], name, context=CONTEXTS[ctx], start=start, stop=stop)
        got_steps, got_times, got_values = columns(table)
        want = self._expected(key, start, stop)
        assert got_steps.tolist() == [p[0] for p in want], (key, start, stop)
        assert got_values.view(np.uint64).tolist() == [p[1] for p in want], (key, start, stop)
        for t, (_, _, lo, hi) in zip(got_times.tolist(), want):
            assert lo <= t <= hi, (key, t, lo, hi)

    def check_everything(self):
        for run_index in range(N_RUNS):
            for name in NAMES:
                for ctx in range(len(CONTEXTS)):
                    self._check_read((run_index, name, ctx))

    # -- rules -------------------------------------------------------------------------

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
          given_times=st.booleans())
    def log_batch(self, run_index, name, ctx, points, given_times):
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

    @rule()
    def flush(self):
        self.store.flush()
        for run_index in range(N_RUNS):
            got = {(r["metric"], r["context"]): (r["count"], r["step_min"], r["step_max"])
                   for r in self.store.metrics(self.ids[run_index]).to_pylist()}
            want = {}
            for (ri, name, ctx), points in self.model.items():
                if ri == run_index and points:
                    context = CONTEXTS[ctx]
                    # FORMAT.md: the canonical JSON of the context (keys sorted, no spaces)
                    context_json = json.dumps(context, sort_keys=True, separators=(",", ":")) if context else None
                    st_ = [p[0] for p in points]
                    want[name, context_json] = (len(points), min(st_), max(st_))
            assert got == want

    @invariant()
    def changed_series_read_back(self):
        """After every rule, each series it wrote to (or all, after a restart) reads back."""
        if not hasattr(self, "dirty"):
            return
        for key in sorted(self.dirty):
            self._check_read(key)
        self.dirty.clear()

    @rule(how=st.sampled_from(["reopen_store", "end_and_resume"]), run_index=run_indexes)
    def restart(self, how, run_index):
        self.dirty.update(k for k, p in self.model.items() if p)
        if how == "reopen_store":
            self.store.close()
            self.store = steplog.open(self.dir, block_points=BLOCK_POINTS, flush_interval=None)
            self.runs = [self.store.run(run_id) for run_id in self.ids]
        else:
            self.runs[run_index].end()
            self.runs[run_index] = self.store.run(self.ids[run_index])

    @rule(data=st.data())
    def read(self, data):
        how = data.draw(st.sampled_from(["everything", "random_range", "around_logged_step"]))
        logged_keys = sorted(k for k, p in self.model.items() if p)
        if how == "everything":
            self.check_everything()
        elif how == "random_range" or not logged_keys:
            key = (data.draw(run_indexes), data.draw(names), data.draw(contexts))
            self._check_read(key, data.draw(bounds), data.draw(bounds))
        else:
            key = data.draw(st.sampled_from(logged_keys))
            logged = sorted({p[0] for p in self.model[key]})
            start = data.draw(st.sampled_from(logged))
            stop = data.draw(st.one_of(st.none(), st.sampled_from(logged)))
            self._check_read(key, start, stop)
            self._check_read(key, start, None if stop is None else stop + 1 if stop < INT64_MAX else stop)


# database=None: nothing is written outside the tests' temporary folders.
# Shrinking a failure replays thousands of call sequences against real stores and takes
# minutes, so by default a failure is reported as found (at most 30 calls, printed in
# full); set STEPLOG_MODEL_SHRINK=1 to get a minimal sequence instead.
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("STEPLOG_MODEL_SHRINK") == "1":
    _PHASES.append(Phase.shrink)
StoreModel.TestCase.settings = settings(max_examples=30, stateful_step_count=30, deadline=None, database=None,
                                        phases=_PHASES, report_multiple_bugs=False,
                                        suppress_health_check=[HealthCheck.too_slow])
TestStoreModel = StoreModel.TestCase
