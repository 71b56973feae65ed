"""Tables about runs and series, built from index records."""

from __future__ import annotations

import json
import os
import time

import pyarrow as pa

from ..engine.index import HOST_ID

STALE_HEARTBEAT_NS = 60 * 10**9   # six missed heartbeats (engine.writer.HEARTBEAT_SECONDS)
RUN_TIME_TYPE = pa.timestamp("us", tz="UTC")

RUN_COLUMNS = [("id", pa.string()), ("experiment", pa.string()), ("name", pa.string()),
               ("parent", pa.string()), ("status", pa.string()), ("start_time", RUN_TIME_TYPE),
               ("end_time", RUN_TIME_TYPE)]


def writer_is_dead(beat) -> bool:
    if beat is None:
        return True
    if time.time_ns() - beat.time_ns > STALE_HEARTBEAT_NS:
        return True
    if beat.host == HOST_ID and beat.pid != os.getpid():
        try:
            os.kill(beat.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return False


def flatten(mapping: dict, prefix: str) -> dict:
    """{"model": {"depth": 50}} -> {"params.model.depth": 50}"""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _column(values: list) -> pa.Array:
    """Typed when every present value has one type, else JSON text."""
    kinds = {type(v) for v in values if v is not None}
    if kinds == {bool} or kinds <= {int, float} or kinds == {str}:
        try:
            return pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
    return pa.array([None if v is None else json.dumps(v) for v in values], pa.string())


def runs_table(records: list[dict], heartbeats: dict) -> pa.Table:
    """heartbeats: run_id bytes -> Heartbeat. A running run whose writer stopped beating
    (or, on this host, whose process is gone) is shown as "crashed"."""
    records = sorted(records, key=lambda r: (r["start_time"], r["id"]))
    for record in records:
        if record["status"] == "running" and writer_is_dead(heartbeats.get(bytes.fromhex(record["id"]))):
            record["status"] = "crashed"
    for record in records:  # stored in ns; microseconds convert to Python datetimes
        for field in ("start_time", "end_time"):
            record[field] = None if record[field] is None else record[field] // 1000
    columns = {name: pa.array([r[name] for r in records], type) for name, type in RUN_COLUMNS}
    extra: dict[str, list] = {}
    for i, record in enumerate(records):
        for key, value in {**flatten(record["params"], "params."), **flatten(record["tags"], "tags.")}.items():
            extra.setdefault(key, [None] * len(records))[i] = value
    for key in sorted(extra):
        columns[key] = _column(extra[key])
    if not records:
        return pa.table({name: pa.array([], type) for name, type in RUN_COLUMNS})
    return pa.table(columns)


SERIES_KINDS = {1: "scalar", 2: "tensor"}


def series_table(rows: list) -> pa.Table:
    """rows: (metric name, context JSON, kind, SeriesInfo)."""
    rows = sorted(rows, key=lambda r: (r[0], r[1]))
    return pa.table({
        "metric": pa.array([r[0] for r in rows], pa.string()),
        "context": pa.array([r[1] or None for r in rows], pa.string()),
        "kind": pa.array([SERIES_KINDS[r[2]] for r in rows], pa.string()),
        "count": pa.array([r[3].count for r in rows], pa.int64()),
        "step_min": pa.array([r[3].step_min if r[3].count else None for r in rows], pa.int64()),
        "step_max": pa.array([r[3].step_max if r[3].count else None for r in rows], pa.int64()),
    })
