"""Shared set-up of the benchmark suites.

Sizes: the full sizes of ``steplog bench`` when benchmarks run, tiny ones under
``--benchmark-disable`` (CI runs the suites as plain tests, in seconds). The
environment variable STEPLOG_BENCH_SIZE=full|quick|tiny overrides either.

    .venv/bin/python -m pytest benchmarks --benchmark-only          # full sizes
    .venv/bin/python -m pytest -q benchmarks --benchmark-disable    # tiny, as CI runs them
"""

from __future__ import annotations

import functools
import os
import shutil

import pytest

import steplog
from steplog.bench import FULL, QUICK, Sizes, standard_curve, warm_up, write_series

TINY = Sizes(log_points=20_000, dict_calls=2_000, batch_points=50_000, read_points=50_000,
             repeats=1, range_repeats=1, import_repeats=1)
SIZES = {"full": FULL, "quick": QUICK, "tiny": TINY}


@pytest.fixture
def sizes(benchmark) -> Sizes:
    name = os.environ.get("STEPLOG_BENCH_SIZE") or ("tiny" if benchmark.disabled else "full")
    if name not in SIZES:
        raise pytest.UsageError(f"STEPLOG_BENCH_SIZE must be one of {sorted(SIZES)}, got {name!r}")
    return SIZES[name]


@functools.lru_cache(maxsize=4)
def _curve(n: int):
    columns = standard_curve(n)
    for column in columns:
        column.flags.writeable = False   # shared by every test of this size
    return columns


@pytest.fixture(scope="session")
def curve():
    """curve(n) -> (steps, times, values): the standard curve, made once per size, read-only."""
    return _curve


@pytest.fixture(scope="session", autouse=True)
def _numba_warm():
    """Compile (or load from cache) the numba kernels before anything is timed."""
    warm_up()


class FreshStores:
    """A new store directory for every benchmark round; closes and removes them all at the end."""

    def __init__(self, root):
        self.root = root
        self.paths: list[str] = []
        self.stores: list[steplog.Store] = []
        self.run_id: str | None = None    # run of the latest new_run()

    def new_path(self) -> str:
        self.paths.append(os.path.join(self.root, f"store{len(self.paths)}"))
        return self.paths[-1]

    def new_run(self, *args):
        """A pedantic setup: a run on a new store, passed to the target before ``args``."""
        def setup():
            store = steplog.open(self.new_path())
            self.stores.append(store)
            run = store.start_run(experiment="bench")
            self.run_id = run.id
            return (run, *args), {}
        return setup

    def new_path_args(self, *args):
        """A pedantic setup: a new store path, passed to the target before ``args``."""
        return lambda: ((self.new_path(), *args), {})

    def close(self, *_args) -> None:
        """A pedantic teardown: closes every store opened so far (their files stay)."""
        while self.stores:
            self.stores.pop().close()

    @property
    def last_path(self) -> str:
        return self.paths[-1]

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def fresh(tmp_path):
    stores = FreshStores(str(tmp_path / "stores"))
    yield stores
    stores.remove()


@pytest.fixture(scope="session")
def written_series(tmp_path_factory):
    """written_series(n) -> (path, run_id): a closed store holding the standard curve of
    ``n`` points as series "loss", written once per n for the whole session."""
    root = tmp_path_factory.mktemp("read-stores")
    made = {}

    def get(n: int) -> tuple[str, str]:
        if n not in made:
            path = str(root / f"curve{n}")
            steps, times, values = _curve(n)
            made[n] = path, write_series(path, steps, values, times)
        return made[n]

    yield get
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def record_rate(benchmark):
    """record_rate(points): put points and the median points/s in extra_info."""
    def record(points: int) -> None:
        benchmark.extra_info["points"] = points
        if benchmark.enabled and benchmark.stats is not None:
            benchmark.extra_info["points_per_s"] = round(points / benchmark.stats.stats.median)
    return record
