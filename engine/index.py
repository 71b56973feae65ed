"""The LMDB index: every table, its key and value layout, and the transactions on it.

Tables (named LMDB databases; layouts in docs/FORMAT.md, "Index"):

    meta         ascii name          -> u64 LE                  format version, counters
    experiments  hash16(name)        -> JSON experiment record
    runs         run_id (16 bytes)   -> JSON run record
    series       run_id | hash16(name, context) -> series_id u64 LE | kind u8 | rollup_shift u8 | JSON {name, context}
    series_info  series_id u64 BE    -> SERIES_INFO struct (stats kept by every flush)
    blocks       series_id u64 BE | first_step biased u64 BE | block_seq u64 BE
                                     -> segment_id u64 LE | offset u64 LE | block header (112 bytes)
    segments     segment_id u64 BE   -> committed_end u64 LE | pid u32 LE | created_ns i64 LE
    heartbeats   run_id (16 bytes)   -> pid u32 LE | host u64 LE | time_ns i64 LE
    rollups      series_id u64 BE | level u8 | page_no biased u64 BE -> rollup page (engine/rollup.py)

User names are hashed into keys (LMDB keys stop at 511 bytes); the names themselves
live in values. Write transactions belong to one thread; the environment is never used
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
from typing import Callable, Iterator, NamedTuple

import lmdb

from .block import HEADER_SIZE, BlockHeader, unpack_header
from .errors import ClosedError, CorruptionError, FormatVersionError, StorageFullError

FORMAT_VERSION = 1
INITIAL_MAP_SIZE = 1 << 30
# A write that fails for lack of room: disk full, quota, file-size limit. LMDB reports a
# write cut short by the file-size limit as EIO, so EIO counts too (its message is kept).
_FULL_MESSAGES = tuple((code, os.strerror(code)) for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO))
MAX_READERS = 1024
TABLES = ("meta", "experiments", "runs", "series", "series_info", "blocks", "segments", "heartbeats", "rollups")

U64 = struct.Struct("<Q")
BE_U64 = struct.Struct(">Q")
BLOCK_KEY = struct.Struct(">QQQ")               # series_id, first_step ^ 2**63, block_seq
ROLLUP_KEY = struct.Struct(">QBQ")              # series_id, level, page_no ^ 2**63
SERIES_HEAD = struct.Struct("<QBB")             # series_id, kind, rollup_shift
BLOCK_LOCATION = struct.Struct("<QQ")           # segment_id, offset
SERIES_INFO = struct.Struct("<QQqqq")           # count, max step span of a block, step_min, step_max, last_step
SEGMENT_INFO = struct.Struct("<QIq")            # committed_end, pid, created_ns
HEARTBEAT = struct.Struct("<IQq")               # pid, host hash, time_ns
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
    rollup_shift: int    # level-0 group width of the rollups, log2 of steps


class SeriesInfo(NamedTuple):
    count: int
    max_span: int
    step_min: int
    step_max: int
    last_step: int       # step of the last point committed, in write order (-1: none)


EMPTY_SERIES = SeriesInfo(0, 0, 0, 0, -1)


class Heartbeat(NamedTuple):
    """Proof of life of the process writing a run, renewed by its flusher."""

    pid: int
    host: int
    time_ns: int

    @classmethod
    def now(cls) -> "Heartbeat":
        return cls(os.getpid(), HOST_ID, _now_ns())


class NewBlock(NamedTuple):
    series_id: int
    offset: int
    header: BlockHeader
    header_bytes: bytes
    last_step: int       # step of its last point in write order


_open_indexes: "weakref.WeakSet[Index]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for index in list(_open_indexes):
        index._forget_after_fork()
    _open_indexes.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Index:
    """An open LMDB environment and its tables, for one process.

    Thread-safe: read methods use their own read transaction; ``write`` runs one write
    transaction at a time. An LMDB environment must never cross a fork: in a forked
    child the inherited one is closed at once and every use raises ClosedError; the
    child opens the store again.
    """

    def __init__(self, path: str, sync: bool, writemap: bool = False, map_size: int = INITIAL_MAP_SIZE):
        self.path = path
        self._sync = sync
        self._writemap = writemap
        self._map_size = map_size
        self._write_lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        self._pid = os.getpid()
        try:
            self.env = lmdb.open(self.path, map_size=self._map_size, max_dbs=len(TABLES), subdir=True,
                                 sync=self._sync, metasync=self._sync, writemap=self._writemap,
                                 map_async=self._writemap, readahead=False,
                                 max_readers=MAX_READERS, lock=True)
        except lmdb.Error as exc:
            if "already open" in str(exc):
                raise ClosedError(f"{self.path} is already open in this process (LMDB allows one open "
                                  "environment a process): use that Store, or close it first") from None
            raise
        _open_indexes.add(self)
        self._db = {name: self.env.open_db(name.encode()) for name in TABLES}
        self.env.reader_check()  # free reader slots of dead processes
        self._check_format()

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

    def _check_format(self) -> None:
        def init(txn: IndexTxn) -> int:
            found = txn.txn.get(b"format", db=self._db["meta"])
            if found is None:
                txn.txn.put(b"format", U64.pack(FORMAT_VERSION), db=self._db["meta"])
                return FORMAT_VERSION
            return U64.unpack(found)[0]

        version = self.write(init)
        if version != FORMAT_VERSION:
            raise FormatVersionError(
                f"store index at {self.path} has format version {version}; this steplog reads {FORMAT_VERSION}")

    # -- transactions ---------------------------------------------------------------

    def write(self, fn: Callable[["IndexTxn"], object]):
        """Run ``fn`` in one write transaction, growing the map when it is full."""
        with self._write_lock:
            while True:
                env = self._env()
                try:
                    with env.begin(write=True) as txn:
                        return fn(IndexTxn(txn, self._db))
                except lmdb.MapFullError:
                    self._map_size = max(self._map_size, env.info()["map_size"]) * 2
                    env.set_mapsize(self._map_size)
                except lmdb.MapResizedError:
                    env.set_mapsize(0)
                except lmdb.Error as exc:
                    for code, text in _FULL_MESSAGES:
                        if text in str(exc):
                            raise StorageFullError(code, f"index write failed: {exc}") from exc
                    raise

    def read(self) -> "IndexTxn":
        """A read transaction as a context manager: ``with index.read() as txn``."""
        env = self._env()
        try:
            txn = env.begin()
        except lmdb.MapResizedError:
            env.set_mapsize(0)
            txn = env.begin()
        return IndexTxn(txn, self._db)


class IndexTxn:
    """Typed access to the tables inside one LMDB transaction."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict):
        self.txn = txn
        self._db = dbs

    def __enter__(self) -> "IndexTxn":
        return self

    def __exit__(self, *exc) -> None:
        self.txn.abort()

    # meta counters
    def next_ids(self, counter: bytes, n: int = 1) -> int:
        """Reserve ``n`` consecutive ids from a counter; returns the first."""
        raw = self.txn.get(counter, db=self._db["meta"])
        first = U64.unpack(raw)[0] if raw else 1
        self.txn.put(counter, U64.pack(first + n), db=self._db["meta"])
        return first

    # experiments and runs
    def get_experiment(self, name: str) -> dict | None:
        raw = self.txn.get(name_hash(name), db=self._db["experiments"])
        return json.loads(raw) if raw else None

    def put_experiment(self, record: dict) -> None:
        self.txn.put(name_hash(record["name"]), _dumps(record), db=self._db["experiments"])

    def get_run(self, run_id: bytes) -> dict | None:
        raw = self.txn.get(run_id, db=self._db["runs"])
        return json.loads(raw) if raw else None

    def put_run(self, run_id: bytes, record: dict) -> None:
        self.txn.put(run_id, _dumps(record), db=self._db["runs"])

    def runs(self) -> Iterator[dict]:
        for _, raw in self.txn.cursor(db=self._db["runs"]):
            yield json.loads(raw)

    # series
    def get_series(self, run_id: bytes, name: str, context_json: str) -> "SeriesEntry | None":
        raw = self.txn.get(run_id + name_hash(name, context_json), db=self._db["series"])
        return SeriesEntry._make(SERIES_HEAD.unpack_from(raw)) if raw else None

    def create_series(self, run_id: bytes, name: str, context_json: str, kind: int,
                      rollup_shift: int) -> "SeriesEntry":
        """The series' entry, created if missing (then with ``kind`` and ``rollup_shift``)."""
        key = run_id + name_hash(name, context_json)
        raw = self.txn.get(key, db=self._db["series"])
        if raw:
            return SeriesEntry._make(SERIES_HEAD.unpack_from(raw))
        entry = SeriesEntry(self.next_ids(b"next_series"), kind, rollup_shift)
        body = json.dumps({"name": name, "context": context_json}).encode()
        self.txn.put(key, SERIES_HEAD.pack(*entry) + body, db=self._db["series"])
        self.txn.put(BE_U64.pack(entry.series_id), SERIES_INFO.pack(*EMPTY_SERIES), db=self._db["series_info"])
        return entry

    def run_series(self, run_id: bytes) -> Iterator[tuple["SeriesEntry", str, str]]:
        """(entry, name, context_json) of every series of a run."""
        cursor = self.txn.cursor(db=self._db["series"])
        if not cursor.set_range(run_id):
            return
        for key, raw in cursor:
            if key[:16] != run_id:
                break
            record = json.loads(bytes(raw[SERIES_HEAD.size:]))
            yield SeriesEntry._make(SERIES_HEAD.unpack_from(raw)), record["name"], record["context"]

    def series_info(self, series_id: int) -> SeriesInfo:
        raw = self.txn.get(BE_U64.pack(series_id), db=self._db["series_info"])
        return SeriesInfo._make(SERIES_INFO.unpack(raw)) if raw else EMPTY_SERIES

    # blocks
    def add_blocks(self, segment_id: int, blocks: list[NewBlock], committed_end: int) -> None:
        """Index the blocks of one flush and record how far the segment is committed."""
        first_seq = self.next_ids(b"next_block", len(blocks))
        stats: dict[int, SeriesInfo] = {}
        blocks_db = self._db["blocks"]
        for i, block in enumerate(blocks):
            h = block.header
            key = block_key(block.series_id, h.step_min, first_seq + i)
            self.txn.put(key, BLOCK_LOCATION.pack(segment_id, block.offset) + block.header_bytes, db=blocks_db)
            info = stats.get(block.series_id) or self.series_info(block.series_id)
            if info.count == 0:
                info = SeriesInfo(0, 0, h.step_min, h.step_max, -1)
            stats[block.series_id] = SeriesInfo(info.count + h.count, max(info.max_span, h.step_max - h.step_min),
                                                min(info.step_min, h.step_min), max(info.step_max, h.step_max),
                                                block.last_step)
        for series_id, info in stats.items():
            self.txn.put(BE_U64.pack(series_id), SERIES_INFO.pack(*info), db=self._db["series_info"])
        self.put_segment(segment_id, committed_end)

    def blocks_overlapping(self, series_id: int, start: int | None, stop: int | None) -> list[BlockRef]:
        """Blocks of a series with any step in [start, stop), in key order.

        Blocks are keyed by their first step; a block that starts before ``start`` can
        still reach into the range, but never by more than the series' widest block
        (``max_span``), so the scan starts that far back and stays short.
        """
        info = self.series_info(series_id)
        if info.count == 0:
            return []
        lo = info.step_min if start is None else max(info.step_min, start - info.max_span)
        cursor = self.txn.cursor(db=self._db["blocks"])
        found = []
        if not cursor.set_range(block_key(series_id, lo, 0)):
            return found
        for key, value in cursor:
            sid, biased_first, seq = BLOCK_KEY.unpack(key)
            if sid != series_id or (stop is not None and biased_first - STEP_BIAS >= stop):
                break
            ref = _block_ref(seq, value)
            if start is None or ref.header.step_max >= start:
                found.append(ref)
        return found

    def all_blocks(self) -> Iterator[BlockRef]:
        for key, value in self.txn.cursor(db=self._db["blocks"]):
            yield _block_ref(BLOCK_KEY.unpack(key)[2], value)

    # rollups
    def merge_rollups(self, series_id: int, level: int, groups) -> None:
        """Fold ``groups`` (engine.rollup.Groups of one level) into the stored pages."""
        from .rollup import merge_into_pages

        db = self._db["rollups"]

        def key(page_no: int) -> bytes:
            return ROLLUP_KEY.pack(series_id, level, (page_no + STEP_BIAS) & 0xFFFFFFFFFFFFFFFF)

        merge_into_pages(groups, lambda page_no: self.txn.get(key(page_no), db=db),
                         lambda page_no, page: self.txn.put(key(page_no), page, db=db))

    def rollup_pages(self, series_id: int, level: int, page_lo: int, page_hi: int) -> list[tuple[int, bytes]]:
        """(page_no, page) of the stored pages with page_lo <= page_no < page_hi."""
        cursor = self.txn.cursor(db=self._db["rollups"])
        found = []
        if not cursor.set_range(ROLLUP_KEY.pack(series_id, level, (page_lo + STEP_BIAS) & 0xFFFFFFFFFFFFFFFF)):
            return found
        for key, value in cursor:
            sid, lvl, biased = ROLLUP_KEY.unpack(key)
            page_no = biased - STEP_BIAS
            if sid != series_id or lvl != level or page_no >= page_hi:
                break
            found.append((page_no, bytes(value)))
        return found

    # segments
    def put_segment(self, segment_id: int, committed_end: int) -> None:
        raw = self.txn.get(BE_U64.pack(segment_id), db=self._db["segments"])
        created = SEGMENT_INFO.unpack(raw)[2] if raw else _now_ns()
        self.txn.put(BE_U64.pack(segment_id), SEGMENT_INFO.pack(committed_end, os.getpid(), created),
                     db=self._db["segments"])

    # heartbeats of running runs
    def put_heartbeat(self, run_id: bytes, beat: "Heartbeat") -> None:
        self.txn.put(run_id, HEARTBEAT.pack(*beat), db=self._db["heartbeats"])

    def heartbeats(self) -> dict[bytes, "Heartbeat"]:
        return {bytes(k): Heartbeat._make(HEARTBEAT.unpack(v)) for k, v in self.txn.cursor(db=self._db["heartbeats"])}

    def segment_end(self, segment_id: int) -> int | None:
        raw = self.txn.get(BE_U64.pack(segment_id), db=self._db["segments"])
        return SEGMENT_INFO.unpack(raw)[0] if raw else None

    def segments(self) -> Iterator[tuple[int, int]]:
        """(segment_id, committed_end) of every segment."""
        for key, raw in self.txn.cursor(db=self._db["segments"]):
            yield BE_U64.unpack(key)[0], SEGMENT_INFO.unpack(raw)[0]


def _block_ref(seq: int, value: bytes) -> BlockRef:
    segment_id, offset = BLOCK_LOCATION.unpack_from(value)
    header_bytes = bytes(value[BLOCK_LOCATION.size:BLOCK_LOCATION.size + HEADER_SIZE])
    try:
        header = unpack_header(header_bytes)
    except CorruptionError as exc:
        raise CorruptionError("index", offset, f"index entry of block {seq}: {exc.reason}") from None
    return BlockRef(seq, segment_id, offset, header, header_bytes)


def _dumps(record: dict) -> bytes:
    return json.dumps(record, allow_nan=True).encode()


def _now_ns() -> int:
    import time

    return time.time_ns()
