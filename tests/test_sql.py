"""SQL through DuckDB (steplog.query.sql): results equal pandas over the logged data;
a query on points reads only the series its WHERE pins (counted by the on_read hook);
errors are InvalidArgumentError quoting DuckDB."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import steplog
from steplog.query.sql import run_sql

from _helpers import SPECIAL_VALUES

LRS = [0.001, 0.01, 0.03, 0.1, 0.3]


@pytest.fixture
def logged(store_path):
    """A store of five runs (loss, loss in a val context, acc; one run with special
    values), reopened read-only, and a pandas frame of every point logged."""
    rng = np.random.default_rng(3)
    rows = []
    with steplog.open(store_path, block_points=64, flush_interval=None) as store:
        for i, lr in enumerate(LRS):
            with store.start_run(experiment="sweep" if i < 3 else "other", name=f"lr={lr}",
                                 params={"lr": lr, "depth": 10 * i},
                                 tags={"team": "vision" if i % 2 else "nlp"}) as run:
                for metric, context, n in (("loss", None, 150 + i), ("loss", {"subset": "val"}, 20), ("acc", None, 40)):
                    steps = np.sort(rng.choice(10_000, n, replace=False)).astype(np.int64)
                    values = rng.normal(size=n)
                    times = 1_700_000_000_000_000_000 + steps * 1_000_001
                    run.log_batch(metric, steps, values, times=times, context=context)
                    ctx = json.dumps(context, sort_keys=True, separators=(",", ":")) if context else None
                    rows += [(run.id, metric, ctx, s, t, v) for s, t, v in zip(steps, times, values)]
                if i == 4:
                    steps = np.arange(len(SPECIAL_VALUES), dtype=np.int64)
                    run.log_batch("odd", steps, SPECIAL_VALUES, times=steps + 5)
                    rows += [(run.id, "odd", None, s, s + 5, v) for s, v in zip(steps, SPECIAL_VALUES)]
    frame = pd.DataFrame(rows, columns=["run_id", "metric", "context", "step", "time_ns", "value"])
    reader = steplog.open(store_path, mode="r")   # nothing can be written through it
    yield reader, frame
    reader.close()


def _sorted(table, by) -> pd.DataFrame:
    """A result as a frame sorted by ``by``, a null context as ""."""
    frame = table.to_pandas()
    if "context" in frame:
        frame = frame.fillna({"context": ""})
    return frame.sort_values(by).reset_index(drop=True)


def test_runs_filter_equals_pandas(logged):
    store, _ = logged
    got = run_sql(store, """SELECT id, name FROM runs WHERE "params.lr" < 0.05 AND "tags.team" = 'vision'
                            ORDER BY id""")
    runs = store.runs().to_pandas()
    want = runs[(runs["params.lr"] < 0.05) & (runs["tags.team"] == "vision")].sort_values("id")
    assert got.column("id").to_pylist() == want["id"].tolist() and len(want) == 1
    assert got.column("name").to_pylist() == want["name"].tolist()


def test_points_aggregates_equal_pandas(logged):
    store, frame = logged
    got = run_sql(store, """SELECT run_id, metric, context, count(*) AS n, min(step) AS lo, max(step) AS hi,
                                   avg(value) AS mean, max(time_ns) AS t
                            FROM points WHERE metric <> 'odd' GROUP BY ALL""")
    plain = frame[frame.metric != "odd"].fillna({"context": ""})
    want = plain.groupby(["run_id", "metric", "context"]).agg(
        n=("step", "size"), lo=("step", "min"), hi=("step", "max"), mean=("value", "mean"),
        t=("time_ns", "max")).reset_index()
    got = _sorted(got, ["run_id", "metric", "context"])
    want = want.sort_values(["run_id", "metric", "context"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[["run_id", "metric", "context", "n", "lo", "hi"]],
                                  want[["run_id", "metric", "context", "n", "lo", "hi"]], check_dtype=False)
    np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-12)
    assert [int(x) for x in got["t"]] == [int(x) for x in want["t"]]


def test_series_view_equals_pandas(logged):
    store, frame = logged
    got = _sorted(run_sql(store, "SELECT run_id, metric, context, count, step_min, step_max FROM series"),
                  ["run_id", "metric", "context"])
    want = frame.fillna({"context": ""}).groupby(["run_id", "metric", "context"]).agg(
        count=("step", "size"), step_min=("step", "min"), step_max=("step", "max")).reset_index()
    pd.testing.assert_frame_equal(got, want.sort_values(["run_id", "metric", "context"]).reset_index(drop=True),
                                  check_dtype=False)


def test_points_join_runs_equals_pandas_merge(logged):
    store, frame = logged
    reads = []
    got = run_sql(store, """SELECT r.name, p.step, p.value, epoch_us(p.time) AS us
                            FROM points p JOIN runs r ON r.id = p.run_id
                            WHERE p.metric = 'acc' AND r."params.lr" > 0.02""",
                  on_read=lambda *series: reads.append(series))
    runs = store.runs().to_pandas()
    want = frame[frame.metric == "acc"].merge(runs[runs["params.lr"] > 0.02], left_on="run_id", right_on="id")
    got = _sorted(got, ["name", "step"])
    want = want.sort_values(["name", "step"]).reset_index(drop=True)
    assert got["name"].tolist() == want["name"].tolist() and got["step"].tolist() == want["step"].tolist()
    assert got["value"].tolist() == want["value"].tolist()
    assert got["us"].tolist() == (want["time_ns"] // 1000).tolist()
    assert sorted(m for _, m, _ in reads) == ["acc"] * len(LRS)   # the metric pinned; runs only by the join


def test_points_read_only_the_series_the_where_pins(logged):
    store, frame = logged
    run_id = frame.run_id.unique()[2]
    other = frame.run_id.unique()[0]
    cases = [
        (f"SELECT count(*) FROM points WHERE run_id = '{run_id}' AND metric = 'loss'",
         {(run_id, "loss", None), (run_id, "loss", '{"subset":"val"}')}),
        (f"SELECT count(*) FROM points WHERE metric = 'loss' AND '{run_id}' = run_id AND context IS NULL",
         {(run_id, "loss", None)}),
        (f"SELECT count(*) FROM points p WHERE p.run_id IN ('{run_id}', '{other}') AND p.metric IN ('acc')",
         {(run_id, "acc", None), (other, "acc", None)}),
        (f"""SELECT count(*) FROM points WHERE run_id = '{run_id}' AND context = '{{"subset":"val"}}'""",
         {(run_id, "loss", '{"subset":"val"}')}),
        (f"SELECT count(*) FROM points WHERE run_id = '{'f' * 32}' AND metric = 'loss'", set()),
        (f"""SELECT count(*) FROM (SELECT * FROM points WHERE run_id = '{run_id}' AND metric = 'acc')
             UNION ALL SELECT count(*) FROM points WHERE run_id = '{other}' AND metric = 'acc'""",
         {(run_id, "acc", None), (other, "acc", None)}),
    ]
    plain = frame.fillna({"context": ""})
    for query, want in cases:
        reads = []
        got = run_sql(store, query, on_read=lambda *series: reads.append(series))
        assert set(reads) == want and len(reads) == len(want), query
        expected = sum(((plain.run_id == r) & (plain.metric == m) & (plain.context == (c or ""))).sum()
                       for r, m, c in want)
        assert sum(got.column(0).to_pylist()) == expected, query
    everything = {(r, m, c if isinstance(c, str) else None)
                  for r, m, c in zip(frame.run_id, frame.metric, frame.context)}
    for query in (f"SELECT count(*) FROM points WHERE run_id = '{run_id}' OR metric = 'acc'",
                  "SELECT count(*) FROM points",
                  f"SELECT count(*) FROM points a JOIN points b USING (step) WHERE a.run_id = '{run_id}'"):
        reads = []
        run_sql(store, query, on_read=lambda *series: reads.append(series))
        assert set(reads) == everything, query


def test_special_values_come_back_bit_for_bit(logged):
    store, frame = logged
    run_id = frame[frame.metric == "odd"].run_id.iloc[0]
    got = run_sql(store, f"SELECT step, time_ns, value FROM points WHERE run_id = '{run_id}' AND metric = 'odd'")
    order = np.argsort(got.column("step").to_numpy())
    got_bits = np.ascontiguousarray(got.column("value").to_numpy()[order]).view(np.uint64)
    np.testing.assert_array_equal(got_bits, SPECIAL_VALUES.view(np.uint64))
    np.testing.assert_array_equal(got.column("time_ns").to_numpy()[order], np.arange(len(SPECIAL_VALUES)) + 5)


def test_errors_quote_duckdb(logged):
    store, _ = logged
    with pytest.raises(steplog.InvalidArgumentError, match="syntax error") as caught:
        run_sql(store, "SELEC * FROM runs")
    assert caught.value.argument == "query"
    with pytest.raises(steplog.InvalidArgumentError, match="nope"):
        run_sql(store, "SELECT nope FROM runs")
    with pytest.raises(steplog.InvalidArgumentError, match="nowhere"):
        run_sql(store, "SELECT * FROM nowhere")
    with pytest.raises(steplog.InvalidTypeError, match="query"):
        run_sql(store, b"SELECT 1")
    with pytest.raises(steplog.InvalidArgumentError, match="query"):
        run_sql(store, "   ")
    with pytest.raises(steplog.InvalidArgumentError, match="filter points by run_id"):
        run_sql(store, "SELECT count(*) FROM points", max_points=100)
    assert run_sql(store, "SELECT 1 AS one").column("one").to_pylist() == [1]


def test_step_comparisons_become_the_read_range(logged, monkeypatch):
    """Comparisons of step with integer constants in the WHERE conjunction narrow
    store.read to [start, stop); the query's answer stays what pandas computes."""
    store, frame = logged
    run_id = frame.run_id.unique()[1]
    reads = []
    read = store.read

    def recording(run, metric, context=None, start=None, stop=None, **kw):
        reads.append((metric, start, stop))
        return read(run, metric, context=context, start=start, stop=stop, **kw)

    monkeypatch.setattr(store, "read", recording)
    pick = f"run_id = '{run_id}' AND metric = 'acc'"
    cases = [   # (where, the range read, a pandas mask over step)
        (f"{pick} AND step < 3000", (None, 3000), lambda s: s < 3000),
        (f"{pick} AND 3000 > step", (None, 3000), lambda s: s < 3000),
        (f"{pick} AND step <= 3000", (None, 3001), lambda s: s <= 3000),
        (f"{pick} AND 2000 <= step AND step < 7000 AND step > 1000", (2000, 7000),
         lambda s: (s >= 2000) & (s < 7000)),
        (f"{pick} AND 2000 < step", (2001, None), lambda s: s > 2000),
        (f"{pick} AND step BETWEEN 1500 AND 4500", (1500, 4501), lambda s: (s >= 1500) & (s <= 4500)),
        (f"{pick} AND step = -5", (-5, -4), lambda s: s == -5),
        (f"{pick} AND step > 99999999999999999999", None, lambda s: s < INT_NONE),
        (f"{pick} AND step < 99999999999999999999", (None, None), lambda s: s == s),
        (f"{pick} AND step > 5000 AND step < 10", None, lambda s: s < INT_NONE),
        (f"{pick} AND step < 3000.5", (None, None), lambda s: s < 3000.5),        # not an integer: all read
        (f"({pick} AND step < 100) OR ({pick} AND step > 9000)", "every series",  # an OR pins nothing
         lambda s: (s < 100) | (s > 9000)),
        (f"{pick} AND (step < 100 OR step > 9000)", (None, None), lambda s: (s < 100) | (s > 9000)),
        (f"{pick} AND step + 0 < 100", (None, None), lambda s: s < 100),
    ]
    acc = frame[(frame.run_id == run_id) & (frame.metric == "acc")]
    n_series = frame.groupby(["run_id", "metric", "context"], dropna=False).ngroups
    for where, want, mask in cases:
        reads.clear()
        got = run_sql(store, f"SELECT count(*) AS n, sum(value) AS total, min(step) AS lo FROM points WHERE {where}")
        if want == "every series":
            assert {r[1:] for r in reads} == {(None, None)} and len(reads) == n_series, where
        else:
            assert [r[1:] for r in reads] == ([] if want is None else [want]), where
        chosen = acc[mask(acc.step)]
        assert got.column("n").to_pylist() == [len(chosen)], where
        assert got.column("total").to_pylist()[0] == (pytest.approx(chosen.value.sum(), rel=1e-12)
                                                      if len(chosen) else None), where
    reads.clear()   # two references: one read of each series over the hull of their ranges
    got = run_sql(store, f"""SELECT count(*) FROM points WHERE {pick} AND step < 500
                             UNION ALL SELECT count(*) FROM points WHERE {pick} AND step >= 8000 AND step < 9000""")
    assert [r[1:] for r in reads] == [(None, 9000)]
    assert sorted(got.column(0).to_pylist()) == sorted([int((acc.step < 500).sum()),
                                                        int(((acc.step >= 8000) & (acc.step < 9000)).sum())])
    reads.clear()   # a step filter alone pins a range over every series
    got = run_sql(store, "SELECT metric, count(*) AS n FROM points p WHERE p.step < 700 GROUP BY metric")
    assert {r[1:] for r in reads} == {(None, 700)} and len(reads) == n_series
    want = frame[frame.step < 700].groupby("metric").size().to_dict()
    assert dict(zip(got.column("metric").to_pylist(), got.column("n").to_pylist())) == want


INT_NONE = -(2**63)   # a mask no step passes (steps here are >= 0)


def test_times_come_back_in_utc_as_every_table(logged):
    store, frame = logged
    run_id = frame.run_id.unique()[0]
    got = run_sql(store, f"""SELECT time, list(time) OVER () AS times, date_trunc('day', time) AS day,
                                    r.start_time
                             FROM points JOIN runs r ON r.id = run_id
                             WHERE run_id = '{run_id}' AND metric = 'acc' ORDER BY step""")
    utc = pa.timestamp("us", tz="UTC")
    assert got.schema.field("time").type == utc and got.schema.field("start_time").type == utc
    assert got.schema.field("times").type == pa.list_(utc) and got.schema.field("day").type == utc
    us = got.column("time").cast(pa.int64()).to_numpy()
    acc = frame[(frame.run_id == run_id) & (frame.metric == "acc")].sort_values("step")
    np.testing.assert_array_equal(us, acc.time_ns.to_numpy() // 1000)
    day_us = 86_400 * 10**6
    np.testing.assert_array_equal(got.column("day").cast(pa.int64()).to_numpy(), us // day_us * day_us)
