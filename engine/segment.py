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

from .errors import CorruptionError, StorageFullError, StorageIOError

SEGMENT_MAGIC = b"SLSG"
SEGMENT_VERSION = 1
FILE_HEADER = struct.Struct("<4sHHQ")  # magic, version, reserved, segment_id
FILE_HEADER_SIZE = FILE_HEADER.size    # 16

_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _raise_storage(exc: OSError, path: str) -> None:
    if exc.errno in _FULL_ERRNOS:
        raise StorageFullError(exc.errno, f"{os.strerror(exc.errno)} while appending to {path}") from exc
    if exc.errno == errno.EIO:
        raise StorageIOError(exc.errno, f"I/O error while appending to {path}") from exc
    raise exc


class SegmentWriter:
    """Appends blocks to one segment file. Used by one thread at a time (under the
    writer's segment lock). Holds an exclusive flock on the file for its lifetime; the
    kernel releases it when the process dies, so a crashed writer never leaves a lock
    to clean by hand. ``recorded`` holds the series whose record this segment holds."""

    def __init__(self, path: str, segment_id: int, fsync: bool, fd: int, size: int):
        self.path = path
        self.segment_id = segment_id
        self._fsync = fsync
        self._fd = fd
        self.size = size
        self.recorded: set = set()

    @classmethod
    def create(cls, path: str, segment_id: int, fsync: bool) -> "SegmentWriter":
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        segment = cls(path, segment_id, fsync, fd, 0)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # tells recovery this segment is live
            segment._write_all(FILE_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0, segment_id))
            if fsync:
                os.fsync(fd)
                fsync_dir(os.path.dirname(path))  # the new file's name survives power loss
        except OSError as exc:
            os.close(fd)
            _raise_storage(exc, path)
        except BaseException:
            os.close(fd)
            raise
        return segment

    @classmethod
    def adopt(cls, path: str, segment_id: int, fsync: bool, committed_end) -> "SegmentWriter | None":
        """Take over an existing segment no live writer holds, to append after its
        committed end (``committed_end()`` is read once the lock is held); None when it
        is held, gone or damaged. Opening a store many times thus reuses its segments."""
        try:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            end = committed_end()
            header = os.pread(fd, FILE_HEADER_SIZE, 0)
            if end is None or end < FILE_HEADER_SIZE or os.fstat(fd).st_size < end:
                raise BlockingIOError
            check_file_header(header, path)
            if FILE_HEADER.unpack(header)[3] != segment_id:
                raise BlockingIOError
            os.ftruncate(fd, end)   # an unfinished append of the writer that held it
            if fsync:
                os.fsync(fd)
        except (OSError, CorruptionError):
            os.close(fd)
            return None
        return cls(path, segment_id, fsync, fd, end)

    def append(self, data: bytes) -> int:
        """Append ``data`` (one or more whole blocks); returns the offset it starts at.
        On failure the file is cut back to where it was, so no torn block stays behind."""
        offset = self.size
        try:
            self._write_all(data)
            if self._fsync:
                os.fsync(self._fd)
        except OSError as exc:
            self.cut_back(offset)
            _raise_storage(exc, self.path)
        return offset

    def _write_all(self, data) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, self.size)
            self.size += written
            view = view[written:]

    def cut_back(self, size: int) -> None:
        self.size = size
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            pass  # the index never points past ``size``; the tail is cut on the next open

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def fsync_dir(path: str) -> None:
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
    """Reads block bytes by (segment, offset, length). Thread-safe.

    Keeps at most ``max_open`` segment files open, least recently read closed first,
    and never more than a quarter of the process's open-file limit (RLIMIT_NOFILE), so
    the writer and LMDB keep room to open theirs. A file is never closed while a read
    is using it: each open file counts its readers, and one evicted while in use is
    closed by its last reader. A read of an open file takes the lock once.
    """

    DEFAULT_MAX_OPEN = 64

    class _Handle:
        """One open segment file. ``users`` holds one entry per read in progress; it is
        a deque because its append and pop are atomic, so a reader can leave without
        the lock. ``retired`` and ``closed`` change only under the reader's lock."""

        __slots__ = ("fd", "users", "retired", "closed")

        def __init__(self, fd: int):
            from collections import deque

            self.fd = fd
            self.users = deque()
            self.retired = False   # out of the cache: closed once no read uses it
            self.closed = False

    def __init__(self, path_of, max_open: int = DEFAULT_MAX_OPEN):
        from collections import OrderedDict

        from .errors import InvalidArgumentError, InvalidTypeError

        if isinstance(max_open, bool) or not isinstance(max_open, int):
            raise InvalidTypeError("max_open", f"must be an int, got {type(max_open).__name__}")
        if max_open < 1:
            raise InvalidArgumentError("max_open", f"must be at least 1, got {max_open}")
        self._path_of = path_of
        self.max_open = max_open
        self._ceiling = max_open   # lowered when the process runs out of descriptors
        self._open: "OrderedDict[int, SegmentReader._Handle]" = OrderedDict()   # least recently read first
        self._lock = threading.Lock()
        self._closed = False

    def read(self, segment_id: int, offset: int, length: int) -> bytes:
        with self._lock:
            handle = self._open.get(segment_id)
            if handle is not None:
                self._open.move_to_end(segment_id)
                handle.users.append(None)
        if handle is None:
            handle = self._acquire_new(segment_id, offset)
        try:
            data = os.pread(handle.fd, length, offset)
        finally:
            handle.users.pop()
            if handle.retired:   # evicted while this read used it: the last reader closes it
                self._close_if_unused(handle)
        if len(data) != length:
            raise CorruptionError(self._path_of(segment_id), offset,
                                  f"block runs past the end of the segment ({len(data)} of {length} bytes)")
        return data

    def open_count(self) -> int:
        """Segment files kept open now (an evicted one that a read still uses is not
        counted; it closes when that read ends)."""
        with self._lock:
            return len(self._open)

    def _acquire_new(self, segment_id: int, offset: int) -> "SegmentReader._Handle":
        """Open ``segment_id``, cache it and return it with one user counted."""
        path = self._path_of(segment_id)
        fd = self._open_fd(path, offset)
        capacity = self._capacity()
        with self._lock:
            if self._closed:
                os.close(fd)
                from .errors import ClosedError

                raise ClosedError("the segment reader is closed")
            handle = self._open.get(segment_id)
            if handle is not None:   # another thread opened it meanwhile
                self._open.move_to_end(segment_id)
                spare = [fd]
            else:
                handle = self._open[segment_id] = self._Handle(fd)
                spare = self._evict_locked(capacity)
            handle.users.append(None)
        for victim in spare:
            os.close(victim)
        return handle

    def _open_fd(self, path: str, offset: int) -> int:
        """Open ``path``; when the process or system is out of file descriptors, close
        every cached one and try once more."""
        fd = _open_for_reading(path, offset)
        if not isinstance(fd, OSError):
            return fd
        with self._lock:
            held = len(self._open)
            if held:   # keep fewer from now on: the rest of the process needs them
                self._ceiling = max(1, min(self._ceiling, held // 2))
            spare = self._evict_locked(0)
        for victim in spare:
            os.close(victim)
        fd = _open_for_reading(path, offset)
        if not isinstance(fd, OSError):
            return fd
        from .errors import StepLogError

        if fd.errno == errno.EMFILE:
            import resource

            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            limit = f"this process's limit of {soft} open files (RLIMIT_NOFILE, ulimit -n)"
        else:
            limit = "the system-wide limit of open files (fs.file-max)"
        raise StepLogError(f"cannot open {path} to read it: {limit} is reached, even after the "
                           f"{held} segment files kept open for reading were closed; raise the limit "
                           f"or open fewer files") from fd

    def _capacity(self) -> int:
        """How many files to keep: max_open, at most a quarter of the open-file limit
        (read on every open, so a limit set after the store opened counts too)."""
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft <= 0:
            return self._ceiling
        return max(1, min(self._ceiling, soft // 4))

    def _evict_locked(self, keep: int) -> list[int]:
        """Drop least recently read files until ``keep`` stay cached (the newest is
        always kept when keep >= 1). Returns the descriptors the caller closes after
        releasing the lock: those no read uses. Those in use close with their last read."""
        spare = []
        while len(self._open) > keep:
            _segment_id, victim = self._open.popitem(last=False)
            victim.retired = True
            if not victim.users:   # nobody can take it now: it left the cache under the lock
                victim.closed = True
                spare.append(victim.fd)
        return spare

    def _close_if_unused(self, handle: "SegmentReader._Handle") -> None:
        with self._lock:
            if handle.users or handle.closed:
                return
            handle.closed = True
        os.close(handle.fd)

    def close(self) -> None:
        """Close every file; one a read still uses closes when that read ends. Reads
        after this raise ClosedError."""
        with self._lock:
            self._closed = True
            spare = self._evict_locked(0)
        for victim in spare:
            os.close(victim)


def _open_for_reading(path: str, offset: int) -> "int | OSError":
    """A descriptor of ``path``, or the error when the process or system has none left."""
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CorruptionError(path, offset, "segment file is missing") from None
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        return exc


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
