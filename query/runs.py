"""Tables about runs and series, built from index records.

Params and tags become columns named by their key path joined with "." under "params."
or "tags." (``flatten``), typed so that a sweep filters as it reads: a column whose
values are all numbers is int64 (float64 once a float or an int past int64 is among
them), all bools bool, all str plain strings; lists, dicts (an empty one) and whatever
else is no number, bool or str are JSON text; a run without the key is null. A key whose
runs disagree keeps the comparable kind in its column, numbers first, else bools, and
puts every other value, as text (a str as is, anything else as JSON), in a second
column named with "_text" after the root: "params.batch_size" holds 32 and 64 and
"params_text.batch_size" holds "auto", each null where the other holds the value. No
param or tag name can be such a name (every one starts with "params." or "tags.").
MLflow keeps params as strings, so 10 < 9 there; W&B and Aim keep them typed, as here.
"""

from __future__ import annotations

import json
import os
import time

import pyarrow as pa

from ..engine.catalog import record_keys
from ..engine.index import HOST_ID

STALE_HEARTBEAT_NS = 60 * 10**9   # six missed heartbeats (engine.writer.HEARTBEAT_SECONDS)
RUN_TIME_TYPE = pa.timestamp("us", tz="UTC")

RUN_COLUMNS = [("id", pa.string()), ("experiment", pa.string()), ("name", pa.string()),
               ("parent", pa.string()), ("status", pa.string()), ("start_time", RUN_TIME_TYPE),
               ("end_time", RUN_TIME_TYPE), ("kind", pa.string())]


def writer_is_dead(beat) -> bool:
    """Whether the writer of one heartbeat stopped: its beat is stale or, on this host,
    its process is gone (None: no beat at all)."""
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


def text_column_name(name: str) -> str:
    """"params.a.b" -> "params_text.a.b": where the values of a mixed key that its typed
    column cannot hold go (module docstring)."""
    root, rest = name.split(".", 1)
    return f"{root}_text.{rest}"


def param_columns(name: str, values: list) -> list[tuple[str, pa.Array]]:
    """The column of one flattened key, and its text column when the values mix kinds."""
    kinds = {_kind(v) for v in values} - {None}
    main = "number" if "number" in kinds else "bool" if "bool" in kinds else None
    if main is None:
        return [(name, _text(values))]
    typed = _numbers(values) if main == "number" else pa.array(
        [v if _kind(v) == "bool" else None for v in values], pa.bool_())
    if kinds == {main}:
        return [(name, typed)]
    return [(name, typed), (text_column_name(name), _text([None if _kind(v) == main else v for v in values]))]


def _kind(value) -> str | None:
    if value is None:
        return None
    kind = type(value)
    if kind is bool:
        return "bool"
    if kind is float:
        return "number"
    if kind is int:
        try:
            float(value)
        except OverflowError:   # past float64: only text holds it
            return "json"
        return "number"
    return "str" if kind is str else "json"


def _numbers(values: list) -> pa.Array:
    """int64 when every number is an int within int64, else float64 (NaN and inf kept)."""
    numbers = [v if _kind(v) == "number" else None for v in values]
    if all(type(v) is int and -(1 << 63) <= v < (1 << 63) for v in numbers if v is not None):
        return pa.array(numbers, pa.int64())
    return pa.array([None if v is None else float(v) for v in numbers], pa.float64())


def _text(values: list) -> pa.Array:
    return pa.array([None if v is None else v if type(v) is str else json.dumps(v, ensure_ascii=False)
                     for v in values], pa.string())


def runs_table(records: list[dict], heartbeats: dict) -> pa.Table:
    """heartbeats: run_id bytes -> the Heartbeats of its writers. A running run is shown
    as "crashed" once every writer stopped beating (or, on this host, is gone): ranks of
    one job each beat, and the run lives while any of them does."""
    records = sorted(records, key=lambda r: (r["start_time"], r["id"]))
    for record in records:
        if record["status"] == "running" and all(
                writer_is_dead(beat) for beat in heartbeats.get(bytes.fromhex(record["id"])) or [None]):
            record["status"] = "crashed"
    for record in records:  # stored in ns; microseconds convert to Python datetimes
        for field in ("start_time", "end_time"):
            record[field] = None if record[field] is None else record[field] // 1000
    columns = {name: pa.array([r.get(name) for r in records], type) for name, type in RUN_COLUMNS}
    extra: dict[str, list] = {}
    for i, record in enumerate(records):
        for key, value in record_keys(record).items():
            extra.setdefault(key, [None] * len(records))[i] = value
    for key in sorted(extra):
        columns.update(param_columns(key, extra[key]))
    if not records:
        return pa.table({name: pa.array([], type) for name, type in RUN_COLUMNS})
    return pa.table(columns)


SERIES_KINDS = {1: "scalar", 2: "tensor"}


def series_table(rows: list) -> pa.Table:
    """rows: (metric name, context JSON, kind, SeriesInfo, engine.aggregates.Aggregates
    or None): the table of ``Store.metrics``."""
    rows = sorted(rows, key=lambda r: (r[0], r[1]))
    columns = {
        "metric": pa.array([r[0] for r in rows], pa.string()),
        "context": pa.array([r[1] or None for r in rows], pa.string()),
        "kind": pa.array([SERIES_KINDS[r[2]] for r in rows], pa.string()),
        "count": pa.array([r[3].count for r in rows], pa.int64()),
        "step_min": pa.array([r[3].step_min if r[3].count else None for r in rows], pa.int64()),
        "step_max": pa.array([r[3].step_max if r[3].count else None for r in rows], pa.int64()),
    }
    found = [r[4] for r in rows]
    for name, kind in AGGREGATE_FIELDS:
        columns[name] = pa.array([_aggregate(a, name) for a in found], kind)
    return pa.table(columns)


AGGREGATE_FIELDS = [("nan_count", pa.int64()), ("first", pa.float64()), ("first_step", pa.int64()),
                    ("last", pa.float64()), ("last_step", pa.int64()), ("min", pa.float64()),
                    ("min_step", pa.int64()), ("max", pa.float64()), ("max_step", pa.int64()),
                    ("mean", pa.float64())]


def _aggregate(found, name: str):
    """One field of a series' aggregates (None: tensor series; the steps of min and max
    when every value is NaN)."""
    if found is None or (name in ("min_step", "max_step") and not found.min_seq):
        return None
    return getattr(found, name)
