"""Import a Parquet dataset written by ``steplog.query.export.export_store`` into a store.

Runs keep their ids, experiment, name, parent, params, tags (as stored: the
params_json and tags_json of _runs.parquet), status and start and end times. Every
scalar series comes back with its context, steps, exact times (time_ns) and values bit
for bit (NaN payloads, -0.0, inf), in the order the export wrote them, so reads of the
imported store equal reads of the exported one. Tensor summaries (_tensors/) are not
imported.

Statuses: "running" and "crashed" runs are stored as running with no living writer,
so the importing store shows them "crashed"; the others as they were.

A store that already holds one of the dataset's runs is refused before anything is
written (InvalidArgumentError naming ``source``): an import never mixes points into a
run. Points are logged through the public Run API; only the run records (original id,
times and status) are written by ``_put_run_record``, through the store's own record
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
from .query.export import POINTS_FILE, RUN_EXTRA_COLUMNS, RUNS_FILE

RUN_COLUMNS = ("id", "experiment", "name", "parent", "status")
STORED_STATUS = {"running": "running", "crashed": "running", "finished": "finished", "failed": "failed",
                 "killed": "killed"}


def import_dataset(store, source, progress: Callable[[int, int], None] | None = None) -> dict:
    """Import the dataset at ``source`` (module docstring) into ``store``, a Store open
    to write. ``progress(done, total)`` is called as runs are imported.

    Returns {"runs", "series", "points"}."""
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
    summary = {"runs": 0, "series": 0, "points": 0}
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
    records = []
    for row in table.select(wanted).to_pylist():
        if row["status"] not in STORED_STATUS:
            raise InvalidArgumentError("source", f"run {row['id']} has an unknown status {row['status']!r}")
        records.append({"id": row["id"], "experiment": row["experiment"], "name": row["name"],
                        "parent": row["parent"], "status": STORED_STATUS[row["status"]],
                        "start_time": row["start_time_ns"], "end_time": row["end_time_ns"],
                        "params": json.loads(row["params_json"]), "tags": json.loads(row["tags_json"])})
    return records


def _import_run(store, source: str, record: dict, summary: dict) -> None:
    import pyarrow.parquet as pq

    _put_run_record(store, {**record, "status": "running", "end_time": None})
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
        run.end("finished")   # flushes; the record it writes is replaced below
    except BaseException:
        run.end("failed")
        raise
    _put_run_record(store, record)


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


def _dictionary(column: pa.ChunkedArray) -> pa.DictionaryArray:
    """One dictionary array of a string column, dictionary-encoded or not."""
    array = column.combine_chunks()
    if not pa.types.is_dictionary(array.type):
        array = array.dictionary_encode()
    return array


def _put_run_record(store, record: dict) -> None:
    """Store a run record as it is given (id, times and status included), and its
    experiment's record if the store lacks it, in one record transaction of the store's
    writer, as Store.start_run does. No heartbeat is written: a "running" record reads
    as crashed until a writer resumes it. This is the one write past the public API:
    Store has no call that sets a run's id, times or final status."""
    from .engine.records import experiment_record, run_record

    def put(txn):
        records = []
        if txn.get_experiment(record["experiment"]) is None:
            records.append(experiment_record(txn, {"name": record["experiment"], "created": record["start_time"]}))
        records.append(run_record(txn, dict(record)))
        return None, records

    store._writer.commit_records(put)
