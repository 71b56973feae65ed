"""The run catalog: every run record and every series' aggregates as Arrow columns,
so that a query over 100,000 runs reads a few columns instead of 100,000 JSON records.

The catalog is derived state. The index's ``runs``, ``series``, ``series_info`` and
``aggregates`` tables are the truth; every write transaction that changes one of them
logs the runs it changed under a new change_seq (table ``changes``, engine.index
IndexWriter.log_changes). A ``Catalog`` is the state of every run as of a change_seq:
loaded from the snapshot a writer stored (table ``catalog``, Arrow IPC streams, zstd)
and brought up to date by reading again the runs the log names after it; with no
usable snapshot it is built from the records. Readers never write: a read-only open, or
a process that may not write, gets the same answers from the log or the records.
Writers store a new snapshot when enough changed (``refresh``) and trim the log it covers.

Columns (``RUNS``, ``PARAMS``, ``SERIES``): a run is a row of ``runs``; its params and
tags are rows of ``params`` (flattened key, kind, value), its series rows of ``series``,
both pointing at their run's row. Layout in docs/FORMAT.md, "Catalog".
"""

from __future__ import annotations

import json
import struct
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from .aggregates import Aggregates, merge, of_points
from .errors import CorruptionError
from .index import Index, IndexReader, IndexWriter

CATALOG_VERSION = 2   # 2: runs gained kind, params the resources.* keys
HEAD = struct.Struct("<IQQ")          # catalog version, change_seq it covers up to (exclusive), runs
REFRESH_CHANGES = 1024                # logged changes after which a writer stores a new snapshot
NAMES = (b"runs", b"params", b"series")

KIND_INT, KIND_FLOAT, KIND_BOOL, KIND_STR, KIND_JSON = 1, 2, 3, 4, 5
RUNS = pa.schema([("id", pa.string()), ("experiment", pa.string()), ("name", pa.string()),
                  ("parent", pa.string()), ("status", pa.string()), ("start_time", pa.int64()),
                  ("end_time", pa.int64()), ("kind", pa.string())])
PARAMS = pa.schema([("run", pa.int32()), ("key", pa.string()), ("kind", pa.int8()), ("number", pa.float64()),
                    ("integer", pa.int64()), ("text", pa.string())])
AGGREGATE_COLUMNS = [("nan_count", pa.int64()), ("sum", pa.float64()), ("min", pa.float64()),
                     ("min_step", pa.int64()), ("max", pa.float64()), ("max_step", pa.int64()),
                     ("first", pa.float64()), ("first_step", pa.int64()), ("last", pa.float64()),
                     ("last_step", pa.int64())]
SERIES = pa.schema([("run", pa.int32()), ("metric", pa.string()), ("context", pa.string()), ("kind", pa.int8()),
                    ("count", pa.int64()), ("step_min", pa.int64()), ("step_max", pa.int64())]
                   + AGGREGATE_COLUMNS)
SCHEMAS = dict(zip(NAMES, (RUNS, PARAMS, SERIES)))


class Catalog(NamedTuple):
    seq: int            # holds every change with change_seq < seq
    runs: pa.Table      # RUNS, in no particular order
    params: pa.Table    # PARAMS
    series: pa.Table    # SERIES


# -- aggregates of stored points ---------------------------------------------------------

def stored_aggregates(txn: IndexReader, segments, path_of, series_id: int) -> Aggregates | None:
    """The aggregates of a stored scalar series, decoded from its blocks (for indexes of
    version 3, which keep none): each chunk's points carry its block_seq."""
    from .block import KIND_SCALAR, BlockDecoder

    decoder, found = BlockDecoder(), None
    for ref in txn.blocks_overlapping(series_id, None, None):
        data = segments.read(ref.segment_id, ref.offset, ref.header.length)
        steps, _, values = decoder.decode(data, path_of(ref.segment_id), ref.offset, ref.header_bytes, KIND_SCALAR)
        found = merge(found, of_points(steps, values, lambda _, seq=ref.seq: seq))
    return found


def aggregates_mismatches(txn: IndexReader, segments, path_of) -> list[str]:
    """Why the kept aggregates of each scalar series differ from its blocks (for verify;
    it decodes every block once more). Sums may differ in the last bits (they add in
    another order); everything else must be equal, bit for bit."""
    found = []
    if not txn.has_table("aggregates"):
        return found
    for _, entry, name, context in txn.all_series():
        if entry.kind != 1 or not txn.series_info(entry.series_id).count:
            continue
        kept, want = txn.aggregates(entry.series_id), stored_aggregates(txn, segments, path_of, entry.series_id)
        if kept is None or kept._replace(sum=0.0).pack() != want._replace(sum=0.0).pack() \
                or not np.isclose(kept.sum, want.sum, rtol=1e-9, equal_nan=True):
            found.append(f"index table aggregates, series {entry.series_id} ({name!r}): kept {kept}, "
                         f"its blocks give {want}")
    return found


# -- params and tags as rows -------------------------------------------------------------

def flatten(mapping: dict, prefix: str) -> dict:
    """{"model": {"depth": 50}} -> {"params.model.depth": 50}"""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def record_keys(record: dict) -> dict:
    """A run record's params, tags and resources by flattened column name."""
    return {**flatten(record["params"], "params."), **flatten(record["tags"], "tags."),
            **flatten(record.get("resources") or {}, "resources.")}


def value_kind(value) -> int | None:
    """KIND_* of a param or tag value (None: null). An int past int64 is a float; one
    past float64 is JSON text."""
    kind = type(value)
    if value is None:
        return None
    if kind is bool:
        return KIND_BOOL
    if kind is float:
        return KIND_FLOAT
    if kind is int:
        if -(1 << 63) <= value < (1 << 63):
            return KIND_INT
        try:
            float(value)
        except OverflowError:
            return KIND_JSON
        return KIND_FLOAT
    return KIND_STR if kind is str else KIND_JSON


def _param_rows(row: int, record: dict, out: list) -> None:
    for key, value in record_keys(record).items():
        kind = value_kind(value)
        if kind is None:
            continue
        if kind == KIND_INT or kind == KIND_BOOL:
            out.append((row, key, kind, float(value), int(value), None))
        elif kind == KIND_FLOAT:
            out.append((row, key, kind, float(value), None, None))
        else:
            out.append((row, key, kind, None, None, value if kind == KIND_STR else json.dumps(value, ensure_ascii=False)))


def _series_rows(txn: IndexReader, row: int, run_id: bytes, out: list, aggregates_of=None) -> None:
    for entry, name, context in txn.run_series(run_id):
        info = txn.series_info(entry.series_id)
        found = None
        if entry.kind == 1 and info.count:
            found = txn.aggregates(entry.series_id) if aggregates_of is None else aggregates_of(entry.series_id)
        out.append((row, name, context or None, entry.kind, info.count, info.step_min if info.count else None,
                    info.step_max if info.count else None, found))


def _tables(records: list[dict], params: list, series: list) -> tuple:
    runs = pa.table([pa.array([r.get(name) for r in records], field.type) for name, field in
                     zip(RUNS.names, RUNS)], schema=RUNS)
    params_table = pa.table([pa.array(list(column) if params else [], field.type) for column, field in
                             zip(zip(*params) if params else [()] * len(PARAMS), PARAMS)], schema=PARAMS)
    columns = list(zip(*[row[:7] for row in series])) if series else [()] * 7
    arrays = [pa.array(list(c), f.type) for c, f in zip(columns, SERIES)]
    for name, kind in AGGREGATE_COLUMNS:
        picks = [None if row[7] is None else _aggregate_field(row[7], name) for row in series]
        arrays.append(pa.array(picks, kind))
    return runs, params_table, pa.table(arrays, schema=SERIES)


def _aggregate_field(found: Aggregates, name: str):
    if name in ("min_step", "max_step") and not found.min_seq:
        return None   # every value NaN: min and max are NaN, at no step
    return getattr(found, name)


def _rows_of(txn: IndexReader, run_ids, first_row: int, aggregates_of=None) -> tuple:
    records, params, series = [], [], []
    for run_id in run_ids:
        record = txn.get_run(run_id)
        if record is None:
            continue
        row = first_row + len(records)
        records.append(record)
        _param_rows(row, record, params)
        _series_rows(txn, row, run_id, series, aggregates_of)
    return _tables(records, params, series)


def from_records(txn: IndexReader, aggregates_of=None) -> Catalog:
    """The catalog built from the index records (every run JSON-decoded): slow, exact."""
    ids = [bytes.fromhex(record["id"]) for record in txn.runs()]
    return Catalog(txn.counter(b"next_change"), *_rows_of(txn, ids, 0, aggregates_of))


# -- keeping up ---------------------------------------------------------------------------

def load(txn: IndexReader, cached: Catalog | None = None, aggregates_of=None) -> Catalog:
    """The catalog as of ``txn``: ``cached`` (or the stored snapshot, when newer) with the
    runs changed since read again; built from the records when neither serves (no
    snapshot, a damaged one, a log that does not reach back far enough). An index
    without an ``aggregates`` table (version 3, read-only) gets its aggregates from
    ``aggregates_of(series_id)``."""
    head = txn.counter(b"next_change")
    if cached is not None and cached.seq == head:
        return cached
    if not txn.has_table("aggregates") and aggregates_of is not None:
        return from_records(txn, aggregates_of)
    base = cached
    stored = snapshot_seq(txn)
    if stored is not None and (base is None or stored > base.seq):
        base = read_snapshot(txn)
    if base is None:
        return from_records(txn)
    changed, expect = {}, base.seq
    for seq, run_ids in txn.changes(base.seq - 1):
        if seq != expect:
            break
        changed.update(dict.fromkeys(run_ids))
        expect += 1
        if expect == head:
            break
    if expect != head:   # the log was trimmed past this base, or is damaged
        return from_records(txn)
    found = patched(txn, base, list(changed), head)
    if found.runs.num_rows != txn.entries("runs"):   # a stale snapshot: trust the records
        return from_records(txn)
    return found


def patched(txn: IndexReader, base: Catalog, run_ids: list[bytes], seq: int) -> Catalog:
    """``base`` with the rows of ``run_ids`` read again from the index."""
    if not run_ids:
        return base._replace(seq=seq)
    import pyarrow.compute as pc

    hexes = pa.array([r.hex() for r in run_ids], pa.string())
    kept = ~np.asarray(pc.is_in(base.runs.column("id"), value_set=hexes).to_numpy(zero_copy_only=False), bool)
    n_kept = int(kept.sum())
    new_row = np.cumsum(kept, dtype=np.int64) - 1
    runs, params, series = _rows_of(txn, run_ids, n_kept)

    def keep(table: pa.Table) -> pa.Table:
        rows = table.column("run").to_numpy()
        mask = kept[rows]
        table = table.filter(pa.array(mask))
        return table.set_column(0, "run", pa.array(new_row[rows[mask]].astype(np.int32)))

    return Catalog(seq, pa.concat_tables([base.runs.filter(pa.array(kept)), runs]),
                   pa.concat_tables([keep(base.params), params]), pa.concat_tables([keep(base.series), series]))


# -- the snapshot -----------------------------------------------------------------------

def snapshot_seq(txn: IndexReader) -> int | None:
    """The change_seq the stored snapshot covers up to; None without a usable one."""
    try:
        raw = txn.catalog_value(b"head")
    except CorruptionError:
        return None
    if raw is None or len(raw) != HEAD.size or HEAD.unpack(raw)[0] != CATALOG_VERSION:
        return None
    return HEAD.unpack(raw)[1]


def read_snapshot(txn: IndexReader) -> Catalog | None:
    """The stored snapshot; None when it is missing or does not read (it is derived:
    the records answer instead)."""
    seq = snapshot_seq(txn)
    if seq is None:
        return None
    tables = []
    try:
        for name in NAMES:
            raw = txn.catalog_value(name)
            if raw is None:
                return None
            table = pa.ipc.open_stream(pa.py_buffer(raw)).read_all()
            if not table.schema.equals(SCHEMAS[name]):
                return None
            tables.append(table)
    except (CorruptionError, pa.ArrowInvalid, pa.ArrowTypeError, OSError):
        return None
    if tables[0].num_rows != HEAD.unpack(txn.catalog_value(b"head"))[2]:
        return None
    return Catalog(seq, *tables)


def encode(catalog: Catalog) -> dict[bytes, bytes]:
    """The snapshot's catalog values: a head and one Arrow IPC stream (zstd) a table."""
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    values = {b"head": HEAD.pack(CATALOG_VERSION, catalog.seq, catalog.runs.num_rows)}
    for name, table in zip(NAMES, catalog[1:]):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
            writer.write_table(table.combine_chunks())
        values[name] = sink.getvalue().to_pybytes()
    return values


def refresh(index: Index, force: bool = False) -> bool:
    """Store a new snapshot when REFRESH_CHANGES changes were logged after the stored one
    (``force``: any change, or none when there is no snapshot), and trim the log it
    covers. Returns whether it did. Built outside the write transaction (it may take a
    while); another writer that stored a newer one first wins."""
    with index.read() as txn:
        if not txn.has_table("catalog"):
            return False
        head, stored = txn.counter(b"next_change"), snapshot_seq(txn)
        pending = head - (stored or 1)
        if pending < REFRESH_CHANGES and not (force and (pending or stored is None)):
            return False
        catalog = load(txn)
    values = encode(catalog)

    def store(txn: IndexWriter) -> bool:
        current = snapshot_seq(txn)
        if current is not None and current >= catalog.seq:
            return False
        txn.put_catalog(values)
        txn.trim_changes(catalog.seq - 1)
        return True

    return index.write(store)
