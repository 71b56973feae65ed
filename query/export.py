"""Export a store as a Hive-partitioned Parquet dataset that Spark, DuckDB, Polars,
pandas and pyarrow read.

How to read the points (the experiment and run columns come from the directories):

    pyarrow   pyarrow.dataset.dataset(dest, partitioning="hive")   (the directory as it is;
              also pyarrow.parquet.read_table(dest), pandas.read_parquet(dest) and
              spark.read.parquet(dest))
    DuckDB    SELECT * FROM read_parquet('dest/*/*/points.parquet', hive_partitioning = true)
    Polars    pl.scan_parquet("dest/*/*/points.parquet", hive_partitioning=True)

DuckDB and Polars need that glob (POINTS_GLOB): given the directory itself (Polars'
``pl.scan_parquet(dest)``, DuckDB's ``'dest/**/*.parquet'``) they read every Parquet
file below it, the catalog and the tensors included, and fail on their other columns.
Neither leaves out names that start with "_" or "." (as pyarrow and Spark do), so no
layout that keeps the catalog and the tensors inside ``dest`` reads plainly there.
The tensors: ``dest/_tensors/*/*/tensors.parquet`` the same ways; the catalog:
``pyarrow.parquet.read_table("dest/_runs.parquet")``.

Layout of ``dest`` (``export_store``)::

    dest/experiment=<escaped name>/run=<run id>/points.parquet   scalar points, one file a run
    dest/_tensors/experiment=<escaped name>/run=<run id>/tensors.parquet   tensor summaries
    dest/_runs.parquet                                             the runs catalog

Points files hold the columns metric (dictionary-encoded string), context (JSON text
of the series' context, dictionary-encoded; null for none), step (int64), time
(timestamp[us, UTC]: Spark reads no nanosecond timestamps), time_ns (int64, the exact
nanoseconds) and value (float64, every bit kept: NaN payloads, -0.0, inf). Rows are
sorted by metric, context, step (ties in write order); a series' rows are whole row
groups of at most ROW_GROUP_ROWS rows or share one with other small series of the
run; zstd, column statistics on. The experiment and the run come from the
directories. Tensor files hold the table ``Store.read_tensor`` returns, with the same
time and time_ns columns and metric, context first.

The catalog and the tensors start with "_", the mark of files beside a dataset
(``_SUCCESS``, ``_metadata``) that pyarrow, Spark and Hive leave out of the points.

Names in directories are percent-encoded UTF-8 (every byte outside A-Z a-z 0-9 . _ -,
and the dots of "." and ".."),
which pyarrow, DuckDB, Polars and Spark decode back to the name. Only an escaped name
longer than MAX_ESCAPED_CHARS (a file name holds 255 bytes) is cut, at a whole
character, and ends in "~" and 16 hex digits of its hash (a "~" is always escaped
otherwise, so no other name reads the same); _runs.parquet has the whole name. The
readers infer partition types: an experiment named "2024", or a run id made only of
digits, reads as a number unless string types are asked for, e.g.
``partitioning=ds.partitioning(pa.schema([("experiment", pa.string()), ("run",
pa.string())]), flavor="hive")``, DuckDB ``hive_types_autocast = false``, Polars
``hive_schema={"experiment": pl.String, "run": pl.String}``.

_runs.parquet is the ``Store.runs()`` table of the exported runs, and after it the
exact record for ``steplog.transfer.import_dataset``: params_json and tags_json (the
params and tags as stored, JSON), start_time_ns, end_time_ns, and record_json (the
record's other fields, such as kind and resources, JSON).

The series exported are those ``Store.series()`` lists (flushed points: flush before an
export). EXPORT_THREADS runs are written at once; each series is read whole (memory:
that many of the largest series and row groups) from its own snapshot:
points that writers flush during an export may be in it or not. The dataset is written under
a temporary name beside ``dest`` and renamed into place once complete, so a failed
export leaves nothing at ``dest``.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import secrets
import shutil
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Callable

import numpy as np
import pyarrow as pa

from ..engine.errors import InvalidArgumentError, InvalidTypeError, NotFoundError
from ..engine.threads import leave_signals_to_main_thread
from .read import time_column

FORMATS = ("parquet",)
POINTS_FILE = "points.parquet"
TENSORS_FILE = "tensors.parquet"
TENSORS_DIR = "_tensors"
RUNS_FILE = "_runs.parquet"
POINTS_GLOB = "*/*/" + POINTS_FILE          # below dest: every points file and nothing else
ROW_GROUP_ROWS = 1 << 20
EXPORT_THREADS = min(4, os.cpu_count() or 1)  # runs written at once (memory: a series and a row group each)
MAX_ESCAPED_CHARS = 200                      # + "experiment=" stays within a 255-byte file name
TIME_TYPE = pa.timestamp("us", tz="UTC")
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_ESCAPES = [chr(b) if b in _SAFE else f"%{b:02X}" for b in range(256)]
# Steps and times are nearly regular: deltas pack them to a few bits a point. Values are
# noise in their low bits; zstd over plain bytes reads everywhere (BYTE_STREAM_SPLIT, a
# little smaller, is not read by every Spark).
COLUMN_ENCODING = {"step": "DELTA_BINARY_PACKED", "time": "DELTA_BINARY_PACKED",
                   "time_ns": "DELTA_BINARY_PACKED", "value": "PLAIN"}
POINTS_SCHEMA = pa.schema([("metric", pa.dictionary(pa.int32(), pa.string())),
                           ("context", pa.dictionary(pa.int32(), pa.string())),
                           ("step", pa.int64()), ("time", TIME_TYPE), ("time_ns", pa.int64()),
                           ("value", pa.float64())])
RUN_EXTRA_COLUMNS = (("params_json", pa.string()), ("tags_json", pa.string()),
                     ("start_time_ns", pa.int64()), ("end_time_ns", pa.int64()))
EXTRA_RECORD_COLUMN = "record_json"   # the rest of a run's record (kind, resources, ...), JSON
RECORD_COLUMNS = ("id", "experiment", "name", "parent", "status", "start_time", "end_time", "params", "tags")

Progress = Callable[[int, int], None]


def escape_name(name: str) -> str:
    """A user name as one safe path part: percent-encoded UTF-8 (module docstring)."""
    parts = ["".join(_ESCAPES[b] for b in char.encode("utf-8", "surrogatepass")) for char in name]
    text = "".join(parts)
    if text in (".", ".."):   # a part of its own (it follows "experiment=" here) must still not be these
        return text.replace(".", "%2E")
    if len(text) <= MAX_ESCAPED_CHARS:
        return text
    kept, size = [], 0
    for part in parts:   # whole characters, leaving room for "~" and the hash
        if size + len(part) > MAX_ESCAPED_CHARS - 17:
            break
        kept.append(part)
        size += len(part)
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return "".join(kept) + "~" + digest


def run_dir(experiment: str, run_id: str) -> str:
    """The path of a run's partition below the dataset root (or below TENSORS_DIR)."""
    return os.path.join(f"experiment={escape_name(experiment)}", f"run={run_id}")


def times_ns(table: pa.Table) -> np.ndarray:
    """The exact int64 nanoseconds of a read table: its time_ns column, or its time
    column where reads return nanosecond timestamps."""
    if "time_ns" in table.column_names:
        column = table.column("time_ns")
    else:
        column = table.column("time").cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64())
    return column.to_numpy()


def time_columns(table: pa.Table) -> tuple:
    """(time as timestamp[us, UTC], exact int64 ns) of a read table, taken as they are
    where the read has both."""
    ns = times_ns(table)
    if "time_ns" in table.column_names and table.schema.field("time").type == TIME_TYPE:
        return table.column("time"), ns
    return time_column(ns), ns


def store_series(store, run_ids: list[str] | None = None) -> pa.Table:
    """``Store.series()`` of ``run_ids`` (default every run): one row per series, with
    run_id, metric, context (JSON or null), kind ("scalar" or "tensor"), count and the
    aggregates, over the flushed points."""
    return store.series() if run_ids is None else store.series(runs=run_ids)


def select_runs(store, runs=None, where: str | None = None) -> pa.Table:
    """The ``Store.runs(where=where)`` rows of ``runs`` (run ids; default all). An id
    the store does not hold raises NotFoundError."""
    table = store.runs(where=where)
    if runs is None:
        return table
    if isinstance(runs, (str, bytes)) or not hasattr(runs, "__iter__"):
        raise InvalidTypeError("runs", f"must be a list of run ids, got {type(runs).__name__}")
    wanted = set(runs)
    held = set(store.runs().column("id").to_pylist()) if where is not None else set(table.column("id").to_pylist())
    missing = sorted(wanted - held, key=str)
    if missing:
        raise NotFoundError(f"runs: no run {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1
                                                              else ""))
    return table.filter(pa.array([i in wanted for i in table.column("id").to_pylist()], pa.bool_()))


def export_store(store, dest, format: str = "parquet", runs=None, where: str | None = None,
                 progress: Progress | None = None) -> dict:
    """Write the runs of ``store`` (``runs``: run ids, ``where``: a filter as
    ``Store.runs(where=...)`` takes it; default every run) to ``dest`` as a
    Hive-partitioned Parquet dataset (module docstring). ``dest`` must not exist or be
    an empty directory: nothing is overwritten. Read the points with
    ``pyarrow.dataset.dataset(dest, partitioning="hive")``, or in DuckDB and Polars
    through the glob ``dest/*/*/points.parquet`` with hive partitioning (the directory
    alone makes them read the catalog and tensors too). ``progress(done, total)`` is called as
    series are written (total: every series of the exported runs, tensors included).

    Returns {"path", "runs", "running", "series", "points", "tensor_rows", "files",
    "bytes"}. "running": exported runs that were live (status "running"); their points
    are those flushed so far, and ``steplog.transfer.import_dataset`` stores them as
    running with no living writer, so the importing store shows them "crashed".
    """
    if format not in FORMATS:
        raise InvalidArgumentError("format", f"must be one of {FORMATS}, got {format!r}")
    dest = _dest_arg(dest)
    catalog = select_runs(store, runs, where)
    run_ids = catalog.column("id").to_pylist()
    experiments = dict(zip(run_ids, catalog.column("experiment").to_pylist()))
    series = store_series(store, run_ids)
    total = series.num_rows
    statuses = catalog.column("status").to_pylist()
    summary = {"path": dest, "runs": len(run_ids), "running": statuses.count("running"), "series": total,
               "points": 0, "tensor_rows": 0, "files": 0, "bytes": 0}
    partial = os.path.join(os.path.dirname(dest) or ".", f".{os.path.basename(dest)}.{secrets.token_hex(4)}.partial")
    os.makedirs(partial)
    try:
        by_run = _rows_by_run(series)
        jobs = [(run_id, experiments[run_id], by_run.get(run_id, [])) for run_id in run_ids]
        for points, tensor_rows in _in_parallel(store, jobs, partial, total, progress):
            summary["points"] += points
            summary["tensor_rows"] += tensor_rows
        _write_runs(store, catalog, os.path.join(partial, RUNS_FILE))
        summary["files"], summary["bytes"] = _files_and_bytes(partial)
        _move_into_place(partial, dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return summary


def _in_parallel(store, jobs: list[tuple], root: str, total: int, progress: Progress | None) -> list[tuple]:
    """Export the runs of ``jobs`` on EXPORT_THREADS threads (Parquet encoding and zstd
    release the GIL), calling ``progress`` from this thread; (points, tensor rows) of each."""
    ticks: queue.SimpleQueue = queue.SimpleQueue()
    done = 0
    if progress is not None:
        progress(0, total)
    with ThreadPoolExecutor(max_workers=EXPORT_THREADS, thread_name_prefix="steplog-export",
                            initializer=leave_signals_to_main_thread) as pool:
        futures = [pool.submit(_export_run, store, *job, root, ticks.put) for job in jobs]
        try:
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()   # the first failure stops the export
                while not ticks.empty():
                    done += ticks.get()
                    if progress is not None:
                        progress(done, total)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [future.result() for future in futures]


def _export_run(store, run_id: str, experiment: str, rows: list[dict], root: str, tick) -> tuple[int, int]:
    """Write the points file and the tensors file of one run; ``tick(1)`` a series."""
    counts = {"points": 0, "tensor_rows": 0}
    for kind, write in (("scalar", _write_points), ("tensor", _write_tensors)):
        chosen = [r for r in rows if r["kind"] == kind]
        if not chosen:
            continue
        path = os.path.join(root if kind == "scalar" else os.path.join(root, TENSORS_DIR), run_dir(experiment, run_id))
        os.makedirs(path)
        for _ in write(store, run_id, chosen, path, counts):
            tick(1)
    return counts["points"], counts["tensor_rows"]


def _dest_arg(dest) -> str:
    if not isinstance(dest, (str, os.PathLike)):
        raise InvalidTypeError("dest", f"must be a str or path, got {type(dest).__name__}")
    path = os.path.abspath(os.path.expanduser(os.fspath(dest)))
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise InvalidArgumentError("dest", f"{path} exists and is not an empty directory; export writes a new one "
                                   "and overwrites nothing")
    if not os.path.isdir(os.path.dirname(path)):
        raise InvalidArgumentError("dest", f"{os.path.dirname(path)} is not a directory")
    return path


def _move_into_place(partial: str, dest: str) -> None:
    if os.path.isdir(dest):
        os.rmdir(dest)   # empty (checked); fails, keeping the partial for the cleanup, if it no longer is
    os.rename(partial, dest)


def _files_and_bytes(root: str) -> tuple[int, int]:
    files = size = 0
    for folder, _, names in os.walk(root):
        for name in names:
            files += 1
            size += os.path.getsize(os.path.join(folder, name))
    return files, size


def _rows_by_run(series: pa.Table) -> dict[str, list[dict]]:
    by_run: dict[str, list[dict]] = {}
    for row in series.select(["run_id", "metric", "context", "kind", "count"]).to_pylist():
        by_run.setdefault(row["run_id"], []).append(row)
    for rows in by_run.values():   # metric, then context (none first): the rows' order in the file
        rows.sort(key=lambda r: (r["metric"], r["context"] or ""))
    return by_run


def _context(row: dict) -> dict | None:
    return json.loads(row["context"]) if row["context"] else None


def _write_points(store, run_id: str, rows: list[dict], path: str, summary: dict):
    """Write the scalar series ``rows`` of one run to one points file; yields once a series."""
    import pyarrow.parquet as pq

    metrics = pa.array(sorted({r["metric"] for r in rows}), pa.string())
    contexts = pa.array(sorted({r["context"] for r in rows if r["context"]}), pa.string())
    metric_code = {m: i for i, m in enumerate(metrics.to_pylist())}
    context_code = {c: i for i, c in enumerate(contexts.to_pylist())}
    pending: list[pa.Table] = []
    with pq.ParquetWriter(os.path.join(path, POINTS_FILE), POINTS_SCHEMA, compression="zstd",
                          use_dictionary=["metric", "context"], column_encoding=COLUMN_ENCODING,
                          sorting_columns=[pq.SortingColumn(0), pq.SortingColumn(1, nulls_first=True),
                                           pq.SortingColumn(2)]) as writer:
        for row in rows:
            read = store.read(run_id, row["metric"], context=_context(row))
            n = read.num_rows
            time, ns = time_columns(read)
            metric = pa.DictionaryArray.from_arrays(pa.array(np.full(n, metric_code[row["metric"]], np.int32)),
                                                    metrics)
            code = context_code.get(row["context"])
            indices = pa.nulls(n, pa.int32()) if code is None else pa.array(np.full(n, code, np.int32))
            context = pa.DictionaryArray.from_arrays(indices, contexts)
            pending.append(pa.Table.from_arrays([metric, context, read.column("step"), time, ns,
                                                 read.column("value")], schema=POINTS_SCHEMA))
            summary["points"] += n
            if sum(t.num_rows for t in pending) >= ROW_GROUP_ROWS // 2:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                pending = []
            yield
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)


def _write_tensors(store, run_id: str, rows: list[dict], path: str, summary: dict):
    """Write the tensor series ``rows`` of one run to one tensors file; yields once a series."""
    import pyarrow.parquet as pq

    tables = []
    for row in rows:
        read = store.read_tensor(run_id, row["metric"], context=_context(row))
        time, ns = time_columns(read)
        n = read.num_rows
        read = read.drop_columns([c for c in ("time", "time_ns") if c in read.column_names])
        labels = [pa.array([row["metric"]] * n, pa.string()), pa.array([row["context"]] * n, pa.string()),
                  read.column("step"), time, pa.array(ns)]
        rest = [c for c in read.column_names if c != "step"]
        tables.append(pa.Table.from_arrays(labels + [read.column(c) for c in rest],
                                           names=["metric", "context", "step", "time", "time_ns"] + rest))
        summary["tensor_rows"] += n
        yield
    table = pa.concat_tables(tables, promote_options="default")
    pq.write_table(table, os.path.join(path, TENSORS_FILE), compression="zstd", row_group_size=ROW_GROUP_ROWS)


def _write_runs(store, catalog: pa.Table, path: str) -> None:
    """The catalog, and after it each run's exact record (RUN_EXTRA_COLUMNS)."""
    import pyarrow.parquet as pq

    records = list(run_records(store, catalog.column("id").to_pylist()).values())
    exact = {"params_json": [json.dumps(r["params"], allow_nan=True) for r in records],
             "tags_json": [json.dumps(r["tags"], allow_nan=True) for r in records],
             "start_time_ns": [r["start_time"] for r in records],
             "end_time_ns": [r["end_time"] for r in records]}
    exact[EXTRA_RECORD_COLUMN] = [json.dumps({k: v for k, v in r.items() if k not in RECORD_COLUMNS},
                                             allow_nan=True) for r in records]
    for name, type_ in RUN_EXTRA_COLUMNS + ((EXTRA_RECORD_COLUMN, pa.string()),):
        catalog = catalog.append_column(pa.field(name, type_), pa.array(exact[name], type_))
    pq.write_table(catalog, path, compression="zstd")


def run_records(store, run_ids: list[str]) -> dict[str, dict]:
    """The stored records of runs (params and tags as logged, times in ns), which
    Store.runs() shows flattened. The one read past the public Store API."""
    with store._index.read() as txn:
        return {run_id: txn.get_run(bytes.fromhex(run_id)) for run_id in run_ids}
