"""Params and tags in ``Store.runs()``: typed columns a sweep can be filtered on.

Runs are written through a real store and read back with ``Store.runs()``; filters run
in pyarrow compute, and in pandas, polars and DuckDB where they are installed. A key
whose runs disagree on the kind of its value keeps numbers (else bools) in its column
and the rest as text in "params_text.<key>" (query/runs.py).
"""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc
import pytest

SWEEP = [   # (name, params)
    ("a", {"lr": 0.1, "batch": 32, "opt": "adam", "bn": True, "layers": [64, 64], "model": {"depth": 50}}),
    ("b", {"lr": 1, "batch": "auto", "opt": "sgd", "bn": False, "layers": [128], "model": {"depth": 101}}),
    ("c", {"lr": 0.001, "batch": 64, "opt": "adam", "bn": None, "seed": 7, "layers": {}, "model": {"depth": "tiny"}}),
    ("d", {"lr": float("nan"), "batch": 128, "opt": "10", "bn": True, "layers": [{"enc": 3}], "seed": None}),
]


@pytest.fixture
def runs(open_store):
    store = open_store()
    for name, params in SWEEP:
        with store.start_run(experiment="sweep", name=name, params=params, tags={"team": "vision"}):
            pass
    table = store.runs()
    order = pc.sort_indices(table, [("name", "ascending")])
    return table.take(order)


def column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist()


def names_where(table: pa.Table, mask) -> list[str]:
    return table.filter(mask).column("name").to_pylist()


def test_one_string_among_numbers_leaves_the_numbers_comparable(runs):
    assert runs.schema.field("params.batch").type == pa.int64()
    assert column(runs, "params.batch") == [32, None, 64, 128]
    assert column(runs, "params_text.batch") == [None, "auto", None, None]   # plain, no JSON quotes
    assert names_where(runs, pc.less(runs.column("params.batch"), 100)) == ["a", "c"]
    assert names_where(runs, pc.equal(runs.column("params_text.batch"), "auto")) == ["b"]


def test_int_and_float_mixed_are_float64_and_nan_is_kept(runs):
    assert runs.schema.field("params.lr").type == pa.float64()
    lr = column(runs, "params.lr")
    assert lr[:3] == [0.1, 1.0, 0.001] and math.isnan(lr[3])
    assert names_where(runs, pc.less(runs.column("params.lr"), 0.5)) == ["a", "c"]
    assert "params_text.lr" not in runs.column_names


def test_strings_stay_plain_strings(runs):
    """A str that looks like a number stays a str in an all-str column."""
    assert runs.schema.field("params.opt").type == pa.string()
    assert column(runs, "params.opt") == ["adam", "sgd", "adam", "10"]
    assert "params_text.opt" not in runs.column_names
    assert column(runs, "tags.team") == ["vision"] * 4


def test_bool_stays_bool_and_none_is_null(runs):
    assert runs.schema.field("params.bn").type == pa.bool_()
    assert column(runs, "params.bn") == [True, False, None, True]
    assert column(runs, "params.seed") == [None, None, 7, None]
    assert runs.schema.field("params.seed").type == pa.int64()


def test_lists_and_empty_dicts_are_json_text(runs):
    assert runs.schema.field("params.layers").type == pa.string()
    assert column(runs, "params.layers") == ["[64, 64]", "[128]", "{}", '[{"enc": 3}]']


def test_nested_keys_mixing_numbers_and_text(runs):
    assert column(runs, "params.model.depth") == [50, 101, None, None]
    assert column(runs, "params_text.model.depth") == [None, None, "tiny", None]
    assert names_where(runs, pc.greater(runs.column("params.model.depth"), 60)) == ["b"]


def test_text_columns_follow_their_typed_column(runs):
    names = runs.column_names
    assert names.index("params_text.batch") == names.index("params.batch") + 1
    assert names.index("params_text.model.depth") == names.index("params.model.depth") + 1


def test_a_param_named_like_a_text_column_does_not_collide(open_store):
    """Every param column starts with "params.", so a key "params_text" or "batch_text"
    is a column of its own, never the text column of another key."""
    store = open_store()
    for params in ({"batch": 32, "params_text": {"batch": 1}, "batch_text": 5}, {"batch": "auto"}):
        with store.start_run(params=params):
            pass
    table = store.runs()
    assert sorted(n for n in table.column_names if "batch" in n) == [
        "params.batch", "params.batch_text", "params.params_text.batch", "params_text.batch"]
    assert sorted(column(table, "params_text.batch"), key=str) == [None, "auto"]


def test_bool_among_numbers_goes_to_text(open_store):
    store = open_store()
    for value in (1, 2.5, True, [1, 2], "x"):
        with store.start_run(params={"p": value}):
            pass
    table = store.runs()
    assert table.schema.field("params.p").type == pa.float64()
    rows = sorted(zip(column(table, "params.p"), column(table, "params_text.p")), key=str)
    assert rows == sorted([(1.0, None), (2.5, None), (None, "true"), (None, "[1, 2]"), (None, "x")], key=str)


def test_ints_past_int64(open_store):
    """An int past int64 makes the column float64; one past float64 is text."""
    store = open_store()
    for value in (3, 2**70, 10**400):
        with store.start_run(params={"big": value}):
            pass
    table = store.runs()
    assert table.schema.field("params.big").type == pa.float64()
    assert sorted(v for v in column(table, "params.big") if v is not None) == [3.0, float(2**70)]
    assert [v for v in column(table, "params_text.big") if v is not None] == [str(10**400)]


def test_pandas_filters_numbers(runs):
    pd = pytest.importorskip("pandas")
    frame = runs.to_pandas()
    assert pd.api.types.is_numeric_dtype(frame["params.batch"])
    assert frame.loc[frame["params.batch"] < 100, "name"].tolist() == ["a", "c"]
    assert frame.loc[frame["params_text.batch"] == "auto", "name"].tolist() == ["b"]


def test_polars_filters_numbers(runs):
    pl = pytest.importorskip("polars")
    frame = pl.from_arrow(runs)
    assert frame.filter(pl.col("params.batch") < 100)["name"].to_list() == ["a", "c"]
    assert frame.filter(pl.col("params_text.batch") == "auto")["name"].to_list() == ["b"]


def test_duckdb_filters_numbers(runs):
    duckdb = pytest.importorskip("duckdb")
    got = duckdb.sql('SELECT name FROM runs WHERE "params.batch" < 100 AND "params.lr" < 0.5 ORDER BY name')
    assert [r[0] for r in got.fetchall()] == ["a", "c"]
    got = duckdb.sql("""SELECT name FROM runs WHERE "params_text.batch" = 'auto'""")
    assert [r[0] for r in got.fetchall()] == ["b"]


def test_the_catalog_types_params_as_the_records_do(open_store):
    """runs() comes from the columnar catalog; query/runs.py runs_table over the decoded
    records is the independent reference, mixed kinds, nesting and big ints included."""
    from steplog.engine.catalog import refresh
    from steplog.query.runs import runs_table

    store = open_store()
    for name, params in SWEEP + [("e", {"big": 2**70, "huge": 10**400, "lr": 3}), ("f", {"batch": True})]:
        with store.start_run(experiment="sweep", name=name, params=params, tags={"team": name}):
            pass
    with store._index.read() as txn:
        want = runs_table(list(txn.runs()), txn.heartbeats())
    assert same(store.runs(), want)
    refresh(store._index, force=True)   # from the snapshot too
    store._shared.catalog_view = None
    assert same(store.runs(), want)


def same(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas and values, NaN equal to NaN (Table.equals says NaN != NaN)."""
    def plain(table):
        return {name: ["nan" if isinstance(v, float) and math.isnan(v) else v for v in values]
                for name, values in table.to_pydict().items()}
    return a.schema.equals(b.schema) and plain(a) == plain(b)
