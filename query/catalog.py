"""Tables over many runs from the catalog (engine/catalog.py): the runs table, the
column of any param, tag, attribute or metric aggregate a filter needs, and the series
table. Nothing here decodes a point or a run record: one ``CatalogView`` turns one
Catalog into columns once (rows in the runs table's order: start time, then id) and
keeps them, so repeated queries cost a few Arrow kernels.

Metric values are those of the flushed points (what other processes see too); a
``Run.flush()`` makes a run's latest points count.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..engine.catalog import KIND_BOOL, KIND_FLOAT, KIND_INT, KIND_STR, Catalog
from .runs import RUN_COLUMNS, RUN_TIME_TYPE, SERIES_KINDS, text_column_name, writer_is_dead

ATTRIBUTES = [name for name, _ in RUN_COLUMNS]
AGGS = ("last", "first", "min", "max", "mean", "count", "sum", "nan_count")
WITH_STEP = {"min": "min_step", "max": "max_step", "first": "first_step", "last": "last_step"}


class CatalogView:
    """Columns of one Catalog, built once each. Not thread-safe on its own: the Store
    builds one under its lock and hands it out; its caches only grow."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        runs = catalog.runs
        self.n = runs.num_rows
        self.order = pc.sort_indices(runs, [("start_time", "ascending"), ("id", "ascending")]).to_numpy()
        self.position = np.empty(self.n, np.int64)
        self.position[self.order] = np.arange(self.n)
        self._base: pa.Table | None = None
        self._params: dict[str, list] | None = None
        self._metric_rows: dict = {}
        self._contexts: dict = {}

    # -- the runs table -------------------------------------------------------------

    def base_table(self) -> pa.Table:
        """Every run, in order, with its stored status (see ``statuses``)."""
        if self._base is None:
            runs = self.catalog.runs.take(pa.array(self.order))
            columns = {}
            for name, kind in RUN_COLUMNS:
                column = runs.column(name).combine_chunks()
                if name in ("start_time", "end_time"):
                    column = pc.divide(column, 1000).cast(RUN_TIME_TYPE) if len(column) else pa.array([], kind)
                columns[name] = column
            for name, column in self.param_columns().items():
                columns[name] = column
            self._base = pa.table(columns) if self.n else pa.table({n: pa.array([], t) for n, t in RUN_COLUMNS})
        return self._base

    def statuses(self, heartbeats: dict) -> pa.Array:
        """The status column: "crashed" for a running run whose writers all stopped."""
        status = self.base_table().column("status").combine_chunks()
        running = np.flatnonzero(_bools(pc.equal(status, "running")))
        if not len(running):
            return status
        values = status.to_pylist()
        ids = self.base_table().column("id")
        for i in running.tolist():
            beats = heartbeats.get(bytes.fromhex(ids[i].as_py())) or [None]
            if all(writer_is_dead(beat) for beat in beats):
                values[i] = "crashed"
        return pa.array(values, pa.string())

    def table(self, heartbeats: dict) -> pa.Table:
        base = self.base_table()
        return base.set_column(base.column_names.index("status"), "status", self.statuses(heartbeats))

    def param_columns(self) -> dict[str, pa.Array]:
        """Flattened params and tags as query/runs.py types them, in name order."""
        if self._params is None:
            self._params = _pivot(self.catalog.params, self.position, self.n)
        return self._params

    # -- what a filter refers to ----------------------------------------------------

    def columns(self, ref) -> list[pa.Array]:
        """The one or two arrays of a search Ref over every run, in table order."""
        if ref.kind == "attribute":
            base = self.base_table()
            return [base.column(ref.key).combine_chunks()] if ref.key in base.column_names else [pa.nulls(self.n)]
        if ref.kind in ("param", "tag", "resource"):
            name = f"{ref.kind}s.{ref.key}"
            params = self.param_columns()
            found = [params[n] for n in (name, text_column_name(name)) if n in params]
            return found or [pa.nulls(self.n)]
        context = None if ref.context is None else tuple(ref.context)
        return [self.metric_column(ref.key, context, ref.agg or "last")]

    def metric_rows(self, name: str, context) -> tuple[np.ndarray, np.ndarray]:
        """(series rows, their runs' table positions) of the scalar series ``name`` with
        ``context``: a canonical JSON string ("" for none), or a search Ref's sorted
        ((key, value text), ...) pairs."""
        key = (name, context)
        found = self._metric_rows.get(key)
        if found is None:
            series = self.catalog.series
            rows = np.flatnonzero(_bools(pc.and_(pc.equal(series.column("metric"), name),
                                                 pc.equal(series.column("kind"), 1))))
            contexts = series.column("context").take(pa.array(rows)).to_pylist()
            wanted = [self._context_matches(c, context) for c in contexts]
            rows = rows[np.array(wanted, bool)] if len(rows) else rows
            runs = series.column("run").take(pa.array(rows)).to_numpy()
            found = self._metric_rows[key] = (rows, self.position[runs])
        return found

    def _context_matches(self, stored: str | None, wanted) -> bool:
        if isinstance(wanted, str):
            return (stored or "") == wanted
        pairs = self._contexts.get(stored)
        if pairs is None:
            pairs = self._contexts[stored] = context_pairs(stored)
        return pairs == tuple(wanted)

    def metric_column(self, name: str, context, agg: str) -> pa.Array:
        """One aggregate of one series of every run (null where a run has none):
        float64, int64 for count, nan_count and steps."""
        rows, at = self.metric_rows(name, context)
        values = aggregate_values(self.catalog.series, rows, agg)
        return scatter(values, at, self.n)

    def scalar_series_names(self, positions: np.ndarray | None) -> list[tuple[str, str | None]]:
        """(metric, context JSON or None) of every scalar series of the runs at
        ``positions`` (None: all), sorted."""
        series = self.catalog.series
        keep = _bools(pc.equal(series.column("kind"), 1))
        if positions is not None:
            keep &= np.isin(self.position[series.column("run").to_numpy()], positions)
        pairs = series.filter(pa.array(keep)).select(["metric", "context"]).group_by(["metric", "context"]) \
            .aggregate([])
        return sorted(zip(pairs.column("metric").to_pylist(), pairs.column("context").to_pylist()),
                      key=lambda p: (p[0], p[1] or ""))

    # -- the series table -----------------------------------------------------------

    def series_table(self, positions: np.ndarray | None) -> pa.Table:
        """One row per series of the runs at ``positions`` (None: all), by run, metric, context."""
        series = self.catalog.series
        at = self.position[series.column("run").to_numpy()] if series.num_rows else np.empty(0, np.int64)
        rows = np.arange(series.num_rows)
        if positions is not None:
            rows = rows[np.isin(at, positions)]
        picked = series.take(pa.array(rows))
        order = np.lexsort((np.array(picked.column("context").fill_null("").to_pylist(), object).astype(str),
                            np.array(picked.column("metric").to_pylist(), object).astype(str), at[rows])) \
            if len(rows) else rows
        picked = picked.take(pa.array(order))
        run_ids = self.base_table().column("id").take(pa.array(at[rows][order]))
        kinds = pa.array([SERIES_KINDS[k] for k in picked.column("kind").to_pylist()], pa.string())
        columns = {"run_id": run_ids, "metric": picked.column("metric"), "context": picked.column("context"),
                   "kind": kinds}
        for name in ("count", "nan_count", "step_min", "step_max", "first", "first_step", "last", "last_step",
                     "min", "min_step", "max", "max_step"):
            columns[name] = picked.column(name)
        columns["mean"] = aggregate_values(picked, np.arange(picked.num_rows), "mean")
        return pa.table(columns)


def _bools(mask) -> np.ndarray:
    """A pyarrow bool array or chunked array as numpy, null as False (no pandas import)."""
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    return mask.fill_null(False).to_numpy(zero_copy_only=False)


def aggregate_values(series: pa.Table, rows: np.ndarray, agg: str) -> pa.Array:
    take = pa.array(rows, pa.int64())
    if agg == "mean":
        total = series.column("sum").take(take)
        kept = pc.subtract(series.column("count").take(take), series.column("nan_count").take(take))
        with np.errstate(invalid="ignore", divide="ignore"):
            return pc.divide(total, pc.cast(kept, pa.float64()))   # 0/0: NaN, a series of NaN alone
    return series.column(agg).take(take).combine_chunks()


def scatter(values: pa.Array, at: np.ndarray, n: int) -> pa.Array:
    """An array of n rows holding values[j] at row at[j], null elsewhere."""
    index = np.full(n, -1, np.int64)
    index[at] = np.arange(len(at))
    return values.take(pa.array(index, mask=index < 0)) if len(values) else pa.nulls(n, values.type)


def context_pairs(context_json: str | None) -> tuple:
    """A stored context as a search Ref holds one: sorted ((key, value text), ...), a
    str value as it is and any other as its JSON text (3, 0.5, true, null)."""
    if not context_json:
        return ()
    found = json.loads(context_json)
    return tuple(sorted((k, v if isinstance(v, str) else json.dumps(v)) for k, v in found.items()))


def context_label(name: str, context_json: str | None) -> str:
    """``loss`` or ``loss{subset=val}``: the analytics column stem of a series."""
    pairs = context_pairs(context_json)
    return name + ("{" + ",".join(f"{k}={v}" for k, v in pairs) + "}" if pairs else "")


def _pivot(params: pa.Table, position: np.ndarray, n: int) -> dict[str, pa.Array]:
    """Long (run, key, kind, value) rows -> one column a key (and its text column when
    its values mix kinds), by query/runs.py param_columns' rules."""
    if not params.num_rows:
        return {}
    keys = params.column("key").combine_chunks().dictionary_encode()
    codes = keys.indices.to_numpy()
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    runs = params.column("run").to_numpy()
    kinds = params.column("kind").to_numpy()
    columns = {}
    names = keys.dictionary.to_pylist()
    for part in sorted(np.split(order, bounds), key=lambda p: names[codes[p[0]]]):
        name = names[codes[part[0]]]
        at, kind = position[runs[part]], kinds[part]
        present = set(np.unique(kind).tolist())
        number = present & {KIND_INT, KIND_FLOAT}
        main = "number" if number else "bool" if KIND_BOOL in present else None
        rows = pa.array(part, pa.int64())
        if main is None:
            columns[name] = scatter(params.column("text").take(rows), at, n)
            continue
        if main == "number":
            is_main = np.isin(kind, (KIND_INT, KIND_FLOAT))
            source = "integer" if number == {KIND_INT} else "number"
            typed = params.column(source).take(rows)
        else:
            is_main = kind == KIND_BOOL
            typed = pc.cast(params.column("integer").take(rows), pa.bool_())
        mask = pa.array(is_main)
        columns[name] = scatter(pc.if_else(mask, typed, pa.nulls(len(part), typed.type)), at, n)
        if not is_main.all():
            text = params.column("text").take(rows)
            text = pc.if_else(pa.array(kind == KIND_BOOL), pc.if_else(pc.cast(params.column("integer").take(rows),
                                                                              pa.bool_()), "true", "false"), text)
            columns[text_column_name(name)] = scatter(pc.if_else(mask, pa.nulls(len(part), pa.string()), text), at, n)
    return {name: columns[name] for name in _column_order(columns)}


def _column_order(columns: dict) -> list[str]:
    """Typed columns by name, each text column right after its typed one."""
    typed = sorted(name for name in columns if not name.split(".", 1)[0].endswith("_text"))
    out = []
    for name in typed:
        out.append(name)
        if text_column_name(name) in columns:
            out.append(text_column_name(name))
    return out


__all__ = ["CatalogView", "AGGS", "WITH_STEP", "context_label", "context_pairs", "KIND_STR"]
