"""Tensor summaries through the store: log_tensor(s), summary blocks, read_tensor.

Expected values come from numpy on the tensors that were logged."""

from __future__ import annotations

import numpy as np
import pytest

import steplog
from steplog.engine.block import KIND_SUMMARY
from steplog.engine.recovery import scan_segment

FIELDS = ("count", "nan_count", "inf_count", "min", "max", "mean", "std", "l2", "zero_fraction")


def tensors(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = (rng.standard_normal((40, 30)) * (1 + i / 10)).astype(np.float32)
        t[rng.random(t.shape) < 0.05] = 0.0
        if i % 7 == 3:
            t[0, 0], t[1, 1], t[2, 2] = np.nan, np.inf, -np.inf
        out.append(t)
    return out


def expected(t: np.ndarray) -> dict:
    flat = t.astype(np.float64).ravel()
    finite = flat[np.isfinite(flat)]
    return {"count": flat.size, "nan_count": int(np.isnan(flat).sum()), "inf_count": int(np.isinf(flat).sum()),
            "min": finite.min(), "max": finite.max(), "mean": finite.mean(), "std": finite.std(),
            "l2": np.sqrt(np.sum(finite ** 2)), "zero_fraction": np.count_nonzero(finite == 0) / finite.size}


def check_row(row: dict, t: np.ndarray) -> None:
    want = expected(t)
    for name in FIELDS:
        assert row[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name
    finite = t.astype(np.float64).ravel()
    finite = finite[np.isfinite(finite)]
    counts, _ = np.histogram(finite, bins=np.array(row["hist_edges"]))
    assert counts.tolist() == row["hist_counts"]
    assert row["q50"] == pytest.approx(np.quantile(finite, 0.5), abs=(finite.max() - finite.min()) / 2048 + 1e-12)


@pytest.mark.parametrize("flush", [False, True])
def test_log_tensor_round_trip(store, flush):
    run = store.start_run()
    logged = tensors(30)
    for step, t in enumerate(logged):
        run.log_tensor("w", t if step % 2 else t.T, step=step)   # transposed views are read in place
    if flush:
        run.flush()
    table = store.read_tensor(run.id, "w")
    assert table.column("step").to_pylist() == list(range(30))
    for row, t in zip(table.drop_columns(["time"]).to_pylist(), logged):
        check_row(row, t)
        assert len(row["hist_edges"]) == 65 and row["hist_edges"][0] == row["min"]


def test_flushed_and_reopened_reads_are_identical(open_store, tmp_path):
    store = open_store()
    run = store.start_run()
    for step, t in enumerate(tensors(50, seed=1)):
        run.log_tensor("g", t, step=step, edges=np.linspace(-4, 4, 17))
    before = store.read_tensor(run.id, "g")
    store.close()
    after = open_store().read_tensor(run.id, "g")
    assert after.equals(before)
    assert after.column("hist_edges")[0].as_py() == np.linspace(-4, 4, 17).tolist()


def test_log_tensors_many_layers_and_step_none(store):
    run = store.start_run()
    rng = np.random.default_rng(2)
    layers = {f"layer{i}/weight": rng.standard_normal(100 + i) for i in range(20)}
    run.log_tensors(layers)
    run.log_tensors(layers)
    store.flush()
    for name, t in layers.items():
        table = store.read_tensor(run.id, name)
        assert table.column("step").to_pylist() == [0, 1]
        check_row(table.drop_columns(["time"]).to_pylist()[1], t)
    kinds = dict(zip(*store.metrics(run.id).select(["metric", "kind"]).to_pydict().values()))
    assert set(kinds.values()) == {"tensor"}


def test_buckets_merge_exactly(store):
    run = store.start_run()
    logged = tensors(40, seed=3)
    edges = np.linspace(-6, 6, 25)
    for step, t in enumerate(logged):
        run.log_tensor("w", t, step=step, edges=edges)
    run.flush()
    table = store.read_tensor(run.id, "w", buckets=4)
    assert table.num_rows == 4
    for row in table.to_pylist():
        group = logged[row["step_start"]:row["step_end"]]
        assert row["rows"] == len(group)
        merged = np.concatenate([g.ravel() for g in group])
        want = expected(merged)
        for name in FIELDS:
            assert row[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name
        finite = merged.astype(np.float64)
        finite = finite[np.isfinite(finite)]
        assert row["hist_counts"] == np.histogram(finite, bins=edges)[0].tolist()
        assert row["q50"] is None or np.isnan(row["q50"])   # quantiles do not merge


def test_scalar_and_tensor_names_do_not_mix(store):
    run = store.start_run()
    run.log("loss", 1.0)
    with pytest.raises(steplog.InvalidArgumentError, match="name"):
        run.log_tensor("loss", np.ones(3))
    run.log_tensor("w", np.ones(3))
    store.flush()
    with pytest.raises(steplog.InvalidArgumentError, match="name"):
        store.read_tensor(run.id, "loss")
    assert store.read(run.id, "loss").num_rows == 1


@pytest.mark.parametrize("bad, error", [("x", steplog.InvalidTypeError), (object(), steplog.InvalidTypeError)])
def test_bad_tensor_is_refused_and_nothing_written(store, bad, error):
    run = store.start_run()
    run.log_tensor("w", np.ones(4), step=0)
    with pytest.raises((error, TypeError)):
        run.log_tensor("w", bad, step=1)
    with pytest.raises(steplog.InvalidArgumentError, match="edges"):
        run.log_tensor("w", np.ones(4), step=1, edges=[1.0, 0.0])
    assert store.read_tensor(run.id, "w").column("step").to_pylist() == [0]


def test_torch_tensor_if_available(store):
    torch = pytest.importorskip("torch")
    run = store.start_run()
    t = torch.randn(10, 10, requires_grad=True)
    run.log_tensor("w", t, step=0)
    check_row(store.read_tensor(run.id, "w").drop_columns(["time"]).to_pylist()[0], t.detach().numpy())


def test_damaged_summary_block_raises_corruption(open_store, tmp_path):
    import glob
    import os

    store = open_store()
    run = store.start_run()
    for step, t in enumerate(tensors(10, seed=4)):
        run.log_tensor("w", t, step=step)
    run.log("loss", 1.0, step=0)
    store.close()
    (segment,) = glob.glob(os.path.join(store.path, "segments", "*.seg"))
    summary_at = [b.offset for b in scan_segment(segment) if b.data[6] == KIND_SUMMARY]   # byte 6: kind
    assert len(summary_at) == 1
    with open(segment, "r+b") as f:
        f.seek(summary_at[0] + 112 + 40)
        byte = f.read(1)
        f.seek(summary_at[0] + 112 + 40)
        f.write(bytes([byte[0] ^ 0x10]))
    again = open_store()
    with pytest.raises(steplog.CorruptionError) as info:
        again.read_tensor(run.id, "w")
    assert info.value.path == segment and info.value.offset == summary_at[0]
    assert again.read(run.id, "loss").column("value").to_pylist() == [1.0]
