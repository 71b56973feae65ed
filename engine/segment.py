"""Segment files: a 16-byte file header, then blocks appended back to back.

One writer (one process's flusher) owns a segment; nobody else ever writes to it. What
is visible is decided by the index alone: bytes past the last indexed block are an
unfinished append and are cut by ``truncate_tail``. Layout in docs/FORMAT.md.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading

from .errors import CorruptionError, StorageFullError

SEGMENT_MAGIC = b"SLSG"
SEGMENT_VERSION = 1
FILE_HEADER = struct.Struct("<4sHHQ")  # magic, version, reserved, segment_id
FILE_HEADER_SIZE = FILE_HEADER.size    # 16

_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _raise_storage(exc: OSError, path: str) -> None:
    if exc.errno in _FULL_ERRNOS:
        raise StorageFullError(exc.errno, f"{os.strerror(exc.errno)} while appending to {path}") from exc
    raise exc


class SegmentWriter:
    """Appends blocks to one segment file. Used by one thread (the flusher) at a time.
    Holds an exclusive flock on the file for its lifetime; the kernel releases it when
    the process dies, so a crashed writer never leaves a lock to clean by hand."""

    def __init__(self, path: str, segment_id: int, fsync: bool):
        self.path = path
        self.segment_id = segment_id
        self._fsync = fsync
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        self.size = 0
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # tells recovery this segment is live
            self._write_all(FILE_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0, segment_id))
            if fsync:
                _fsync_dir(os.path.dirname(path))  # the new file's name survives power loss
        except BaseException:
            os.close(self._fd)
            raise

    def append(self, data: bytes) -> int:
        """Append ``data`` (one or more whole blocks); returns the offset it starts at.
        On failure the file is cut back to where it was, so no torn block stays behind."""
        offset = self.size
        try:
            self._write_all(data)
            if self._fsync:
                os.fsync(self._fd)
        except OSError as exc:
            self._cut_back(offset)
            _raise_storage(exc, self.path)
        return offset

    def _write_all(self, data) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, self.size)
            self.size += written
            view = view[written:]

    def _cut_back(self, size: int) -> None:
        self.size = size
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            pass  # the index never points past ``size``; the tail is cut on the next open

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_file_header(data: bytes, path: str) -> None:
    if len(data) < FILE_HEADER_SIZE:
        raise CorruptionError(path, 0, "segment header cut short")
    magic, version, _reserved, _segment_id = FILE_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC or version != SEGMENT_VERSION:
        raise CorruptionError(path, 0, "bad segment magic or version")


class SegmentReader:
    """Reads block bytes by (segment, offset, length). Thread-safe; keeps files open."""

    def __init__(self, path_of):
        self._path_of = path_of
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()

    def _fd(self, segment_id: int, offset: int) -> int:
        fd = self._fds.get(segment_id)
        if fd is None:
            path = self._path_of(segment_id)
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError:
                raise CorruptionError(path, offset, "segment file is missing") from None
            with self._lock:
                if segment_id in self._fds:
                    os.close(fd)
                    fd = self._fds[segment_id]
                else:
                    self._fds[segment_id] = fd
        return fd

    def read(self, segment_id: int, offset: int, length: int) -> bytes:
        data = os.pread(self._fd(segment_id, offset), length, offset)
        if len(data) != length:
            raise CorruptionError(self._path_of(segment_id), offset,
                                  f"block runs past the end of the segment ({len(data)} of {length} bytes)")
        return data

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def truncate_tail(path: str, committed_end: int) -> int:
    """Cut a segment to ``committed_end`` if it is longer; returns the bytes removed."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return 0
    if size <= committed_end:
        return 0
    with open(path, "r+b") as f:
        f.truncate(committed_end)
    return size - committed_end
