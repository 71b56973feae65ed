"""Damaged stores: a damaged series raises CorruptionError naming the file and the block,
never returns wrong numbers; the other series read back exactly; ``steplog verify``
exits non-zero and lists every damaged block.

One pristine store with several runs, series and segments (64-point blocks, so many
blocks) is built once; every case damages a copy of it. Which blocks a case damaged
is not assumed: it is found by comparing, for every block the index lists after the
damage, the bytes at its (segment, offset) with the block's pristine bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from typing import NamedTuple

import numpy as np
import pytest

import steplog
from steplog.engine.block import HEADER_SIZE
from steplog.engine.index import Index
from steplog.engine.layout import StoreLayout

from _helpers import assert_points

BLOCK_POINTS = 64
VERIFY_TIMEOUT = 120


class Block(NamedTuple):
    seq: int
    segment_id: int
    offset: int
    length: int
    series: tuple        # (run_id hex, name, context dict or None)
    step_min: int
    step_max: int


def list_blocks(root: str) -> list[Block]:
    """Every block the index lists, with the series it belongs to."""
    layout = StoreLayout(root)
    index = Index(layout.index_dir, sync=False)
    try:
        with index.read() as txn:
            names = {}
            for record in txn.runs():
                for entry, name, context in txn.run_series(bytes.fromhex(record["id"])):
                    names[entry.series_id] = (record["id"], name, context)
            found = []
            for ref in txn.all_blocks():
                run_id, name, context = names[ref.header.series_id]
                found.append(Block(ref.seq, ref.segment_id, ref.offset, ref.header.length,
                                   (run_id, name, json.loads(context) if context else None),
                                   ref.header.step_min, ref.header.step_max))
    finally:
        index.close()
    return sorted(found)


@contextlib.contextmanager
def held_segments(root: str):
    """Hold every segment's lock, as the writer appending to it does."""
    layout = StoreLayout(root)
    fds = [os.open(layout.segment_path(i), os.O_RDONLY) for i in layout.segment_ids_on_disk()]
    try:
        for fd in fds:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        for fd in fds:
            os.close(fd)


def series_key(series) -> tuple:
    run_id, name, context = series
    return run_id, name, None if context is None else tuple(sorted(context.items()))


class Pristine(NamedTuple):
    root: str
    blocks: list[Block]
    data: dict                # series_key -> (series, steps, values) in write order
    block_bytes: dict         # seq -> bytes
    segments: dict            # segment_id -> path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Pristine:
    root = str(tmp_path_factory.mktemp("pristine") / "store.steplog")
    rng = np.random.default_rng(7)
    data: dict = {}

    def write(run, name, context, steps, values, batch):
        if batch:
            run.log_batch(name, steps, values, context=context)
        else:
            for s, v in zip(steps.tolist(), values.tolist()):
                run.log(name, v, step=s, context=context)
        key = series_key((run.id, name, context))
        old = data.get(key, ((run.id, name, context), np.empty(0, np.int64), np.empty(0)))
        data[key] = (old[0], np.concatenate([old[1], steps]), np.concatenate([old[2], values]))

    def session(runs_to_write, resume=None):
        """One store session: one writer, so one new segment."""
        with steplog.open(root, block_points=BLOCK_POINTS, flush_interval=None) as store:
            runs = [store.run(resume)] if resume else []
            runs += [store.start_run(experiment="corrupt", name=n) for n in runs_to_write]
            for lo in range(0, 1200, 150):
                steps = np.arange(lo, lo + 150, dtype=np.int64) + (10_000 if resume else 0)
                for i, run in enumerate(runs):
                    write(run, "m", None, steps, rng.normal(size=150), batch=False)
                    write(run, "b", None, steps, rng.normal(size=150), batch=True)
                    write(run, "m", {"k": i}, steps, rng.normal(size=150), batch=bool(lo % 300))
                store.flush()
            return [run.id for run in runs]

    run_a, run_b = session(["a", "b"])
    with held_segments(root):       # as a live writer would: the next session starts its own
        run_c, = session(["c"])
    with held_segments(root):
        session(["d"], resume=run_a)    # run a gets blocks in a third segment too
    blocks = list_blocks(root)
    layout = StoreLayout(root)
    segments = {b.segment_id: layout.segment_path(b.segment_id) for b in blocks}
    assert len(segments) == 3 and len(blocks) > 300
    block_bytes = {}
    for b in blocks:
        with open(segments[b.segment_id], "rb") as f:
            f.seek(b.offset)
            block_bytes[b.seq] = f.read(b.length)
    return Pristine(root, blocks, data, block_bytes, segments)


# -- damage ------------------------------------------------------------------------------

def flip_bit(path: str, position: int, bit: int = 3) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ (1 << bit)]))


def blocks_of_segment(blocks, segment_id):
    return sorted((b for b in blocks if b.segment_id == segment_id), key=lambda b: b.offset)


def middle_block(p: Pristine, segment_index: int, series_name: str = "m") -> Block:
    segment_id = sorted(p.segments)[segment_index]
    own = [b for b in blocks_of_segment(p.blocks, segment_id) if b.series[1] == series_name]
    return own[len(own) // 2]


def payload_bit(p: Pristine, root: str) -> None:
    b = middle_block(p, 0)
    flip_bit(os.path.join(root, rel(p, b)), b.offset + HEADER_SIZE + (b.length - HEADER_SIZE) // 2)


def header_bit(field_offset: int):
    def damage(p: Pristine, root: str) -> None:
        b = middle_block(p, 1, "b")
        flip_bit(os.path.join(root, rel(p, b)), b.offset + field_offset, bit=0)
    return damage


def truncate_mid_block(p: Pristine, root: str) -> None:
    segment_id = sorted(p.segments)[1]
    b = blocks_of_segment(p.blocks, segment_id)[-4]
    os.truncate(os.path.join(root, rel(p, b)), b.offset + b.length // 2)


def missing_segment(p: Pristine, root: str) -> None:
    segment_id = sorted(p.segments)[2]
    os.remove(os.path.join(root, os.path.relpath(p.segments[segment_id], p.root)))


def truncate_before_last_block(p: Pristine, root: str) -> None:
    """The segment ends exactly where its last indexed block starts."""
    segment_id = sorted(p.segments)[0]
    b = blocks_of_segment(p.blocks, segment_id)[-1]
    os.truncate(os.path.join(root, rel(p, b)), b.offset)


def index_offset(where: str):
    """Rewrite one ``blocks`` value's offset, with lmdb, in a separate process."""
    def damage(p: Pristine, root: str) -> None:
        segment_id = sorted(p.segments)[1]
        own = [b for b in blocks_of_segment(p.blocks, segment_id) if b.series[1] == "b"]
        target = own[len(own) // 3]
        if where == "past_end":
            new_offset = os.path.getsize(p.segments[segment_id]) + 4096
        else:   # the start of another block of the same segment
            new_offset = own[len(own) // 3 + 1].offset
        code = r'''
import struct, sys, zlib, lmdb
index_dir, seq, new_offset = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
env = lmdb.open(index_dir, max_dbs=16, subdir=True)
blocks = env.open_db(b"blocks")
with env.begin(write=True) as txn:
    for key, value in txn.cursor(db=blocks):
        if struct.unpack(">QQQ", key)[2] == seq:   # a wrong entry with a right checksum
            payload = value[:8] + struct.pack("<Q", new_offset) + value[16:-4]
            txn.put(key, payload + struct.pack("<I", zlib.crc32(payload, zlib.crc32(key))), db=blocks)
            break
    else:
        raise SystemExit("no block %d" % seq)
env.close()
'''
        subprocess.run([sys.executable, "-c", code, StoreLayout(root).index_dir, str(target.seq), str(new_offset)],
                       check=True, timeout=60)
    return damage


def zero_page(p: Pristine, root: str) -> None:
    segment_id = sorted(p.segments)[0]
    path = os.path.join(root, os.path.relpath(p.segments[segment_id], p.root))
    page = os.path.getsize(path) // 4096 // 2
    with open(path, "r+b") as f:
        f.seek(page * 4096)
        f.write(bytes(4096))


def rel(p: Pristine, b: Block) -> str:
    return os.path.relpath(p.segments[b.segment_id], p.root)


CASES = {
    "payload_bit": payload_bit,
    "header_bit_magic": header_bit(1),
    "header_bit_count": header_bit(16),
    "header_bit_payload_len": header_bit(20),
    "header_bit_step_min": header_bit(33),
    "header_bit_checksum": header_bit(109),
    "truncated_mid_block": truncate_mid_block,
    "missing_segment": missing_segment,
    "truncated_before_last_block": truncate_before_last_block,
    "index_offset_past_end": index_offset("past_end"),
    "index_offset_other_block": index_offset("other_block"),
    "zeroed_page": zero_page,
}


def damaged_blocks(p: Pristine, root: str) -> list[Block]:
    """Blocks (as the index now lists them) whose bytes are not their pristine bytes."""
    layout = StoreLayout(root)
    found = []
    for b in list_blocks(root):
        path = layout.segment_path(b.segment_id)
        try:
            with open(path, "rb") as f:
                f.seek(b.offset)
                data = f.read(b.length)
        except FileNotFoundError:
            data = b""
        if data != p.block_bytes[b.seq]:
            found.append(b)
    return found


def start_verify(root: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "steplog", "verify", root], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish_verify(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=VERIFY_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        raise
    return proc.returncode, out + err


@pytest.mark.parametrize("case", list(CASES))
def test_damage_is_reported_never_misread(pristine, tmp_path, case):
    root = str(tmp_path / "store.steplog")
    shutil.copytree(pristine.root, root)
    CASES[case](pristine, root)
    damaged = damaged_blocks(pristine, root)
    assert damaged, "the damage hit no block"
    layout = StoreLayout(root)
    verify = start_verify(root)
    try:
        by_series: dict = {}
        for b in damaged:
            by_series.setdefault(series_key(b.series), []).append(b)
        with steplog.open(root, flush_interval=None) as store:
            for key, (series, steps, values) in pristine.data.items():
                run_id, name, context = series
                bad = by_series.get(key)
                if bad is None:   # untouched series read back exactly
                    assert_points(store.read(run_id, name, context=context), steps, values)
                    continue
                first = min(bad, key=lambda b: b.seq)     # blocks are decoded in write order
                with pytest.raises(steplog.CorruptionError) as info:
                    store.read(run_id, name, context=context)
                error = info.value
                assert os.path.abspath(error.path) == os.path.abspath(layout.segment_path(first.segment_id)), \
                    f"{error} names {error.path}"
                assert error.offset == first.offset, \
                    f"{error}: offset {error.offset}, the damaged block is at {first.offset}"
                with pytest.raises(steplog.CorruptionError):
                    store.read(run_id, name, context=context, buckets=3, method="lttb")
                with pytest.raises(steplog.CorruptionError):
                    store.read_many(runs=[run_id], metrics=[name])
                # a range that stays clear of every damaged block reads back exactly
                low = min(b.step_min for b in bad)
                if low > steps.min():
                    assert_points(store.read(run_id, name, context=context, stop=low), steps, values, stop=low)
                # downsampled reads may come from rollups; if they answer, they are right
                want = np.sort(values)
                try:
                    table = store.read(run_id, name, context=context, buckets=1)
                except steplog.CorruptionError:
                    pass
                else:
                    assert table.column("count").to_pylist() == [len(values)]
                    assert table.column("min").to_pylist() == [want[0]]
                    assert table.column("max").to_pylist() == [want[-1]]
    finally:
        code, output = finish_verify(verify)
    assert code == 1, output
    for b in damaged:
        line = f"{layout.segment_path(b.segment_id)} offset {b.offset}"
        assert line in output, f"verify does not list the damaged block {line}:\n{output}"
    checked, _, reported = output.strip().splitlines()[-1].partition(" blocks checked, ")
    assert int(checked) == len(pristine.blocks)
    assert int(reported.split()[0]) >= len(damaged), output


def test_healthy_store_verifies_and_reads_back(pristine, tmp_path):
    root = str(tmp_path / "store.steplog")
    shutil.copytree(pristine.root, root)
    verify = start_verify(root)
    try:
        with steplog.open(root, flush_interval=None) as store:
            for (run_id, name, context), steps, values in pristine.data.values():
                assert_points(store.read(run_id, name, context=context), steps, values)
    finally:
        code, output = finish_verify(verify)
    assert code == 0, output
    assert output.strip().endswith(f"{len(pristine.blocks)} blocks checked, 0 damaged"), output


def test_verify_refuses_what_is_not_a_store(tmp_path):
    result = subprocess.run([sys.executable, "-m", "steplog", "verify", str(tmp_path / "nothing")],
                            capture_output=True, text=True, timeout=VERIFY_TIMEOUT)
    assert result.returncode == 2, result.stdout + result.stderr


def test_verify_finds_kept_aggregates_that_differ_from_the_blocks(tmp_path):
    """An aggregates value with a good checksum but a wrong min (a bug, not bit rot) is
    listed by verify, which takes every series' aggregates again from its blocks."""
    path = str(tmp_path / "s")
    with steplog.open(path) as store:
        run = store.start_run()
        run.log_batch("loss", np.arange(5000), np.linspace(1.0, 0.0, 5000))
        run.log_batch("acc", np.arange(10), np.arange(10.0))
    assert subprocess.run([sys.executable, "-m", "steplog", "verify", path], capture_output=True).returncode == 0
    index = Index(StoreLayout(path).index_dir, sync=True, create=False)
    try:
        with index.read() as txn:
            series_id = next(entry.series_id for _, entry, name, _ in txn.all_series() if name == "loss")
            kept = txn.aggregates(series_id)
        index.write(lambda txn: txn.put_aggregates(series_id, kept._replace(min=-1.0)))
    finally:
        index.close()
    done = subprocess.run([sys.executable, "-m", "steplog", "verify", path], capture_output=True, text=True)
    assert done.returncode == 1, done.stdout
    assert "aggregates" in done.stdout and "'loss'" in done.stdout and "'acc'" not in done.stdout
