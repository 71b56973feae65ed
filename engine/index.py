"""The LMDB index: every table, its key and value layout, and the transactions on it.

Tables (named LMDB databases; layouts in docs/FORMAT.md, "Index"):

    meta         ascii name          -> u64 LE                  format version, counters
    experiments  hash16(name)        -> JSON experiment record
    runs         run_id (16 bytes)   -> JSON run record
    series       run_id | hash16(name, context) -> series_id u64 LE | kind u8 | rollup_shift u8 | JSON {name, context}
    series_info  series_id u64 BE    -> SERIES_INFO struct (stats kept by every flush)
                                        [| PACKED struct: the series' only chunk, a pack member]
    blocks       series_id u64 BE | first_step biased u64 BE | block_seq u64 BE
                                     -> segment_id u64 LE | offset u64 LE | block header (112 bytes)
                                        or segment_id | offset | MEMBER struct (a pack member)
    segments     segment_id u64 BE   -> committed_end u64 LE | pid u32 LE | created_ns i64 LE
    heartbeats   run_id | host u64 BE | pid u32 BE -> pid u32 LE | host u64 LE | time_ns i64 LE
                                        (one a writer; version 2: keyed by run_id alone)
    rollups      series_id u64 BE | level u8 | page_no biased u64 BE -> rollup page (engine/rollup.py)
    aggregates   series_id u64 BE    -> engine.aggregates AGGREGATES (a scalar series; version 4)
    changes      change_seq u64 BE   -> run_id (16) ...: the runs one transaction changed (version 4)
    catalog      ascii name          -> the catalog snapshot (engine/catalog.py; version 4)
    artifacts    run_id | seq u64 BE -> JSON artifact record (engine/artifacts.py; version 5)
    artifact_pages page_no u64 BE    -> Arrow IPC stream of up to PAGE_ROWS artifacts, in logging order (version 5)

A small series costs no block of its own: its points are a member of a pack block
(engine.block KIND_PACK) shared with other series, and while that is its only chunk the
reference lives in its series_info value, not in ``blocks``. A series keeps rollups
once it holds ROLLUP_MIN_POINTS points (engine.writer folds its earlier points in then).

Every value ends in a CRC-32 of its key and its bytes (format version 2), checked on
every read: a mismatch is a CorruptionError naming the table and the key. Version-1
stores have no checksums; ``engine.upgrade`` adds them.

User names are hashed into keys (LMDB keys stop at 511 bytes); the names themselves
live in values. Reads go through ``IndexReader``, which has no write method; writes
through ``IndexWriter``, in one transaction at a time. The environment is never used
after ``fork()`` (see Index).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import struct
import threading
import weakref
import zlib
from typing import Callable, Iterator, NamedTuple

import lmdb

from .aggregates import AGGREGATES, Aggregates, merge
from .block import (BLOCK_MAGIC, BLOCK_VERSION, CODEC_PLANE_FRAMES, HEADER_SIZE, KIND_SCALAR, MEMBER_MAGIC,
                    MEMBER_MARK, BlockHeader, unpack_header)
from .errors import (ClosedError, CorruptionError, FormatVersionError, InvalidArgumentError, StepLogError,
                     ReadOnlyError, StorageFullError, StorageIOError)

FORMAT_VERSION = 5
UNWRITTEN_PAGES = 8   # pages past the end of data.mdb a commit may count without writing them
FIRST_CHECKED_VERSION = 2      # values carry checksums from this version on
READABLE_VERSIONS = (1, 2, 3, 4, 5)  # older versions are upgraded when opened to write (engine.upgrade)
ROLLUP_MIN_POINTS = 4096       # a series keeps rollups from this many points on; smaller ones decode
# The map is reserved address space, not disk: sized so that it never needs to grow (LMDB
# forbids growing it while this process has a read transaction open).
MAP_SIZE = 1 << 38
_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
MAX_READERS = 1024
TABLES = ("meta", "experiments", "runs", "series", "series_info", "blocks", "segments", "heartbeats", "rollups",
          "aggregates", "changes", "catalog", "artifacts", "artifact_pages")
# Tables versions 4 and 5 added: a read-only open of an older index finds them missing and
# reads them as empty (it may not create them); an open to write creates them.
LATER_TABLES = frozenset(["aggregates", "changes", "catalog", "artifacts", "artifact_pages"])
CHECKSUM = struct.Struct("<I")

U64 = struct.Struct("<Q")
BE_U64 = struct.Struct(">Q")
BLOCK_KEY = struct.Struct(">QQQ")               # series_id, first_step ^ 2**63, block_seq
ROLLUP_KEY = struct.Struct(">QBQ")              # series_id, level, page_no ^ 2**63
SERIES_HEAD = struct.Struct("<QBB")             # series_id, kind, rollup_shift
BLOCK_LOCATION = struct.Struct("<QQ")           # segment_id, offset
SERIES_INFO = struct.Struct("<QQqqqQ")          # count, max step span of a block, step_min, step_max, last_step, last_seq
SERIES_INFO_V1 = struct.Struct("<QQqqq")        # version 1: without last_seq
PACKED = struct.Struct("<IIII")                 # series_info tail: segment_id, offset, pack length, member
PACKED_LIMIT = 1 << 32                          # a member at a segment or offset past u32 gets a block entry
NO_PACKED = bytes(PACKED.size)                  # a tail of zeros (pack length 0): no packed chunk
NAME_LEN = struct.Struct("<H")                  # series value: length of the name's UTF-8
MEMBER = struct.Struct("<IIIqq")                # blocks value tail: pack length, member, count, step_min, step_max
SEGMENT_INFO = struct.Struct("<QIq")            # committed_end, pid, created_ns
HEARTBEAT = struct.Struct("<IQq")               # pid, host hash, time_ns
WRITER_KEY = struct.Struct(">QI")               # heartbeats key after the run_id: host hash, pid
ARTIFACT_KEY = struct.Struct(">16sQ")           # run_id, seq (the run's artifacts in logging order, from 1)
STEP_BIAS = 1 << 63
HOST_ID = int.from_bytes(hashlib.blake2b(socket.gethostname().encode(), digest_size=8).digest(), "little")


def name_hash(*parts: str) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        h.update(U64.pack(len(data)))
        h.update(data)
    return h.digest()


def block_key(series_id: int, first_step: int, block_seq: int) -> bytes:
    return BLOCK_KEY.pack(series_id, (first_step + STEP_BIAS) & 0xFFFFFFFFFFFFFFFF, block_seq)


class BlockRef(NamedTuple):
    """Where a block lives and what its header says, as the index knows it."""

    seq: int
    segment_id: int
    offset: int
    header: BlockHeader
    header_bytes: bytes   # verbatim; must equal the header in the segment


class SeriesEntry(NamedTuple):
    series_id: int
    kind: int
    rollup_shift: int | None   # level-0 group width of the rollups, log2 of steps (None: none kept)


class SeriesInfo(NamedTuple):
    count: int
    max_span: int
    step_min: int
    step_max: int
    last_step: int       # step of the last point written, in write order (-1: none)
    last_seq: int        # block_seq of the block that holds it (0: none)
    packed: tuple | None = None   # (segment_id, offset, pack length, member) of its only chunk, a pack member

    @property
    def keeps_rollups(self) -> bool:
        return self.count >= ROLLUP_MIN_POINTS


EMPTY_SERIES = SeriesInfo(0, 0, 0, 0, -1, 0)


def member_ref(series_id: int, seq: int, segment_id: int, offset: int, pack_len: int, member: int, count: int,
               step_min: int, step_max: int) -> BlockRef:
    """The BlockRef of a pack member: its header says what a member's index entry
    knows (count, step range, the pack's length); value and time stats are not kept
    (NaN and 0), so readers decode members; ``header_bytes`` names the member."""
    nan = float("nan")
    header = BlockHeader(BLOCK_MAGIC, BLOCK_VERSION, KIND_SCALAR, CODEC_PLANE_FRAMES, series_id, count,
                         pack_len - HEADER_SIZE, 0, 0, step_min, step_max, 0, 0, nan, nan, nan, nan, nan, 0, 0)
    return BlockRef(seq, segment_id, offset, header, MEMBER_MARK.pack(MEMBER_MAGIC, series_id, member, count))


class Heartbeat(NamedTuple):
    """Proof of life of one process writing a run, renewed by its flusher; each writer
    (host, pid) of a run has its own."""

    pid: int
    host: int
    time_ns: int

    @classmethod
    def now(cls) -> "Heartbeat":
        return cls(os.getpid(), HOST_ID, _now_ns())


class MemberStats(NamedTuple):
    """NewBlock.header of a pack member: what its index entry keeps."""

    count: int
    step_min: int
    step_max: int


class NewBlock(NamedTuple):
    series_id: int
    offset: int
    header: BlockHeader
    header_bytes: bytes
    last_step: int       # step of its last point in write order
    seq: int             # its block_seq (engine.writer reserves them before the append)
    member: int = -1     # >= 0: member of the pack block at ``offset`` (then header_bytes is unused)
    pack_len: int = 0    # bytes of that pack block


_open_indexes: "weakref.WeakSet[Index]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for index in list(_open_indexes):
        index._forget_after_fork()
    _open_indexes.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Index:
    """An open LMDB environment and its tables, for one process.

    Thread-safe: ``read()`` gives each caller its own read transaction; ``write`` runs
    one write transaction at a time. An LMDB environment must never cross a fork: in a
    forked child the inherited one is closed at once and every use raises ClosedError;
    the child opens the store again. ``version`` is the store's format version.
    """

    def __init__(self, path: str, sync: bool, map_size: int = MAP_SIZE, create: bool = True,
                 readonly: bool = False):
        self.path = path
        self._readonly = readonly
        self.data_path = os.path.join(path, "data.mdb")
        self._sync = sync
        self._map_size = map_size
        self._write_lock = threading.Lock()
        self.version = 0   # until _check_format reads it
        self._open(create)

    def _open(self, create: bool) -> None:
        self._pid = os.getpid()
        try:
            self.env = lmdb.open(self.path, map_size=self._map_size, max_dbs=len(TABLES), subdir=True,
                                 sync=self._sync, metasync=self._sync, readahead=False,
                                 max_readers=MAX_READERS, lock=self._use_lock(), create=create,
                                 readonly=self._readonly)
        except lmdb.Error as exc:
            if "already open" in str(exc):
                raise ClosedError(f"{self.path} is already open in this process (LMDB allows one open "
                                  "environment a process): use that Store, or close it first") from None
            if "Permission denied" in str(exc) or isinstance(exc, lmdb.ReadonlyError):
                raise ReadOnlyError(f"{self.path}: this process may not write the index; open the store "
                                    "with mode='r' to read it") from None
            raise CorruptionError(self.data_path, 0, f"the index does not open: {exc}") from None
        _open_indexes.add(self)
        try:
            self._check_size()
            self._db = {name: self._open_table(name, create) for name in TABLES}
            self.env.reader_check()  # free reader slots of dead processes
            self.version = self._check_format(create)
        except lmdb.Error as exc:
            self.close()
            raise CorruptionError(self.data_path, 0, f"the index does not open: {exc}") from None
        except BaseException:
            self.close()
            raise

    def _open_table(self, name: str, create: bool):
        """The named database; None for a table of a later version that a read-only open
        of an older index lacks."""
        if name not in LATER_TABLES:
            return self.env.open_db(name.encode(), create=create)
        if not self._readonly:
            return self.env.open_db(name.encode(), create=True)
        try:
            return self.env.open_db(name.encode(), create=False)
        except lmdb.NotFoundError:
            return None

    def _use_lock(self) -> bool:
        """LMDB's lock file keeps writers off the pages readers use. A reader that may
        not write it (another user's store, a read-only directory) reads without it."""
        lock_path = os.path.join(self.path, "lock.mdb")
        return not self._readonly or os.access(lock_path if os.path.exists(lock_path) else self.path, os.W_OK)

    def _check_size(self) -> None:
        """A data file shorter than its last page would fault (SIGBUS) when read. LMDB's
        last page number may run a page past what its commits wrote (an open racing
        commits saw it one page short, its tree whole), so up to UNWRITTEN_PAGES are let
        be; a file cut short by damage loses more (half of it, in the damage tests)."""
        info, page = self.env.info(), self.env.stat()["psize"]
        size = os.path.getsize(self.data_path)
        if size < (info["last_pgno"] + 1 - UNWRITTEN_PAGES) * page:
            raise CorruptionError(self.data_path, size, f"index file cut short: {size} bytes, its pages "
                                  f"reach {(info['last_pgno'] + 1) * page}")

    def _env(self) -> lmdb.Environment:
        if self._pid != os.getpid():
            raise ClosedError("this store was opened before fork(); call steplog.open() again in the child process")
        return self.env

    def close(self) -> None:
        _open_indexes.discard(self)
        if self._pid == os.getpid():
            self.env.close()

    def _forget_after_fork(self) -> None:
        """In a forked child: close the inherited environment (LMDB forbids using it; its
        close touches only this process's reader slots) so the child can open the store."""
        try:
            self.env.close()
        except lmdb.Error:
            pass

    def _check_format(self, create: bool) -> int:
        def init(txn: IndexWriter) -> int:
            found = txn.format_version()
            if found is None and create:
                txn.set_format_version(FORMAT_VERSION)
                return FORMAT_VERSION
            return found

        with self.read() as txn:
            version = txn.format_version()
        if version is None and create:
            version = self.write(init)
        if version is None:
            raise CorruptionError(self.data_path, 0, "the index holds no format version")
        if version not in READABLE_VERSIONS:
            raise FormatVersionError(
                f"store index at {self.path} has format version {version}; this steplog reads "
                f"versions {', '.join(map(str, READABLE_VERSIONS))}")
        return version

    # -- transactions ---------------------------------------------------------------

    def write(self, fn: Callable[["IndexWriter"], object]):
        """Run ``fn`` in one write transaction, growing the map when it is full."""
        with self._write_lock:
            while True:
                env = self._env()
                try:
                    with env.begin(write=True) as txn:
                        writer = IndexWriter(txn, self._db, self.version >= FIRST_CHECKED_VERSION, self.data_path)
                        result = fn(writer)
                        writer.log_changes()
                        return result
                except lmdb.MapFullError:
                    if self._map_size >= MAP_SIZE:
                        raise StorageFullError(errno.ENOSPC, f"index map of {self._map_size} bytes is full") from None
                    self._map_size = min(MAP_SIZE, max(self._map_size, env.info()["map_size"]) * 2)
                    env.set_mapsize(self._map_size)
                except lmdb.MapResizedError:
                    env.set_mapsize(0)
                except lmdb.CorruptedError as exc:
                    raise CorruptionError(self.data_path, 0, f"index write found damage: {exc}") from None
                except lmdb.Error as exc:
                    raise _write_error(exc, self.data_path) from exc

    def read(self) -> "IndexReader":
        """A read transaction as a context manager: ``with index.read() as txn``."""
        env = self._env()
        try:
            try:
                txn = env.begin()
            except lmdb.MapResizedError:
                env.set_mapsize(0)
                txn = env.begin()
        except lmdb.Error as exc:
            raise CorruptionError(self.data_path, 0, f"index read transaction failed: {exc}") from None
        return IndexReader(txn, self._db, self.version >= FIRST_CHECKED_VERSION, self.data_path)


def _write_error(exc: lmdb.Error, path: str) -> StepLogError:
    """What a failed LMDB write was: out of room (disk, quota, file-size limit) or I/O."""
    text = str(exc)
    for code in _FULL_ERRNOS:
        if os.strerror(code) in text:
            return StorageFullError(code, f"index write failed: {exc}")
    if os.strerror(errno.EIO) in text:
        # LMDB reports a write cut short (by the file-size limit, say) as EIO.
        if _at_file_size_limit(path):
            return StorageFullError(errno.EFBIG, f"index write failed at the file-size limit: {exc}")
        return StorageIOError(errno.EIO, f"index write failed: {exc}")
    return StorageIOError(errno.EIO, f"index write failed: {exc}")


def _at_file_size_limit(path: str) -> bool:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft == resource.RLIM_INFINITY:
        stat = os.statvfs(path)
        return stat.f_bavail * stat.f_frsize < (1 << 20)
    return True


class IndexReader:
    """Typed reads of the tables inside one LMDB transaction. Checks every value's
    checksum; every damage found is a CorruptionError naming the table and key."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict, checked: bool, path: str):
        self.txn = txn
        self._db = dbs
        self._checked = checked
        self.path = path
        # version 1 (unchecked) series_info has no last_seq; only verify and upgrade read it
        self._series_info_layout = SERIES_INFO if checked else SERIES_INFO_V1

    def __enter__(self) -> "IndexReader":
        return self

    def __exit__(self, *exc) -> None:
        self.txn.abort()

    # -- checked access ----------------------------------------------------------------

    def _damage(self, table: str, key: bytes, reason: str) -> CorruptionError:
        return CorruptionError(self.path, 0, f"index table {table}, key {bytes(key).hex()}: {reason}")

    def _open_value(self, table: str, key: bytes, raw) -> bytes:
        return self._verified(table, key, raw) if self._checked else bytes(raw)

    def _verified(self, table: str, key: bytes, raw) -> bytes:
        """The value without its checksum, once the checksum holds."""
        if len(raw) < CHECKSUM.size:
            raise self._damage(table, key, "value too short for its checksum")
        payload = bytes(raw[:-CHECKSUM.size])
        if CHECKSUM.unpack_from(raw, len(raw) - CHECKSUM.size)[0] != zlib.crc32(payload, zlib.crc32(key)):
            raise self._damage(table, key, "checksum mismatch")
        return payload

    def has_table(self, table: str) -> bool:
        """False for a table of a later format version that this older index lacks."""
        return self._db[table] is not None

    def _get(self, table: str, key: bytes) -> bytes | None:
        if self._db[table] is None:
            return None
        try:
            raw = self.txn.get(key, db=self._db[table])
        except lmdb.Error as exc:
            raise self._damage(table, key, f"LMDB: {exc}") from None
        return None if raw is None else self._open_value(table, key, raw)

    def _scan(self, table: str, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) from ``start`` (or the first key) on, checked."""
        if self._db[table] is None:
            return
        try:
            cursor = self.txn.cursor(db=self._db[table])
            if not (cursor.first() if start is None else cursor.set_range(start)):
                return
            for key, raw in cursor:
                yield key, self._open_value(table, key, raw)
        except lmdb.Error as exc:
            raise self._damage(table, start or b"", f"LMDB: {exc}") from None

    def _unpack(self, layout: struct.Struct, table: str, key: bytes, value: bytes, exact: bool = True) -> tuple:
        if len(value) < layout.size or (exact and len(value) != layout.size):
            raise self._damage(table, key, f"value of {len(value)} bytes where {layout.size} belong")
        return layout.unpack_from(value)

    def _json(self, table: str, key: bytes, value: bytes) -> dict:
        try:
            record = json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._damage(table, key, f"bad JSON: {exc}") from None
        if not isinstance(record, dict):
            raise self._damage(table, key, "JSON value is not an object")
        return record

    def check_table(self, table: str) -> Iterator[tuple[bytes, str]]:
        """(key, reason naming table and key) of every value of ``table`` that fails its checksum or does not
        parse as its table's layout: verify walks the whole index with it (one read
        transaction a table: LMDB ends a transaction that meets a damaged page)."""
        from .rollup import page_arrays

        parse = {
            "meta": lambda k, v: self._unpack(U64, "meta", k, v),
            "experiments": lambda k, v: self._json("experiments", k, v),
            "runs": self._run_record,
            "series": self._series_entry,
            "series_info": lambda k, v: self._parse_series_info(k, v),
            "blocks": lambda k, v: self._block_ref(k, self._unpack(BLOCK_KEY, "blocks", k, k)[2], v),
            "segments": lambda k, v: self._unpack(SEGMENT_INFO, "segments", k, v),
            "heartbeats": lambda k, v: self._heartbeat(k, v),
            "rollups": lambda k, v: (self._unpack(ROLLUP_KEY, "rollups", k, k), page_arrays(v)),
            "aggregates": lambda k, v: (self._unpack(BE_U64, "aggregates", k, k), self._aggregates(k, v)),
            "changes": lambda k, v: (self._unpack(BE_U64, "changes", k, k), self._change(k, v)),
            "catalog": lambda k, v: None,   # checksums; engine.catalog checks what it loads
            "artifacts": lambda k, v: self._artifact(k, v),
            "artifact_pages": lambda k, v: (self._unpack(BE_U64, "artifact_pages", k, k), self._page(k, v)),
        }
        if self._db[table] is None:
            return
        key, previous = b"", None
        try:
            for key, raw in self.txn.cursor(db=self._db[table]):
                key = bytes(key)
                try:
                    if previous is not None and key <= previous:
                        raise self._damage(table, key, "keys out of order")
                    if self.txn.get(key, db=self._db[table]) != raw:   # a damaged branch page misroutes
                        raise self._damage(table, key, "a lookup of the key does not find it")
                    parse[table](key, self._open_value(table, key, raw))
                except CorruptionError as exc:
                    yield key, exc.reason
                previous = key
        except lmdb.Error as exc:
            yield key, self._damage(table, key, f"LMDB: {exc}").reason

    def tables(self) -> Iterator[tuple[str, bytes, bytes]]:
        """Every (table, key, value) of the index, checked: for verify and upgrade."""
        for table in TABLES:
            for key, value in self._scan(table):
                yield table, bytes(key), value

    # -- meta --------------------------------------------------------------------------

    def format_version(self) -> int | None:
        raw = self.txn.get(b"format", db=self._db["meta"])
        if raw is None:
            return None
        if len(raw) == U64.size:                  # version 1: no checksum
            return U64.unpack(raw)[0]
        return self._unpack(U64, "meta", b"format", self._verified("meta", b"format", raw))[0]

    def counter(self, name: bytes) -> int:
        raw = self._get("meta", name)
        return self._unpack(U64, "meta", name, raw)[0] if raw else 1

    # -- experiments and runs ----------------------------------------------------------

    def get_experiment(self, name: str) -> dict | None:
        key = name_hash(name)
        raw = self._get("experiments", key)
        return self._json("experiments", key, raw) if raw else None

    def experiments(self) -> Iterator[dict]:
        for key, raw in self._scan("experiments"):
            yield self._json("experiments", key, raw)

    def get_run(self, run_id: bytes) -> dict | None:
        raw = self._get("runs", run_id)
        return self._run_record(run_id, raw) if raw else None

    def runs(self) -> Iterator[dict]:
        for key, raw in self._scan("runs"):
            yield self._run_record(key, raw)

    def _run_record(self, key: bytes, raw: bytes) -> dict:
        record = self._json("runs", key, raw)
        if not RUN_FIELDS.issubset(record) or not isinstance(record["params"], dict) \
                or not isinstance(record["tags"], dict):
            raise self._damage("runs", key, "run record lacks fields")
        return record

    # -- series ------------------------------------------------------------------------

    def _series_entry(self, key: bytes, raw: bytes) -> tuple["SeriesEntry", dict]:
        entry = SeriesEntry._make(self._unpack(SERIES_HEAD, "series", key, raw, exact=False))
        body = raw[SERIES_HEAD.size:]
        if body[:1] == b"{":   # version 2: JSON {"name", "context"}
            record = self._json("series", key, body)
        else:
            record = self._series_names(key, body)
        if entry.kind not in SERIES_KINDS or not isinstance(record.get("name"), str) \
                or not isinstance(record.get("context"), str):
            raise self._damage("series", key, "bad series entry")
        return entry, record

    def _series_names(self, key: bytes, body: bytes) -> dict:
        """Version 3: u16 length of the name's UTF-8, the name, then the context's UTF-8."""
        if len(body) < NAME_LEN.size or len(body) < NAME_LEN.size + NAME_LEN.unpack_from(body)[0]:
            raise self._damage("series", key, "series names cut short")
        end = NAME_LEN.size + NAME_LEN.unpack_from(body)[0]
        try:
            return {"name": body[NAME_LEN.size:end].decode("utf-8", "surrogatepass"),
                    "context": body[end:].decode("utf-8", "surrogatepass")}
        except UnicodeDecodeError as exc:
            raise self._damage("series", key, f"series names are not UTF-8: {exc}") from None

    def get_series(self, run_id: bytes, name: str, context_json: str) -> "SeriesEntry | None":
        """The series' entry, None when the run has no such series. A miss walks the
        run's entries (checked): a damaged key must not read as a series never logged."""
        key = run_id + name_hash(name, context_json)
        raw = self._get("series", key)
        if raw:
            return self._series_entry(key, raw)[0]
        for _ in self.run_series(run_id):
            pass
        return None

    def run_series(self, run_id: bytes) -> Iterator[tuple["SeriesEntry", str, str]]:
        """(entry, name, context_json) of every series of a run."""
        for key, raw in self._scan("series", run_id):
            if key[:16] != run_id:
                break
            entry, record = self._series_entry(key, raw)
            yield entry, record["name"], record["context"]

    def all_series(self) -> Iterator[tuple[bytes, "SeriesEntry", str, str]]:
        """(run_id, entry, name, context_json) of every series of the store."""
        for key, raw in self._scan("series"):
            entry, record = self._series_entry(key, raw)
            yield bytes(key[:16]), entry, record["name"], record["context"]

    def series_info(self, series_id: int) -> SeriesInfo:
        """The stats of a series that has an entry (created with it: a miss is damage)."""
        key = BE_U64.pack(series_id)
        raw = self._get("series_info", key)
        if not raw:
            raise self._damage("series_info", key, "missing for a series that exists")
        return self._parse_series_info(key, raw)

    def _parse_series_info(self, key: bytes, raw: bytes) -> SeriesInfo:
        layout = self._series_info_layout
        if self._checked and len(raw) == layout.size + PACKED.size:
            fields, packed = layout.unpack_from(raw), PACKED.unpack_from(raw, layout.size)
            if packed[2] == 0:
                return SeriesInfo(*fields, None)
            info = SeriesInfo(*fields, packed)
            if info.count < 1 or packed[2] <= HEADER_SIZE:
                raise self._damage("series_info", key, "a packed chunk of no points")
            return info
        fields = self._unpack(layout, "series_info", key, raw)
        return SeriesInfo(*fields, *EMPTY_SERIES[len(fields):])

    def packed_ref(self, series_id: int, info: SeriesInfo) -> BlockRef | None:
        """The BlockRef of a series' only chunk when that is a pack member kept in its series_info."""
        if info.packed is None:
            return None
        segment_id, offset, pack_len, member = info.packed
        return member_ref(series_id, info.last_seq, segment_id, offset, pack_len, member, info.count,
                          info.step_min, info.step_max)

    # -- blocks ------------------------------------------------------------------------

    def blocks_overlapping(self, series_id: int, start: int | None, stop: int | None) -> list[BlockRef]:
        """Blocks of a series with any step in [start, stop), in key order.

        Blocks are keyed by their first step; a block that starts before ``start`` can
        still reach into the range, but never by more than the series' widest block
        (``max_span``), so the scan starts that far back and stays short. A read of the
        whole step range checks that its blocks add up to the series' count, and every
        scan that keys ascend and that the key before the first is outside the range (a
        damaged page can misplace keys whose values are intact).
        """
        info = self.series_info(series_id)
        if info.count == 0:
            return []
        packed = self.packed_ref(series_id, info)
        if packed is not None:   # its only chunk: no block entries to scan
            inside = (start is None or info.step_max >= start) and (stop is None or info.step_min < stop)
            return [packed] if inside else []
        lo = info.step_min if start is None else max(info.step_min, start - info.max_span)
        found, first, last_key = [], block_key(series_id, lo, 0), b""
        self._check_before(first)
        for key, value in self._scan("blocks", first):
            if key <= last_key:
                raise self._damage("blocks", key, "keys out of order")
            last_key = bytes(key)
            sid, biased_first, seq = self._unpack(BLOCK_KEY, "blocks", key, key)
            if sid != series_id or (stop is not None and biased_first - STEP_BIAS >= stop):
                break
            ref = self._block_ref(key, seq, value)
            if ref.header.series_id != series_id or ref.header.step_min != biased_first - STEP_BIAS:
                raise self._damage("blocks", key, "block entry does not match its key")
            if start is None or ref.header.step_max >= start:
                found.append(ref)
        whole = (start is None or start <= info.step_min) and (stop is None or stop > info.step_max)
        if whole and sum(r.header.count for r in found) != info.count:
            raise self._damage("series_info", BE_U64.pack(series_id),
                               f"series counts {info.count} points, its blocks hold "
                               f"{sum(r.header.count for r in found)}")
        return found

    def _check_before(self, start: bytes) -> None:
        """The key before the first at or after ``start`` must sort below ``start``."""
        try:
            cursor = self.txn.cursor(db=self._db["blocks"])
            before = cursor.prev() if cursor.set_range(start) else cursor.last()
            if before and cursor.key() >= start:
                raise self._damage("blocks", cursor.key(), "keys out of order")
        except lmdb.Error as exc:
            raise self._damage("blocks", start, f"LMDB: {exc}") from None

    def all_blocks(self) -> Iterator[BlockRef]:
        """Every chunk of every series: block entries, then the pack members kept in series_info."""
        for key, value in self._scan("blocks"):
            yield self._block_ref(key, self._unpack(BLOCK_KEY, "blocks", key, key)[2], value)
        for key, raw in self._scan("series_info"):
            series_id = self._unpack(BE_U64, "series_info", key, key)[0]
            packed = self.packed_ref(series_id, self._parse_series_info(key, raw))
            if packed is not None:
                yield packed

    def _block_ref(self, key: bytes, seq: int, value: bytes) -> BlockRef:
        if self._checked and len(value) == BLOCK_LOCATION.size + MEMBER.size:
            segment_id, offset = BLOCK_LOCATION.unpack_from(value)
            pack_len, member, count, step_min, step_max = MEMBER.unpack_from(value, BLOCK_LOCATION.size)
            if count < 1 or pack_len <= HEADER_SIZE or step_min > step_max:
                raise self._damage("blocks", key, "bad pack member entry")
            return member_ref(BLOCK_KEY.unpack(key)[0], seq, segment_id, offset, pack_len, member, count,
                              step_min, step_max)
        if len(value) != BLOCK_LOCATION.size + HEADER_SIZE:
            raise self._damage("blocks", key, f"value of {len(value)} bytes")
        segment_id, offset = BLOCK_LOCATION.unpack_from(value)
        header_bytes = value[BLOCK_LOCATION.size:]
        try:
            header = unpack_header(header_bytes)
        except CorruptionError as exc:
            raise self._damage("blocks", key, f"index entry of block {seq}: {exc.reason}") from None
        return BlockRef(seq, segment_id, offset, header, header_bytes)

    # -- rollups -----------------------------------------------------------------------

    def rollup_pages(self, series_id: int, level: int, page_lo: int, page_hi: int) -> list[tuple[int, bytes]]:
        """(page_no, page) of the stored pages with page_lo <= page_no < page_hi."""
        found = []
        start = ROLLUP_KEY.pack(series_id, level, (page_lo + STEP_BIAS) & 0xFFFFFFFFFFFFFFFF)
        for key, value in self._scan("rollups", start):
            sid, lvl, biased = self._unpack(ROLLUP_KEY, "rollups", key, key)
            page_no = biased - STEP_BIAS
            if sid != series_id or lvl != level or page_no >= page_hi:
                break
            found.append((page_no, value))
        return found

    # -- aggregates, the change log, the catalog ---------------------------------------

    def aggregates(self, series_id: int) -> Aggregates | None:
        """The kept aggregates of a scalar series (None: no point yet, or an index of
        version 3 or older, which keeps none)."""
        key = BE_U64.pack(series_id)
        raw = self._get("aggregates", key)
        return self._aggregates(key, raw) if raw else None

    def _aggregates(self, key: bytes, raw: bytes) -> Aggregates:
        found = Aggregates._make(self._unpack(AGGREGATES, "aggregates", key, raw))
        if not 0 < found.count or found.nan_count > found.count or not found.first_seq or not found.last_seq:
            raise self._damage("aggregates", key, "aggregates of no points")
        return found

    def all_aggregates(self) -> Iterator[tuple[int, Aggregates]]:
        for key, raw in self._scan("aggregates"):
            yield self._unpack(BE_U64, "aggregates", key, key)[0], self._aggregates(key, raw)

    def changes(self, after: int) -> Iterator[tuple[int, list[bytes]]]:
        """(change_seq, run_ids) of every logged change with change_seq > ``after``, in order."""
        for key, raw in self._scan("changes", BE_U64.pack(after + 1)):
            yield self._unpack(BE_U64, "changes", key, key)[0], self._change(key, raw)

    def _change(self, key: bytes, raw: bytes) -> list[bytes]:
        if not raw or len(raw) % 16:
            raise self._damage("changes", key, f"value of {len(raw)} bytes is no list of run ids")
        return [bytes(raw[i:i + 16]) for i in range(0, len(raw), 16)]

    # -- artifacts (version 5) ---------------------------------------------------------

    def artifact_values(self, run_id: bytes | None = None) -> list[bytes]:
        """The JSON artifact records of one run (in logging order) or of the store (by
        run, then logging order), checksums checked, not parsed: engine.artifacts
        parses them all in one call."""
        found = []
        for key, raw in self._scan("artifacts", run_id):
            if run_id is not None and key[:16] != run_id:
                break
            if len(key) != ARTIFACT_KEY.size:
                raise self._damage("artifacts", key, f"key of {len(key)} bytes")
            found.append(raw)
        return found

    def next_artifact_seq(self, run_id: bytes) -> int:
        """One past the seq of the run's last artifact (1 for its first)."""
        if self._db["artifacts"] is None:
            return 1
        cursor = self.txn.cursor(db=self._db["artifacts"])
        last = ARTIFACT_KEY.pack(run_id, 0xFFFFFFFFFFFFFFFF)
        before = cursor.prev() if cursor.set_range(last) else cursor.last()
        if before and cursor.key()[:16] == run_id:
            return ARTIFACT_KEY.unpack(cursor.key())[1] + 1
        return 1

    def _artifact(self, key: bytes, value: bytes) -> dict:
        if len(key) != ARTIFACT_KEY.size:
            raise self._damage("artifacts", key, f"key of {len(key)} bytes")
        record = self._json("artifacts", key, value)
        if record.get("run") != key[:16].hex() or record.get("seq") != ARTIFACT_KEY.unpack(key)[1]:
            raise self._damage("artifacts", key, "artifact record of another run or seq than its key")
        return record

    def artifact_pages(self) -> list:
        """Every artifact of the store as Arrow tables (engine.artifacts PAGE_SCHEMA), a
        page of up to PAGE_ROWS each, in logging order: the whole table reads a value per
        page, not one per artifact."""
        return [self._page(key, raw) for key, raw in self._scan("artifact_pages")]

    def _page(self, key: bytes, raw: bytes):
        from .artifacts import decode_page

        try:
            return decode_page(raw)
        except ValueError as exc:
            raise self._damage("artifact_pages", key, str(exc)) from None

    def artifact_records(self) -> Iterator[dict]:
        """Every artifact record, parsed and checked against its key (verify)."""
        for key, raw in self._scan("artifacts"):
            yield self._artifact(key, raw)

    def catalog_value(self, name: bytes) -> bytes | None:
        return self._get("catalog", name)

    def entries(self, table: str) -> int:
        """How many keys a table holds (LMDB keeps the count: no scan)."""
        if self._db[table] is None:
            return 0
        return self.txn.stat(self._db[table])["entries"]

    # -- segments and heartbeats -------------------------------------------------------

    def segment_end(self, segment_id: int) -> int | None:
        key = BE_U64.pack(segment_id)
        raw = self._get("segments", key)
        return self._unpack(SEGMENT_INFO, "segments", key, raw)[0] if raw else None

    def segments(self) -> Iterator[tuple[int, int]]:
        """(segment_id, committed_end) of every segment."""
        for key, raw in self._scan("segments"):
            yield self._unpack(BE_U64, "segments", key, key)[0], self._unpack(SEGMENT_INFO, "segments", key, raw)[0]

    def heartbeats(self) -> dict[bytes, list["Heartbeat"]]:
        """run_id -> the heartbeat of every writer of the run (a version-2 entry, keyed
        by the run alone, is that of its last writer)."""
        found: dict[bytes, list[Heartbeat]] = {}
        for key, value in self._scan("heartbeats"):
            found.setdefault(bytes(key[:16]), []).append(self._heartbeat(key, value))
        return found

    def _heartbeat(self, key: bytes, value: bytes) -> "Heartbeat":
        if len(key) not in (16, 16 + WRITER_KEY.size):
            raise self._damage("heartbeats", key, f"key of {len(key)} bytes")
        beat = Heartbeat._make(self._unpack(HEARTBEAT, "heartbeats", key, value))
        if len(key) > 16 and WRITER_KEY.unpack_from(key, 16) != (beat.host, beat.pid):
            raise self._damage("heartbeats", key, "heartbeat of another writer than its key names")
        return beat


class IndexWriter(IndexReader):
    """Reads and writes inside one LMDB write transaction (``Index.write``).

    Every change to a run's record, series or aggregates notes the run; at the end of
    the transaction the runs noted are logged under one new change_seq (table
    ``changes``), from which catalog readers learn what to read again."""

    track_changes = True   # repair and upgrade build whole indexes: no catalog to keep up

    def note_change(self, run_id: bytes) -> None:
        if self.track_changes:
            if not hasattr(self, "_changed"):
                self._changed: dict[bytes, None] = {}
            self._changed[bytes(run_id)] = None

    def log_changes(self) -> int | None:
        """Log the runs noted in this transaction under a new change_seq (Index.write
        calls it last); returns it, or None when nothing was noted."""
        changed = getattr(self, "_changed", None)
        if not changed or self._db["changes"] is None:
            return None
        seq = self.next_ids(b"next_change")
        self._put("changes", BE_U64.pack(seq), b"".join(changed))
        changed.clear()
        return seq

    def _put(self, table: str, key: bytes, value: bytes) -> None:
        if self._checked:
            value = value + CHECKSUM.pack(zlib.crc32(value, zlib.crc32(key)))
        self.txn.put(key, value, db=self._db[table])

    def put_raw(self, table: str, key: bytes, value: bytes) -> None:
        """Write a value as it is given (its checksum added): for upgrade and repair."""
        self._put(table, key, value)

    def set_format_version(self, version: int) -> None:
        self._checked = version >= FIRST_CHECKED_VERSION
        self._series_info_layout = SERIES_INFO if self._checked else SERIES_INFO_V1
        self._put("meta", b"format", U64.pack(version))

    def next_ids(self, counter: bytes, n: int = 1) -> int:
        """Reserve ``n`` consecutive ids from a counter; returns the first."""
        first = self.counter(counter)
        self._put("meta", counter, U64.pack(first + n))
        return first

    def put_experiment(self, record: dict) -> None:
        self._put("experiments", name_hash(record["name"]), _dumps(record))

    def delete_experiment(self, name: str) -> None:
        self.txn.delete(name_hash(name), db=self._db["experiments"])

    def put_run(self, run_id: bytes, record: dict) -> None:
        self._put("runs", run_id, _dumps(record))
        self.note_change(run_id)

    def merge_aggregates(self, run_id: bytes, series_id: int, new: Aggregates) -> None:
        """Fold the aggregates of newly indexed points into those kept for the series."""
        self.put_aggregates(series_id, merge(self.aggregates(series_id), new))
        self.note_change(run_id)

    def put_aggregates(self, series_id: int, found: Aggregates) -> None:
        self._put("aggregates", BE_U64.pack(series_id), found.pack())

    def put_artifacts(self, records: list[dict]) -> None:
        """Store artifact records under their run and seq, and append them, in this
        order, to the last page of ``artifact_pages`` (new pages past PAGE_ROWS); counts
        them in meta/next_artifact (readers keep the artifacts table while it holds)."""
        from .artifacts import PAGE_ROWS, encode_page, page_of

        for record in records:
            self._put("artifacts", ARTIFACT_KEY.pack(bytes.fromhex(record["run"]), record["seq"]), _dumps(record))
        rows, page_no = page_of(records), 0
        cursor = self.txn.cursor(db=self._db["artifact_pages"])
        if cursor.last():
            page_no = BE_U64.unpack(cursor.key())[0]
            last = self._page(bytes(cursor.key()), self._open_value("artifact_pages", bytes(cursor.key()),
                                                                     cursor.value()))
            if last.num_rows < PAGE_ROWS:
                rows = pa_concat([last, rows])
            else:
                page_no += 1
        for lo in range(0, rows.num_rows, PAGE_ROWS):
            self._put("artifact_pages", BE_U64.pack(page_no), encode_page(rows.slice(lo, PAGE_ROWS)))
            page_no += 1
        self.next_ids(b"next_artifact", len(records))

    def put_catalog(self, values: dict[bytes, bytes]) -> None:
        """Replace the catalog snapshot (engine.catalog), every value in one transaction."""
        for name, value in values.items():
            self._put("catalog", name, value)

    def drop_catalog(self) -> None:
        """Forget the snapshot (readers then build the catalog from the records)."""
        keys = [bytes(key) for key, _ in self.txn.cursor(db=self._db["catalog"])]
        for key in keys:
            self.txn.delete(key, db=self._db["catalog"])

    def trim_changes(self, through: int) -> None:
        """Drop the change log up to and including ``through`` (a snapshot covers it)."""
        cursor = self.txn.cursor(db=self._db["changes"])
        keys = []
        if cursor.first():
            for key in cursor.iternext(values=False):
                if BE_U64.unpack(key)[0] > through:
                    break
                keys.append(bytes(key))
        for key in keys:
            self.txn.delete(key, db=self._db["changes"])

    def create_series(self, run_id: bytes, name: str, context_json: str, kind: int,
                      rollup_shift: int, series_id: int | None = None) -> "SeriesEntry":
        """The series' entry, created if missing (then with ``kind`` and ``rollup_shift``,
        and a new id unless ``series_id`` is given)."""
        key = run_id + name_hash(name, context_json)
        raw = self._get("series", key)
        if raw:
            return self._series_entry(key, raw)[0]
        entry = SeriesEntry(self.next_ids(b"next_series") if series_id is None else series_id, kind, rollup_shift)
        name_bytes = name.encode("utf-8", "surrogatepass")
        if len(name_bytes) > 0xFFFF:
            raise InvalidArgumentError("name", "a series name holds at most 65535 bytes of UTF-8")
        self._put("series", key, SERIES_HEAD.pack(*entry) + NAME_LEN.pack(len(name_bytes)) + name_bytes
                  + context_json.encode("utf-8", "surrogatepass"))
        # Written at the size its first flush gives it (a pack member's reference, zero
        # here): a value that grows in place splits its page, and new ids come in order.
        self._put("series_info", BE_U64.pack(entry.series_id), SERIES_INFO.pack(*EMPTY_SERIES[:6]) + NO_PACKED)
        self.note_change(run_id)
        return entry

    def add_blocks(self, segment_id: int, blocks: list[NewBlock], committed_end: int) -> dict[int, int]:
        """Index the blocks of one flush and record how far the segment is committed.
        A series' last step is that of its block with the highest block_seq. Returns
        the count of points each series held before."""
        stats: dict[int, SeriesInfo] = {}
        before: dict[int, int] = {}
        for block in blocks:
            h = block.header
            info = stats.get(block.series_id)
            if info is None:
                info = self.series_info(block.series_id)
                before[block.series_id] = info.count
            inline = block.member >= 0 and segment_id < PACKED_LIMIT and block.offset < PACKED_LIMIT
            if info.count == 0 and inline:   # its only chunk: referenced from series_info alone
                stats[block.series_id] = SeriesInfo(h.count, h.step_max - h.step_min, h.step_min, h.step_max,
                                                    block.last_step, block.seq,
                                                    (segment_id, block.offset, block.pack_len, block.member))
                continue
            if info.packed is not None:   # no longer its only chunk: the member gets a block entry
                seg, offset, pack_len, member = info.packed
                self._put("blocks", block_key(block.series_id, info.step_min, info.last_seq),
                          BLOCK_LOCATION.pack(seg, offset)
                          + MEMBER.pack(pack_len, member, info.count, info.step_min, info.step_max))
                info = info._replace(packed=None)
            key = block_key(block.series_id, h.step_min, block.seq)
            if block.member >= 0:
                value = MEMBER.pack(block.pack_len, block.member, h.count, h.step_min, h.step_max)
            else:
                value = block.header_bytes
            self._put("blocks", key, BLOCK_LOCATION.pack(segment_id, block.offset) + value)
            if info.count == 0:
                info = SeriesInfo(0, 0, h.step_min, h.step_max, -1, 0)
            latest = block.seq > info.last_seq
            stats[block.series_id] = SeriesInfo(info.count + h.count, max(info.max_span, h.step_max - h.step_min),
                                                min(info.step_min, h.step_min), max(info.step_max, h.step_max),
                                                block.last_step if latest else info.last_step,
                                                block.seq if latest else info.last_seq)
        for series_id, info in stats.items():
            tail = b"" if info.packed is None else PACKED.pack(*info.packed)
            self._put("series_info", BE_U64.pack(series_id), SERIES_INFO.pack(*info[:6]) + tail)
        self.put_segment(segment_id, committed_end)
        return before

    def merge_rollups(self, series_id: int, level: int, groups) -> None:
        """Fold ``groups`` (engine.rollup.Groups of one level) into the stored pages."""
        from .rollup import merge_into_pages

        def key(page_no: int) -> bytes:
            return ROLLUP_KEY.pack(series_id, level, (page_no + STEP_BIAS) & 0xFFFFFFFFFFFFFFFF)

        merge_into_pages(groups, lambda page_no: self._get("rollups", key(page_no)),
                         lambda page_no, page: self._put("rollups", key(page_no), page))

    def put_segment(self, segment_id: int, committed_end: int) -> None:
        key = BE_U64.pack(segment_id)
        raw = self._get("segments", key)
        created = self._unpack(SEGMENT_INFO, "segments", key, raw)[2] if raw else _now_ns()
        self._put("segments", key, SEGMENT_INFO.pack(committed_end, os.getpid(), created))

    def delete_rollups(self, series_id: int) -> None:
        """Drop every rollup page of a series (the upgrade, for series too small to keep them)."""
        start = ROLLUP_KEY.pack(series_id, 0, 0)
        keys = []
        for key, _ in self._scan("rollups", start):
            if self._unpack(ROLLUP_KEY, "rollups", key, key)[0] != series_id:
                break
            keys.append(bytes(key))
        for key in keys:
            self.txn.delete(key, db=self._db["rollups"])

    def put_heartbeat(self, run_id: bytes, beat: "Heartbeat") -> None:
        """Renew the heartbeat of the writer ``beat`` names (host, pid) for ``run_id``."""
        self._put("heartbeats", run_id + WRITER_KEY.pack(beat.host, beat.pid), HEARTBEAT.pack(*beat))

    def delete_run_heartbeat(self, run_id: bytes) -> None:
        """The version-2 heartbeat of a run, keyed by the run alone (the upgrade rekeys it)."""
        self.txn.delete(run_id, db=self._db["heartbeats"])

    def delete_heartbeat(self, run_id: bytes, pid: int | None = None, host: int = HOST_ID) -> None:
        """Drop one writer's heartbeat of a run (default: this process's), when it ends
        the run or closes; the run's other writers keep theirs."""
        key = run_id + WRITER_KEY.pack(host, os.getpid() if pid is None else pid)
        self.txn.delete(key, db=self._db["heartbeats"])


RUN_FIELDS = frozenset(["id", "experiment", "name", "parent", "status", "start_time", "end_time", "params", "tags"])
SERIES_KINDS = (1, 2)   # engine.block KIND_SCALAR, KIND_SUMMARY


def pa_concat(tables: list):
    import pyarrow as pa

    return pa.concat_tables(tables).combine_chunks()


def _dumps(record: dict) -> bytes:
    return json.dumps(record, allow_nan=True).encode()


def _now_ns() -> int:
    import time

    return time.time_ns()
