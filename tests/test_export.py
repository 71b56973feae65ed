"""Export to Parquet (steplog.query.export) and import back (steplog.transfer).

Every reader (pyarrow.dataset, DuckDB, Polars) must see what Store.read returns, bit
for bit; names that are not path-safe must decode back to themselves; an import must
give back reads equal to the exported store's.
"""

from __future__ import annotations

import json
import os
import urllib.parse

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import steplog
from steplog.query import export
from steplog.query.export import POINTS_GLOB, RUNS_FILE, TENSORS_DIR, escape_name, export_store
from steplog.transfer import import_dataset

from _helpers import SPECIAL_VALUES

ODD_NAMES = ["plain", "ünïcødé 実験", "a/b/c", "..", ".", "x=y", "50%", "with space", "~tilde", "2024",
             "_under", "%2F", "é" * 120]
HIVE_STRINGS = ds.partitioning(pa.schema([("experiment", pa.string()), ("run", pa.string())]), flavor="hive")


def _fill(store) -> None:
    """Runs in every odd experiment; series with contexts, special values, repeated and
    unsorted steps, a tensor series; runs ended in each status."""
    rng = np.random.default_rng(7)
    statuses = ["finished", "failed", "killed"]
    for i, experiment in enumerate(ODD_NAMES):
        run = store.start_run(experiment=experiment, name=f"run {i} ü/..",
                              params={"lr": 0.1 * (i + 1), "model": {"depth": i, "act": "relu"}, "sizes": [1, i],
                                      "batch": "auto" if i % 3 == 0 else 32, "big": 2**70 if i == 1 else i},
                              tags={"team": "vision" if i % 2 else "nlp", "note": None})
        n = 100 + 37 * i
        steps = np.arange(n, dtype=np.int64) * (i + 1) - 50
        values = np.cumsum(rng.normal(size=n))
        times = 1_700_000_000_123_456_789 + np.arange(n, dtype=np.int64) * 1_000_003 - (i * 10**15)
        run.log_batch("loss", steps, values, times=times)
        run.log_batch("loss", steps[::-3], values[::-3] * 2, times=times[::-3] + 7, context={"subset": "val"})
        run.log_batch("odd", np.array([5, 5, 1, -(2**63), 2**63 - 1] + [3] * len(SPECIAL_VALUES)),
                      np.r_[[1.0, 2.0, 3.0, 4.0, 5.0], SPECIAL_VALUES], context={"rank": i, "ü": "/.."})
        if i % 4 == 0:
            run.log_tensor("grad/w", rng.normal(size=(8, 8)), step=1)
            run.log_tensor("grad/w", rng.normal(size=(8, 8)), step=2, edges=np.linspace(-3, 3, 9), bins=8)
        run.end(statuses[i % 3])
    store.start_run(experiment="empty", name="nothing logged").end()
    store.flush()


@pytest.fixture
def filled(open_store):
    store = open_store()
    _fill(store)
    return store


def _scalar_series(store) -> list[tuple[str, str, str, str | None]]:
    """(run_id, experiment, metric, context JSON) of every scalar series."""
    found = []
    for run_id, experiment in zip(store.runs().column("id").to_pylist(), store.runs().column("experiment").to_pylist()):
        for row in store.metrics(run_id).to_pylist():
            if row["kind"] == "scalar":
                found.append((run_id, experiment, row["metric"], row["context"]))
    return found


def _dir_value(name: str) -> str:
    """What readers see as the experiment of a partition: the name, or for a name too
    long for a file name, the kept part of it, "~" and the hash."""
    if len(urllib.parse.quote(name, safe="").replace("~", "%7E")) <= export.MAX_ESCAPED_CHARS:
        return name
    return urllib.parse.unquote(escape_name(name))


def _read(store, run_id, metric, context):
    return store.read(run_id, metric, context=json.loads(context) if context else None)


def _assert_same_points(got: pa.Table, want: pa.Table, ordered: bool = True) -> None:
    """Equal steps, exact times and value bits; ``ordered=False`` compares sorted rows."""
    columns = []
    for table in (got, want):
        steps = table.column("step").to_numpy()
        ns = table.column("time_ns").to_numpy()
        value_bits = np.ascontiguousarray(table.column("value").to_numpy()).view(np.int64)
        columns.append((steps, ns, value_bits))
    if not ordered:
        columns = [tuple(c[np.lexsort((c[2], c[1], c[0]))] for c in cols) for cols in columns]
    for g, w in zip(*columns):
        np.testing.assert_array_equal(g, w)
    us = got.column("time").cast(pa.int64()).to_numpy()
    np.testing.assert_array_equal(us, np.floor_divide(got.column("time_ns").to_numpy(), 1000))


def _bits(column: pa.ChunkedArray) -> tuple:
    """A column as comparable bits: float64 values as int64 (NaN payloads, -0.0), list
    columns as (offsets, flat bits), timestamps as int64."""
    array = column.combine_chunks()
    if pa.types.is_list(array.type):
        offsets = array.offsets.to_numpy() - array.offsets[0].as_py()
        return tuple(offsets.tolist()), _bits(pa.chunked_array([array.flatten()]))
    if pa.types.is_timestamp(array.type):
        array = array.cast(pa.int64())
    values = np.ascontiguousarray(array.to_numpy(zero_copy_only=False))
    return (values.view(np.int64) if values.dtype == np.float64 else values).tolist()


def _assert_same_table(got: pa.Table, want: pa.Table) -> None:
    """The same schema and the same bits in every column."""
    assert got.schema == want.schema
    for name in want.column_names:
        assert _bits(got.column(name)) == _bits(want.column(name)), name


def test_pyarrow_dataset_reads_every_series_as_store_read_does(filled, tmp_path):
    dest = tmp_path / "out"
    summary = export_store(filled, dest)
    series = _scalar_series(filled)
    table = ds.dataset(dest, partitioning=HIVE_STRINGS).to_table()
    assert summary["points"] == table.num_rows == sum(_read(filled, r, m, c).num_rows for r, _, m, c in series)
    assert summary["series"] == len(series) + sum(1 for name in ODD_NAMES[::4])   # and the tensor series
    assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("metric").type == pa.dictionary(pa.int32(), pa.string())
    rows = table.to_pydict()
    for run_id, experiment, metric, context in series:
        keep = [i for i, (r, e, m, c) in enumerate(zip(rows["run"], rows["experiment"], rows["metric"],
                                                       rows["context"])) if (r, m, c) == (run_id, metric, context)]
        assert {rows["experiment"][i] for i in keep} == {_dir_value(experiment)}
        _assert_same_points(table.take(keep), _read(filled, run_id, metric, context))
    # the plain calls work too (partition types inferred) and see only points
    assert ds.dataset(dest, partitioning="hive").to_table().num_rows == table.num_rows
    plain = pq.read_table(dest)
    assert plain.num_rows == table.num_rows and {"metric", "step", "value", "run"} <= set(plain.column_names)
    import pandas as pd

    assert len(pd.read_parquet(dest)) == table.num_rows


def test_duckdb_and_polars_read_the_points_glob(filled, tmp_path):
    import duckdb
    import polars as pl

    dest = tmp_path / "out"
    export_store(filled, dest)
    glob = str(dest / POINTS_GLOB)
    con = duckdb.connect()
    via_duckdb = con.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true, "
                         "hive_types_autocast = false)").to_arrow_table()
    via_polars = pl.scan_parquet(glob, hive_partitioning=True,
                                 hive_schema={"experiment": pl.String, "run": pl.String}).collect().to_arrow()
    for table in (via_duckdb, via_polars):
        table = table.cast(pa.schema([f.with_type(pa.string()) if f.name in ("metric", "context") else f
                                      for f in table.schema]))
        runs = dict(zip(filled.runs().column("id").to_pylist(), filled.runs().column("experiment").to_pylist()))
        pairs = set(zip(table.column("run").to_pylist(), table.column("experiment").to_pylist()))
        assert pairs == {(r, _dir_value(e)) for r, e in runs.items() if r in set(table.column("run").to_pylist())}
        series = _scalar_series(filled)
        assert table.num_rows == sum(_read(filled, r, m, c).num_rows for r, _, m, c in series)
        keys = list(zip(table.column("run").to_pylist(), table.column("metric").to_pylist(),
                        table.column("context").to_pylist()))
        for run_id, _, metric, context in series:
            keep = [i for i, k in enumerate(keys) if k == (run_id, metric, context)]
            _assert_same_points(table.take(keep), _read(filled, run_id, metric, context), ordered=False)


def test_runs_file_is_the_runs_table_and_the_exact_records(filled, tmp_path):
    dest = tmp_path / "out"
    export_store(filled, dest)
    runs = pq.read_table(dest / RUNS_FILE)
    extra = [name for name, _ in export.RUN_EXTRA_COLUMNS] + [export.EXTRA_RECORD_COLUMN]
    assert runs.drop_columns(extra).equals(filled.runs())
    params = [json.loads(p) for p in runs.column("params_json").to_pylist()]
    assert params[1]["big"] == 2**70 and params[0]["sizes"] == [1, 0]
    starts = runs.column("start_time_ns").to_numpy()
    assert (np.floor_divide(starts, 1000) == runs.column("start_time").cast(pa.int64()).to_numpy()).all()


def test_tensors_file_holds_read_tensor(filled, tmp_path):
    dest = tmp_path / "out"
    export_store(filled, dest)
    tensors = ds.dataset(dest / TENSORS_DIR, partitioning=HIVE_STRINGS).to_table()
    runs = filled.runs().to_pydict()
    want = [filled.read_tensor(r, "grad/w") for r, e in zip(runs["id"], runs["experiment"]) if e in ODD_NAMES[::4]]
    assert tensors.num_rows == sum(t.num_rows for t in want) == 2 * len(ODD_NAMES[::4])
    for run_id, table in zip([r for r, e in zip(runs["id"], runs["experiment"]) if e in ODD_NAMES[::4]], want):
        got = tensors.filter(pa.compute.equal(tensors.column("run"), run_id))
        for name in table.column_names:
            assert got.column(name).to_pylist() == table.column(name).to_pylist(), name


def test_odd_names_decode_to_themselves_and_stay_one_path_part():
    for name in ODD_NAMES + ["\t", "a\\b", "a:b*?<>|\"'", "🙂" * 60, "x" * 250]:
        escaped = escape_name(name)
        assert escaped not in ("", ".", "..") and "/" not in escaped and "\\" not in escaped
        assert set(escaped) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-%~")
        assert len(("experiment=" + escaped).encode()) <= 255
        decoded = urllib.parse.unquote(escaped, errors="strict")
        if len(urllib.parse.quote(name, safe="").replace("~", "%7E")) <= export.MAX_ESCAPED_CHARS:
            assert decoded == name
        else:   # cut at a whole character, then "~" and a hash
            prefix, digest = decoded.rsplit("~", 1)
            assert name.startswith(prefix) and len(digest) == 16
    assert escape_name("é" * 120) != escape_name("é" * 121)


def test_long_experiment_name_cut_in_directory_whole_in_runs_file(open_store, tmp_path):
    store = open_store()
    name = "é" * 120
    store.start_run(experiment=name).log("loss", 1.0, step=0)
    store.flush()
    export_store(store, tmp_path / "out")
    [folder] = [f for f in os.listdir(tmp_path / "out") if f.startswith("experiment=")]
    assert folder == "experiment=" + escape_name(name)
    assert pq.read_table(tmp_path / "out" / RUNS_FILE).column("experiment").to_pylist() == [name]


def test_round_trip_import_is_bit_for_bit(filled, open_store, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "ROW_GROUP_ROWS", 64)   # series spread over row groups, row groups over series
    dest = tmp_path / "out"
    export_store(filled, dest)
    assert max(pq.ParquetFile(p).num_row_groups for p in dest.glob(POINTS_GLOB)) > 2
    target = open_store(path=tmp_path / "imported")
    done = []
    summary = import_dataset(target, dest, progress=lambda d, t: done.append((d, t)))
    series = _scalar_series(filled)
    tensors = [(r, "grad/w") for r, e in zip(filled.runs().column("id").to_pylist(),
                                             filled.runs().column("experiment").to_pylist()) if e in ODD_NAMES[::4]]
    assert summary == {"runs": filled.runs().num_rows, "series": len(series) + len(tensors),
                       "points": sum(_read(filled, r, m, c).num_rows for r, _, m, c in series),
                       "tensor_rows": 2 * len(tensors)}
    assert done[-1] == (summary["runs"], summary["runs"]) and [d for d, _ in done] == list(range(len(done)))
    assert target.runs().equals(filled.runs())
    for run_id, _, metric, context in series:
        _assert_same_points(_read(target, run_id, metric, context), _read(filled, run_id, metric, context))
    for run_id in filled.runs().column("id").to_pylist():
        columns = ["metric", "context", "kind", "count", "step_min", "step_max"]
        assert target.metrics(run_id).select(columns).equals(filled.metrics(run_id).select(columns))
    for run_id, name in tensors:
        _assert_same_table(target.read_tensor(run_id, name), filled.read_tensor(run_id, name))
    with target._index.read() as txn, filled._index.read() as txn2:
        for run_id in filled.runs().column("id").to_pylist():
            assert txn.get_run(bytes.fromhex(run_id)) == txn2.get_run(bytes.fromhex(run_id))


def test_tensor_summaries_round_trip_bit_for_bit(open_store, tmp_path, monkeypatch):
    """Derived and caller edges in one series, bins changing, contexts, NaN/inf/-0.0
    tensors, unsorted and repeated steps, more rows than a row group and a block:
    read_tensor of the imported store is the original's, bit for bit."""
    monkeypatch.setattr(export, "ROW_GROUP_ROWS", 16)
    store = open_store()
    rng = np.random.default_rng(11)
    shared = np.linspace(-2.0, 2.0, 17)
    with store.start_run(experiment="t", kind="train", resources={"gpus": 2}) as run:
        for step in rng.permutation(150).tolist() + [7, 7]:
            tensor = rng.normal(size=(5, 7)) * 10.0 ** rng.integers(-3, 4)
            if step % 13 == 0:
                tensor[0, :3] = [np.nan, np.inf, -0.0]
            if step % 17 == 0:
                tensor = np.full(4, np.nan)        # no finite value: derived edges over [0, 1]
            if step % 19 == 0:
                tensor = np.full(6, 2.5)           # min == max: edges over [2, 3]
            run.log_tensor("w", tensor, step=step)
            run.log_tensor("w", tensor, step=step, context={"rank": 1}, edges=shared)
            if step % 3 == 0:   # edges and bins changing along one series
                run.log_tensor("g", tensor.astype(np.float32), step=step, bins=1 + step % 7,
                               edges=None if step % 2 else np.cumsum(rng.uniform(0.1, 1.0, 5)) - 2)
        run.log("loss", 1.0, step=0)
    store.flush()
    dest = tmp_path / "out"
    exported = export_store(store, dest)
    tensors_file = next(dest.glob(f"{TENSORS_DIR}/*/*/{export.TENSORS_FILE}"))
    assert pq.ParquetFile(tensors_file).num_row_groups > 2
    target = open_store(path=tmp_path / "imported")
    summary = import_dataset(target, dest)
    assert summary["tensor_rows"] == exported["tensor_rows"] == 152 * 2 + 50 and summary["series"] == 4
    for name, context in (("w", None), ("w", {"rank": 1}), ("g", None)):
        want = store.read_tensor(run.id, name, context=context)
        got = target.read_tensor(run.id, name, context=context)
        assert want.num_rows > 40
        _assert_same_table(got, want)
        _assert_same_table(target.read_tensor(run.id, name, context=context, buckets=9),
                           store.read_tensor(run.id, name, context=context, buckets=9))
    edges = store.read_tensor(run.id, "w", context={"rank": 1}).column("hist_edges").to_pylist()
    assert all(e == shared.tolist() for e in edges)   # the caller's edges, kept
    with target._index.read() as txn:   # kind and resources of the run record come back too
        assert txn.get_run(bytes.fromhex(run.id))["resources"] == {"gpus": 2}


def test_crashed_run_imports_as_crashed(open_store, tmp_path):
    store = open_store()
    run = store.start_run(experiment="e")
    run.log("loss", 0.5, step=1)
    store.flush()
    dest = tmp_path / "out"
    assert export_store(store, dest)["running"] == 1   # said at export: the copy will read as crashed
    assert pq.read_table(dest / RUNS_FILE).column("status").to_pylist() == ["running"]
    target = open_store(path=tmp_path / "imported")
    import_dataset(target, dest)
    assert target.runs().column("status").to_pylist() == ["crashed"]   # no writer of it lives there
    assert target.read(run.id, "loss").column("value").to_pylist() == [0.5]


def test_progress_counts_series_up_to_total(filled, tmp_path):
    calls = []
    summary = export_store(filled, tmp_path / "out", progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, summary["series"]) and calls[-1] == (summary["series"], summary["series"])
    assert [d for d, _ in calls] == list(range(summary["series"] + 1))


def test_runs_argument_selects_runs(filled, tmp_path):
    ids = filled.runs().column("id").to_pylist()[2:4]
    summary = export_store(filled, tmp_path / "out", runs=ids)
    table = ds.dataset(tmp_path / "out", partitioning=HIVE_STRINGS).to_table()
    assert set(table.column("run").to_pylist()) == set(ids) and summary["runs"] == 2
    assert sorted(pq.read_table(tmp_path / "out" / RUNS_FILE).column("id").to_pylist()) == sorted(ids)
    runs = filled.runs().to_pandas()
    want = set(runs[(runs["params.lr"] < 0.45) & (runs["tags.team"] == "vision")]["id"])
    export_store(filled, tmp_path / "where", where="params.lr < 0.45 and tags.team = 'vision'")
    assert set(pq.read_table(tmp_path / "where" / RUNS_FILE).column("id").to_pylist()) == want and len(want) == 2
    both = export_store(filled, tmp_path / "both", runs=ids, where="tags.team = 'vision'")
    assert both["runs"] == len(set(ids) & set(runs[runs["tags.team"] == "vision"]["id"]))


def test_refusals_leave_everything_as_it_was(filled, open_store, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(steplog.InvalidArgumentError, match="dest") as caught:
        export_store(filled, busy)
    assert caught.value.argument == "dest"
    assert os.listdir(busy) == ["keep.txt"] and (busy / "keep.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["busy", "store.steplog"]   # no partial export left beside it
    with pytest.raises(steplog.InvalidArgumentError, match="format"):
        export_store(filled, tmp_path / "new", format="csv")
    with pytest.raises(steplog.NotFoundError, match="runs"):
        export_store(filled, tmp_path / "new", runs=["0" * 32])
    with pytest.raises(steplog.InvalidTypeError, match="runs"):
        export_store(filled, tmp_path / "new", runs="abc")
    with pytest.raises(steplog.InvalidTypeError, match="dest"):
        export_store(filled, 42)
    assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    export_store(filled, empty)   # an empty directory is fine
    before = filled.runs()
    with pytest.raises(steplog.InvalidArgumentError, match="source: the store already holds run"):
        import_dataset(filled, empty)
    assert filled.runs().equals(before)
    target = open_store(path=tmp_path / "imported")
    with pytest.raises(steplog.NotFoundError, match="source"):
        import_dataset(target, tmp_path / "missing")
    with pytest.raises(steplog.InvalidArgumentError, match="source"):
        import_dataset(target, busy)
    assert target.runs().num_rows == 0
    reader = steplog.open(tmp_path / "store.steplog", mode="r")
    try:
        with pytest.raises(steplog.ReadOnlyError):
            import_dataset(reader, empty)
    finally:
        reader.close()
