"""SQL over a store, with DuckDB as the engine (the ``sql`` extra).

``run_sql(store, query)`` runs the user's query, unchanged, on an in-memory DuckDB
connection where three tables are registered, each only when the query names it:

    runs     the Store.runs() table: id, experiment, name, parent, status, start_time,
             end_time, "params.KEY", "tags.KEY" (quote the dotted names)
    series   the Store.series() table: run_id, metric, context, kind, count, nan_count,
             step_min, step_max, first, last, min, max, mean (and their steps)
    points   run_id, metric, context, step, time (timestamp[us, UTC]), time_ns (int64,
             exact), value (float64) of the scalar series

``points`` is built from the series a query asks for, not from the whole store: where a
SELECT reads ``points`` and its WHERE clause is a conjunction (AND) holding
``run_id = '...'``, ``metric = '...'``, ``context = '...'`` (the series' context as
JSON text, as the series table shows it), ``context IS NULL``, or IN lists of them,
only the series that match are read. Comparisons of ``step`` with integer constants
in the same conjunction (=, <, <=, >, >=, either side, BETWEEN) become the step range
of those reads (Store.read start and stop), so that ``WHERE metric = 'loss' AND step <
10`` decodes only the blocks that hold those steps; a series read for several
references gets the smallest range that covers theirs. The query itself then runs
unchanged on the rows read: its answer is DuckDB's over the whole table. The query is
found with DuckDB's own parser (``json_serialize_sql``). A reference to ``points`` without such a filter (in an OR,
only in a JOIN's ON, through a subquery's outer WHERE) reads every scalar series of the
runs it allows, up to ``max_points`` points; past that run_sql refuses with an
InvalidArgumentError that suggests a filter. Statements DuckDB does not serialize
(DESCRIBE, SHOW, COPY) see every table, under the same limit.

Each query runs on its own cursor of one in-memory DuckDB database of the process, in
a transaction rolled back afterwards: a table it creates is gone for the next query.
Nothing is written to the store. DuckDB's errors (syntax, unknown column) are raised as
InvalidArgumentError("query", DuckDB's message).

Types of results: each cursor sets DuckDB's TimeZone to UTC, so timestamps come back
as timestamp[us, tz=UTC], as in every other table of steplog, and date_trunc or a cast
to DATE work in UTC whatever the machine's zone. DuckDB widens ``sum`` of an integer
column to HUGEINT, which reaches Arrow as decimal128(38, 0) (Python Decimal); write
``sum(count)::BIGINT`` for an int64. Memory: points holds about 32 bytes a point read
(step, time, time_ns, value; run_id, metric and context are run-end encoded, nothing
a row), and DuckDB's result beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from ..engine.errors import InvalidArgumentError, InvalidTypeError
from .export import store_series, time_columns

TABLES = ("runs", "series", "points")
MAX_POINTS = 200_000_000
SERIES_KEYS = ("run_id", "metric", "context")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# run_id, metric and context are the same over a series' rows: run-end encoded, which
# DuckDB reads as text, they cost nothing a row (a dictionary costs an index a row)
LABEL_TYPE = pa.run_end_encoded(pa.int64(), pa.string())
POINTS_SCHEMA = pa.schema([("run_id", LABEL_TYPE), ("metric", LABEL_TYPE), ("context", LABEL_TYPE),
                           ("step", pa.int64()), ("time", pa.timestamp("us", tz="UTC")), ("time_ns", pa.int64()),
                           ("value", pa.float64())])
_database = None   # (pid, the DuckDB connection that owns this process's in-memory database)
_database_lock = threading.Lock()
NULL = object()   # a context IS NULL in a filter: the series without a context

OnRead = Callable[[str, str, "str | None"], None]


def run_sql(store, query: str, *, max_points: int = MAX_POINTS, on_read: OnRead | None = None) -> pa.Table:
    """The result of the SQL ``query`` over the tables runs, series and points of
    ``store`` (module docstring), as a pyarrow Table (no rows for a statement that
    returns none). ``on_read(run_id, metric, context)`` is called for each series read
    into ``points``. Timestamps are in UTC; ``sum`` over an integer column is DuckDB's
    HUGEINT, a decimal128(38, 0) column (cast it to BIGINT for int64)."""
    import duckdb

    if not isinstance(query, str):
        raise InvalidTypeError("query", f"must be a str, got {type(query).__name__}")
    if not query.strip():
        raise InvalidArgumentError("query", "must not be empty")
    con = _cursor()
    con.begin()
    try:
        tree = _parse(con, query)
        names = TABLES if tree is None else _table_names(tree)
        if "runs" in names:
            con.register("runs", store.runs())
        if "series" in names:
            con.register("series", store_series(store))
        if "points" in names:
            filters = None if tree is None else points_filters(tree)
            con.register("points", points_table(store, filters, max_points, on_read))
        try:
            result = con.sql(query)
            return pa.table({}) if result is None else result.to_arrow_table()
        except duckdb.Error as exc:
            raise InvalidArgumentError("query", str(exc)) from None
    finally:
        with contextlib.suppress(duckdb.Error):   # a query may have ended the transaction itself
            con.rollback()
        con.close()


def _cursor():
    """A new connection to this process's in-memory DuckDB database. Opening a database
    costs tens of milliseconds, a cursor microseconds; what a cursor registers is its
    own, and each query runs in a transaction that is rolled back, so queries share
    nothing."""
    import duckdb

    global _database
    with _database_lock:
        if _database is None or _database[0] != os.getpid():   # a forked child opens its own
            _database = (os.getpid(), duckdb.connect(":memory:"))
        cursor = _database[1].cursor()
    cursor.execute("SET TimeZone = 'UTC'")   # not the machine's zone: results in UTC, as every table of steplog
    return cursor


def _parse(con, query: str) -> dict | None:
    """DuckDB's syntax tree of ``query`` as JSON; None for statements it does not
    serialize (only SELECTs are)."""
    rows = con.sql("SELECT json_serialize_sql(?)", params=[query]).fetchall()
    tree = json.loads(rows[0][0])
    if not tree.get("error"):
        return tree
    if tree.get("error_type") == "parser":
        raise InvalidArgumentError("query", f"Parser Error: {tree.get('error_message')}")
    return None


def _walk(node) -> Iterator[dict]:
    """Every dict in a JSON tree."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _is_table(node: dict, name: str | None = None) -> bool:
    return (node.get("type") == "BASE_TABLE" and not node.get("schema_name") and not node.get("catalog_name")
            and (name is None or node.get("table_name", "").lower() == name))


def _table_names(tree: dict) -> set[str]:
    return {n["table_name"].lower() for n in _walk(tree) if _is_table(n)} & set(TABLES)


def points_filters(tree: dict) -> list[dict] | None:
    """For each reference to ``points`` in the query, what its WHERE conjunction pins:
    {"run_id": set, "metric": set, "context": set} (a key left out: any value). None
    when one reference pins nothing (then every series is needed), or a CTE is named
    points."""
    if any(entry.get("key", "").lower() == "points" for n in _walk(tree) if "cte_map" in n
           for entry in n["cte_map"].get("map", [])):
        return None
    references = [n for n in _walk(tree) if _is_table(n, "points")]
    found: dict[int, dict] = {}
    for node in _walk(tree):
        if node.get("type") != "SELECT_NODE":
            continue
        tables = list(_from_tables(node.get("from_table")))
        for table in tables:
            if _is_table(table, "points") and not table.get("column_name_alias"):
                alias = (table.get("alias") or "points").lower()
                found[id(table)] = _pinned(node.get("where_clause"), alias, alone=len(tables) == 1)
    filters = [found.get(id(ref), {}) for ref in references]
    if any(not f for f in filters):
        return None
    return filters


def _from_tables(node) -> Iterator[dict]:
    """The tables a FROM clause joins (not those inside its subqueries)."""
    if not isinstance(node, dict):
        return
    if node.get("type") == "JOIN":
        yield from _from_tables(node.get("left"))
        yield from _from_tables(node.get("right"))
    else:
        yield node


def _pinned(where, alias: str, alone: bool) -> dict:
    """The values each series key must take by the AND-ed terms of ``where`` that name
    a column of the table ``alias`` (unqualified names count when it is the only table),
    and under "step" the range [start, stop) that its comparisons of step with integer
    constants leave (None: unbounded on that side; start >= stop: no step)."""
    terms = [where] if where is not None else []
    pinned: dict = {}
    while terms:
        term = terms.pop()
        if term.get("type") == "CONJUNCTION_AND":
            terms.extend(term.get("children", []))
            continue
        found = _term_values(term, alias, alone)
        if found is not None:
            key, values = found
            pinned[key] = pinned[key] & values if key in pinned else values
            continue
        bounds = _step_bounds(term, alias, alone)
        if bounds is not None:
            lo, hi = pinned.get("step", (None, None))
            pinned["step"] = (bounds[0] if lo is None else lo if bounds[0] is None else max(lo, bounds[0]),
                              bounds[1] if hi is None else hi if bounds[1] is None else min(hi, bounds[1]))
    return pinned


# step OP c as [start, stop) over the integers; a reversed term (c OP step) flips OP
_FLIP = {"COMPARE_LESSTHAN": "COMPARE_GREATERTHAN", "COMPARE_GREATERTHAN": "COMPARE_LESSTHAN",
         "COMPARE_LESSTHANOREQUALTO": "COMPARE_GREATERTHANOREQUALTO",
         "COMPARE_GREATERTHANOREQUALTO": "COMPARE_LESSTHANOREQUALTO", "COMPARE_EQUAL": "COMPARE_EQUAL"}
_RANGE = {"COMPARE_LESSTHAN": lambda c: (None, c), "COMPARE_LESSTHANOREQUALTO": lambda c: (None, c + 1),
          "COMPARE_GREATERTHAN": lambda c: (c + 1, None), "COMPARE_GREATERTHANOREQUALTO": lambda c: (c, None),
          "COMPARE_EQUAL": lambda c: (c, c + 1)}


def _step_bounds(term: dict, alias: str, alone: bool) -> tuple | None:
    """[start, stop) of step (Python ints, None: unbounded) that a comparison of step with
    an integer constant, or step BETWEEN two of them, allows; None for any other term."""
    kind = term.get("type")
    if kind == "COMPARE_BETWEEN":
        lower, upper = _integer(term.get("lower")), _integer(term.get("upper"))
        if _column_key(term.get("input"), alias, alone, ("step",)) and lower is not None and upper is not None:
            return lower, upper + 1
        return None
    if kind not in _RANGE:
        return None
    for column, constant, op in ((term.get("left"), term.get("right"), kind),
                                 (term.get("right"), term.get("left"), _FLIP[kind])):
        value = _integer(constant)
        if _column_key(column, alias, alone, ("step",)) and value is not None:
            return _RANGE[op](value)
    return None


def _integer(node) -> int | None:
    """The value of an integer constant (either of the shapes DuckDB versions serialize)."""
    if not isinstance(node, dict) or node.get("class") != "CONSTANT":
        return None
    literal = node.get("literal")
    if isinstance(literal, dict):
        try:
            return int(literal.get("text")) if literal.get("kind") == "INTEGER" else None
        except (TypeError, ValueError):
            return None
    value = node.get("value")
    if isinstance(value, dict) and not value.get("is_null") and value.get("type", {}).get("id") in _INTEGER_TYPES:
        try:
            return int(value.get("value"))
        except (TypeError, ValueError):
            return None
    return None


_INTEGER_TYPES = frozenset(["TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                            "UINTEGER", "UBIGINT", "UHUGEINT"])


def _term_values(term: dict, alias: str, alone: bool) -> tuple[str, set] | None:
    kind = term.get("type")
    if kind == "COMPARE_EQUAL":
        for column, constant in ((term.get("left"), term.get("right")), (term.get("right"), term.get("left"))):
            key, value = _column_key(column, alias, alone), _string(constant)
            if key is not None and value is not None:
                return key, {value}
    elif kind == "COMPARE_IN":
        children = term.get("children", [])
        key = _column_key(children[0], alias, alone) if children else None
        values = [_string(c) for c in children[1:]]
        if key is not None and values and all(v is not None for v in values):
            return key, set(values)
    elif kind == "OPERATOR_IS_NULL":
        children = term.get("children", [])
        if children and _column_key(children[0], alias, alone) == "context":
            return "context", {NULL}
    return None


def _column_key(node, alias: str, alone: bool, keys: tuple = SERIES_KEYS) -> str | None:
    if not isinstance(node, dict) or node.get("class") != "COLUMN_REF":
        return None
    names = [n.lower() for n in node.get("column_names", [])]
    if len(names) == 1 and alone or len(names) == 2 and names[0] == alias:
        return names[-1] if names[-1] in keys else None
    return None


def _string(node) -> str | None:
    """The text of a string constant (either of the shapes DuckDB versions serialize)."""
    if not isinstance(node, dict) or node.get("class") != "CONSTANT":
        return None
    literal = node.get("literal")
    if isinstance(literal, dict):
        return literal.get("text") if literal.get("kind") == "STRING" else None
    value = node.get("value")
    if isinstance(value, dict) and not value.get("is_null") and value.get("type", {}).get("id") == "VARCHAR":
        return value.get("value")
    return None


def points_table(store, filters: list[dict] | None, max_points: int = MAX_POINTS,
                 on_read: OnRead | None = None) -> pa.Table:
    """The points of the scalar series that match any of ``filters`` (None: all), in
    the step range the filters that match a series allow (the union of their ranges)."""
    series = []
    for row in _wanted_series(store, filters):
        start, stop = _step_range(row, filters)
        if start is None or stop is None or start < stop:   # else no step of it can match
            series.append((row, start, stop))
    total = sum(row["count"] for row, start, stop in series if start is None and stop is None)
    if total > max_points:
        _refuse(total, len(series), max_points)
    tables, labels, read_points = [], [], 0
    for row, start, stop in series:
        context = json.loads(row["context"]) if row["context"] else None
        read = store.read(row["run_id"], row["metric"], context=context, start=start, stop=stop)
        if on_read is not None:
            on_read(row["run_id"], row["metric"], row["context"])
        read_points += read.num_rows
        if read_points > max_points:
            _refuse(read_points, len(series), max_points)
        if not read.num_rows:
            continue
        time, ns = time_columns(read)
        tables.append(pa.Table.from_arrays([read.column("step"), time, pa.array(ns), read.column("value")],
                                           names=["step", "time", "time_ns", "value"]))
        labels.append((row["run_id"], row["metric"], row["context"]))
    if not tables:
        return POINTS_SCHEMA.empty_table()
    data = pa.concat_tables(tables)
    return pa.Table.from_arrays(_label_columns(labels, [t.num_rows for t in tables]) + data.columns,
                                schema=POINTS_SCHEMA)


def _refuse(total: int, series: int, max_points: int):
    raise InvalidArgumentError("query", f"points would hold {total:,} points of {series} series, more "
                               f"than max_points={max_points:,}; filter points by run_id and metric "
                               "(WHERE run_id = '...' AND metric IN (...)) or by step")


def _step_range(row: dict, filters: list[dict] | None) -> tuple:
    """(start, stop) for store.read of one series: the hull of the step ranges of the
    filters it matches, within int64 (None: unbounded)."""
    if filters is None:
        return None, None
    ranges = [f.get("step", (None, None)) for f in filters if _matches(row, f)]
    ranges = [r for r in ranges if r[0] is None or r[1] is None or r[0] < r[1]] or [(0, 0)]
    lo = None if any(r[0] is None for r in ranges) else min(r[0] for r in ranges)
    hi = None if any(r[1] is None for r in ranges) else max(r[1] for r in ranges)
    if lo is not None and hi is not None and lo >= hi or lo is not None and lo > INT64_MAX \
            or hi is not None and hi <= INT64_MIN:
        return 0, 0
    return (None if lo is None or lo <= INT64_MIN else lo), (None if hi is None or hi > INT64_MAX else hi)


def _label_columns(labels: list[tuple], rows: list[int]) -> list[pa.Array]:
    """run_id, metric and context of each row, from those of each series (each with at
    least one row): run-end encoded arrays, a run a series."""
    run_ends = pa.array(np.cumsum(rows, dtype=np.int64))
    return [pa.RunEndEncodedArray.from_arrays(run_ends, pa.array(list(values), pa.string()))
            for values in zip(*labels)]


def _wanted_series(store, filters: list[dict] | None) -> list[dict]:
    """Rows of the series catalog (scalar series) that any filter matches."""
    if filters is not None and all("run_id" in f for f in filters):
        held = set(store.runs().column("id").to_pylist())   # a query may name anything
        runs = sorted(set().union(*(f["run_id"] for f in filters)) & held)
        catalog = store_series(store, runs)
    else:
        catalog = store_series(store)
    rows = [r for r in catalog.select(["run_id", "metric", "context", "kind", "count"]).to_pylist()
            if r["kind"] == "scalar"]
    if filters is None:
        return rows
    return [r for r in rows if any(_matches(r, f) for f in filters)]


def _matches(row: dict, pinned: dict) -> bool:
    for key, values in pinned.items():
        if key == "step":
            continue
        value = row[key]
        if key == "context" and value is None:
            value = NULL
        if value not in values:
            return False
    return True
