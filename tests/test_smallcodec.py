"""The numpy codec (engine.smallcodec) writes and reads the bytes the numba kernels do,
bit for bit, and a short script (open, log a point, close) never imports numba."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import zstandard

import steplog
from steplog.engine import block, kernels, smallcodec
from steplog.engine.summary import SUMMARY_FIELDS

from _helpers import INT64_MAX, INT64_MIN, SPECIAL_VALUES, bits

SIZES = [0, 1, 2, 3, 17, 300]
INT_KINDS = ["full_range", "wrapping", "extremes", "ties", "arange", "constant"]
FLOAT_KINDS = ["normal", "specials", "mixed", "all_nan", "negative_zero", "zeros", "infinities", "random_bits"]


def _ints(rng, kind: str, n: int) -> np.ndarray:
    if kind == "full_range":
        return rng.integers(INT64_MIN, INT64_MAX, size=n, dtype=np.int64, endpoint=True)
    if kind == "wrapping":   # every delta and delta-of-delta overflows int64
        return np.where(np.arange(n) % 2 == 0, INT64_MIN, INT64_MAX).astype(np.int64)
    if kind == "extremes":
        return rng.choice(np.array([INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX], np.int64), n)
    if kind == "ties":
        return rng.integers(-2, 3, size=n, dtype=np.int64)
    if kind == "arange":
        return np.arange(n, dtype=np.int64) * 10 - 5
    return np.full(n, 7, np.int64)


def _floats(rng, kind: str, n: int) -> np.ndarray:
    if kind == "normal":
        return rng.normal(0.0, 100.0, size=n)
    if kind == "specials":   # NaN payloads, signalling NaNs, infinities, -0.0
        return rng.choice(SPECIAL_VALUES, size=n)
    if kind == "mixed":
        values = rng.normal(size=n)
        mask = rng.random(n) < 0.3
        values[mask] = rng.choice(SPECIAL_VALUES, size=int(mask.sum()))
        return values
    if kind == "all_nan":
        return np.full(n, SPECIAL_VALUES[3])
    if kind == "negative_zero":
        return np.full(n, -0.0)
    if kind == "zeros":   # 0.0 and -0.0 mixed: min and max keep the one seen first
        return rng.choice(np.array([0.0, -0.0]), size=n)
    if kind == "infinities":   # the sum is inf - inf = NaN
        return rng.choice(np.array([np.inf, -np.inf, 1.0]), size=n)
    return rng.integers(0, 2**64, size=n, dtype=np.uint64).view(np.float64)


def _cases(sizes=SIZES):
    for n in sizes:
        for int_kind in INT_KINDS:
            yield pytest.param(n, int_kind, id=f"n{n}-{int_kind}")


def _columns(n, step_kind):
    """(steps, times, values, value kind) of every value kind, times of another int kind."""
    for j, value_kind in enumerate(FLOAT_KINDS):
        rng = np.random.default_rng([n, INT_KINDS.index(step_kind), j])
        time_kind = INT_KINDS[(INT_KINDS.index(step_kind) + j) % len(INT_KINDS)]
        yield _ints(rng, step_kind, n), _ints(rng, time_kind, n), _floats(rng, value_kind, n), value_kind


def _encoded(codec, fn: str, *columns) -> bytes:
    n = max([len(c) for c in columns] + [1])
    out = np.full(len(columns) * (smallcodec.COLUMN_HEADER + 8 * n) + 16, 0xAA, np.uint8)
    scratch = np.empty(n, np.uint64)
    if fn in ("encode_points",):
        end = getattr(codec, fn)(*columns, scratch, out)
    else:
        end = 5
        for column in columns:   # at an odd offset, after bytes the encoder must keep
            end = getattr(codec, fn)(column, scratch, out, end)
    return out[:end].tobytes()


@pytest.mark.parametrize("n,step_kind", list(_cases()))
def test_columns_are_the_kernels_bytes(n, step_kind):
    for steps, times, values, value_kind in _columns(n, step_kind):
        for fn, columns in (("encode_int_dod", (steps, times)), ("encode_int_delta", (steps, times)),
                            ("encode_float_xor", (values,)), ("encode_points", (steps, times, values))):
            assert _encoded(smallcodec, fn, *columns) == _encoded(kernels, fn, *columns), (fn, value_kind)


@pytest.mark.parametrize("n,step_kind", list(_cases()))
def test_decoders_read_the_kernels_bytes(n, step_kind):
    for steps, times, values, value_kind in _columns(n, step_kind):
        raw = np.frombuffer(_encoded(kernels, "encode_points", steps, times, values), np.uint8)
        got = np.full(n, 99, np.int64), np.full(n, 99, np.int64), np.full(n, 9.5)
        assert smallcodec.decode_points(raw, None, *got) == len(raw)
        assert got[0].tolist() == steps.tolist() and got[1].tolist() == times.tolist()
        assert bits(got[2]).tolist() == bits(values).tolist(), value_kind
        for encode, decode, column in (("encode_int_dod", "decode_int_dod", times),
                                       ("encode_int_delta", "decode_int_delta", steps),
                                       ("encode_float_xor", "decode_float_xor", values)):
            raw = np.frombuffer(_encoded(kernels, encode, column), np.uint8)
            mine, theirs = np.empty_like(column), np.empty_like(column)
            end = getattr(smallcodec, decode)(raw, 5, None, mine)
            scratch = np.empty(max(n, 1), np.uint64)
            assert end == getattr(kernels, decode)(raw, np.int64(5), scratch, theirs) == len(raw)
            assert mine.view(np.uint64).tolist() == theirs.view(np.uint64).tolist(), (decode, value_kind)


def _stats_bits(stats) -> list[int]:
    return [int(x) if i < 4 or i == 7 else int(np.float64(x).view(np.uint64)) for i, x in enumerate(stats)]


@pytest.mark.parametrize("n,step_kind", list(_cases([n for n in SIZES if n])))
def test_point_stats_are_the_kernels_bit_for_bit(n, step_kind):
    for steps, times, values, value_kind in _columns(n, step_kind):
        mine = smallcodec.point_stats(steps, times, values)
        assert _stats_bits(mine) == _stats_bits(kernels.point_stats(steps, times, values)), value_kind
        assert all(type(x) in (int, float) for x in mine)   # as numba returns them, for struct.pack


def test_point_stats_sum_is_sequential_not_pairwise():
    # 1e16 + 1 + 1 + ... rounds every 1 away when added in order; pairwise sums keep them
    values = np.concatenate(([1e16], np.ones(1000)))
    steps = np.arange(len(values), dtype=np.int64)
    total = smallcodec.point_stats(steps, steps, values)[6]
    assert total == kernels.point_stats(steps, steps, values)[6] == 1e16
    assert float(np.sum(values)) != total


def test_point_stats_ties_and_signs():
    steps = np.array([5, 1, 9, 1, 9, 3], np.int64)
    values = np.array([-0.0, 11.0, 12.0, 13.0, 14.0, 0.0])
    got = smallcodec.point_stats(steps, steps, values)
    assert (got[8], got[9]) == (11.0, 14.0)   # first at the first step 1, last at the last step 9
    assert np.signbit(got[4]) and got[4] == 0.0   # min: -0.0, seen before 0.0
    negative_first = smallcodec.point_stats(steps[:1], steps[:1], np.array([-0.0]))
    assert not np.signbit(negative_first[6])   # the sum starts from 0.0: 0.0 + -0.0 is 0.0
    assert _stats_bits(negative_first) == _stats_bits(kernels.point_stats(steps[:1], steps[:1], np.array([-0.0])))


def test_summary_columns_are_the_kernels_bytes():
    rng = np.random.default_rng(5)
    for n, bins, shared in ((1, 8, False), (3, 64, True), (40, 1, True)):
        steps, times = _ints(rng, "ties", n), _ints(rng, "full_range", n)
        stats_t = np.ascontiguousarray(_floats(rng, "mixed", len(SUMMARY_FIELDS) * n).reshape(-1, n))
        edges = np.linspace(-1, 1, bins + 1) if shared else np.empty(0)
        counts_t = rng.integers(0, 1 << 40, size=(bins, n), dtype=np.int64)
        out = [np.zeros(8 * (n + bins + 1) * (3 + len(SUMMARY_FIELDS) + bins) + 64, np.uint8) for _ in range(2)]
        scratch = np.empty(max(n, len(edges)), np.uint64)
        end = [codec.encode_summaries(steps, times, stats_t, edges, counts_t, scratch, o)
               for codec, o in zip((smallcodec, kernels), out)]
        assert end[0] == end[1] and out[0][:end[0]].tobytes() == out[1][:end[1]].tobytes()
        got = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty_like(stats_t), np.empty_like(edges),
               np.empty_like(counts_t))
        assert smallcodec.decode_summaries(out[0][:end[0]], scratch, *got) == end[0]
        assert got[0].tolist() == steps.tolist() and got[1].tolist() == times.tolist()
        assert bits(got[2]).tolist() == bits(stats_t).tolist() and got[4].tolist() == counts_t.tolist()
        assert got[3].tolist() == edges.tolist()


def test_is_sorted():
    for steps in ([], [3], [1, 1, 2], [2, 1], [INT64_MIN, INT64_MAX], [INT64_MAX, INT64_MIN]):
        steps = np.array(steps, np.int64)
        assert smallcodec.is_sorted(steps) == kernels.is_sorted(steps)


def test_empty_rollup_groups_are_the_kernels():
    # rollup.empty_groups stands in for the kernel _empty where no numba is wanted (page reads)
    from steplog.engine import rollup, rollupkernels

    for n in (0, 1, rollup.PAGE_GROUPS):
        mine, theirs = rollup.empty_groups(n), rollupkernels._empty(n)
        assert [a.dtype for a in mine] == [a.dtype for a in theirs]
        assert [bits(a).tolist() if a.dtype == np.float64 else a.tolist() for a in mine] == \
            [bits(a).tolist() if a.dtype == np.float64 else a.tolist() for a in theirs]


# -- blocks --------------------------------------------------------------------------

def test_blocks_are_the_same_bytes_with_either_codec():
    rng = np.random.default_rng(7)
    encoders = block.BlockEncoder(16, codec=smallcodec), block.BlockEncoder(16, codec=kernels)
    for n in (1, 2, 30, 500, 8192):
        steps, times, values = _ints(rng, "ties", n), _ints(rng, "full_range", n), _floats(rng, "mixed", n)
        data = [e.encode(4, steps, times, values) for e in encoders]
        assert data[0] == data[1]
        counts = np.array([1, n - 1] if n > 1 else [1], np.int64)
        ids = np.arange(len(counts), dtype=np.int64) * 1000 + 3
        packs = [e.encode_pack(ids, counts, steps, times, values) for e in encoders]
        assert packs[0] == packs[1]
        for codec in (smallcodec, kernels):
            decoder = block.BlockDecoder(codec=codec)
            got = decoder.decode(data[0], "seg", 0)
            assert got[0].tolist() == steps.tolist() and bits(got[2]).tolist() == bits(values).tolist()
            pack = decoder.decode_pack(packs[0], "seg", 0)
            assert pack.series_ids.tolist() == ids.tolist() and pack.steps.tolist() == steps.tolist()


def test_summary_blocks_are_the_same_bytes_with_either_codec():
    rng = np.random.default_rng(8)
    for n, bins, edges in ((1, 16, None), (5, 64, np.linspace(0.0, 1.0, 65))):
        stats = rng.normal(size=(n, len(SUMMARY_FIELDS)))
        stats[:, list(SUMMARY_FIELDS).index("count")] = 100
        rows = block.Summaries(_ints(rng, "ties", n), _ints(rng, "arange", n), stats,
                               rng.integers(0, 50, size=(n, bins), dtype=np.int64), edges)
        data = [block.BlockEncoder(16, codec=codec).encode_summaries(6, rows) for codec in (smallcodec, kernels)]
        assert data[0] == data[1]
        got = block.BlockDecoder(codec=smallcodec).decode_summaries(data[0], "seg", 0)
        assert bits(got.stats).tolist() == bits(stats).tolist() and got.counts.tolist() == rows.counts.tolist()
        assert (got.edges is None) == (edges is None)


def _reframed(data: bytes, raw: bytes) -> bytes:
    """``data`` (a scalar block) with its payload replaced by ``raw`` in one zstd part,
    length and checksum made to match (so that only the decoder can see the damage)."""
    frame = zstandard.ZstdCompressor().compress(raw)
    payload = struct.pack("<II", 1, len(frame)) + frame
    head = bytearray(data[:block.HEADER_SIZE])
    struct.pack_into("<II", head, 20, len(payload), len(raw))
    struct.pack_into("<I", head, block.CHECKED_SIZE, zlib.crc32(payload, zlib.crc32(bytes(head[:block.CHECKED_SIZE]))))
    return bytes(head) + payload


@pytest.mark.parametrize("column", [0, 1, 2])
def test_a_column_that_claims_more_planes_than_the_payload_holds_raises(column):
    # regular columns need no planes: 54 bytes, which 8 planes of 20 words overrun
    steps = np.arange(20, dtype=np.int64)
    data = block.BlockEncoder(16, codec=smallcodec).encode(4, steps, steps.copy(), np.ones(20))
    raw = bytearray(_encoded(smallcodec, "encode_points", steps, steps, np.ones(20)))
    assert len(raw) == 3 * smallcodec.COLUMN_HEADER
    raw[column * smallcodec.COLUMN_HEADER + 1] = 0xFF
    with pytest.raises(steplog.CorruptionError):
        block.BlockDecoder(codec=smallcodec).decode(_reframed(data, bytes(raw)), "seg", 0)


def test_a_payload_cut_inside_a_column_header_raises():
    steps = np.arange(5, dtype=np.int64)
    data = block.BlockEncoder(16, codec=smallcodec).encode(4, steps, steps.copy(), np.ones(5))
    raw = _encoded(smallcodec, "encode_points", steps, steps, np.ones(5))
    with pytest.raises(steplog.CorruptionError):
        block.BlockDecoder(codec=smallcodec).decode(_reframed(data, raw[:-10]), "seg", 0)


# -- which codec, and no numba in a short script -------------------------------------

def _child(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_codec_choice_by_size_numba_and_budget():
    out = _child("""
        import sys
        from steplog.engine import block
        print(block.codec_for(block.SMALL_POINTS, 3).__name__.rsplit(".", 1)[1])
        print(block.codec_for(block.SMALL_POINTS + 1, 3).__name__.rsplit(".", 1)[1])
        print(block.codec_for(1, 3).__name__.rsplit(".", 1)[1])   # numba is imported now
    """)
    assert out.split() == ["smallcodec", "kernels", "kernels"]
    out = _child("""
        import sys
        from steplog.engine import block, twins
        small = 0
        while block.codec_for(1, 5).__name__.endswith("smallcodec") and small < 10 ** 5:
            small += 1
        print(small, twins.BUDGET, 5 * (1 + block.COLUMN_CALL_WORDS), "numba" in sys.modules)
    """)
    small, budget, cost, numba = out.split()
    assert int(small) == int(budget) // int(cost) and numba == "True"   # small blocks while the budget lasts
    out = _child("""
        import sys
        from steplog.engine import twins
        print(twins.use_numpy(twins.MAX_WORK + 1), *[twins.use_numpy(twins.MAX_WORK) for _ in range(11)])
        twins.use_kernels()
        print(twins.use_numpy(0), "numba" in sys.modules)
    """)
    # big work, and work past the budget, go to the kernels; after use_kernels all of it
    assert out.split() == ["False"] + ["True"] * 10 + ["False", "False", "False"]


def test_a_short_script_never_imports_numba(tmp_path):
    # the check runs at exit, after steplog's own exit handlers (registered later, run first)
    out = _child(f"""
        import atexit, sys
        atexit.register(lambda: print("numba" in sys.modules))
        import steplog
        store = steplog.open({str(tmp_path / "s")!r})
        run = store.start_run(experiment="e", params={{"lr": 0.1}})
        run.log("loss", 0.5, step=0)
        run.log({{"a": 1.0, "b": 2.0}})
        run.log_batch("lr", steps=range(10_000), values=[0.1] * 10_000)   # with rollups (from 4096 points)
        run.flush()
        store.close()
        store = steplog.open({str(tmp_path / "s")!r})
        store.run(run.id).log("loss", 0.25)   # left to the exit handlers to end and close
    """)
    assert out == "False"
    with steplog.open(tmp_path / "s", mode="r") as store:
        run_id = store.runs().column("id")[0].as_py()
        assert store.read(run_id, "loss").column("value").to_pylist() == [0.5, 0.25]
        assert store.read(run_id, "lr").num_rows == 10_000
