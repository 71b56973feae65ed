"""TensorBoard binding benchmarks: ``SummaryWriter.add_scalar`` calls/s (steplog's, and
tensorboardX's beside it) and the import of an event file of scalar events (events/s;
TensorBoard's own EventAccumulator reading everything beside it).

Targets (issue 13): add_scalar >= 500,000 calls/s (tensorboardX ~9,000); import of 1 M
scalar events >= 200,000 events/s (EventAccumulator ~29,000).

Full sizes when benchmarks run, tiny ones under --benchmark-disable (CI) or with
STEPLOG_BENCH_SIZE=tiny. Every test checks its result, never a time.

    .venv/bin/python -m pytest benchmarks/test_tensorboard.py --benchmark-only
"""

from __future__ import annotations

import os
import shutil
import struct
import time

import numpy as np
import pytest

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")

import steplog  # noqa: E402
from steplog.bindings.tensorboard import SummaryWriter  # noqa: E402
from steplog.bindings.tensorboard.events import masked_crc32c  # noqa: E402
from steplog.bindings.tensorboard.importer import import_tensorboard, run_id_of  # noqa: E402

CALLS, CALLS_TINY = 1_000_000, 20_000
TBX_CALLS, TBX_CALLS_TINY = 20_000, 1_000
EVENTS, EVENTS_TINY = 1_000_000, 20_000


def tiny(benchmark) -> bool:
    size = os.environ.get("STEPLOG_BENCH_SIZE")
    return size == "tiny" if size else benchmark.disabled


def _rate(benchmark, what: str, n: int, seconds: float) -> None:
    benchmark.extra_info[what] = round(n / seconds)
    print(f"\n{what}: {n / seconds:,.0f} ({n:,} in {seconds:.2f}s)")


def test_add_scalar_steplog(benchmark, tmp_path):
    n = CALLS_TINY if tiny(benchmark) else CALLS
    writer = SummaryWriter(str(tmp_path / "runs" / "bench"), capture=False)
    add = writer.add_scalar
    rounds = []

    def calls():
        start = len(rounds) * n
        t = time.perf_counter()
        for i in range(start, start + n):
            add("loss", 0.5, i)
        rounds.append(time.perf_counter() - t)

    benchmark.pedantic(calls, rounds=1 if tiny(benchmark) else 3, iterations=1)
    _rate(benchmark, "add_scalar calls/s (median)", n, sorted(rounds)[len(rounds) // 2])
    run_id = writer.run.id
    writer.close()
    with steplog.open(str(tmp_path / "runs")) as store:
        assert store.read(run_id, "loss").num_rows == n * len(rounds)


def test_add_scalar_tensorboardx(benchmark, tmp_path):
    tensorboardX = pytest.importorskip("tensorboardX", reason="tensorboardX is not installed")
    n = TBX_CALLS_TINY if tiny(benchmark) else TBX_CALLS
    writer = tensorboardX.SummaryWriter(str(tmp_path / "tbx"))
    seconds = []

    def calls():
        t = time.perf_counter()
        for i in range(n):
            writer.add_scalar("loss", 0.5, i)
        seconds.append(time.perf_counter() - t)

    benchmark.pedantic(calls, rounds=1, iterations=1)
    writer.close()
    _rate(benchmark, "tensorboardX add_scalar calls/s", n, seconds[0])
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tbx"))


def _record(data: bytes) -> bytes:
    head = struct.pack("<Q", len(data))
    return head + struct.pack("<I", masked_crc32c(head)) + data + struct.pack("<I", masked_crc32c(data))


def write_scalar_events(path: str, n: int) -> None:
    """``n`` old-style scalar events of one tag, as tensorboardX writes them, serialized
    by hand (protobuf in Python would take longer than the import measured)."""
    from tensorboard.compat.proto import event_pb2

    tag = b"\x0a\x04loss"
    out = [_record(event_pb2.Event(wall_time=1.7e9, file_version="brain.Event:2").SerializeToString())]
    values = np.sin(np.arange(n)).astype(np.float32)
    for i in range(n):
        value = b"\x0a" + bytes([len(tag) + 5]) + tag + b"\x15" + values[i].tobytes()
        step = bytearray()
        v = i
        while True:
            step.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not v:
                break
        event = b"\x09" + struct.pack("<d", 1.7e9 + i * 1e-3) + b"\x10" + bytes(step) + b"\x2a" + bytes(
            [len(value)]) + value
        out.append(_record(event))
    with open(path, "wb") as f:
        f.write(b"".join(out))


@pytest.fixture(scope="module")
def scalar_logdir(tmp_path_factory, request):
    disabled = request.config.getoption("benchmark_disable", False)
    size = os.environ.get("STEPLOG_BENCH_SIZE")
    n = EVENTS_TINY if (size == "tiny" if size else disabled) else EVENTS
    root = tmp_path_factory.mktemp("tb") / "logs"
    (root / "run").mkdir(parents=True)
    write_scalar_events(str(root / "run" / "events.out.tfevents.1.bench"), n)
    return str(root), n


def test_import_scalar_events(benchmark, scalar_logdir, tmp_path):
    logdir, n = scalar_logdir
    target = str(tmp_path / "s")
    seconds = []

    def once():
        shutil.rmtree(target, ignore_errors=True)
        t = time.perf_counter()
        summary = import_tensorboard(logdir, target)
        seconds.append(time.perf_counter() - t)
        assert summary.points == n

    benchmark.pedantic(once, rounds=1 if tiny(benchmark) else 3, iterations=1)
    _rate(benchmark, "import events/s (median)", n, sorted(seconds)[len(seconds) // 2])
    with steplog.open(target) as store:
        got = store.read(run_id_of(os.path.join(logdir, "run")), "loss")
        assert got.num_rows == n
        assert got.column("value").to_numpy()[-1] == float(np.float32(np.sin(n - 1)))


def test_import_event_accumulator(benchmark, scalar_logdir):
    from tensorboard.backend.event_processing import event_accumulator

    logdir, n = scalar_logdir
    seconds = []

    def once():
        t = time.perf_counter()
        acc = event_accumulator.EventAccumulator(os.path.join(logdir, "run"),
                                                 size_guidance=event_accumulator.STORE_EVERYTHING_SIZE_GUIDANCE)
        acc.Reload()
        seconds.append(time.perf_counter() - t)
        assert len(acc.Scalars("loss")) == n

    benchmark.pedantic(once, rounds=1, iterations=1)
    _rate(benchmark, "EventAccumulator events/s", n, seconds[0])
