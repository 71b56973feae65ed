"""Issue 12's figures: steplog as MLflow's tracking store next to MLflow's own SQLite store.

Every figure runs on both ``steplog:///<tmp>/s`` and ``sqlite:///<tmp>/mlflow.db`` with the
same data, each backend in a fresh child process of its own (a figure group a process: the
client ceilings patch the store class, so they never share a process with a real figure).
Each figure's function says exactly what it times. Rates are medians of REPEATS repeats;
times are medians of their repeats, with the first call of the process noted apart.

    .venv/bin/python benchmarks/mlflow_figures.py                         # every figure (about 15 min)
    .venv/bin/python benchmarks/mlflow_figures.py --quick                 # shorter loops, 1,000 runs to search;
                                                                  # no SQLite 1 M-point reads, no 100 M points
    .venv/bin/python benchmarks/mlflow_figures.py --only search_runs --backends steplog
    .venv/bin/python benchmarks/mlflow_figures.py --json figures.json     # the raw samples too

SQLite keeps its sizes feasible: per-call loops run for seconds, not to a point count; its
1 M-point history is read once; it populates at most POPULATE_SECONDS of runs to search.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import faulthandler  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

BACKENDS = ("steplog", "sqlite")
REPEATS = 3
BATCH = 1000                      # metrics per log_batch: MLflow's own per-request limit
HISTORY_POINTS = 1_000_000
LONG_POINTS = 100_000_000
CHUNK = 1_000_000                 # points per steplog log_batch when writing long histories
CHART_POINTS = 320                # what MLflow's UI asks get-history-bulk-interval for
SERVER_CLIENTS = 8
SERVER_WORKERS = 4
SEARCH_RUNS = 10_000
SEARCH_FILTER = "metrics.loss < 0.5 and params.opt = 'adam'"
SEARCH_MAX_RESULTS = 1000
POPULATE_SECONDS = 180            # SQLite's populate stops here and says how many runs it made
OPTIMIZERS = ("adam", "sgd", "adamw", "lion")
BASE_MS = 1_700_000_000_000
NS_PER_MS = 1_000_000
CALL_LIMIT_S = 300               # one read longer than this fails its figure
LONG_DISK_BYTES = 3 * 10**9       # free space the 100 M-point history must find under the temp folder


@dataclasses.dataclass(frozen=True)
class Options:
    quick: bool
    seconds: float                # length of one per-call or batch loop
    server_seconds: float
    search_runs: int
    populate_seconds: float
    repeats: int = REPEATS

    @classmethod
    def make(cls, quick: bool) -> "Options":
        if quick:
            return cls(quick, seconds=1.0, server_seconds=6.0, search_runs=1000, populate_seconds=30)
        return cls(quick, seconds=3.0, server_seconds=20.0, search_runs=SEARCH_RUNS, populate_seconds=POPULATE_SECONDS)


@dataclasses.dataclass
class Context:
    """What a figure gets in its child process: the backend, a fresh folder, options."""

    backend: str
    folder: str
    cache: str                    # shared by the children of one run: the migrated SQLite file
    options: Options
    _uri: str | None = None
    histories: dict = dataclasses.field(default_factory=dict)   # points -> (experiment id, run id)

    @property
    def uri(self) -> str:
        if self._uri is None:
            self._uri = tracking_uri(self.backend, self.folder, self.cache)
        return self._uri


def tracking_uri(backend: str, folder: str, cache: str) -> str:
    if backend == "steplog":
        return f"steplog://{os.path.join(folder, 's')}"
    # MLflow migrates a new SQLite database for seconds: migrate once a run, copy it.
    template = os.path.join(cache, "migrated.db")
    if not os.path.exists(template):
        from mlflow import MlflowClient

        MlflowClient(f"sqlite:///{template}").search_experiments()
    shutil.copy(template, os.path.join(folder, "mlflow.db"))
    return f"sqlite:///{os.path.join(folder, 'mlflow.db')}"


def store_of(uri: str):
    """The tracking store object MLflow's clients in this process use for ``uri``."""
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    return _tracking_store_registry.get_store(uri)


def result(samples: list[float], note: str = "", first: float | None = None) -> dict:
    return {"value": statistics.median(samples) if samples else None, "samples": samples, "note": note,
            "first": first}


def skipped(why: str) -> dict:
    return {"value": None, "samples": [], "note": why, "first": None}


# -- the data ------------------------------------------------------------------------------


def curve(n: int):
    """steplog's standard curve (steps, times, values), times rounded to MLflow's ms."""
    from steplog.bench import standard_curve

    steps, times, values = standard_curve(n)
    return steps, times // NS_PER_MS, values


def metric_batch(first_step: int, values, times, key: str = "loss") -> list:
    from mlflow.entities import Metric

    stop = first_step + BATCH
    return [Metric(key, v, t, s) for s, t, v in zip(range(first_step, stop), times[first_step:stop],
                                                     values[first_step:stop])]


def write_history(ctx: Context, run_id: str, points: int) -> None:
    """``points`` points of series "loss" in a run MLflow created, written past the client:
    steplog's own log_batch in chunks of CHUNK, or SQL inserts into MLflow's tables."""
    steps, times_ms, values = curve(min(points, CHUNK))
    if ctx.backend == "steplog":
        import steplog

        with steplog.open(os.path.join(ctx.folder, "s")) as store:
            run = store.run(run_id, resume=False)
            for lo in range(0, points, CHUNK):
                size = min(CHUNK, points - lo)
                run.log_batch("loss", steps[:size] + lo, values[:size], (times_ms[:size] + lo) * NS_PER_MS)
            store.flush()
        return
    rows = zip(["loss"] * points, values.tolist(), times_ms.tolist(), [run_id] * points, steps.tolist(),
               [0] * points)
    with sqlite3.connect(os.path.join(ctx.folder, "mlflow.db")) as db:
        db.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)",
                       rows)
        db.execute("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES (?,?,?,?,0,?)",
                   ("loss", float(values[-1]), int(times_ms[-1]), int(steps[-1]), run_id))


def history_run(ctx: Context, points: int) -> tuple[str, str]:
    """(experiment id, run id) of a run holding a history of ``points`` points, made once
    a process."""
    if points not in ctx.histories:
        ctx.histories[points] = new_history_run(ctx, points)
    return ctx.histories[points]


def new_history_run(ctx: Context, points: int) -> tuple[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(ctx.uri)
    experiment = client.create_experiment(f"history-{points}")
    run_id = client.create_run(experiment).info.run_id
    write_history(ctx, run_id, points)
    return experiment, run_id


# -- timing loops --------------------------------------------------------------------------


def timed_calls(call, seconds: float, finish) -> float:
    """Calls per second of ``call(i)`` for ``seconds``, then one ``finish()``, all timed.
    The deadline check costs about 60 ns a call."""
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        call(calls)
        calls += 1
    finish()
    return calls / (time.perf_counter() - start)


def timed_batches(log, seconds: float, finish) -> float:
    """Points per second of ``log(first_step, metrics)`` over batches of BATCH metrics
    built outside the timed span, until ``seconds`` of calls, then one ``finish()``."""
    steps, times, values = curve(HISTORY_POINTS)
    times, values = times.tolist(), values.tolist()
    spent, points = 0.0, 0
    while spent < seconds:
        metrics = metric_batch(points % (HISTORY_POINTS - BATCH), values, times)
        began = time.perf_counter()
        log(points, metrics)
        spent += time.perf_counter() - began
        points += len(metrics)
    began = time.perf_counter()
    finish()
    return points / (spent + time.perf_counter() - began)


# -- per-call and batch logging in process -----------------------------------------------


def fluent_rates(ctx: Context, registry: bool = False) -> list[float]:
    import mlflow

    values = curve(HISTORY_POINTS)[2].tolist()
    mlflow.set_tracking_uri(ctx.uri)
    if registry:   # for the rest of the process: figures that set it come last in their group
        mlflow.set_registry_uri(f"sqlite:///{os.path.join(ctx.folder, 'registry.db')}")
    mlflow.set_experiment("per-call")
    rates = []
    for _ in range(ctx.options.repeats):
        with mlflow.start_run():
            rates.append(timed_calls(lambda i: mlflow.log_metric("loss", values[i % HISTORY_POINTS], step=i),
                                     ctx.options.seconds, mlflow.flush_async_logging))
    return rates


def client_rates(ctx: Context) -> list[float]:
    from mlflow import MlflowClient

    values = curve(HISTORY_POINTS)[2].tolist()
    client = MlflowClient(ctx.uri)
    experiment = client.create_experiment("client-per-call")
    store = store_of(ctx.uri)
    rates = []
    for _ in range(ctx.options.repeats):
        run_id = client.create_run(experiment).info.run_id
        rates.append(timed_calls(lambda i: client.log_metric(run_id, "loss", values[i % HISTORY_POINTS], step=i),
                                 ctx.options.seconds, store.flush_async_logging))
    return rates


def batch_rates(ctx: Context) -> list[float]:
    from mlflow import MlflowClient

    client = MlflowClient(ctx.uri)
    experiment = client.create_experiment("client-batch")
    store = store_of(ctx.uri)
    rates = []
    for _ in range(ctx.options.repeats):
        run_id = client.create_run(experiment).info.run_id
        rates.append(timed_batches(lambda first, metrics: client.log_batch(run_id, metrics=metrics),
                                   ctx.options.seconds, store.flush_async_logging))
    return rates


def fluent_log_metric(ctx: Context) -> dict:
    """``mlflow.log_metric("loss", value, step=i)`` in an active run (``mlflow.start_run``),
    one point a call, timestamp left to the client. points/s = calls / seconds of the
    calls plus one ``mlflow.flush_async_logging()`` after them (steplog's points are then
    durable; SQLite commits every call). A loop of --seconds (3 s; 1 s with --quick) a
    repeat, a new run each repeat."""
    return {"fluent_log_metric": result(fluent_rates(ctx))}


def fluent_log_metric_registry(ctx: Context) -> dict:
    """fluent_log_metric after ``mlflow.set_registry_uri("sqlite:///<tmp>/registry.db")``
    (never opened): each MlflowClient the fluent API builds then skips its search for a
    Spark session's registry URI, a failed ``import pyspark`` each time."""
    return {"fluent_log_metric_registry": result(fluent_rates(ctx, registry=True))}


def client_log_metric(ctx: Context) -> dict:
    """``MlflowClient.log_metric(run_id, "loss", value, step=i)``, one point a call,
    timestamp left to the client; timed as fluent_log_metric, the final flush being the
    store's ``flush_async_logging()``."""
    return {"client_log_metric": result(client_rates(ctx))}


def client_log_batch(ctx: Context) -> dict:
    """``MlflowClient.log_batch(run_id, metrics=[1,000 Metric])``: one key, steps
    consecutive across calls, the standard curve's values and ms times. The Metric lists
    are built outside the timed span; points/s = points / (seconds inside log_batch +
    one final ``flush_async_logging()``), for --seconds of calls a repeat."""
    return {"client_log_batch": result(batch_rates(ctx))}


def no_op_store(ctx: Context) -> None:
    """The store's log_metric and log_batch become no-ops, on its class, in this process."""
    cls = type(store_of(ctx.uri))
    cls.log_metric = lambda self, run_id, metric: None
    cls.log_batch = lambda self, run_id, metrics=(), params=(), tags=(): None


def fluent_log_metric_ceiling(ctx: Context) -> dict:
    """fluent_log_metric with the store's ``log_metric`` a no-op: what MLflow's fluent API
    costs by itself (it builds MlflowClient twice a call and looks for pyspark each time)."""
    no_op_store(ctx)
    return {"fluent_log_metric_ceiling": result(fluent_rates(ctx))}


def fluent_log_metric_registry_ceiling(ctx: Context) -> dict:
    """fluent_log_metric_registry with the store's ``log_metric`` a no-op."""
    no_op_store(ctx)
    return {"fluent_log_metric_registry_ceiling": result(fluent_rates(ctx, registry=True))}


def client_log_metric_ceiling(ctx: Context) -> dict:
    """client_log_metric with the store's ``log_metric`` a no-op: the client's own cost."""
    no_op_store(ctx)
    return {"client_log_metric_ceiling": result(client_rates(ctx))}


def client_log_batch_ceiling(ctx: Context) -> dict:
    """client_log_batch with the store's ``log_batch`` a no-op: the client rebuilds every
    Metric and asks for the active model id once per metric."""
    no_op_store(ctx)
    return {"client_log_batch_ceiling": result(batch_rates(ctx))}


# -- histories -----------------------------------------------------------------------------


def get_metric_history_1m(ctx: Context) -> dict:
    """``MlflowClient.get_metric_history(run_id, "loss")`` of a 1,000,000-point history
    (the client pages it 25,000 points a store call): seconds until the list of 1 M Metric
    objects is back, the store already open. steplog: median of 3, the process's first call
    noted; SQLite: once, skipped with --quick."""
    if ctx.backend == "sqlite" and ctx.options.quick:
        return {"get_metric_history_1m": skipped("skipped with --quick (about a minute)")}
    from mlflow import MlflowClient

    _, run_id = history_run(ctx, HISTORY_POINTS)
    client = MlflowClient(ctx.uri)
    samples = []
    for _ in range(1 if ctx.backend == "sqlite" else ctx.options.repeats):
        began = time.perf_counter()
        history = client.get_metric_history(run_id, "loss")
        samples.append(time.perf_counter() - began)
        assert len(history) == HISTORY_POINTS, len(history)
        del history
    return {"get_metric_history_1m": result(samples, first=samples[0])}


def metric_objects_1m(ctx: Context) -> dict:
    """The floor under get_metric_history_1m: building 1,000,000 ``Metric(key, value,
    timestamp, step)`` from Python lists, no store involved (median of 3)."""
    from mlflow.entities import Metric

    steps, times, values = (c.tolist() for c in curve(HISTORY_POINTS))
    samples = []
    for _ in range(ctx.options.repeats):
        began = time.perf_counter()
        built = [Metric("loss", v, t, s) for s, t, v in zip(steps, times, values)]
        samples.append(time.perf_counter() - began)
        del built
    return {"metric_objects_1m": result(samples)}


@contextlib.contextmanager
def time_limit(seconds: float):
    """TimeoutError in this thread after ``seconds``, with every thread's stack on stderr."""
    def expire(signum, frame):
        faulthandler.dump_traceback(all_threads=True)
        raise TimeoutError(f"over {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def time_bulk_interval(store, run_id: str, points: int, repeats: int) -> tuple[list[float], int]:
    """Seconds of each call; one over CALL_LIMIT_S fails the figure."""
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        with time_limit(CALL_LIMIT_S):
            found = store.get_metric_history_bulk_interval(run_ids=[run_id], metric_key="loss",
                                                           max_results=CHART_POINTS, start_step=None, end_step=None)
        samples.append(time.perf_counter() - began)
        assert 0 < len(found) <= CHART_POINTS and found[-1].step == points - 1, (len(found), found[-1])
    return samples, len(found)


def bulk_interval_1m(ctx: Context) -> dict:
    """The store call behind ``get-history-bulk-interval`` (what the server's handler
    makes): ``store.get_metric_history_bulk_interval([run_id], "loss", max_results=320,
    start_step=None, end_step=None)`` over a 1,000,000-point history, in process. steplog:
    median of 10, first call noted; SQLite: median of 3, skipped with --quick."""
    if ctx.backend == "sqlite" and ctx.options.quick:
        return {"bulk_interval_1m": skipped("skipped with --quick")}
    _, run_id = history_run(ctx, HISTORY_POINTS)
    samples, returned = time_bulk_interval(store_of(ctx.uri), run_id, HISTORY_POINTS,
                                           10 if ctx.backend == "steplog" else ctx.options.repeats)
    return {"bulk_interval_1m": result(samples, f"{returned} points returned", first=samples[0])}


def bulk_interval_100m(ctx: Context) -> dict:
    """bulk_interval_1m over a 100,000,000-point history (steplog only: SQLite would take
    hours to hold it), written by steplog's own log_batch in chunks of 1 M into a run MLflow
    created; then the same call through ``mlflow server`` (1 worker), REST GET, median of 7.
    The history is deleted afterwards. Skipped with --quick."""
    rest = "server_bulk_interval_100m"
    if ctx.backend == "sqlite":
        why = "not run: 100 M rows take SQLite hours to write"
        return {"bulk_interval_100m": skipped(why), rest: skipped(why)}
    if ctx.options.quick:
        return {"bulk_interval_100m": skipped("skipped with --quick"), rest: skipped("skipped with --quick")}
    free = shutil.disk_usage(ctx.folder).free
    if free < LONG_DISK_BYTES:
        why = f"skipped: {free / 1e9:.1f} GB free under {ctx.folder}"
        return {"bulk_interval_100m": skipped(why), rest: skipped(why)}
    began = time.perf_counter()
    experiment, run_id = history_run(ctx, LONG_POINTS)
    written = time.perf_counter() - began
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ctx.folder) for f in fs)
    try:
        samples, returned = time_bulk_interval(store_of(ctx.uri), run_id, LONG_POINTS, 10)
        note = f"{returned} points returned; history written in {written:.0f} s, {size / 1e9:.2f} GB"
        found = {"bulk_interval_100m": result(samples, note, first=samples[0])}
        found[rest] = rest_bulk_interval(ctx, run_id, LONG_POINTS, workers=1)
        return found
    finally:
        shutil.rmtree(os.path.join(ctx.folder, "s"), ignore_errors=True)


# -- through mlflow server -----------------------------------------------------------------


def server_module():
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from tests import _mlflow_server

    return _mlflow_server


def rest_bulk_interval(ctx: Context, run_id: str, points: int, workers: int, server=None) -> dict:
    """Median of 7 GETs of get-history-bulk-interval (new connection each), first noted."""
    import requests

    helpers = server_module()
    own = server is None
    if own:
        server = helpers.start_server(ctx.uri, _server_folder(ctx), workers=workers)
    try:
        samples = []
        for _ in range(7):
            began = time.perf_counter()
            response = requests.get(f"{server.url}/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                                    params={"run_ids": run_id, "metric_key": "loss", "max_results": CHART_POINTS},
                                    headers={"Connection": "close"}, timeout=CALL_LIMIT_S)
            samples.append(time.perf_counter() - began)
            assert response.status_code == 200, response.text[:2000]
            metrics = response.json()["metrics"]
            assert 0 < len(metrics) <= CHART_POINTS and int(metrics[-1]["step"]) == points - 1
        return result(samples, f"{len(metrics)} points returned, {workers} worker(s)", first=samples[0])
    finally:
        if own:
            server.stop()


def _server_folder(ctx: Context):
    from pathlib import Path

    folder = Path(ctx.folder, f"server{time.monotonic_ns()}")
    folder.mkdir()
    return folder


def server_log_batch(ctx: Context) -> dict:
    """``mlflow server --backend-store-uri <uri> --workers 4`` on 127.0.0.1; 8 client
    processes (MlflowClient over REST), each with its own run, start together and call
    ``log_batch`` of 1,000 metrics (built in the loop) for --server-seconds (20 s; 6 s with
    --quick). points/s = points every client had acknowledged / (last client's end - first
    client's start). Failed requests are counted, not retried. Then
    ``get-history-bulk-interval`` (320 points) over a 1 M-point run by REST (SQLite: not
    with --quick)."""
    from mlflow import MlflowClient

    helpers = server_module()
    with_history = not (ctx.backend == "sqlite" and ctx.options.quick)
    history = history_run(ctx, HISTORY_POINTS)[1] if with_history else None
    server = helpers.start_server(ctx.uri, _server_folder(ctx), workers=SERVER_WORKERS)
    try:
        experiment = MlflowClient(server.url).create_experiment("server")
        reports, server_cpu = drive_clients(server, experiment, ctx.options.server_seconds)
        found = {"server_log_batch": server_rate(reports, server_cpu)}
        found["server_bulk_interval_1m"] = (rest_bulk_interval(ctx, history, HISTORY_POINTS, SERVER_WORKERS, server)
                                            if with_history else skipped("skipped with --quick"))
        return found
    finally:
        server.stop()


def server_rate(reports: list[dict], server_cpu: float) -> dict:
    points = sum(r["points"] for r in reports)
    seconds = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    errors = sum(r["errors"] for r in reports)
    lost = sum(1 for r in reports if r["latest_step"] != r["last_step"])
    client_cpu = sum(r["cpu"] for r in reports)
    note = (f"{points:,} points in {seconds:.1f} s, {SERVER_CLIENTS} clients, {SERVER_WORKERS} workers; CPU s "
            f"per 1,000 points: server {server_cpu / points * 1e3:.3f}, clients {client_cpu / points * 1e3:.3f}")
    if errors:
        note += f"; {errors} failed requests, first: {next(r['error'] for r in reports if r['error'])[:200]}"
    if lost:
        note += f"; {lost} runs whose latest step is not their last logged one"
    return result([points / seconds], note)


def drive_clients(server, experiment: str, seconds: float) -> tuple[list[dict], float]:
    """The clients' reports, and the CPU seconds the server's processes spent meanwhile."""
    helpers = server_module()
    url = server.url
    env = {**os.environ, **helpers.QUIET_ENV}
    env.pop("MLFLOW_TRACKING_URI", None)
    clients = [subprocess.Popen([sys.executable, __file__, "--server-client", url, experiment, str(seconds)],
                                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(SERVER_CLIENTS)]
    try:
        for client in clients:
            line = client.stdout.readline().strip()
            assert line == "ready", f"client died before starting: {line}\n{client.stderr.read()[-4000:]}"
        ticks = server_ticks(server)
        for client in clients:
            client.stdin.write("go\n")
            client.stdin.flush()
        reports = []
        for client in clients:
            out, err = client.communicate(timeout=seconds + 300)
            assert client.returncode == 0, f"client exited {client.returncode}:\n{err[-4000:]}"
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports, (server_ticks(server) - ticks) / os.sysconf("SC_CLK_TCK")
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.communicate()


def server_ticks(server) -> int:
    helpers = server_module()
    total = 0
    for pid, _ in helpers.group_processes(server.proc.pid):
        with contextlib.suppress(OSError):
            total += helpers.cpu_ticks(pid)
    return total


def server_client(url: str, experiment: str, seconds: float) -> None:
    """One client process of server_log_batch; its first batch (before "ready") is not counted."""
    from mlflow import MlflowClient

    client = MlflowClient(url)
    run_id = client.create_run(experiment).info.run_id
    steps, times, values = curve(HISTORY_POINTS)
    times, values = times.tolist(), values.tolist()
    client.log_batch(run_id, metrics=metric_batch(0, values, times))
    print("ready", flush=True)
    sys.stdin.readline()
    points, errors, error, last_step = 0, 0, "", BATCH - 1
    start, cpu = time.time(), time.process_time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        first = last_step + 1 + errors * BATCH   # a failed batch's steps are not used again
        try:
            client.log_batch(run_id, metrics=metric_batch(first, values, times))
            points, last_step = points + BATCH, first + BATCH - 1
        except Exception as e:   # a failed request is counted, the load goes on
            errors += 1
            error = error or f"{type(e).__name__}: {e}"
    end, cpu = time.time(), time.process_time() - cpu
    latest = server_module().latest_metrics(url, run_id)["loss"]["step"]
    print(json.dumps({"points": points, "start": start, "end": end, "errors": errors, "error": error,
                      "latest_step": int(latest), "last_step": last_step, "cpu": cpu}), flush=True)


# -- search --------------------------------------------------------------------------------


def run_fields(i: int) -> tuple[dict, dict, dict]:
    """metrics, params, tags of the i-th run to search: the same for every backend."""
    import random

    rng = random.Random(i)
    metrics = {"loss": rng.random(), "acc": rng.random(), "epoch": float(rng.randrange(100))}
    params = {"opt": OPTIMIZERS[rng.randrange(len(OPTIMIZERS))], "lr": f"{10 ** rng.uniform(-5, -1):.3g}",
              "batch": str(2 ** rng.randrange(4, 11)), "layers": str(rng.randrange(1, 13)),
              "seed": str(i)}
    tags = {"team": f"t{i % 7}", "sweep": "s1", "stage": ("dev", "prod")[i % 2]}
    return metrics, params, tags


def populate_runs(uri: str, runs: int, seconds: float) -> tuple[str, int, float]:
    """(experiment id, runs made, seconds): create_run and one log_batch each, until
    ``runs`` runs or ``seconds``."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(uri)
    experiment = client.create_experiment("search")
    began = time.perf_counter()
    made = 0
    while made < runs and time.perf_counter() - began < seconds:
        metrics, params, tags = run_fields(made)
        run_id = client.create_run(experiment, start_time=BASE_MS + made, run_name=f"run-{made}").info.run_id
        client.log_batch(run_id, metrics=[Metric(k, v, BASE_MS + made, 0) for k, v in metrics.items()],
                         params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
        made += 1
    store_of(uri).flush_async_logging()
    return experiment, made, time.perf_counter() - began


def search_runs(ctx: Context) -> dict:
    """``MlflowClient.search_runs([experiment], "metrics.loss < 0.5 and params.opt =
    'adam'", max_results=1000)`` over 10,000 runs (1,000 with --quick), each made by
    create_run and one log_batch of 3 metrics, 5 params and 3 tags (SQLite: as many as
    fit in 180 s; the note says how many). Timed in a fresh process on the populated
    store: the first call (its only earlier call, get_experiment, builds the store) and
    the median of 5 more."""
    experiment, made, seconds = populate_runs(ctx.uri, ctx.options.search_runs, ctx.options.populate_seconds)
    done = subprocess.run([sys.executable, __file__, "--search-query", ctx.uri, experiment], capture_output=True,
                          text=True, timeout=1800, env=child_env())
    assert done.returncode == 0, done.stderr[-4000:]
    query = json.loads(done.stdout.strip().splitlines()[-1])
    matching = sum(1 for i in range(made) if run_fields(i)[0]["loss"] < 0.5 and run_fields(i)[1]["opt"] == "adam")
    assert query["returned"] == min(matching, SEARCH_MAX_RESULTS), (query["returned"], matching)
    note = f"{made:,} runs (populated in {seconds:.0f} s), {matching} match, {query['returned']} returned"
    return {"search_runs": result(query["warm"], note, first=query["first"]),
            "search_runs_first": result([query["first"]])}


def search_query(uri: str, experiment: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    client.get_experiment(experiment)
    samples = []
    for _ in range(6):
        began = time.perf_counter()
        found = client.search_runs([experiment], SEARCH_FILTER, max_results=SEARCH_MAX_RESULTS)
        samples.append(time.perf_counter() - began)
    print(json.dumps({"first": samples[0], "warm": samples[1:], "returned": len(found)}), flush=True)


# -- the table -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Figure:
    name: str
    function: object
    group: str                    # figures of one group share a child process
    unit: str                     # "points/s" (higher is better) or "s" (lower)
    target: str
    meets: object = None          # (steplog value, sqlite value) -> bool, or None


def at_least(x):
    return lambda s, q: None if s is None else s >= x


def at_most(x):
    return lambda s, q: None if s is None else s <= x


FIGURES = [
    Figure("fluent_log_metric", fluent_log_metric, "write", "points/s", ">= 20,000", at_least(20_000)),
    Figure("fluent_log_metric_ceiling", fluent_log_metric_ceiling, "ceiling", "points/s", "(client alone)"),
    # The per-call target names the fluent API, but its "client ceiling near 44,000"
    # is MlflowClient's: the fluent API alone stays far below 20,000 (see its ceiling).
    Figure("client_log_metric", client_log_metric, "write", "points/s", ">= 20,000 (read as the client's)",
           at_least(20_000)),
    Figure("client_log_metric_ceiling", client_log_metric_ceiling, "ceiling", "points/s", "(client alone)"),
    Figure("client_log_batch", client_log_batch, "write", "points/s", ">= 80,000", at_least(80_000)),
    Figure("client_log_batch_ceiling", client_log_batch_ceiling, "ceiling", "points/s", "(~150,000)"),
    Figure("fluent_log_metric_registry", fluent_log_metric_registry, "write", "points/s", ">= 20,000",
           at_least(20_000)),
    Figure("fluent_log_metric_registry_ceiling", fluent_log_metric_registry_ceiling, "ceiling", "points/s",
           "(client alone)"),
    Figure("server_log_batch", server_log_batch, "server", "points/s", ">= 10x sqlite", lambda s, q: (
        None if s is None or q is None else f"{'ok' if s >= 10 * q else 'MISS'} ({s / q:.1f}x)")),
    Figure("server_bulk_interval_1m", server_log_batch, "server", "s", "<= 20 ms", at_most(0.020)),
    Figure("get_metric_history_1m", get_metric_history_1m, "history", "s", "<= 6 s", at_most(6.0)),
    Figure("metric_objects_1m", metric_objects_1m, "history", "s", "(floor, ~3.3 s)"),
    Figure("bulk_interval_1m", bulk_interval_1m, "history", "s", "<= 20 ms", at_most(0.020)),
    Figure("bulk_interval_100m", bulk_interval_100m, "long", "s", "<= 20 ms", at_most(0.020)),
    Figure("server_bulk_interval_100m", bulk_interval_100m, "long", "s", "<= 20 ms", at_most(0.020)),
    Figure("search_runs", search_runs, "search", "s", "<= 300 ms", at_most(0.300)),
    Figure("search_runs_first", search_runs, "search", "s", "<= 300 ms", at_most(0.300)),
]
BY_NAME = {f.name: f for f in FIGURES}


def shown(value, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "points/s":
        return f"{value:,.0f}"
    return f"{value * 1e3:,.1f} ms" if value < 1 else f"{value:,.2f} s"


def table(figures: list[Figure], found: dict) -> str:
    lines = ["| figure | steplog | sqlite | target | met |", "| --- | --- | --- | --- | --- |"]
    notes = []
    for figure in figures:
        values = {b: found.get(b, {}).get(figure.name, {}).get("value") for b in BACKENDS}
        met = None if figure.meets is None else figure.meets(values["steplog"], values["sqlite"])
        met = {None: "", True: "ok", False: "MISS"}.get(met, met)
        lines.append(f"| {figure.name} ({figure.unit}) | {shown(values['steplog'], figure.unit)} | "
                     f"{shown(values['sqlite'], figure.unit)} | {figure.target} | {met} |")
        for backend in BACKENDS:
            entry = found.get(backend, {}).get(figure.name)
            if entry and (entry["note"] or len(entry["samples"]) > 1):
                samples = ", ".join(shown(s, figure.unit) for s in entry["samples"])
                first = entry["first"] is not None and f"first call {shown(entry['first'], figure.unit)}"
                parts = [entry["note"], first, samples and f"samples {samples}"]
                notes.append(f"- {figure.name}, {backend}: " + "; ".join(filter(None, parts)))
    return "\n".join(lines + [""] + notes)


# -- processes -----------------------------------------------------------------------------


def child_env() -> dict:
    env = {**os.environ, **server_module().QUIET_ENV}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_group(names: list[str], backend: str, root: str, options: Options) -> dict:
    folder = tempfile.mkdtemp(prefix=f"{backend}-", dir=root)
    command = [sys.executable, __file__, "--child", backend, folder, os.path.join(root, "cache"),
               *(["--quick"] if options.quick else []), *names]
    done = subprocess.run(command, capture_output=True, text=True, env=child_env())
    shutil.rmtree(folder, ignore_errors=True)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    why = f"child failed ({done.returncode}): {done.stderr.strip()[-1500:]}"
    print(f"{backend} {names}: {why}", file=sys.stderr)
    return {name: skipped(why.splitlines()[0]) for name in names}


def child_main(backend: str, folder: str, cache: str, quick: bool, names: list[str]) -> None:
    ctx = Context(backend, folder, cache, Options.make(quick))
    found: dict = {}
    for name in names:
        if name in found:
            continue
        try:
            found.update(BY_NAME[name].function(ctx))
        except Exception as e:   # the group's other figures still count
            traceback.print_exc()
            why = skipped(f"failed: {type(e).__name__}: {str(e)[:300]}")
            found.update({f.name: why for f in FIGURES if f.function is BY_NAME[name].function})
    print("RESULT " + json.dumps({n: found[n] for n in names if n in found}), flush=True)


def machine() -> str:
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    from importlib.metadata import version

    return (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
            f"commit {commit}, mlflow {version('mlflow')}, python {sys.version.split()[0]}; uptime: {load}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter loops, fewer runs; no SQLite 1 M reads, no 100 M")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: steplog,sqlite")
    parser.add_argument("--only", action="append", choices=sorted(BY_NAME), help="this figure only (repeatable)")
    parser.add_argument("--json", help="write every figure's samples and notes here")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    if set(backends) - set(BACKENDS):
        parser.error(f"--backends takes {','.join(BACKENDS)}")
    figures = [f for f in FIGURES if f.name in args.only] if args.only else FIGURES
    options = Options.make(args.quick)
    print(machine(), flush=True)
    found: dict = {b: {} for b in backends}
    with tempfile.TemporaryDirectory(prefix="steplog-mlflow-bench-") as root:
        os.makedirs(os.path.join(root, "cache"))
        for group in dict.fromkeys(f.group for f in figures):
            names = [f.name for f in figures if f.group == group]
            for backend in backends:
                began = time.perf_counter()
                found[backend].update(run_group(names, backend, root, options))
                print(f"  {group} on {backend}: {time.perf_counter() - began:.0f} s, "
                      f"load average {os.getloadavg()[0]:.1f} after", flush=True)
    print(table(figures, found))
    print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(found, f, indent=1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        backend, folder, cache, *rest = sys.argv[2:]
        child_main(backend, folder, cache, "--quick" in rest, [r for r in rest if r != "--quick"])
    elif sys.argv[1:2] == ["--server-client"]:
        server_client(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    elif sys.argv[1:2] == ["--search-query"]:
        search_query(sys.argv[2], sys.argv[3])
    else:
        main()
