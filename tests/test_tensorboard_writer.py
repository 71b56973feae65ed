"""steplog's SummaryWriter against torch's: one training loop written with each, torch's
event files imported, and the two stores read back alike."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
torch = pytest.importorskip("torch", reason="torch is not installed")
from torch.utils.tensorboard import SummaryWriter as TorchWriter  # noqa: E402

import steplog  # noqa: E402
from steplog.bindings.tensorboard import SummaryWriter, UnsupportedSummaryError  # noqa: E402
from steplog.bindings.tensorboard import _records as rec  # noqa: E402
from steplog.bindings.tensorboard.importer import import_tensorboard  # noqa: E402
from steplog.engine.errors import InvalidArgumentError  # noqa: E402

T0 = 1_760_000_000.25


def train(writer, seed=0):
    """A small loop that logs what training scripts log, with explicit wall times."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    for step in range(30):
        loss = torch.nn.functional.mse_loss(model(x), y)
        value = float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
        when = T0 + step * 0.5
        writer.add_scalar("train/loss", loss.detach(), step, walltime=when)
        writer.add_scalar("train/lr", 0.1, step, walltime=when, new_style=True, double_precision=True)
        writer.add_scalars("loss", {"train": value, "val": value * 1.1}, step, walltime=when)
        if step % 10 == 0:
            writer.add_histogram("weights", model.weight.detach(), step, walltime=when)
            writer.add_histogram("grads", model.weight.grad, step, bins=16, walltime=when)
            writer.add_text("status", f"step {step}", step, walltime=when)
    writer.add_hparams({"lr": 0.1, "optimizer": "sgd"}, {"hparam/loss": value}, run_name="hp")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("w")
    with TorchWriter(str(root / "events" / "exp")) as w:
        train(w)
    imported = str(root / "imported")
    import_tensorboard(str(root / "events"), imported, experiment="runs")
    with SummaryWriter(str(root / "runs" / "exp"), capture=False) as w:
        train(w)
    a, b = steplog.open(imported), steplog.open(str(root / "runs"))
    yield a, b
    a.close(), b.close()


def _by_name(store):
    return {r["name"]: r for r in store.run_records()}


def test_same_runs(stores):
    torch_runs, ours = (_by_name(s) for s in stores)
    assert sorted(torch_runs) == sorted(ours) == ["exp", "exp/hp", "exp/loss_train", "exp/loss_val"]
    assert {r["experiment"] for r in ours.values()} == {"runs"}
    assert ours["exp/loss_val"]["parent"] == ours["exp"]["id"]
    assert ours["exp/hp"]["params"] == torch_runs["exp/hp"]["params"] == {"lr": 0.1, "optimizer": "sgd"}
    assert all(r["status"] == "finished" for r in ours.values())


def test_same_scalars(stores):
    torch_runs, ours = (_by_name(s) for s in stores)
    for name in ours:
        theirs_series = stores[0].metrics(torch_runs[name]["id"])
        our_series = stores[1].metrics(ours[name]["id"])
        scalars = sorted(m for m, k in zip(our_series.column("metric").to_pylist(), our_series.column("kind").to_pylist())
                         if k == "scalar")
        assert scalars == sorted(m for m, k in zip(theirs_series.column("metric").to_pylist(),
                                                   theirs_series.column("kind").to_pylist()) if k == "scalar")
        for metric in scalars:
            theirs = stores[0].read(torch_runs[name]["id"], metric)
            mine = stores[1].read(ours[name]["id"], metric)
            assert mine.column("step").to_pylist() == theirs.column("step").to_pylist()
            if name != "exp/hp":   # add_hparams' points carry no wall time in either writer
                assert mine.column("time_ns").to_pylist() == theirs.column("time_ns").to_pylist()
            mine_values = mine.column("value").to_numpy()
            if metric == "train/lr":   # double precision: exact in both
                np.testing.assert_array_equal(mine_values, theirs.column("value").to_numpy())
            else:   # event files keep float32; steplog the float64 it was given
                np.testing.assert_array_equal(mine_values.astype(np.float32), theirs.column("value").to_numpy())


def test_same_histograms(stores):
    torch_runs, ours = (_by_name(s) for s in stores)
    for tag in ("weights", "grads"):
        theirs = stores[0].read_tensor(torch_runs["exp"]["id"], tag).to_pylist()
        mine = stores[1].read_tensor(ours["exp"]["id"], tag).to_pylist()
        assert [r["step"] for r in mine] == [r["step"] for r in theirs] == [0, 10, 20]
        for a, b in zip(mine, theirs):
            assert a["time"] == b["time"] and a["count"] == b["count"] == 8
            assert a["min"] == b["min"] and a["max"] == b["max"]
            np.testing.assert_array_equal(rec.k3_buckets(a["hist_edges"], a["hist_counts"], a["min"], a["max"]),
                                          rec.k3_buckets(b["hist_edges"], b["hist_counts"]))


def test_same_texts(stores):
    torch_runs, ours = (_by_name(s) for s in stores)
    texts = rec.read_texts(stores[1], ours["exp"]["id"])
    assert texts == rec.read_texts(stores[0], torch_runs["exp"]["id"])
    assert [t[2] for t in texts["status/text_summary"]] == ["step 0", "step 10", "step 20"]


def test_resume_purge_step_and_failure(tmp_path):
    log_dir = str(tmp_path / "runs" / "job")
    with SummaryWriter(log_dir, capture=False) as w:
        for i in range(5):
            w.add_scalar("loss", float(i), i)
    with pytest.raises(RuntimeError):
        with SummaryWriter(log_dir, purge_step=3, capture=False) as w:
            w.add_scalar("loss", 30.0, 3)
            raise RuntimeError("preempted")
    with steplog.open(str(tmp_path / "runs")) as store:
        (record,) = store.run_records()
        assert record["name"] == "job" and record["status"] == "failed"
        assert store.read(record["id"], "loss").column("step").to_pylist() == [0, 1, 2, 3, 3, 4]
        marks = store.read(record["id"], rec.SESSION_LOG)
        assert marks.column("step").to_pylist() == [3] and marks.column("value").to_pylist() == [1.0]


def test_media_are_artifacts_and_graphs_refused(tmp_path):
    with SummaryWriter(str(tmp_path / "runs" / "m"), capture=False) as w:
        w.add_image("img", np.zeros((3, 4, 4), np.uint8), 2)
        w.add_audio("snd", np.zeros(100, np.float32), 1)
        with pytest.raises(UnsupportedSummaryError, match="add_graph"):
            w.add_graph(torch.nn.Linear(2, 2), torch.zeros(1, 2))
        with pytest.raises(UnsupportedSummaryError, match="add_embedding"):
            w.add_embedding(np.zeros((3, 2)))
        run_id = w.run.id
    with steplog.open(str(tmp_path / "runs")) as store:
        names = store.artifacts(run_id).column("name").to_pylist()
        assert names == ["tensorboard-image/img/2.npy", "tensorboard-audio/snd/1.npy"]
        sha = store.artifacts(run_id).column("sha256")[0].as_py()
        with store.open_artifact(sha) as f:
            assert np.load(io.BytesIO(f.read())).shape == (3, 4, 4)


def test_log_dir_above_a_foreign_directory_is_refused(tmp_path):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "train.py").write_text("")
    with pytest.raises(InvalidArgumentError, match="store="):
        SummaryWriter(str(tmp_path / "project" / "logs"), capture=False)
    with SummaryWriter(str(tmp_path / "project" / "logs"), store=str(tmp_path / "s"), experiment="e",
                       capture=False) as w:
        w.add_scalar("x", 1.0)
    with steplog.open(str(tmp_path / "s")) as store:
        (record,) = store.run_records()
        assert (record["experiment"], record["name"]) == ("e", "logs")
        assert store.read(record["id"], "x").column("step").to_pylist() == [0]


def test_default_walltime_is_now_and_histogram_bins(tmp_path):
    import time

    before = time.time_ns()
    with SummaryWriter(str(tmp_path / "runs" / "d"), capture=False) as w:
        w.add_scalar("x", np.float32(0.5), 7)
        values = np.random.default_rng(0).normal(size=1000)
        w.add_histogram("auto", values, 1, bins="auto")
        w.add_histogram("merged", values, 1, max_bins=20)
        run_id = w.run.id
    with steplog.open(str(tmp_path / "runs")) as store:
        point = store.read(run_id, "x").to_pylist()[0]
        assert point["step"] == 7 and before <= point["time_ns"] <= time.time_ns()
        auto = store.read_tensor(run_id, "auto").to_pylist()[0]
        counts, edges = np.histogram(values, bins="auto")
        assert auto["hist_counts"] == counts.tolist() and auto["hist_edges"] == edges.tolist()
        merged = store.read_tensor(run_id, "merged").to_pylist()[0]
        assert len(merged["hist_counts"]) <= 21 and sum(merged["hist_counts"]) == 1000
