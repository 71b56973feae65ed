"""The block codec: numba column kernels and block framing, checked against numpy."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

import steplog
from steplog.engine import block, kernels

from _helpers import INT64_MAX, INT64_MIN, SPECIAL_BITS, SPECIAL_VALUES, bits, fbits

# The header layout as docs/FORMAT.md gives it (parsed here independently of block.py).
HEADER_FORMAT = struct.Struct("<4sHBBQIIII4q5dII")
HEADER_FIELDS = ("magic", "version", "kind", "codec", "series_id", "count", "payload_len", "raw_len",
                 "nan_count", "step_min", "step_max", "time_min", "time_max", "value_min", "value_max",
                 "value_sum", "first_value", "last_value", "aux", "checksum")
HEADER_SIZE = 112
CHECKED_SIZE = 108   # the checksum (last 4 header bytes) covers header bytes [0, 108) and the payload
COLUMN_HEADER = 18


def parse_header(data: bytes) -> dict:
    assert HEADER_FORMAT.size == HEADER_SIZE
    return dict(zip(HEADER_FIELDS, HEADER_FORMAT.unpack_from(data)))


# -- data ----------------------------------------------------------------------------

def _int_column(rng, kind: str, n: int) -> np.ndarray:
    if kind == "arange":
        return np.arange(n, dtype=np.int64) * 10 + 1000
    if kind == "negative":
        return -np.arange(n, dtype=np.int64) * 7 - 1
    if kind == "shuffled":
        return rng.permutation(np.arange(-n, n, dtype=np.int64))[:n]
    if kind == "duplicates":
        return rng.integers(-3, 3, size=n, dtype=np.int64)
    if kind == "full_range":
        return rng.integers(INT64_MIN, INT64_MAX, size=n, dtype=np.int64, endpoint=True)
    if kind == "extremes":
        pool = np.array([INT64_MIN, INT64_MIN + 1, INT64_MIN + 2, -1, 0, 1, INT64_MAX - 2, INT64_MAX - 1,
                         INT64_MAX], dtype=np.int64)
        return rng.choice(pool, size=n)
    if kind == "alternating":  # every delta and delta-of-delta wraps around int64
        return np.where(np.arange(n) % 2 == 0, INT64_MIN, INT64_MAX).astype(np.int64)
    if kind == "near_max":
        return INT64_MAX - rng.integers(0, 1000, size=n, dtype=np.int64)
    if kind == "near_min":
        return INT64_MIN + rng.integers(0, 1000, size=n, dtype=np.int64)
    if kind == "constant":
        return np.full(n, -42, dtype=np.int64)
    raise AssertionError(kind)


def _float_column(rng, kind: str, n: int) -> np.ndarray:
    if kind == "normal":
        return rng.normal(0.0, 1000.0, size=n)
    if kind == "specials":
        return rng.choice(SPECIAL_VALUES, size=n)
    if kind == "mixed":
        values = rng.normal(0.0, 1.0, size=n)
        mask = rng.random(n) < 0.3
        values[mask] = rng.choice(SPECIAL_VALUES, size=int(mask.sum()))
        return values
    if kind == "random_bits":
        return rng.integers(0, 2**64, size=n, dtype=np.uint64).view(np.float64)
    if kind == "constant":
        return np.full(n, 3.25)
    if kind == "constant_nan":
        return np.full(n, SPECIAL_VALUES[3])
    if kind == "negative_zero":
        return np.full(n, -0.0)
    raise AssertionError(kind)


INT_KINDS = ["arange", "negative", "shuffled", "duplicates", "full_range", "extremes", "alternating",
             "near_max", "near_min", "constant"]
FLOAT_KINDS = ["normal", "specials", "mixed", "random_bits", "constant", "constant_nan", "negative_zero"]
SIZES = [0, 1, 2, 3, 17, 500]


def _cases():
    for n in SIZES:
        for i, step_kind in enumerate(INT_KINDS):
            time_kind = INT_KINDS[(i + 3) % len(INT_KINDS)]
            value_kind = FLOAT_KINDS[i % len(FLOAT_KINDS)]
            yield pytest.param(n, step_kind, time_kind, value_kind,
                               id=f"n{n}-{step_kind}-{time_kind}-{value_kind}")
    for value_kind in FLOAT_KINDS:
        yield pytest.param(64, "shuffled", "arange", value_kind, id=f"n64-values-{value_kind}")


def _make(n, step_kind, time_kind, value_kind, seed=0):
    rng = np.random.default_rng([seed, n, INT_KINDS.index(step_kind), FLOAT_KINDS.index(value_kind)])
    steps = _int_column(rng, step_kind, n)
    times = _int_column(rng, time_kind, n)
    values = _float_column(rng, value_kind, n)
    return np.ascontiguousarray(steps), np.ascontiguousarray(times), np.ascontiguousarray(values)


# -- kernels -------------------------------------------------------------------------

def _kernel_round_trip(steps, times, values):
    n = len(steps)
    scratch = np.empty(max(n, 1), np.uint64)
    out = np.full(3 * (COLUMN_HEADER + 8 * n), 0xAA, np.uint8)
    raw_len = kernels.encode_points(steps, times, values, scratch, out)
    assert 3 * COLUMN_HEADER <= raw_len <= len(out)
    raw = out[:raw_len].copy()
    got_steps = np.full(n, 123, np.int64)
    got_times = np.full(n, 456, np.int64)
    got_values = np.full(n, 7.5)
    end = kernels.decode_points(raw, np.empty(max(n, 1), np.uint64), got_steps, got_times, got_values)
    assert end == raw_len
    return raw, got_steps, got_times, got_values


@pytest.mark.parametrize("n,step_kind,time_kind,value_kind", list(_cases()))
def test_kernels_round_trip(n, step_kind, time_kind, value_kind):
    steps, times, values = _make(n, step_kind, time_kind, value_kind)
    _, got_steps, got_times, got_values = _kernel_round_trip(steps, times, values)
    assert got_steps.tolist() == steps.tolist()
    assert got_times.tolist() == times.tolist()
    assert bits(got_values).tolist() == bits(values).tolist()


def test_kernels_round_trip_every_special_value_pair():
    # every ordered pair of special bit patterns next to each other (XOR of all pairs)
    a, b = np.meshgrid(SPECIAL_BITS, SPECIAL_BITS)
    values = np.stack([a.ravel(), b.ravel()], axis=1).ravel().view(np.float64).copy()
    steps = np.arange(len(values), dtype=np.int64)
    _, _, _, got_values = _kernel_round_trip(steps, steps.copy(), values)
    assert bits(got_values).tolist() == bits(values).tolist()


def test_kernels_wrapping_deltas_round_trip():
    # delta0 and later deltas of these steps overflow int64; the codec must wrap exactly
    steps = np.array([INT64_MAX, INT64_MIN, INT64_MAX, 0, INT64_MIN, -1, INT64_MAX, INT64_MAX,
                      INT64_MIN + 1, INT64_MAX - 1], dtype=np.int64)
    times = steps[::-1].copy()
    values = np.arange(len(steps), dtype=np.float64)
    _, got_steps, got_times, _ = _kernel_round_trip(steps, times, values)
    assert got_steps.tolist() == steps.tolist()
    assert got_times.tolist() == times.tolist()


@pytest.mark.parametrize("n", [1, 2, 3, 100])
def test_kernels_regular_columns_need_no_planes(n):
    # arithmetic steps and times have all delta-of-deltas zero, a constant value column
    # has all XOR words zero: per FORMAT.md no byte plane is written for any of them
    steps = np.arange(n, dtype=np.int64) * 5 - 77
    times = np.arange(n, dtype=np.int64) * 1_000_000 + 1_700_000_000_000_000_000
    values = np.full(n, -1.5)
    raw, got_steps, got_times, got_values = _kernel_round_trip(steps, times, values)
    assert len(raw) == 3 * COLUMN_HEADER
    assert [raw[0], raw[COLUMN_HEADER], raw[2 * COLUMN_HEADER]] == [1, 1, 2]  # DOD, DOD, XOR
    assert [raw[1], raw[COLUMN_HEADER + 1], raw[2 * COLUMN_HEADER + 1]] == [0, 0, 0]
    assert got_steps.tolist() == steps.tolist()
    assert got_times.tolist() == times.tolist()
    assert bits(got_values).tolist() == bits(values).tolist()


def test_kernels_column_header_fields():
    steps = np.array([10, 13, 20, 20], dtype=np.int64)
    times = np.array([5, 5, 5, 6], dtype=np.int64)
    values = np.array([2.0, 2.0, -0.0, 1.0])
    raw, *_ = _kernel_round_trip(steps, times, values)
    mode, mask, base, delta0 = struct.unpack_from("<BBqq", raw, 0)
    assert (mode, base, delta0) == (1, 10, 3)
    # dod words: 0, 0, zigzag(7-3)=8, zigzag(0-7)=13: only byte plane 0 is needed
    assert mask == 0b1
    assert raw[COLUMN_HEADER:COLUMN_HEADER + 4].tolist() == [0, 0, 8, 13]


# -- blocks --------------------------------------------------------------------------

def _expected_stats(steps, times, values):
    n = len(steps)
    nan = np.isnan(values)
    finite = values[~nan]
    stats = {"count": n, "nan_count": int(nan.sum()),
             "step_min": int(steps.min()), "step_max": int(steps.max()),
             "time_min": int(times.min()), "time_max": int(times.max())}
    first = int(np.argmin(steps))                      # earliest written at the smallest step
    last = n - 1 - int(np.argmax(steps[::-1]))         # latest written at the largest step
    stats["first_bits"] = int(bits(values)[first])
    stats["last_bits"] = int(bits(values)[last])
    return stats, finite


def _check_header(header: dict, steps, times, values, series_id):
    stats, finite = _expected_stats(steps, times, values)
    assert header["magic"] == b"SLBK"
    assert (header["version"], header["kind"], header["codec"]) == (1, 1, 2)
    assert header["series_id"] == series_id
    assert header["aux"] == 0   # kind-specific; 0 for scalar blocks
    for key in ("count", "nan_count", "step_min", "step_max", "time_min", "time_max"):
        assert header[key] == stats[key], key
    assert fbits(header["first_value"]) == stats["first_bits"]
    assert fbits(header["last_value"]) == stats["last_bits"]
    if len(finite) == 0:
        assert np.isnan(header["value_min"]) and np.isnan(header["value_max"])
        assert header["value_sum"] == 0.0
    else:
        assert header["value_min"] == finite.min()
        assert header["value_max"] == finite.max()
        with np.errstate(invalid="ignore", over="ignore"):
            want_sum = float(np.sum(finite))
            scale = float(np.sum(np.abs(finite)))
        if np.isfinite(scale):
            assert header["value_sum"] == pytest.approx(want_sum, rel=1e-9, abs=scale * 1e-12)
        elif np.isnan(want_sum):  # +inf and -inf both present
            assert np.isnan(header["value_sum"])
        else:
            assert header["value_sum"] == want_sum


def _decode(data: bytes, n: int, path="seg", offset=0):
    steps = np.full(n, 99, np.int64)
    times = np.full(n, 99, np.int64)
    values = np.full(n, 9.5)
    header = block.BlockDecoder().decode_into(data, path, offset, steps, times, values)
    return header, steps, times, values


BLOCK_CASES = [c for c in _cases() if c.values[0] > 0]
# stat-friendly values: finite normal data with NaN, inf and -0.0 sprinkled in (random
# bit patterns and the largest finite values make a sum that depends on summation order)
STAT_KINDS = ["normal", "mixed", "constant", "constant_nan", "negative_zero"]


@pytest.mark.parametrize("n,step_kind,time_kind,value_kind", BLOCK_CASES)
def test_block_round_trip(n, step_kind, time_kind, value_kind):
    steps, times, values = _make(n, step_kind, time_kind, value_kind, seed=1)
    data = block.BlockEncoder(16).encode(77, steps, times, values)
    header = parse_header(data)
    assert len(data) == HEADER_SIZE + header["payload_len"]
    decoded_header, got_steps, got_times, got_values = _decode(data, n)
    assert decoded_header.count == n
    assert got_steps.tolist() == steps.tolist()
    assert got_times.tolist() == times.tolist()
    assert bits(got_values).tolist() == bits(values).tolist()


@pytest.mark.parametrize("n", [1, 2, 3, 17, 500])
@pytest.mark.parametrize("value_kind", STAT_KINDS)
@pytest.mark.parametrize("step_kind", ["shuffled", "duplicates", "extremes", "constant"])
def test_block_header_stats(n, value_kind, step_kind):
    steps, times, values = _make(n, step_kind, "full_range", value_kind, seed=2)
    if value_kind == "mixed" and n >= 17:
        values[:2] = [np.inf, -np.inf]  # sum of +inf and -inf is NaN
    data = block.BlockEncoder(8).encode(5, steps, times, values)
    _check_header(parse_header(data), steps, times, values, series_id=5)


def test_block_header_first_last_ties():
    steps = np.array([5, 1, 9, 1, 9, 3], dtype=np.int64)
    values = np.array([10.0, 11.0, 12.0, 13.0, 14.0, 15.0])
    header = parse_header(block.BlockEncoder(8).encode(1, steps, steps.copy(), values))
    assert header["first_value"] == 11.0   # step 1, written first
    assert header["last_value"] == 14.0    # step 9, written last
    assert (header["value_min"], header["value_max"], header["value_sum"]) == (10.0, 15.0, 75.0)


def test_block_header_first_last_keep_nan_bits():
    steps = np.array([3, 0, 7], dtype=np.int64)
    values = SPECIAL_BITS[[0, 2, 3]].view(np.float64).copy()
    header = parse_header(block.BlockEncoder(8).encode(1, steps, steps.copy(), values))
    assert fbits(header["first_value"]) == int(SPECIAL_BITS[2])
    assert fbits(header["last_value"]) == int(SPECIAL_BITS[3])
    assert header["nan_count"] == 3


def test_block_checksum_is_crc32_of_header_and_payload():
    steps, times, values = _make(40, "shuffled", "arange", "mixed", seed=3)
    data = block.BlockEncoder(64).encode(9, steps, times, values)
    header = parse_header(data)
    assert header["checksum"] == zlib.crc32(data[HEADER_SIZE:], zlib.crc32(data[:CHECKED_SIZE]))


def test_encoder_grows_past_its_initial_size():
    encoder = block.BlockEncoder(4)
    for n in (3, 100, 5, 1000):
        steps, times, values = _make(n, "full_range", "shuffled", "random_bits", seed=n)
        _, got_steps, got_times, got_values = _decode(encoder.encode(1, steps, times, values), n)
        assert got_steps.tolist() == steps.tolist()
        assert got_times.tolist() == times.tolist()
        assert bits(got_values).tolist() == bits(values).tolist()


def test_empty_block_does_not_depend_on_memory_outside_its_columns():
    # FORMAT.md: a block holds count >= 1 points. An encoder given no points must either
    # refuse, or write a block that does not depend on memory past the (empty) columns.
    def encode_empty(fill):
        backing_i = np.full(8, fill, np.int64)
        backing_f = np.full(8, float(fill))
        try:
            return block.BlockEncoder(8).encode(1, backing_i[:0], backing_i[1:1], backing_f[:0])
        except (steplog.StepLogError, ValueError):
            return None

    first, second = encode_empty(123456789), encode_empty(-987654321)
    assert first == second


# -- corruption ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_block():
    steps, times, values = _make(200, "shuffled", "arange", "mixed", seed=4)
    return block.BlockEncoder(256).encode(3, steps, times, values), (steps, times, values)


def _flip(data: bytes, position: int, mask: int = 0xFF) -> bytes:
    corrupted = bytearray(data)
    corrupted[position] ^= mask
    return bytes(corrupted)


def test_good_block_decodes(good_block):
    data, (steps, times, values) = good_block
    _, got_steps, got_times, got_values = _decode(data, len(steps))
    assert got_steps.tolist() == steps.tolist()
    assert bits(got_values).tolist() == bits(values).tolist()


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_flipped_header_byte_raises(good_block, mask):
    data, (steps, _, _) = good_block
    for position in range(HEADER_SIZE):
        corrupted = _flip(data, position, mask)
        with pytest.raises(steplog.CorruptionError) as info:
            _decode(corrupted, max(len(steps), 2**16), path="some.seg", offset=4096)
        assert info.value.path == "some.seg", position
        assert info.value.offset == 4096, position


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_flipped_payload_byte_raises(good_block, mask):
    data, (steps, _, _) = good_block
    for position in range(HEADER_SIZE, len(data)):
        with pytest.raises(steplog.CorruptionError):
            _decode(_flip(data, position, mask), len(steps))


def test_cut_or_extended_block_raises(good_block):
    data, (steps, _, _) = good_block
    for bad in (data[:-1], data[:HEADER_SIZE], data[:50], b"", data + b"\0"):
        with pytest.raises(steplog.CorruptionError):
            _decode(bad, len(steps))


def test_consistent_but_wrong_payload_raises(good_block):
    # a payload replaced together with a matching checksum still has to decode to
    # exactly raw_len bytes that hold the columns
    data, (steps, _, _) = good_block
    header = parse_header(data)
    import zstandard

    # FORMAT.md: u32 part count, a u32 per part (bit 31: stored as is), then the parts
    payload = data[HEADER_SIZE:]
    count = struct.unpack_from("<I", payload)[0]
    pos, raw = 4 + 4 * count, b""
    for entry in struct.unpack_from(f"<{count}I", payload, 4):
        part = payload[pos:pos + (entry & 0x7FFFFFFF)]
        pos += len(part)
        raw += part if entry >> 31 else zstandard.ZstdDecompressor().decompress(part)
    assert len(raw) == header["raw_len"]
    frame = zstandard.ZstdCompressor().compress(raw[:-1])  # one byte short
    payload = struct.pack("<II", 1, len(frame)) + frame
    head = bytearray(data[:HEADER_SIZE])
    struct.pack_into("<I", head, 20, len(payload))
    struct.pack_into("<I", head, CHECKED_SIZE, zlib.crc32(payload, zlib.crc32(bytes(head[:CHECKED_SIZE]))))
    with pytest.raises(steplog.CorruptionError):
        _decode(bytes(head) + payload, len(steps))
