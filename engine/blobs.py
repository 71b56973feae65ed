"""The blob store: content-addressed, zstd-compressed files under STORE/blobs/.

A blob is named by the SHA-256 of its content (``blobs/ab/abcd....blob``), so the same
bytes are kept once however many runs log them, and no user-given name ever becomes a
path. Layout in docs/FORMAT.md, "Blobs".

Writing: the content goes to a temp file in the blob's own directory (``.<sha>.<8
hex>.tmp``, created exclusively and flock'ed while written), is fsynced, renamed to its
name, and the directory fsynced: a crash leaves at most a temp file, never a half blob
under a blob's name. A temp file whose lock is free and that has not changed for
TEMP_GRACE_SECONDS is a leftover of a dead writer, deleted by the next write into that
directory (and by ``clean_temp_files``). Callers commit index records that reference a
blob only after ``put_*`` returned: the blob is durable by then.

Reading: ``open_blob`` returns a file object that decompresses as it is read and checks
the size and the hash when the end is reached (CorruptionError on a mismatch).

Thread and process rules: any number of threads and processes may write and read the
same blobs at once; two writers of one content both write a temp file and the second
rename replaces identical bytes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import secrets
import struct
import time
from typing import Iterable

import zstandard

from .errors import CorruptionError, InvalidArgumentError, NotFoundError, StorageFullError, StorageIOError
from .layout import BLOB_TEMP_SUFFIX, StoreLayout
from .segment import fsync_dir

BLOB_MAGIC = b"SLBL"
BLOB_VERSION = 1
CODEC_ZSTD = 1
BLOB_HEADER = struct.Struct("<4sHHQ")   # magic, version, codec, content size
ZSTD_LEVEL = 3
READ_CHUNK = 1 << 20                   # files are read and hashed 1 MiB at a time, never whole
TEMP_GRACE_SECONDS = 60
_HEX = frozenset("0123456789abcdef")


def sha256_arg(value, argument: str = "sha256") -> str:
    """A SHA-256 in hex (64 digits, either case), as lower case."""
    if not isinstance(value, str):
        raise InvalidArgumentError(argument, f"must be a SHA-256 as 64 hex digits, got {type(value).__name__}")
    text = value.lower()
    if len(text) != 64 or not _HEX.issuperset(text):
        raise InvalidArgumentError(argument, f"must be a SHA-256 as 64 hex digits, got {value[:80]!r}")
    return text


class BlobStore:
    """The blobs of one store directory."""

    def __init__(self, layout: StoreLayout, fsync: bool = True):
        self.layout = layout
        self.fsync = fsync   # False only for tests of speed; a blob is durable before a record names it

    def has(self, sha256: str) -> bool:
        return os.path.exists(self.layout.blob_path(sha256))

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` (once per content); returns its SHA-256."""
        sha = hashlib.sha256(data).hexdigest()
        if not self.has(sha):
            self._write(sha, len(data), [memoryview(data)])
        return sha

    def put_file(self, path: str, sha256: str, size: int) -> bool:
        """Store the file at ``path`` whose content was hashed as ``sha256`` (``size``
        bytes); False when that blob was there already. The file is read again in 1 MiB
        chunks while it is compressed; content that changed since it was hashed is
        refused (InvalidArgumentError naming ``path_or_uri``) and nothing is kept."""
        if self.has(sha256):
            return False
        with open(path, "rb") as f:
            self._write(sha256, size, iter(lambda: f.read(READ_CHUNK), b""), source=path)
        return True

    def _write(self, sha: str, size: int, chunks: Iterable, source: str | None = None) -> None:
        folder = self._folder(sha)
        clean_temp_files(folder)
        temp = self.layout.blob_temp_path(sha, secrets.token_hex(4))
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)   # a cleaner of leftovers leaves a locked temp file alone
            with open(fd, "wb", closefd=False) as out:
                _compress_into(out, sha, size, chunks, source)
                if self.fsync:
                    os.fsync(fd)
            os.rename(temp, self.layout.blob_path(sha))
        except BaseException as exc:
            _unlink(temp)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise StorageFullError(exc.errno, f"blob {sha}: {exc.strerror}") from None
            if isinstance(exc, OSError) and exc.errno == errno.EIO:
                raise StorageIOError(exc.errno, f"blob {sha}: {exc.strerror}") from None
            raise
        finally:
            os.close(fd)
        if self.fsync:
            fsync_dir(folder)

    def _folder(self, sha: str) -> str:
        folder = self.layout.blob_dir(sha)
        if not os.path.isdir(folder):
            for path in (self.layout.blobs_dir, folder):
                if not os.path.isdir(path):
                    os.makedirs(path, exist_ok=True)
                    fsync_dir(os.path.dirname(path))
        return folder

    def open(self, sha256: str) -> "BlobReader":
        """The blob's content as a binary file object, checked when read to the end."""
        path = self.layout.blob_path(sha256)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise NotFoundError(f"sha256: no blob {sha256} in the store") from None
        try:
            return BlobReader(f, path, sha256)
        except BaseException:
            f.close()
            raise

    def get(self, sha256: str) -> bytes:
        """The whole content of a blob, checked."""
        with self.open(sha256) as reader:
            return reader.read()

    def check(self, sha256: str) -> str:
        """Why the blob fails its checks ("" when whole): read to the end, hash compared."""
        try:
            with self.open(sha256) as reader:
                while reader.read(READ_CHUNK):
                    pass
        except CorruptionError as exc:
            return exc.reason
        except NotFoundError:
            return "missing"
        return ""


def _compress_into(out, sha: str, size: int, chunks: Iterable, source: str | None) -> None:
    out.write(BLOB_HEADER.pack(BLOB_MAGIC, BLOB_VERSION, CODEC_ZSTD, size))
    digest, seen = hashlib.sha256(), 0
    writer = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(out, size=size, closefd=False)
    for chunk in chunks:
        digest.update(chunk)
        seen += len(chunk)
        writer.write(chunk)
    writer.flush(zstandard.FLUSH_FRAME)
    if seen != size or digest.hexdigest() != sha:
        raise InvalidArgumentError("path_or_uri", f"{source or 'the content'} changed while it was stored "
                                   f"({seen} bytes read, {size} hashed before); log it again")


def clean_temp_files(folder: str) -> int:
    """Delete the temp files of dead writers in one blob directory; returns how many."""
    removed = 0
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not (entry.startswith(".") and entry.endswith(BLOB_TEMP_SUFFIX)):
            continue
        path = os.path.join(folder, entry)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            if time.time() - os.fstat(fd).st_mtime < TEMP_GRACE_SECONDS:
                continue   # maybe a writer that created it and has not locked it yet
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _unlink(path)
            removed += 1
        except BlockingIOError:
            pass   # a live writer
        finally:
            os.close(fd)
    return removed


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class BlobReader(io.RawIOBase):
    """A blob's content, decompressed as it is read. Reaching the end checks the size
    and the SHA-256 (CorruptionError naming the file otherwise); a reader that stops
    early has checked nothing. Wrapped in io.BufferedReader by ``open_blob`` users who
    want lines; ``read()`` of everything is checked."""

    def __init__(self, f, path: str, sha256: str):
        self._f, self.path, self.sha256 = f, path, sha256
        head = f.read(BLOB_HEADER.size)
        if len(head) < BLOB_HEADER.size:
            raise CorruptionError(path, 0, f"blob header cut short ({len(head)} bytes)")
        magic, version, codec, self.size = BLOB_HEADER.unpack(head)
        if magic != BLOB_MAGIC or version != BLOB_VERSION or codec != CODEC_ZSTD:
            raise CorruptionError(path, 0, f"not a blob of version {BLOB_VERSION} (magic {magic!r}, version "
                                  f"{version}, codec {codec})")
        self._stream = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True, closefd=False)
        self._digest, self._seen, self._done = hashlib.sha256(), 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._done:
            return 0
        try:
            n = self._stream.readinto(buffer)
        except zstandard.ZstdError as exc:
            raise CorruptionError(self.path, BLOB_HEADER.size, f"blob does not decompress: {exc}") from None
        if n:
            view = memoryview(buffer)[:n]
            self._digest.update(view)
            self._seen += n
            if self._seen > self.size:
                raise CorruptionError(self.path, BLOB_HEADER.size, f"blob holds more than its {self.size} bytes")
            return n
        self._done = True
        if self._seen != self.size:
            raise CorruptionError(self.path, BLOB_HEADER.size, f"blob holds {self._seen} bytes, its header "
                                  f"says {self.size}")
        if self._digest.hexdigest() != self.sha256:
            raise CorruptionError(self.path, BLOB_HEADER.size, f"blob content hashes to "
                                  f"{self._digest.hexdigest()}, not to its name")
        return 0

    def readall(self) -> bytes:
        out = bytearray()
        buffer = bytearray(READ_CHUNK)
        while True:
            n = self.readinto(buffer)
            if not n:
                return bytes(out)
            out += memoryview(buffer)[:n]

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
            self._f.close()
        super().close()
