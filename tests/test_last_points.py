"""Store.last_points: the last point of every scalar series of some runs."""

import numpy as np
import pytest

import steplog


def test_last_points_follow_the_highest_step_then_the_latest_write(tmp_path):
    with steplog.open(tmp_path / "s", flush_interval=None) as store:
        a = store.start_run(capture=False)
        b = store.start_run(capture=False)
        a.log_batch("loss", [5, 9, 2], [0.5, 0.9, 0.2], times=[50, 90, 20])
        b.log_batch("big", np.arange(100_000), np.arange(100_000.0))
        store.flush()
        a.log("loss", 0.99, step=9, time=95)       # a tie at the highest step, not flushed
        a.log("acc", 0.1, step=1, context={"split": "val"})
        a.log_tensor("w", np.ones(4), step=0)      # not a scalar series
        table = store.last_points([a.id, b.id, a.id])
        rows = {(r[0], r[1], r[2], r[3], r[5]): r[4] for r in zip(*[c.to_pylist() for c in table.columns])}
        assert set(rows) == {(a.id, "loss", None, 9, 0.99), (a.id, "acc", '{"split":"val"}', 1, 0.1),
                             (b.id, "big", None, 99_999, 99_999.0)}
        assert rows[(a.id, "loss", None, 9, 0.99)] == 95
        assert store.last_points([]).num_rows == 0
        with pytest.raises(steplog.InvalidArgumentError, match="runs"):
            store.last_points(["nope"])
