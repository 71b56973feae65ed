"""Event files written by tensorboardX and torch.utils.tensorboard, imported into steplog
and compared point for point with TensorBoard's own EventFileLoader over the same files."""

from __future__ import annotations

import argparse
import os
import shutil
import struct

import numpy as np
import pytest

tensorboard = pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
tensorboardX = pytest.importorskip("tensorboardX", reason="tensorboardX is not installed")

import steplog  # noqa: E402
from steplog.bindings.tensorboard import _records as rec  # noqa: E402
from steplog.bindings.tensorboard import events as ev  # noqa: E402
from steplog.bindings.tensorboard.importer import import_tensorboard, run_id_of  # noqa: E402
from steplog.commands import import_tensorboard as command  # noqa: E402
from steplog.engine.errors import CorruptionError  # noqa: E402

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # noqa: E402
from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: E402
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tb_masked_crc32c  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

WALL = 1_750_000_000.123456


def _write_tensorboardx(logdir):
    rng = np.random.default_rng(0)
    with tensorboardX.SummaryWriter(os.path.join(logdir, "tbx"), filename_suffix=".a") as w:
        for i in range(20):
            w.add_scalar("loss", 0.1 + 1 / 3 * i, i, walltime=WALL + i * 0.001)
        w.add_scalar("loss", 7.5, 5)             # a repeated step
        w.add_scalar("loss", -1.0, 2)            # out of order
        w.add_scalar("nan", float("nan"), 0)
        w.add_scalars("pair", {"train": 0.5, "val": 0.75}, 3)
        w.add_histogram("weights", rng.normal(size=500), 1)
        w.add_histogram("weights", rng.normal(size=500) * 3, 2, bins="auto")
        w.add_histogram("constant", np.full(10, 2.5), 1)
        w.add_histogram_raw("raw", min=-1.0, max=3.0, num=6, sum=5.0, sum_squares=11.0,
                            bucket_limits=[0.0, 1.0, 2.0, 3.0], bucket_counts=[1, 2, 0, 3], global_step=4)
        w.add_text("note", "hello *world*", 2)
        w.add_hparams({"lr": 0.01, "optimizer": "adam", "flag": True}, {"hp/acc": 0.9}, name="hp")
    # a restart of the same run: a second file, purge_step 10
    with tensorboardX.SummaryWriter(os.path.join(logdir, "tbx"), purge_step=10, filename_suffix=".b") as w:
        for i in range(10, 15):
            w.add_scalar("loss", float(i), i)


def _write_torch(logdir):
    torch_tb = pytest.importorskip("torch.utils.tensorboard", reason="torch is not installed")
    with torch_tb.SummaryWriter(os.path.join(logdir, "torch"), filename_suffix=".a") as w:
        for i in range(10):
            w.add_scalar("old", 0.1 * i, i)
            w.add_scalar("new", 0.1 * i, i, new_style=True)
            w.add_scalar("double", 0.1 * i, i, new_style=True, double_precision=True)
        w.add_histogram("h", np.arange(100, dtype=np.float32), 3)
        w.add_scalars("loss", {"train": 1.0, "val": 2.0}, 1)
        w.add_hparams({"lr": 0.5, "depth": 3}, {"hparam/loss": 0.25}, run_name="sweep")


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tb") / "logs")
    _write_tensorboardx(root)
    _write_torch(root)
    return root


@pytest.fixture(scope="module")
def imported(logdir, tmp_path_factory):
    target = str(tmp_path_factory.mktemp("store") / "s")
    summary = import_tensorboard(logdir, target)
    store = steplog.open(target)
    yield summary, store
    store.close()


# -- what TensorBoard reads ---------------------------------------------------------------

def loader_stream(files):
    """(tag, plugin, step, wall, value) of every summary value TensorBoard's loader yields
    over ``files`` in order, plus ("session_log", ...) events; a tag's plugin is that of its
    first value."""
    plugins, out = {}, []
    for path in files:
        for event in EventFileLoader(path).Load():
            if event.HasField("session_log"):
                out.append((rec.SESSION_LOG, "session_log", event.step, event.wall_time,
                            float(event.session_log.status)))
            for value in event.summary.value:
                plugin = plugins.setdefault(value.tag, value.metadata.plugin_data.plugin_name)
                out.append((value.tag, plugin, event.step, event.wall_time, value))
    return out


def by_tag(stream):
    tags = {}
    for tag, plugin, step, wall, value in stream:
        tags.setdefault(tag, (plugin, []))[1].append((step, wall, value))
    return tags


def stable_by_step(points):
    return sorted(points, key=lambda p: p[0])   # sorted() is stable: ties keep file order


def check_run(store, run_dir, name, files):
    run_id = run_id_of(run_dir)
    record = store.run_record(run_id)
    assert record is not None and record["name"] == name and record["imported_from"] == os.path.abspath(run_dir)
    for tag, (plugin, points) in by_tag(loader_stream(files)).items():
        if not tag:   # steplog names no series "": counted as not imported (test_wire_decoder...)
            continue
        points = stable_by_step(points)
        steps = [p[0] for p in points]
        if plugin in ("scalars", "session_log"):
            got = store.read(run_id, tag)
            want_values = [p[2] if plugin == "session_log" else float(tensor_util.make_ndarray(p[2].tensor).item())
                           for p in points]
            assert got.column("step").to_pylist() == steps, tag
            assert got.column("time_ns").to_pylist() == ev.wall_time_ns([p[1] for p in points]).tolist(), tag
            np.testing.assert_array_equal(got.column("value").to_numpy(), np.array(want_values), err_msg=tag)
            back = got.column("time_ns").to_numpy() / 1e9
            assert np.all(np.abs(back - [p[1] for p in points]) <= np.spacing(np.array([p[1] for p in points])))
        elif plugin == "histograms":
            got = store.read_tensor(run_id, tag)
            assert got.column("step").to_pylist() == steps
            for row, (_, _, value) in zip(got.to_pylist(), points):
                want = tensor_util.make_ndarray(value.tensor)
                have = rec.k3_buckets(row["hist_edges"], row["hist_counts"])
                np.testing.assert_array_equal(have, want.astype(np.float32), err_msg=tag)
                assert row["count"] == want[:, 2].sum()
        elif plugin == "text":
            texts = rec.read_texts(store, run_id)[tag]
            assert [t[0] for t in texts] == [p[0] for p in by_tag(loader_stream(files))[tag][1]]
            assert [t[2] for t in texts] == [tensor_util.make_ndarray(p[2].tensor).item().decode() for p in
                                              by_tag(loader_stream(files))[tag][1]]
        elif plugin == "hparams":
            assert tag.startswith("_hparams_/")
        else:
            pytest.fail(f"the fixtures wrote a {plugin!r} value ({tag}) the test does not check")


def all_runs(logdir):
    return ev.run_directories(logdir)


def test_runs_are_the_directories_tensorboard_shows(logdir, imported):
    summary, store = imported
    names = sorted(r["name"] for r in store.run_records())
    assert names == sorted(all_runs(logdir))
    assert "tbx/pair/train" in names and "torch/loss_train" in names and "torch/sweep" in names
    parents = {r["name"]: r["parent"] for r in store.run_records()}
    assert parents["tbx/pair/train"] == run_id_of(os.path.join(logdir, "tbx"))
    assert parents["tbx"] is None
    assert summary.runs == len(names) and summary.runs_skipped == 0
    assert len(all_runs(logdir)["tbx"]) == 2   # two files in one run directory


def test_every_point_equals_event_file_loader(logdir, imported):
    _, store = imported
    for name, files in all_runs(logdir).items():
        check_run(store, os.path.join(logdir, name), name, files)


def test_float32_and_double_scalars(imported, logdir):
    _, store = imported
    run_id = run_id_of(os.path.join(logdir, "torch"))
    old = store.read(run_id, "old").column("value").to_numpy()
    new = store.read(run_id, "new").column("value").to_numpy()
    double = store.read(run_id, "double").column("value").to_numpy()
    exact = 0.1 * np.arange(10)
    np.testing.assert_array_equal(old, exact.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(new, old)
    np.testing.assert_array_equal(double, exact)
    assert not np.array_equal(old, exact)


def test_purge_step_and_repeats_are_kept(imported, logdir):
    _, store = imported
    run_id = run_id_of(os.path.join(logdir, "tbx"))
    loss = store.read(run_id, "loss")
    assert loss.num_rows == 20 + 2 + 5
    assert loss.column("step").to_pylist().count(5) == 2
    marks = store.read(run_id, rec.SESSION_LOG)
    assert marks.column("step").to_pylist() == [10] and marks.column("value").to_pylist() == [1.0]


def test_hparams_become_params(imported, logdir):
    _, store = imported
    assert store.run_record(run_id_of(os.path.join(logdir, "tbx", "hp")))["params"] == {
        "lr": 0.01, "optimizer": "adam", "flag": True}
    sweep = run_id_of(os.path.join(logdir, "torch", "sweep"))
    assert store.run_record(sweep)["params"] == {"lr": 0.5, "depth": 3.0}
    assert store.read(sweep, "hparam/loss").column("value").to_pylist() == [0.25]


def test_histogram_raw_statistics(imported, logdir):
    _, store = imported
    row = store.read_tensor(run_id_of(os.path.join(logdir, "tbx")), "raw").to_pylist()[0]
    assert (row["count"], row["min"], row["max"], row["mean"]) == (6, -1.0, 3.0, 5.0 / 6)
    assert row["l2"] == pytest.approx(np.sqrt(11.0))
    assert row["hist_counts"] == [1, 2, 0, 3] and row["hist_edges"] == [-1.0, 0.0, 1.0, 2.0, 3.0]


def test_reimport_skips_runs(logdir, imported, tmp_path):
    summary, store = imported
    again = import_tensorboard(logdir, store.path)
    assert again.runs == 0 and again.runs_skipped == summary.runs and again.points == 0
    assert len(store.run_records()) == summary.runs


# -- damage -------------------------------------------------------------------------------

def _one_run_copy(logdir, tmp_path, name="tbx"):
    dest = tmp_path / "logs"
    shutil.copytree(os.path.join(logdir, name), dest / name, ignore=shutil.ignore_patterns("pair", "hp"))
    return str(dest), sorted(str(p) for p in (dest / name).iterdir() if p.is_file())


def test_truncated_last_record_stops_cleanly(logdir, tmp_path):
    root, files = _one_run_copy(logdir, tmp_path)
    size = os.path.getsize(files[-1])
    with open(files[-1], "r+b") as f:
        f.truncate(size - 3)
    framed = ev.read_event_file(files[-1])
    assert framed.truncated_at == int(framed.offsets[-1] + framed.lengths[-1] + 4)
    summary = import_tensorboard(root, str(tmp_path / "s"))
    assert summary.truncated == [(files[-1], framed.truncated_at)]
    with steplog.open(str(tmp_path / "s")) as store:
        check_run(store, os.path.join(root, "tbx"), "tbx", files)   # TensorBoard also stops there


def _record_offsets(path):
    framed = ev.read_event_file(path)
    return [int(o) - ev.HEADER for o in framed.offsets]


def test_flipped_crc_byte_raises_with_file_and_offset(logdir, tmp_path):
    root, files = _one_run_copy(logdir, tmp_path)
    starts = _record_offsets(files[0])
    with open(files[0], "r+b") as f:   # a byte of the 6th record's data
        f.seek(starts[5] + ev.HEADER + 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(CorruptionError) as caught:
        import_tensorboard(root, str(tmp_path / "s"))
    assert caught.value.path == files[0] and caught.value.offset == starts[5]
    assert "data CRC-32C" in caught.value.reason
    loaded = list(EventFileLoader(files[0]).Load())   # TensorBoard stops at the damaged record
    assert len(loaded) == 5
    summary = import_tensorboard(root, str(tmp_path / "s"), skip_damaged=True)
    assert summary.damaged == [(files[0], starts[5], "event record failed the data CRC-32C check")]
    with steplog.open(str(tmp_path / "s")) as store:
        loss = store.read(run_id_of(os.path.join(root, "tbx")), "loss")
    assert loss.num_rows == 27 - 1


def test_flipped_length_byte_skips_to_the_next_record(logdir, tmp_path):
    path = _one_run_copy(logdir, tmp_path)[1][0]
    starts = _record_offsets(path)
    with open(path, "r+b") as f:
        f.seek(starts[3] + 1)
        f.write(b"\x7f")
    with pytest.raises(CorruptionError) as caught:
        ev.read_event_file(path)
    assert caught.value.offset == starts[3] and "length" in caught.value.reason
    framed = ev.read_event_file(path, skip_damaged=True)
    assert framed.damaged == [(starts[3], "event record failed the length CRC-32C check")]
    assert [int(o) - ev.HEADER for o in framed.offsets] == starts[:3] + starts[4:]


def test_command_reports_damage(logdir, tmp_path, capsys):
    root, files = _one_run_copy(logdir, tmp_path)
    starts = _record_offsets(files[0])
    with open(files[0], "r+b") as f:
        f.seek(starts[2] + ev.HEADER + len(b"x"))
        f.write(b"\xff\xff")
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    target = str(tmp_path / "s")
    args = parser.parse_args(["import-tensorboard", root, "--to", target, "-q"])
    assert args.handler(args) == command.DAMAGED
    assert f"{files[0]} at offset {starts[2]}" in capsys.readouterr().err
    args = parser.parse_args(["import-tensorboard", root, "--to", target, "-q", "--skip-damaged"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert f"damaged: {files[0]} at offset {starts[2]}" in out and "imported 1 runs" in out
    assert args.handler(args) == 0
    assert "imported 0 runs (1 skipped" in capsys.readouterr().out


# -- framing and decoding -----------------------------------------------------------------

def test_crc32c_known_values_and_tensorboards_mask():
    assert ev.crc32c(b"123456789") == 0xE3069283
    assert ev.crc32c(b"") == 0
    rng = np.random.default_rng(1)
    for n in (1, 7, 8, 9, 63, 64, 1000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert ev.masked_crc32c(data) == tb_masked_crc32c(data)


def _record(data: bytes) -> bytes:
    head = struct.pack("<Q", len(data))
    return head + struct.pack("<I", ev.masked_crc32c(head)) + data + struct.pack("<I", ev.masked_crc32c(data))


def test_wire_decoder_equals_protobuf_on_odd_events(tmp_path):
    """Events the fast decoder must read as protobuf does, or hand to protobuf: several
    values an event, a negative step, float64 tensor_content, an int tensor, an unknown
    field, a value without a tag."""
    events = [event_pb2.Event(wall_time=WALL, file_version="brain.Event:2")]
    e = event_pb2.Event(wall_time=WALL + 1, step=-3)
    e.summary.value.add(tag="a", simple_value=1.5)
    e.summary.value.add(tag="b", simple_value=-2.25)
    events.append(e)
    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    for step, tensor in ((1, tensor_util.make_tensor_proto(np.float64(0.1))),
                         (2, tensor_util.make_tensor_proto(np.array(7, np.int32))),
                         (3, tensor_util.make_tensor_proto(np.array([0.3], np.float32)))):
        e = event_pb2.Event(wall_time=WALL + step, step=step)
        e.summary.value.add(tag="c", tensor=tensor, metadata=meta)
        events.append(e)
    blob = tensor_util.make_tensor_proto(np.float64(0.2))
    blob.tensor_content = np.float64(0.2).tobytes()
    del blob.double_val[:]
    e = event_pb2.Event(wall_time=WALL + 4, step=4)
    e.summary.value.add(tag="c", tensor=blob)
    events.append(e)
    e = event_pb2.Event(wall_time=WALL + 5, step=5)
    e.summary.value.add(simple_value=9.0)
    events.append(e)
    run = tmp_path / "logs" / "r"
    run.mkdir(parents=True)
    path = run / "events.out.tfevents.1.test"
    path.write_bytes(b"".join(_record(x.SerializeToString()) for x in events))
    summary = import_tensorboard(str(tmp_path / "logs"), str(tmp_path / "s"))
    assert sum(summary.not_imported.values()) == 1 and "cannot name" in next(iter(summary.not_imported))
    with steplog.open(str(tmp_path / "s")) as store:
        check_run(store, str(run), "r", [str(path)])
        assert store.read(run_id_of(str(run)), "c").column("value").to_pylist() == [
            0.1, 7.0, float(np.float32(0.3)), 0.2]
        assert store.read(run_id_of(str(run)), "a").column("step").to_pylist() == [-3]


def test_wall_time_rounding():
    """The nanosecond nearest the double, up to the float64 product's own error (< 1e-6 ns)."""
    from fractions import Fraction

    walls = np.array([WALL, 1.0, 0.25e-9, 1.75e-9, 1_999_999_999.999999, 1_234_567_890.5])
    ns = ev.wall_time_ns(walls)
    assert ns.tolist()[1:4] == [1_000_000_000, 0, 2] and ns[-1] == 1_234_567_890_500_000_000
    for w, n in zip(walls.tolist(), ns.tolist()):
        assert abs(Fraction(w) * 10**9 - n) <= Fraction(1, 2) + Fraction(1, 10**6)
