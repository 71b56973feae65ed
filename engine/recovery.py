"""Opening after a crash, and checking a store: torn tails and damaged blocks.

A segment whose writer died may end in a partly written append. The index records how
far each segment is committed, so the bytes past that point are cut on open, but only
when no live writer holds the segment's lock (the kernel drops a dead writer's lock).
"""

from __future__ import annotations

import fcntl
import os
from typing import NamedTuple

from .block import BlockDecoder
from .errors import CorruptionError
from .index import Index
from .layout import StoreLayout
from .segment import FILE_HEADER_SIZE, SegmentReader, check_file_header, truncate_tail


def cut_torn_tails(layout: StoreLayout, index: Index) -> int:
    """Cut uncommitted bytes off every segment no live writer holds. Returns bytes cut.

    The committed end is read again once the lock is held: a writer may commit more and
    release its lock (close, segment roll, exit) between the first look and the lock."""
    with index.read() as txn:
        candidates = list(txn.segments())
    removed = 0
    for segment_id, end in candidates:
        path = layout.segment_path(segment_id)
        try:
            if os.path.getsize(path) <= end:
                continue
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # a live writer is appending to it
            continue
        try:
            with index.read() as txn:
                end = txn.segment_end(segment_id)
            if end is not None:
                removed += truncate_tail(path, end)
        finally:
            os.close(fd)
    return removed


class Damage(NamedTuple):
    path: str
    offset: int
    reason: str


def verify(layout: StoreLayout, index: Index) -> tuple[int, list[Damage]]:
    """Decode every indexed block and check it; returns (blocks checked, damage found)."""
    import numpy as np

    segments = SegmentReader(layout.segment_path)
    decoder = BlockDecoder()
    damage: list[Damage] = []
    checked = 0
    try:
        with index.read() as txn:
            for segment_id, end in txn.segments():
                if end <= FILE_HEADER_SIZE:
                    continue  # no committed block: its writer may have died before writing the header
                path = layout.segment_path(segment_id)
                try:
                    with open(path, "rb") as f:
                        check_file_header(f.read(FILE_HEADER_SIZE), path)
                except FileNotFoundError:
                    continue  # each of its blocks is reported below, with its offset
                except CorruptionError as exc:
                    damage.append(Damage(exc.path, exc.offset, exc.reason))
            for ref in txn.all_blocks():
                checked += 1
                n = ref.header.count
                try:
                    data = segments.read(ref.segment_id, ref.offset, ref.header.length)
                    decoder.decode_into(data, layout.segment_path(ref.segment_id), ref.offset,
                                        np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.float64),
                                        ref.header_bytes)
                except CorruptionError as exc:
                    damage.append(Damage(exc.path, exc.offset, exc.reason))
    finally:
        segments.close()
    return checked, damage
