"""Opening after a crash, and reading segments block by block.

A segment whose writer died may end in a partly written append. The index records how
far each segment is committed, so the bytes past that point are cut on open, but only
when no live writer holds the segment's lock (the kernel drops a dead writer's lock).
``scan_segment`` walks a segment's blocks without the index: verify and repair use it.
"""

from __future__ import annotations

import fcntl
import os
import zlib
from typing import Iterator, NamedTuple

from .block import BLOCK_MAGIC, CHECKED_SIZE, HEADER_SIZE, unpack_header
from .errors import CorruptionError
from .index import Index
from .layout import StoreLayout
from .segment import FILE_HEADER, FILE_HEADER_SIZE, check_file_header, truncate_tail

SCAN_CHUNK = 1 << 20


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


class ScannedBlock(NamedTuple):
    offset: int
    data: bytes       # the whole block, checksum not yet checked


def scan_segment(path: str, end: int | None = None) -> Iterator["ScannedBlock | Damage"]:
    """Every block of a segment up to ``end`` (default: the file's end) whose header and
    checksum hold, in file order; a region where they do not is reported as Damage and
    skipped to the next block magic, so one damaged block does not hide those after it."""
    with open(path, "rb") as f:
        data = f.read() if end is None else f.read(end)
    try:
        check_file_header(data[:FILE_HEADER_SIZE], path)
    except CorruptionError as exc:
        yield Damage(exc.path, exc.offset, exc.reason)
        return
    pos = FILE_HEADER_SIZE
    while pos < len(data):
        try:
            header = unpack_header(data[pos:pos + HEADER_SIZE], path, pos)
            if pos + header.length > len(data):
                raise CorruptionError(path, pos, f"block of {header.length} bytes runs past the end "
                                      f"({len(data) - pos} left)")
            view = memoryview(data)[pos:pos + header.length]
            if zlib.crc32(view[HEADER_SIZE:], zlib.crc32(view[:CHECKED_SIZE])) != header.checksum:
                raise CorruptionError(path, pos, "block checksum mismatch")
        except CorruptionError as exc:
            yield Damage(exc.path, exc.offset, exc.reason)
            found = data.find(BLOCK_MAGIC, pos + 1)
            if found < 0:
                return
            pos = found
            continue
        yield ScannedBlock(pos, data[pos:pos + header.length])
        pos += header.length


def segment_id_of(path: str) -> int | None:
    """The id a segment's file header names (None when it does not read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(FILE_HEADER_SIZE)
        check_file_header(head, path)
    except (OSError, CorruptionError):
        return None
    return FILE_HEADER.unpack(head)[3]
