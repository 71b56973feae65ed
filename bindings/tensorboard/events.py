"""Reading TensorBoard event files: the TFRecord framing and both masked CRC-32C checks
done in steplog (one numba pass over a file), the records decoded as
``tensorboard.compat.proto.event_pb2.Event`` (the ``tensorboard`` package is the
extra; TensorFlow is never needed).

A record is ``u64 length | u32 masked_crc32c(length) | data | u32 masked_crc32c(data)``
(little-endian), masked = ((c >> 15 | c << 17) + 0xA282EAD8) mod 2**32, c the
CRC-32C (Castagnoli) of the bytes. As TensorBoard's reader does, a file whose last
record is cut short (a writer still writing, a copy taken mid-write) ends cleanly
before it; a record that fails a check raises ``CorruptionError(path, offset,
reason)`` with the offset of the record, or, with ``skip_damaged``, is skipped and
listed in ``EventFile.damaged``: a record whose length passed its check is skipped by
that length, one whose length failed is skipped to the next offset where a whole
record passes both checks. (TensorBoard's ``EventFileLoader`` stops at the first
damaged record without a word.)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import numpy as np

from steplog.engine.errors import CorruptionError

MASK_DELTA = 0xA282EAD8
HEADER = 12          # u64 length + u32 its crc
FOOTER = 4           # u32 crc of the data
CASTAGNOLI = 0x82F63B78   # CRC-32C, reflected

# scan statuses
OK, TRUNCATED, BAD_LENGTH_CRC, BAD_DATA_CRC = 0, 1, 2, 3
REASONS = {BAD_LENGTH_CRC: "failed the length CRC-32C check", BAD_DATA_CRC: "failed the data CRC-32C check"}


def _tables() -> np.ndarray:
    """Slicing-by-8 tables of CRC-32C: table[k][b] is the CRC of byte b followed by k zero bytes."""
    table = np.zeros((8, 256), np.uint32)
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ CASTAGNOLI if c & 1 else c >> 1
        table[0, b] = c
    for k in range(1, 8):
        for b in range(256):
            prev = int(table[k - 1, b])
            table[k, b] = (prev >> 8) ^ int(table[0, prev & 0xFF])
    return table


TABLES = _tables()
_kernels = None


def _compiled():
    """The numba kernels, compiled (or loaded from numba's cache) on first use."""
    global _kernels
    if _kernels is None:
        from ._scan import announce_scan

        _kernels = announce_scan()
    return _kernels


def crc32c(data: bytes, value: int = 0) -> int:
    """CRC-32C of ``data`` (continuing ``value``)."""
    buf = np.frombuffer(data, np.uint8)
    return int(_compiled().crc(buf, 0, len(buf), TABLES, np.uint32(value)))


def masked_crc32c(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + MASK_DELTA) & 0xFFFFFFFF


@dataclasses.dataclass
class EventFile:
    """The records of one event file: ``data[offsets[i]:offsets[i] + lengths[i]]`` is
    record i's serialized Event. ``truncated_at``: the offset of a last record cut
    short (None: the file ends on a record boundary); ``damaged``: (offset, reason) of
    each record skipped under ``skip_damaged``."""

    path: str
    data: bytes
    offsets: np.ndarray
    lengths: np.ndarray
    truncated_at: int | None
    damaged: list

    def __len__(self) -> int:
        return len(self.offsets)

    def records(self) -> Iterator[bytes]:
        data = self.data
        for start, length in zip(self.offsets.tolist(), self.lengths.tolist()):
            yield data[start:start + length]

    def events(self) -> Iterator:
        """The records as ``event_pb2.Event`` messages, in file order."""
        parse = event_class().FromString
        for record in self.records():
            yield parse(record)


def read_event_file(path: str | os.PathLike, skip_damaged: bool = False) -> EventFile:
    """Frame and check every record of the event file at ``path`` (module docstring)."""
    path = os.fspath(path)
    with open(path, "rb") as stream:
        data = stream.read()
    buf = np.frombuffer(data, np.uint8)
    offsets, lengths, damaged_at, damaged_why, end, status = _compiled().scan(buf, TABLES, skip_damaged)
    if status in REASONS:
        raise CorruptionError(path, int(end), "event record " + REASONS[status])
    damaged = [(int(o), "event record " + REASONS[int(w)]) for o, w in zip(damaged_at, damaged_why)]
    return EventFile(path, data, offsets, lengths, int(end) if status == TRUNCATED else None, damaged)


def event_class():
    """TensorBoard's compiled Event message class; ImportError says which extra to install."""
    try:
        from tensorboard.compat.proto import event_pb2
    except ImportError as exc:
        raise ImportError("reading TensorBoard event files needs the tensorboard package: "
                          f"pip install 'steplog[tensorboard]' ({exc})") from exc
    return event_pb2.Event


def is_event_file(name: str) -> bool:
    """TensorBoard's rule (io_wrapper.IsTensorFlowEventsFile): 'tfevents' in the base name."""
    return "tfevents" in os.path.basename(name)


def run_directories(logdir: str) -> dict[str, list[str]]:
    """Run name -> its event files in name order, for every directory under ``logdir``
    that holds one, named as TensorBoard names runs: the path relative to ``logdir``
    with "/" separators ("." for ``logdir`` itself); runs in name order."""
    found = {}
    for root, dirs, files in os.walk(logdir):
        dirs.sort()
        events = sorted(os.path.join(root, f) for f in files if is_event_file(f)
                        and os.path.isfile(os.path.join(root, f)))
        if events:
            rel = os.path.relpath(root, logdir)
            found["." if rel == os.curdir else rel.replace(os.sep, "/")] = events
    return dict(sorted(found.items()))


def wall_time_ns(wall_times) -> np.ndarray:
    """Event wall times (float64 seconds) as int64 nanoseconds: the whole seconds exactly,
    the fraction rounded to the nearest nanosecond (half to even; the product of the
    fraction and 1e9 is off by less than 1e-6 ns), so ``ns / 1e9`` gives the double back
    to within one unit in its last place. The product ``w * 1e9`` in float64 would be off by up to
    128 ns at today's times."""
    w = np.asarray(wall_times, np.float64)
    seconds = np.floor(w)
    return seconds.astype(np.int64) * 1_000_000_000 + np.rint((w - seconds) * 1e9).astype(np.int64)
