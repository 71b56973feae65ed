"""Import a Parquet dataset written by ``steplog.query.export.export_store`` into a store.

Runs keep their ids, experiment, name, parent, params, tags (as stored: the
params_json and tags_json of _runs.parquet), status, start and end times, and the rest
of their record (kind, resources: record_json, when the dataset has it). Artifact
records are not in an export, so not imported. Every
scalar series comes back with its context, steps, exact times (time_ns) and values bit
for bit (NaN payloads, -0.0, inf), in the order the export wrote them, so reads of the
imported store equal reads of the exported one. Tensor summaries (_tensors/) come back
as summary rows of the same series, bit for bit: the 16 statistics, the histogram
counts, and the edges, stored as the caller's edges unless they are the ones a read
derives from the row's [min, max] (then, as ``log_tensor`` without ``edges`` stores
them, derived again on read), so that ``read_tensor`` of the imported store equals the
exported one's.

Statuses: "running" and "crashed" runs are stored as running with no living writer,
so the importing store shows them "crashed"; the others as they were.

A store that already holds one of the dataset's runs is refused before anything is
written (InvalidArgumentError naming ``source``): an import never mixes points into a
run. Points are logged through the public Run API; only the run records (original id,
times and status) are written by ``Store.put_run_record``, in the store's own record
transaction, so that ``steplog repair`` rebuilds them from the segments as well.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Callable

import numpy as np
import pyarrow as pa

from .engine.errors import InvalidArgumentError, InvalidTypeError, NotFoundError, ReadOnlyError
from .query.export import (EXTRA_RECORD_COLUMN, POINTS_FILE, RUN_EXTRA_COLUMNS, RUNS_FILE, TENSORS_DIR,
                           TENSORS_FILE)

RUN_COLUMNS = ("id", "experiment", "name", "parent", "status")
STORED_STATUS = {"running": "running", "crashed": "running", "finished": "finished", "failed": "failed",
                 "killed": "killed"}


def import_dataset(store, source, progress: Callable[[int, int], None] | None = None) -> dict:
    """Import the dataset at ``source`` (module docstring) into ``store``, a Store open
    to write. ``progress(done, total)`` is called as runs are imported.

    Returns {"runs", "series" (scalar and tensor), "points" (scalar), "tensor_rows"}."""
    if store.read_only:
        raise ReadOnlyError(f"{store.path} is open read-only (mode='r'); open it with mode='a' to import")
    source = _source_arg(source)
    records = _run_records(source)
    with store._index.read() as txn:
        held = [r["id"] for r in records if txn.get_run(bytes.fromhex(r["id"])) is not None]
    if held:
        raise InvalidArgumentError("source", f"the store already holds run {held[0]}"
                                   + (f" and {len(held) - 1} more of the dataset's runs" if len(held) > 1 else "")
                                   + "; import into a store without them")
    summary = {"runs": 0, "series": 0, "points": 0, "tensor_rows": 0}
    if progress is not None:
        progress(0, len(records))
    for record in records:
        _import_run(store, source, record, summary)
        summary["runs"] += 1
        if progress is not None:
            progress(summary["runs"], len(records))
    return summary


def _source_arg(source) -> str:
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidTypeError("source", f"must be a str or path, got {type(source).__name__}")
    path = os.path.expanduser(os.fspath(source))
    if not os.path.isdir(path):
        raise NotFoundError(f"source: no directory {path}")
    if not os.path.isfile(os.path.join(path, RUNS_FILE)):
        raise InvalidArgumentError("source", f"{path} holds no {RUNS_FILE}; it is not a dataset export_store wrote")
    return path


def _run_records(source: str) -> list[dict]:
    """The run records of the dataset, as the store keeps them."""
    import pyarrow.parquet as pq

    table = pq.read_table(os.path.join(source, RUNS_FILE))
    wanted = list(RUN_COLUMNS) + [name for name, _ in RUN_EXTRA_COLUMNS]
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise InvalidArgumentError("source", f"{RUNS_FILE} lacks the columns {', '.join(missing)}")
    if EXTRA_RECORD_COLUMN in table.column_names:   # absent from datasets written before it
        wanted.append(EXTRA_RECORD_COLUMN)
    records = []
    for row in table.select(wanted).to_pylist():
        if row["status"] not in STORED_STATUS:
            raise InvalidArgumentError("source", f"run {row['id']} has an unknown status {row['status']!r}")
        record = {"id": row["id"], "experiment": row["experiment"], "name": row["name"],
                  "parent": row["parent"], "status": STORED_STATUS[row["status"]],
                  "start_time": row["start_time_ns"], "end_time": row["end_time_ns"],
                  "params": json.loads(row["params_json"]), "tags": json.loads(row["tags_json"])}
        extra = json.loads(row.get(EXTRA_RECORD_COLUMN) or "{}")
        record.update({k: v for k, v in extra.items() if k not in record})
        records.append(record)
    return records


def _import_run(store, source: str, record: dict, summary: dict) -> None:
    import pyarrow.parquet as pq

    store.put_run_record({**record, "status": "running", "end_time": None})
    run = store.run(record["id"])
    try:
        series = set()
        for path in glob.glob(os.path.join(glob.escape(source), "*", f"run={record['id']}", POINTS_FILE)):
            with pq.ParquetFile(path) as points:
                for i in range(points.num_row_groups):
                    group = points.read_row_group(i, columns=["metric", "context", "step", "time_ns", "value"])
                    series |= _log_row_group(run, group)
                    summary["points"] += group.num_rows
        summary["series"] += len(series)
        tensor_series, rows = _import_tensors(store, run, source, record)
        summary["series"] += tensor_series
        summary["tensor_rows"] += rows
        run.end("finished")   # flushes; the record it writes is replaced below
    except BaseException:
        run.end("failed")
        raise
    store.put_run_record(record)


def _log_row_group(run, group: pa.Table) -> set:
    """Log the rows of one row group (series after series, each sorted by step) to
    ``run``; returns the (metric, context) of the series in it."""
    metric = _dictionary(group.column("metric"))
    context = _dictionary(group.column("context"))
    codes = np.stack([metric.indices.to_numpy(zero_copy_only=False),
                      context.indices.fill_null(-1).to_numpy(zero_copy_only=False)])
    starts = np.flatnonzero(np.r_[True, (codes[:, 1:] != codes[:, :-1]).any(axis=0)]) if group.num_rows else []
    steps = group.column("step").to_numpy()
    times = group.column("time_ns").to_numpy()
    values = group.column("value").to_numpy()
    names, contexts = metric.dictionary.to_pylist(), context.dictionary.to_pylist()
    logged = set()
    for lo, hi in zip(starts, list(starts[1:]) + [group.num_rows]):
        name, ctx = names[codes[0, lo]], None if codes[1, lo] < 0 else contexts[codes[1, lo]]
        run.log_batch(name, steps[lo:hi], values[lo:hi], times=times[lo:hi],
                      context=json.loads(ctx) if ctx else None)
        logged.add((name, ctx))
    return logged


def _import_tensors(store, run, source: str, record: dict) -> tuple[int, int]:
    """Append the tensor summaries of the run's tensors file to ``run``, row group by
    row group; returns (series, rows)."""
    import pyarrow.parquet as pq

    from .query.tensors import COUNT_FIELDS
    from .engine.summary import SUMMARY_FIELDS

    wanted = ["metric", "context", "step", "time_ns", *SUMMARY_FIELDS, "hist_edges", "hist_counts"]
    series, rows = set(), 0
    for path in glob.glob(os.path.join(glob.escape(source), TENSORS_DIR, "*", f"run={record['id']}", TENSORS_FILE)):
        with pq.ParquetFile(path) as tensors:
            missing = [c for c in wanted if c not in tensors.schema_arrow.names]
            if missing:
                raise InvalidArgumentError("source", f"{path} lacks the columns {', '.join(missing)}")
            for i in range(tensors.num_row_groups):
                group = tensors.read_row_group(i, columns=wanted)
                if any(group.column(c).null_count for c in wanted if c != "context"):
                    raise InvalidArgumentError("source", f"{path} holds nulls outside its context column")
                stats = np.column_stack([group.column(f).to_numpy().astype(np.float64) if f in COUNT_FIELDS
                                         else group.column(f).to_numpy() for f in SUMMARY_FIELDS])
                counts = _list_rows(group.column("hist_counts"), np.int64)
                edges = _caller_edges(stats, _list_rows(group.column("hist_edges"), np.float64), counts, path)
                steps, times = group.column("step").to_numpy(), group.column("time_ns").to_numpy()
                labels = list(zip(group.column("metric").to_pylist(), group.column("context").to_pylist()))
                starts = [j for j in range(len(labels)) if j == 0 or labels[j] != labels[j - 1]]
                for lo, hi in zip(starts, starts[1:] + [len(labels)]):
                    name, context = labels[lo]
                    append_summary_rows(store, run, name, json.loads(context) if context else None,
                                        steps[lo:hi], times[lo:hi], stats[lo:hi], counts[lo:hi], edges[lo:hi])
                    series.add(labels[lo])
                rows += group.num_rows
    return len(series), rows


def append_summary_rows(store, run, name: str, context: dict | None, steps, times, stats: np.ndarray,
                        counts: list, edges: list) -> None:
    """Append tensor summary rows, as they are, to the series ``name`` (``context``) of
    ``run``: row i is the SUMMARY_FIELDS statistics ``stats[i]``, the histogram counts
    ``counts[i]`` and ``edges[i]`` (the caller's edges, or None for edges derived from
    the row's [min, max]), at steps[i] and times[i] (int64 ns). The path of
    Run.log_tensors less the summarizing: the store's summary buffer of the series,
    sealed when full. The one write past the public API: Run has no call that logs a
    summary without its tensor."""
    from ._args import context_arg, name_arg
    from .engine.block import KIND_SUMMARY
    from .engine.points import SummaryRow
    from .engine.writer import SeriesKey

    key = SeriesKey(bytes.fromhex(run.id), name_arg(name, "name"), context_arg(context))
    buf = store.series_buffer(key, KIND_SUMMARY)
    writer = store.points_writer()
    for step, time, row_stats, row_counts, row_edges in zip(steps.tolist(), times.tolist(), stats, counts, edges):
        buf.append(step, time, SummaryRow(row_stats, row_counts, row_edges))
        if len(buf.cols[2]) >= writer.summary_seal_at:
            writer.seal_full(buf)


def _list_rows(column: pa.ChunkedArray, dtype) -> list[np.ndarray]:
    """The rows of a list column as numpy arrays (views of one flat copy)."""
    array = column.combine_chunks()
    flat = array.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    offsets = array.offsets.to_numpy() - array.offsets[0].as_py()
    return [flat[offsets[i]:offsets[i + 1]] for i in range(len(array))]


def _caller_edges(stats: np.ndarray, edges: list[np.ndarray], counts: list[np.ndarray], path: str) -> list:
    """Each row's edges, or None where they are bit for bit the edges a read derives
    from the row's [min, max] (query.tensors.derived_edges)."""
    from .engine.tensorstats.fields import MAX_BINS
    from .engine.tensorstats.validate import edges_array
    from .query.tensors import derived_edges

    out: list = [None] * len(edges)
    bins = np.array([len(c) for c in counts], np.int64)
    if any(len(e) != b + 1 for e, b in zip(edges, bins)) or (len(bins) and not 0 < bins.min() <= bins.max() <= MAX_BINS):
        raise InvalidArgumentError("source", f"{path} holds a histogram whose edges do not fit its counts")
    for nbins in np.unique(bins).tolist():
        rows = np.flatnonzero(bins == nbins)
        derived = derived_edges(stats[rows], nbins)
        for row, want in zip(rows.tolist(), derived):
            if not np.array_equal(want.view(np.int64), edges[row].view(np.int64)):
                out[row] = edges_array(edges[row])
    shared: dict[bytes, np.ndarray] = {}
    for i, e in enumerate(out):   # one array for equal edges: the rows share one block's edges
        if e is not None:
            out[i] = shared.setdefault(e.tobytes(), e)
    return out


def _dictionary(column: pa.ChunkedArray) -> pa.DictionaryArray:
    """One dictionary array of a string column, dictionary-encoded or not."""
    array = column.combine_chunks()
    if not pa.types.is_dictionary(array.type):
        array = array.dictionary_encode()
    return array
