"""Block framing: a fixed header with stats and a checksum, then a zstd payload.

A block is the unit that is written, indexed, checksummed and decoded. The index entry
of a block embeds a verbatim copy of its header, so block selection and aggregate
queries never touch the segment file. Layout in docs/FORMAT.md, "Block".
"""

from __future__ import annotations

import json
import struct
from collections import OrderedDict
import zlib
from typing import NamedTuple

import numpy as np
import zstandard

from . import smallcodec, twins
from .errors import CorruptionError
from .smallcodec import COLUMN_HEADER

BLOCK_MAGIC = b"SLBK"
BLOCK_VERSION = 1
KIND_SCALAR = 1           # step, time, value points
KIND_SUMMARY = 2          # step, time, tensor summary (statistics and histogram)
KIND_RECORD = 3           # index records (experiments, runs, series), from which repair rebuilds the index
KIND_PACK = 4             # scalar points of several small series (members), one after another
CODEC_PLANE_FRAMES = 2    # kernels.encode_points / encode_summaries, then a zstd frame per byte plane
CODEC_JSON_LINES = 3      # one zstd frame of JSON objects, one a line
KIND_CODECS = {KIND_SCALAR: CODEC_PLANE_FRAMES, KIND_SUMMARY: CODEC_PLANE_FRAMES, KIND_RECORD: CODEC_JSON_LINES,
               KIND_PACK: CODEC_PLANE_FRAMES}
PACK_CACHE = 16           # decoded packs a BlockDecoder keeps
MEMBER_MAGIC = b"SLPM"    # BlockRef.header_bytes of a pack member (index.member_header_bytes)
MEMBER_MARK = struct.Struct("<4sQII")   # MEMBER_MAGIC, series_id, member index, count
PART_RAW = 1 << 31        # part table: this part is stored as it is, not as a zstd frame
MIN_PART = 4096           # bytes of byte planes a zstd frame holds at least
AUX_SHARED_EDGES = 1 << 24   # summary blocks: the block stores one edges array for all rows
AUX_BINS_MASK = (1 << 24) - 1

# magic, version, kind, codec, series_id, count, payload_len, raw_len, nan_count,
# step_min, step_max, time_min, time_max, value_min, value_max, value_sum,
# first_value, last_value, aux, checksum
HEADER = struct.Struct("<4sHBBQIIII4q5dII")
HEADER_SIZE = HEADER.size          # 112
CHECKED_SIZE = HEADER_SIZE - 4     # the checksum covers header bytes [0, 108) and the payload
ZSTD_LEVEL = 1
SMALL_POINTS = 8192       # blocks of at most this many points (rows) may use the numpy codec
COLUMN_CALL_WORDS = 1000  # the numpy codec's extra cost of a call on a column, in words


def codec_for(points: int, columns: int):
    """The codec module (engine.kernels or engine.smallcodec, the same bytes) for a
    block of ``points`` points (rows) in ``columns`` columns. The numpy codec costs,
    over the kernels, some 40 us a column and 30 ns a word (a block of 8192 points:
    0.8 ms more to encode, 0.1 ms to decode); engine.twins decides while it pays."""
    if points <= SMALL_POINTS and twins.use_numpy(columns * (points + COLUMN_CALL_WORDS)):
        return smallcodec
    from . import kernels

    return kernels


class BlockHeader(NamedTuple):
    magic: bytes
    version: int
    kind: int
    codec: int
    series_id: int
    count: int
    payload_len: int
    raw_len: int
    nan_count: int
    step_min: int
    step_max: int
    time_min: int
    time_max: int
    value_min: float
    value_max: float
    value_sum: float
    first_value: float
    last_value: float
    aux: int          # kind-specific: 0 for scalar blocks; bins and flags for summary blocks
    checksum: int

    @property
    def length(self) -> int:
        """Bytes of the whole block on disk."""
        return HEADER_SIZE + self.payload_len


def unpack_header(buf, path: str = "", offset: int = 0) -> BlockHeader:
    if len(buf) < HEADER_SIZE:
        raise CorruptionError(path, offset, "block header cut short")
    header = BlockHeader._make(HEADER.unpack_from(buf))
    if header.magic != BLOCK_MAGIC:
        raise CorruptionError(path, offset, "bad block magic")
    if header.version != BLOCK_VERSION or KIND_CODECS.get(header.kind) != header.codec:
        raise CorruptionError(path, offset, "unknown block version, kind or codec")
    return header


class Summaries(NamedTuple):
    """Rows of tensor summaries: statistics (rows x len(SUMMARY_FIELDS)), histogram
    counts (rows x bins) and edges: one shared (bins + 1) array, or None when each
    row's edges are spread over its own [min, max] (``derived_edges``)."""

    steps: np.ndarray
    times: np.ndarray
    stats: np.ndarray
    counts: np.ndarray
    edges: np.ndarray | None


class Pack(NamedTuple):
    """A decoded pack block: member j is series ``series_ids[j]`` and holds points
    ``starts[j]:starts[j + 1]`` of the point columns, in its write order."""

    series_ids: np.ndarray
    starts: np.ndarray
    steps: np.ndarray
    times: np.ndarray
    values: np.ndarray

    def member(self, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = self.starts[j], self.starts[j + 1]
        return self.steps[lo:hi], self.times[lo:hi], self.values[lo:hi]


class BlockEncoder:
    """Turns columns into block bytes. One per encoding thread (not thread-safe)."""

    def __init__(self, max_points: int, codec=None):
        self._codec = codec   # a codec module for every block; None: codec_for each block's size
        self._scratch = np.empty(max_points, np.uint64)
        self._out = np.empty(0, np.uint8)
        self._zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL)

    def _buffers(self, rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
        if rows > len(self._scratch):
            self._scratch = np.empty(rows, np.uint64)
        size = columns * (COLUMN_HEADER + 8 * rows)
        if size > len(self._out):
            self._out = np.empty(size, np.uint8)
        return self._scratch, self._out

    def _kernels(self, points: int, columns: int):
        return self._codec or codec_for(points, columns)

    def encode(self, series_id: int, steps: np.ndarray, times: np.ndarray, values: np.ndarray) -> bytes:
        if not len(steps):
            raise ValueError("a block holds at least one point")
        k = self._kernels(len(steps), 3)
        scratch, out = self._buffers(len(steps), 3)
        raw_len = k.encode_points(steps, times, values, scratch, out)
        stats = k.point_stats(steps, times, values)
        n = len(steps)
        return self._frame(KIND_SCALAR, series_id, n, out[:raw_len], [n, n, n], stats, 0)

    def encode_pack(self, series_ids: np.ndarray, counts: np.ndarray, steps: np.ndarray, times: np.ndarray,
                    values: np.ndarray) -> bytes:
        """One block of the points of several series: member j is ``series_ids[j]`` with
        the next ``counts[j]`` points of the columns. A small series thus costs a few
        bytes of a shared block, not a block (header, part table) of its own."""
        m, n = len(series_ids), len(steps)
        if not m or not n or int(counts.sum()) != n or counts.min() < 1:
            raise ValueError("a pack holds at least one member, each of at least one point")
        k = self._kernels(max(m, n), 5)
        scratch, out = self._buffers(max(m, n), 5)
        pos = k.encode_int_delta(series_ids, scratch, out, 0)
        pos = k.encode_int_delta(counts, scratch, out, pos)
        pos = k.encode_int_dod(steps, scratch, out, pos)
        pos = k.encode_int_dod(times, scratch, out, pos)
        raw_len = k.encode_float_xor(values, scratch, out, pos)
        stats = k.point_stats(steps, times, values)
        return self._frame(KIND_PACK, 0, n, out[:raw_len], [m, m, n, n, n], stats, m)

    def encode_summaries(self, series_id: int, rows: Summaries) -> bytes:
        """One block of summary rows that all have the same bins (and shared edges, if any)."""
        from .summary import SUMMARY_FIELDS

        n, bins = rows.counts.shape
        if not n:
            raise ValueError("a block holds at least one row")
        edges = rows.edges if rows.edges is not None else np.empty(0)
        columns = 3 + len(SUMMARY_FIELDS) + bins
        k = self._kernels(max(n, len(edges)), columns)
        scratch, out = self._buffers(max(n, len(edges)), columns)
        raw_len = k.encode_summaries(rows.steps, rows.times, np.ascontiguousarray(rows.stats.T), edges,
                                     np.ascontiguousarray(rows.counts.T), scratch, out)
        field = {name: rows.stats[:, i] for i, name in enumerate(SUMMARY_FIELDS)}
        smin, smax, tmin, tmax, _, _, _, _, first, last = k.point_stats(rows.steps, rows.times, field["mean"])
        finite = field["count"] - field["nan_count"] - field["inf_count"]
        with np.errstate(invalid="ignore"):
            stats = (smin, smax, tmin, tmax, _nan_reduce(np.nanmin, field["min"]),
                     _nan_reduce(np.nanmax, field["max"]), float(np.nansum(field["mean"] * finite)),
                     int(np.count_nonzero(field["nan_count"])), first, last)
        aux = bins | (AUX_SHARED_EDGES if rows.edges is not None else 0)
        columns = [n, n] + [n] * len(SUMMARY_FIELDS) + [len(edges)] + [n] * bins
        return self._frame(KIND_SUMMARY, series_id, n, out[:raw_len], columns, stats, aux)

    def _frame(self, kind: int, series_id: int, count: int, raw: np.ndarray, columns: list[int], stats: tuple,
               aux: int) -> bytes:
        return _framed(kind, series_id, count, self._pack(raw, columns), len(raw), stats, aux)

    def _pack(self, raw: np.ndarray, columns: list[int]) -> bytes:
        """The payload: a part table, then the parts, each a zstd frame (or the bytes as
        they are when zstd would not shrink them). A part is a run of whole byte planes
        of at least MIN_PART bytes, so that a long column's planes each get their own
        entropy tables (the planes of one column differ a lot)."""
        table, chunks = [], []
        for start, end in _parts(raw, columns):
            data = raw[start:end]
            frame = self._zstd.compress(data)
            if len(frame) < end - start:
                table.append(len(frame))
                chunks.append(frame)
            else:
                table.append(PART_RAW | (end - start))
                chunks.append(data.tobytes())
        return struct.pack("<I", len(table)) + np.array(table, "<u4").tobytes() + b"".join(chunks)


def _framed(kind: int, series_id: int, count: int, payload: bytes, raw_len: int, stats: tuple, aux: int) -> bytes:
    """A whole block: header (with its checksum) and payload."""
    smin, smax, tmin, tmax, vmin, vmax, vsum, nans, first, last = stats
    head = bytearray(HEADER_SIZE)
    HEADER.pack_into(head, 0, BLOCK_MAGIC, BLOCK_VERSION, kind, KIND_CODECS[kind], series_id, count,
                     len(payload), raw_len, nans, smin, smax, tmin, tmax, vmin, vmax, vsum, first, last, aux, 0)
    checksum = zlib.crc32(payload, zlib.crc32(memoryview(head)[:CHECKED_SIZE]))
    struct.pack_into("<I", head, CHECKED_SIZE, checksum)
    return bytes(head) + payload


_RECORD_JSON = json.JSONEncoder(allow_nan=True, separators=(",", ":")).encode


def encode_records(records, time_ns: int) -> bytes:
    """A record block: ``records`` (dicts, any iterable: a generator keeps no list of
    100,000 dicts alive) as JSON lines in one zstd frame."""
    lines = [_RECORD_JSON(r) for r in records]
    raw = ("\n".join(lines) + "\n").encode() if lines else b""
    payload = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
    nan = float("nan")
    return _framed(KIND_RECORD, 0, len(lines), payload, len(raw),
                   (0, 0, time_ns, time_ns, nan, nan, 0.0, 0, nan, nan), 0)


def _parts(raw: np.ndarray, columns: list[int]) -> list[tuple[int, int]]:
    """(start, end) of the parts of an encoded payload whose columns hold ``columns``
    entries each: cut after a byte plane once the part holds MIN_PART bytes."""
    parts, start, pos = [], 0, 0
    for entries in columns:
        planes = bin(int(raw[pos + 1])).count("1")
        pos += COLUMN_HEADER
        for _ in range(planes):
            pos += entries
            if pos - start >= MIN_PART:
                parts.append((start, pos))
                start = pos
    if pos != len(raw):
        raise ValueError(f"columns cover {pos} of {len(raw)} encoded bytes")
    if pos > start:
        parts.append((start, pos))
    return parts


def _nan_reduce(fn, values: np.ndarray) -> float:
    return float(fn(values)) if np.any(~np.isnan(values)) else float("nan")


class BlockDecoder:
    """Turns block bytes back into columns, checking everything on the way."""

    def __init__(self, codec=None):
        self._codec = codec   # a codec module for every block; None: codec_for each block's size
        self._zstd = zstandard.ZstdDecompressor()
        self._decoders = {KIND_SCALAR: self._decode_points, KIND_SUMMARY: self.decode_summaries,
                          KIND_RECORD: self.decode_records, KIND_PACK: self.decode_pack}
        # packs decoded lately, by (checksum, length): reads of many small series decode each pack once
        self._packs: "OrderedDict[tuple[int, int], tuple[bytes, Pack]]" = OrderedDict()

    def decode(self, block, path: str, offset: int, expected_header: bytes | None = None,
               kind: int | None = None):
        """Check any block and decode it by its kind (``kind`` given: refuse others):
        scalar -> (steps, times, values); summaries -> Summaries; records -> list of dicts.
        The one place that maps a block kind to its decoder."""
        if expected_header is not None and expected_header[:4] == MEMBER_MAGIC and kind in (None, KIND_SCALAR):
            return self.decode_member(block, path, offset, expected_header)
        header = unpack_header(block, path, offset)
        if kind is not None and header.kind != kind:
            raise CorruptionError(path, offset, f"block of kind {header.kind} where kind {kind} belongs")
        return self._decoders[header.kind](block, path, offset, expected_header)

    def _decode_points(self, block, path: str, offset: int, expected_header: bytes | None):
        n = unpack_header(block, path, offset).count
        out = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.float64))
        self.decode_into(block, path, offset, *out, expected_header)
        return out

    def _checked_raw(self, block, path: str, offset: int, expected_header: bytes | None,
                     kind: int) -> tuple[BlockHeader, np.ndarray]:
        """The header and decompressed payload of one whole block, after every check.
        ``expected_header`` is the index's copy of the header, compared byte for byte."""
        header = unpack_header(block, path, offset)
        if expected_header is not None and block[:HEADER_SIZE] != expected_header:
            raise CorruptionError(path, offset, "block header differs from its index entry")
        if len(block) != header.length:
            raise CorruptionError(path, offset, "block length does not match its header")
        view = memoryview(block)
        checksum = zlib.crc32(view[HEADER_SIZE:], zlib.crc32(view[:CHECKED_SIZE]))
        if checksum != header.checksum:
            raise CorruptionError(path, offset, "block checksum mismatch")
        if header.kind != kind:
            raise CorruptionError(path, offset, f"block of kind {header.kind} where kind {kind} belongs")
        raw = self._unpack(view[HEADER_SIZE:], header.raw_len, path, offset) if header.kind != KIND_RECORD \
            else self._decompress(view[HEADER_SIZE:], header.raw_len, path, offset)
        if len(raw) != header.raw_len:
            raise CorruptionError(path, offset, "payload has the wrong decoded length")
        return header, np.frombuffer(raw, np.uint8)

    def _decompress(self, frame, raw_len: int, path: str, offset: int) -> bytes:
        try:
            return self._zstd.decompress(frame, max_output_size=raw_len)
        except zstandard.ZstdError as exc:
            raise CorruptionError(path, offset, f"payload does not decompress: {exc}") from None

    def decode_records(self, block, path: str, offset: int, expected_header: bytes | None = None) -> list[dict]:
        header, raw = self._checked_raw(block, path, offset, expected_header, KIND_RECORD)
        try:
            records = [json.loads(line) for line in raw.tobytes().splitlines()]
        except ValueError as exc:
            raise CorruptionError(path, offset, f"record block holds bad JSON: {exc}") from None
        if len(records) != header.count or not all(isinstance(r, dict) for r in records):
            raise CorruptionError(path, offset, "record block does not hold its count of records")
        return records

    def _unpack(self, payload: memoryview, raw_len: int, path: str, offset: int) -> bytearray:
        """Inverse of BlockEncoder._pack."""
        if len(payload) < 4:
            raise CorruptionError(path, offset, "payload part table cut short")
        count = struct.unpack_from("<I", payload)[0]
        pos = 4 + 4 * count
        if pos > len(payload):
            raise CorruptionError(path, offset, "payload part table runs past the block")
        raw = bytearray()
        for entry in np.frombuffer(payload[4:pos], "<u4").tolist():
            length = entry & ~PART_RAW
            part = payload[pos:pos + length]
            pos += length
            if pos > len(payload):
                raise CorruptionError(path, offset, "payload part runs past the block")
            try:
                raw += part if entry & PART_RAW else self._zstd.decompress(part, max_output_size=raw_len)
            except zstandard.ZstdError as exc:
                raise CorruptionError(path, offset, f"payload does not decompress: {exc}") from None
            if len(raw) > raw_len:
                raise CorruptionError(path, offset, "payload decodes to more than its length")
        return raw

    def decode_pack(self, block, path: str, offset: int, expected_header: bytes | None = None) -> Pack:
        """Check a pack block and decode its members. The last PACK_CACHE packs decoded
        are kept (the same bytes give the same pack), so reading many small series
        decodes each pack once."""
        key = (HEADER.unpack_from(block)[-1], len(block)) if len(block) >= HEADER_SIZE else None
        cached = self._packs.get(key)
        if cached is not None and cached[0] == block:
            self._packs.move_to_end(key)
            return cached[1]
        header, raw = self._checked_raw(block, path, offset, expected_header, KIND_PACK)
        m, n = header.aux, header.count
        k = self._kernels(max(m, n), 5)
        scratch = np.empty(max(m, n), np.uint64)
        ids, counts = np.empty(m, np.int64), np.empty(m, np.int64)
        pack = Pack(ids, np.zeros(m + 1, np.int64), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n))
        pos = k.decode_int_delta(raw, 0, scratch, ids)
        pos = k.decode_int_delta(raw, pos, scratch, counts)
        if counts.min(initial=1) < 1 or int(counts.sum()) != n:
            raise CorruptionError(path, offset, "pack member counts do not add up to its count")
        pos = k.decode_int_dod(raw, pos, scratch, pack.steps)
        pos = k.decode_int_dod(raw, pos, scratch, pack.times)
        end = k.decode_float_xor(raw, pos, scratch, pack.values)
        if end != header.raw_len:
            raise CorruptionError(path, offset, "payload columns do not add up to its length")
        np.cumsum(counts, out=pack.starts[1:])
        self._packs[key] = (bytes(block), pack)
        if len(self._packs) > PACK_CACHE:
            self._packs.popitem(last=False)
        return pack

    def decode_member(self, block, path: str, offset: int, mark: bytes) -> tuple[np.ndarray, ...]:
        """The points of one member of a pack, ``mark`` its index reference
        (MEMBER_MARK: the series and member it names must be those of the pack)."""
        if len(mark) != MEMBER_MARK.size:
            raise CorruptionError(path, offset, "pack member reference of the wrong size")
        _, series_id, j, count = MEMBER_MARK.unpack(mark)
        pack = self.decode_pack(block, path, offset)
        if j >= len(pack.series_ids) or pack.series_ids[j] != series_id \
                or pack.starts[j + 1] - pack.starts[j] != count:
            raise CorruptionError(path, offset, f"pack member {j} is not the one its index entry names")
        return pack.member(j)

    def decode_into(self, block, path: str, offset: int, steps, times, values,
                    expected_header: bytes | None = None) -> BlockHeader | None:
        """Check a scalar block (bytes of exactly one block) and decode its points into
        the given arrays, which must have room for ``header.count`` points. A pack
        member (``expected_header`` a MEMBER_MARK) is decoded from its pack."""
        if expected_header is not None and expected_header[:4] == MEMBER_MAGIC:
            member = self.decode_member(block, path, offset, expected_header)
            n = len(member[0])
            steps[:n], times[:n], values[:n] = member
            return None
        header, raw = self._checked_raw(block, path, offset, expected_header, KIND_SCALAR)
        n = header.count
        end = self._kernels(n, 3).decode_points(raw, np.empty(n, np.uint64), steps[:n], times[:n], values[:n])
        if end != header.raw_len:
            raise CorruptionError(path, offset, "payload columns do not add up to its length")
        return header

    def decode_summaries(self, block, path: str, offset: int, expected_header: bytes | None = None) -> Summaries:
        """Check a summary block and decode its rows."""
        from .summary import SUMMARY_FIELDS

        header, raw = self._checked_raw(block, path, offset, expected_header, KIND_SUMMARY)
        n, bins = header.count, header.aux & AUX_BINS_MASK
        edges = np.empty(bins + 1 if header.aux & AUX_SHARED_EDGES else 0)
        rows = Summaries(np.empty(n, np.int64), np.empty(n, np.int64), np.empty((len(SUMMARY_FIELDS), n)),
                         np.empty((bins, n), np.int64), edges)
        kernels = self._kernels(max(n, len(edges)), 3 + len(SUMMARY_FIELDS) + bins)
        end = kernels.decode_summaries(raw, np.empty(max(n, len(edges)), np.uint64), rows.steps, rows.times,
                                             rows.stats, edges, rows.counts)
        if end != header.raw_len:
            raise CorruptionError(path, offset, "payload columns do not add up to its length")
        return rows._replace(stats=rows.stats.T, counts=rows.counts.T, edges=edges if len(edges) else None)

    def _kernels(self, points: int, columns: int):
        return self._codec or codec_for(points, columns)
