"""Block framing: a fixed header with stats and a checksum, then a zstd payload.

A block is the unit that is written, indexed, checksummed and decoded. The index entry
of a block embeds a verbatim copy of its header, so block selection and aggregate
queries never touch the segment file. Layout in docs/FORMAT.md, "Block".
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

import numpy as np
import zstandard

from .errors import CorruptionError

BLOCK_MAGIC = b"SLBK"
BLOCK_VERSION = 1
KIND_SCALAR = 1           # step, time, value points
CODEC_PLANES_ZSTD = 1     # kernels.encode_points, then one zstd frame

# magic, version, kind, codec, series_id, count, payload_len, raw_len, nan_count,
# step_min, step_max, time_min, time_max, value_min, value_max, value_sum,
# first_value, last_value, checksum, reserved
HEADER = struct.Struct("<4sHBBQIIII4q5dII")
HEADER_SIZE = HEADER.size          # 112
CHECKED_SIZE = HEADER_SIZE - 8     # the checksum covers header bytes [0, 104) and the payload
ZSTD_LEVEL = 1


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
    checksum: int
    reserved: int

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
    if header.version != BLOCK_VERSION or header.kind != KIND_SCALAR or header.codec != CODEC_PLANES_ZSTD:
        raise CorruptionError(path, offset, "unknown block version, kind or codec")
    return header


class BlockEncoder:
    """Turns point columns into block bytes. One per flusher thread (not thread-safe)."""

    def __init__(self, max_points: int):
        from . import kernels  # numba is imported on first encode, not at import time

        self._kernels = kernels
        self._scratch = np.empty(max_points, np.uint64)
        self._out = np.empty(3 * (kernels.COLUMN_HEADER + 8 * max_points), np.uint8)
        self._zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL)

    def encode(self, series_id: int, steps: np.ndarray, times: np.ndarray, values: np.ndarray) -> bytes:
        n = len(steps)
        if n > len(self._scratch):
            self._scratch = np.empty(n, np.uint64)
            self._out = np.empty(3 * (self._kernels.COLUMN_HEADER + 8 * n), np.uint8)
        k = self._kernels
        raw_len = k.encode_points(steps, times, values, self._scratch, self._out)
        payload = self._zstd.compress(self._out[:raw_len])
        smin, smax, tmin, tmax, vmin, vmax, vsum, nans, first, last = k.point_stats(steps, times, values)
        fields = (BLOCK_MAGIC, BLOCK_VERSION, KIND_SCALAR, CODEC_PLANES_ZSTD, series_id, n,
                  len(payload), raw_len, nans, smin, smax, tmin, tmax, vmin, vmax, vsum, first, last)
        head = bytearray(HEADER_SIZE)
        HEADER.pack_into(head, 0, *fields, 0, 0)
        checksum = zlib.crc32(payload, zlib.crc32(memoryview(head)[:CHECKED_SIZE]))
        struct.pack_into("<I", head, CHECKED_SIZE, checksum)
        return bytes(head) + payload


class BlockDecoder:
    """Turns block bytes back into point columns, checking everything on the way."""

    def __init__(self):
        from . import kernels

        self._kernels = kernels
        self._zstd = zstandard.ZstdDecompressor()

    def decode_into(self, block, path: str, offset: int, steps, times, values,
                    expected_header: bytes | None = None) -> BlockHeader:
        """Check the block at ``block`` (bytes of exactly one block) and decode its points
        into the given arrays, which must have room for ``header.count`` points.
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
        try:
            raw = self._zstd.decompress(view[HEADER_SIZE:], max_output_size=header.raw_len)
        except zstandard.ZstdError as exc:
            raise CorruptionError(path, offset, f"payload does not decompress: {exc}") from None
        if len(raw) != header.raw_len:
            raise CorruptionError(path, offset, "payload has the wrong decoded length")
        n = header.count
        scratch = np.empty(n, np.uint64)
        end = self._kernels.decode_points(np.frombuffer(raw, np.uint8), scratch, steps[:n], times[:n], values[:n])
        if end != header.raw_len:
            raise CorruptionError(path, offset, "payload columns do not add up to its length")
        return header
