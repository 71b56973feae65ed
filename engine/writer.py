"""The write path of one process: per-series buffers, a background flusher, backpressure.

``SeriesBuffer`` holds the unsealed points of one series logged by one thread, in three
Python lists (``cols``): appending to a list is the cheapest thing CPython does, and
only the owning thread appends, so logging takes no lock at all. Sealing hands the
points to the pending queue under ``seal_lock``: the owning thread seals a full buffer
and swaps in fresh lists; any other thread (``flush``, the interval timer) seals up to
the current length and leaves the lists alone (``taken`` marks how far was sealed).
The value is appended last, so ``len(values)`` counts complete points.

The flusher thread takes pending items, converts and encodes them into blocks, appends
the blocks to this writer's segment with one write, and indexes all of them in one LMDB
transaction; only then are the items dropped from the queue. A reader of the same
``Writer`` sees pending and unsealed points, so a read after ``log`` includes them.

Memory: the bytes of pending items are bounded by ``budget_bytes``; a seal that goes
over it makes the logging thread wait (backpressure). Unsealed buffers get the other
half of the budget: a buffer is sealed at ``seal_at`` points, which shrinks as buffers
are added (never below MIN_SEAL_POINTS), and every ``flush_interval`` seconds.

Thread rules: every public method may be called from any thread; a SeriesBuffer is
appended to by the thread that ``buffer()`` returned it to. Fork: a Writer is bound to
the process that made it; the child of a fork must open its own store.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from itertools import chain
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from . import aggregates, flushplan
from .aggregates import Aggregates
# imported here, not when a store closes at exit: an import then would make a Ctrl-C end
# the process with status 1 instead of by SIGINT
from .catalog import refresh as refresh_catalog
from .block import HEADER_SIZE, KIND_SCALAR, KIND_SUMMARY, BlockEncoder, encode_records, unpack_header
from .points import columns
from .errors import ClosedError, InvalidArgumentError, StepLogError
from .index import ROLLUP_MIN_POINTS, Heartbeat, Index, IndexWriter, MemberStats, NewBlock
from .layout import StoreLayout
from .segment import FILE_HEADER_SIZE, SegmentReader, SegmentWriter
from .threads import leave_signals_to_main_thread

if TYPE_CHECKING:   # imported when a flush first encodes in parallel (concurrent.futures costs an import)
    from concurrent.futures import ThreadPoolExecutor

POINT_BYTES = 24           # a sealed point in numpy columns
SUMMARY_ROW_BYTES = 1536   # a sealed tensor summary with a 64-bin histogram, about
SUMMARY_BLOCK_ROWS = 1024  # rows a summary block holds at most
LIST_POINT_BYTES = 112     # an unsealed point: three list slots and their int/float objects
MIN_SEAL_POINTS = 64
STEP_MAX = (1 << 63) - 1
MIN_SEAL_ROWS = 16
KIND_NAMES = {KIND_SCALAR: "scalar points", KIND_SUMMARY: "tensor summaries"}
DEFAULT_BLOCK_POINTS = 8192
DEFAULT_BUDGET_BYTES = 64 << 20
DEFAULT_FLUSH_INTERVAL = 5.0
SEGMENT_ROLL_BYTES = 1 << 30
ADOPT_CANDIDATES = 8       # the most recent segments a new writer tries to reuse
SEQ_CHUNK = 4096           # block_seqs a writer reserves at a time
HEARTBEAT_SECONDS = 10.0
CATALOG_SECONDS = 30.0     # how often the flusher sees whether the catalog snapshot is due
HEARTBEAT_RETRY_SECONDS = 1.0
WAIT_CHECK_SECONDS = 1.0   # how often a waiting caller checks that the flusher still runs
ENCODE_THREADS = 2
PARALLEL_MIN_BLOCKS = 4


class SeriesKey(NamedTuple):
    run_id: bytes
    name: str
    context: str      # canonical JSON of the context dict, "" for none


class SeriesBuffer:
    """Unsealed points of one series from one thread."""

    __slots__ = ("key", "series", "cols", "taken", "last_step")

    def __init__(self, key: SeriesKey, series: "SeriesRef", last_step: int):
        self.key = key
        self.series = series
        self.cols: tuple[list, list, list] = ([], [], [])   # steps, times, values
        self.taken = 0
        self.last_step = last_step   # step of the latest sealed point, for step=None

    def latest_step(self) -> int:
        steps = self.cols[0]
        return steps[-1] if len(steps) > self.taken else self.last_step

    def next_step(self) -> int:
        """The step that step=None gives now: one past the latest step any thread of this
        process logged to the series (or the stored last step + 1)."""
        step = max(buf.latest_step() for buf in self.series.buffers) + 1
        if step > STEP_MAX:
            raise InvalidArgumentError("step", f"the step after {step - 1} does not fit in int64; pass steps explicitly")
        return step

    def append(self, step: int | None, time_ns: int, value) -> None:
        """Append a point at ``step``, or at next_step() when it is None. (Run.log
        inlines this: it is the hot path.)"""
        if step is None:
            return self.append_next(time_ns, value)
        steps, times, values = self.cols
        steps.append(step)
        times.append(time_ns)
        values.append(value)   # last: len(values) counts complete points

    def append_next(self, time_ns: int, value) -> None:
        """Append a point at next_step(); under the series' step lock, so that two
        threads never take the same step."""
        series = self.series
        with series.step_lock:
            steps, times, values = self.cols
            if len(series.buffers) == 1:   # this thread's alone: next_step() without its loop
                step = (steps[-1] if len(steps) > self.taken else self.last_step) + 1
                if step > STEP_MAX:
                    step = self.next_step()   # raises
            else:
                step = self.next_step()
            steps.append(step)
            times.append(time_ns)
            values.append(value)


class SeriesRef:
    """The index id of a series, resolved by the flusher on its first block."""

    __slots__ = ("key", "kind", "series_id", "rollup_shift", "refused", "buffers", "step_lock")

    def __init__(self, key: SeriesKey, kind: int):
        self.key = key
        self.kind = kind            # KIND_SCALAR or KIND_SUMMARY (engine.block)
        self.buffers: list[SeriesBuffer] = []   # one a thread that logs to the series
        self.step_lock = threading.Lock()       # taken by step=None: one step counter a process
        self.series_id: int | None = None
        self.rollup_shift = 0
        self.refused: StepLogError | None = None   # why the store refuses this series' points

    @property
    def point_bytes(self) -> int:
        return POINT_BYTES if self.kind == KIND_SCALAR else SUMMARY_ROW_BYTES


class Sealed(NamedTuple):
    series: SeriesRef
    steps: "list | np.ndarray"
    times: "list | np.ndarray"
    values: "list | np.ndarray"
    ticket: int


class Writer:
    def __init__(self, layout: StoreLayout, index: Index, *, fsync: bool, budget_bytes: int,
                 block_points: int, flush_interval: float | None):
        self.layout = layout
        self.index = index
        self.block_points = block_points
        self.seal_at = block_points   # points at which the owner seals a buffer
        self.summary_seal_at = SUMMARY_BLOCK_ROWS
        self.budget_bytes = budget_bytes
        self.flush_interval = flush_interval
        self._fsync = fsync
        self._pid = os.getpid()
        self.seal_lock = threading.Lock()
        self._series: dict[SeriesKey, SeriesRef] = {}
        self._run_series: dict[bytes, list[SeriesRef]] = {}   # run id -> its entries of _series
        self._buffers: list[SeriesBuffer] = []
        self._thread_buffers: dict[tuple[int, SeriesKey], SeriesBuffer] = {}
        self._run_buffers: dict[bytes, list[SeriesBuffer]] = {}   # flush(run_id) seals these alone
        self._run_tickets: dict[bytes, int] = {}   # run_id -> ticket of its latest sealed item
        self._cv = threading.Condition(threading.Lock())
        self.publish_lock = threading.Lock()   # held while a commit becomes visible
        self.segment_lock = threading.Lock()   # one append-and-commit at a time on this writer's segment
        self._seqs = (0, 0)                    # block_seqs reserved and not yet used: [first, end)
        self._pending: deque[Sealed] = deque()
        self._pending_bytes = 0
        self._last_ticket = 0
        self._done_ticket = 0
        self._error: BaseException | None = None
        self._refused: list[StepLogError] = []   # series refused by the flusher, told by the next flush
        self._closing = False
        self._segment: SegmentWriter | None = None
        self.live_runs: set[bytes] = set()     # runs whose heartbeat this writer renews
        self._next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
        self._next_catalog = time.monotonic() + CATALOG_SECONDS
        self._next_seal = time.monotonic() + (flush_interval or float("inf"))
        self._local = threading.local()        # one BlockEncoder per encoding thread
        self._pool: ThreadPoolExecutor | None = None
        self._reader: SegmentReader | None = None   # the flusher's, for rollups of stored points
        self._decoder = None
        self._thread = threading.Thread(target=self._run, name="steplog-flusher", daemon=True)
        self._thread.start()

    # -- logging side ------------------------------------------------------------------

    def buffer(self, key: SeriesKey, last_step: int, kind: int = KIND_SCALAR) -> SeriesBuffer:
        """A new buffer for the calling thread to append points (or, for KIND_SUMMARY,
        summary rows) of ``key`` to."""
        with self.seal_lock:
            self._check_usable()
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = SeriesRef(key, kind)
                self._run_series.setdefault(key.run_id, []).append(series)
            elif series.kind != kind:
                raise InvalidArgumentError("name", f"{key.name!r} already holds {KIND_NAMES[series.kind]}")
            mine = (threading.get_ident(), key)
            buf = self._thread_buffers.get(mine)
            if buf is not None:   # one buffer a thread and series: one write order
                return buf
            buf = self._thread_buffers[mine] = SeriesBuffer(key, series, last_step)
            self._buffers.append(buf)
            self._run_buffers.setdefault(key.run_id, []).append(buf)
            series.buffers.append(buf)
            share = self.budget_bytes // 2 // len(self._buffers)
            self.seal_at = max(MIN_SEAL_POINTS, min(self.block_points, share // LIST_POINT_BYTES))
            self.summary_seal_at = max(MIN_SEAL_ROWS, min(SUMMARY_BLOCK_ROWS, share // SUMMARY_ROW_BYTES))
            return buf

    def seal_full(self, buf: SeriesBuffer) -> None:
        """Called by the thread that owns ``buf`` when it holds ``seal_at`` points."""
        with self.seal_lock:
            over_budget = self._seal(buf, owner=True)
        if over_budget:
            self.wait_for_room()

    def _seal(self, buf: SeriesBuffer, owner: bool) -> bool:
        """Queue the unsealed points of ``buf``. Caller holds ``seal_lock``. The owner swaps
        in fresh lists; others only advance ``taken``. Returns True when over budget."""
        steps, times, values = buf.cols
        n, taken = len(values), buf.taken
        over_budget = False
        if buf.series.refused is not None:   # refused by the flusher: drop, and say so
            buf.cols, buf.taken = ([], [], []), 0
            if owner:
                raise buf.series.refused
            with self._cv:
                if n > taken and buf.series.refused not in self._refused:
                    self._refused.append(buf.series.refused)
            return False
        if n > taken:
            buf.last_step = steps[n - 1]
            if owner and taken == 0 and len(steps) == n:
                over_budget = self.enqueue(buf.series, steps, times, values)
            else:
                over_budget = self.enqueue(buf.series, steps[taken:n], times[taken:n], values[taken:n])
        if owner:
            buf.cols, buf.taken = ([], [], []), 0
        else:
            buf.taken = n
        return over_budget

    def seal_for_batch(self, buf: SeriesBuffer, steps: np.ndarray, times: np.ndarray, values: np.ndarray) -> None:
        """Queue a log_batch chunk after the unsealed points of ``buf`` (write order)."""
        with self.seal_lock:
            self._seal(buf, owner=True)
            over_budget = self.enqueue(buf.series, steps, times, values)
            buf.last_step = int(steps[-1])
        if over_budget:
            self.wait_for_room()

    def enqueue(self, series: SeriesRef, steps, times, values) -> bool:
        if series.refused is not None:
            raise series.refused
        with self._cv:
            self._check_usable()
            self._last_ticket += 1
            self._run_tickets[series.key.run_id] = self._last_ticket
            self._pending.append(Sealed(series, steps, times, values, self._last_ticket))
            self._pending_bytes += len(values) * series.point_bytes
            if self._pending_bytes >= self.budget_bytes or len(self._pending) == 1:
                self._cv.notify_all()
            return self._pending_bytes > self.budget_bytes

    def wait_for_room(self) -> None:
        with self._cv:
            while self._pending_bytes > self.budget_bytes and self._error is None and not self._closing:
                self._wait()
            self._raise_error()

    def seal_all(self, run_id: bytes | None = None) -> None:
        """Queue the unsealed points of every buffer, or of ``run_id``'s buffers alone."""
        with self.seal_lock:
            for buf in self._buffers if run_id is None else self._run_buffers.get(run_id, ()):
                if len(buf.cols[2]) > buf.taken or buf.series.refused is not None:
                    self._seal(buf, owner=False)

    def flush(self, run_id: bytes | None = None) -> None:
        """Return once every point logged before the call is indexed (or raise why not);
        with ``run_id``, every point of that run (its own buffers are sealed, and the wait
        ends once its last item is written: items are written in the order sealed)."""
        self.seal_all(run_id)
        with self._cv:
            self._error = None  # a flush retries what failed before
            target = self._last_ticket if run_id is None else self._run_tickets.get(run_id, 0)
            self._cv.notify_all()
            while self._done_ticket < target and self._error is None:
                self._wait()
            self._raise_error()
            if self._refused:
                refused, self._refused = self._refused[0], []
                raise refused

    def close(self) -> None:
        if self._pid != os.getpid():
            return
        try:
            if self._thread.is_alive():
                self.flush()
            self._drop_heartbeats()
            self._refresh_catalog()
        finally:
            with self._cv:
                self._closing = True
                self._cv.notify_all()
            self._thread.join()
            if self._pool is not None:
                self._pool.shutdown()
            if self._segment is not None:
                self._segment.close()
            if self._reader is not None:
                self._reader.close()

    def _drop_heartbeats(self) -> None:
        """This writer's heartbeats of the runs it still holds: a closed writer is no
        proof that they live (their other writers keep their own)."""
        runs, self.live_runs = list(self.live_runs), set()
        if runs:
            try:
                self.index.write(lambda txn: [txn.delete_heartbeat(run_id) for run_id in runs])
            except (StepLogError, OSError):
                pass   # a heartbeat left behind goes stale (60 s): the run then reads as crashed

    def _refresh_catalog(self) -> None:
        """A new catalog snapshot when enough changed (engine.catalog.refresh)."""
        try:
            refresh_catalog(self.index)
        except (StepLogError, OSError):
            pass   # derived state: readers read the change log, or the records, instead

    def _check_usable(self) -> None:
        if self._closing:
            raise ClosedError("the store is closed")
        if self._pid != os.getpid():
            raise ClosedError("this store was opened before fork(); open it again in the child process")

    def _wait(self) -> None:
        """Wait on ``_cv`` (held) for the flusher; raise if it is gone, never wait forever."""
        self._cv.wait(WAIT_CHECK_SECONDS)
        if not self._thread.is_alive() and self._error is None:
            self._error = StepLogError("the flusher thread has stopped; unflushed points cannot be written")

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # -- reading side ------------------------------------------------------------------

    def kind_of(self, key: SeriesKey) -> int | None:
        series = self._series.get(key)
        return None if series is None else series.kind

    def series_keys(self, kind: int, run_id: bytes | None = None) -> list[SeriesKey]:
        """The series of ``kind`` this writer has buffers for (of one run, or all)."""
        with self.seal_lock:
            held = self._series.values() if run_id is None else self._run_series.get(run_id, ())
            return [series.key for series in held if series.kind == kind]

    def unflushed_many(self, keys) -> dict[SeriesKey, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """The points of each key not yet indexed, in write order, in one pass over the
        pending items. Caller holds ``publish_lock``."""
        found: dict[SeriesKey, list] = {key: [] for key in keys}
        with self.seal_lock:
            if self._pending:
                for item in self._pending:
                    chunks = found.get(item.series.key)
                    if chunks is not None:
                        chunks.append(item[1:4])
            for key, chunks in found.items():
                series = self._series.get(key)
                for buf in series.buffers if series is not None else ():
                    steps, times, values = buf.cols
                    n = len(values)
                    if n > buf.taken:
                        chunks.append((steps[buf.taken:n], times[buf.taken:n], values[buf.taken:n]))
        return {key: [columns(*chunk) for chunk in chunks] for key, chunks in found.items()}

    # -- flusher thread ----------------------------------------------------------------

    def _run(self) -> None:
        leave_signals_to_main_thread()
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if batch:
                    self._write_batch(batch)
                self._on_timer()
        finally:
            with self._cv:
                self._cv.notify_all()   # waiters see the thread is gone

    def _write_batch(self, batch: list[Sealed]) -> None:
        try:
            groups = flushplan.by_series(batch)
            self._resolve_series(groups)
            taken = batch
            groups = [group for group in groups if group.series.refused is None]
            if not groups:
                self._retire(taken)
                return
            work = flushplan.plan(groups, self.block_points, SUMMARY_BLOCK_ROWS)
            encoding = self._start_encoding(work)
            rollups = self._batch_rollups(groups)   # on this thread, while the pool encodes
            found = flushplan.aggregates(groups)
            encoded = self._encoded(work, encoding)
            with self.segment_lock:
                segment, start, blocks = self._append_blocks(groups, work, encoded)
                found = self._placed_aggregates(groups, found, blocks)

                def commit(txn: IndexWriter) -> None:
                    before = txn.add_blocks(segment.segment_id, blocks, segment.size)
                    self._fold_rollups(txn, groups, rollups, before, {block.seq for block in blocks})
                    for run_id, series_id, aggregates in found:
                        txn.merge_aggregates(run_id, series_id, aggregates)

                with self.publish_lock:
                    try:
                        self.index.write(commit)
                    except BaseException:
                        segment.cut_back(start)   # a retry appends them again
                        raise
                    segment.recorded.update(group.series.key for group in groups)
                    self._retire(taken)
        except BaseException as exc:  # raised again in the thread that waits in flush()
            with self._cv:
                self._error = exc
                self._cv.notify_all()

    def _retire(self, batch: list[Sealed]) -> None:
        """Drop a batch (the oldest pending items), written or refused."""
        with self._cv:
            for item in batch:
                self._pending.popleft()
                if item.series.refused is not None and item.series.refused not in self._refused:
                    self._refused.append(item.series.refused)
            self._pending_bytes -= sum(len(s.values) * s.series.point_bytes for s in batch)
            self._done_ticket = batch[-1].ticket
            self._cv.notify_all()

    def _on_timer(self) -> None:
        if time.monotonic() >= self._next_seal:
            self._next_seal = time.monotonic() + self.flush_interval
            self.seal_all()  # make buffered points visible to other processes
        if time.monotonic() >= self._next_catalog:
            self._next_catalog = time.monotonic() + CATALOG_SECONDS
            self._refresh_catalog()
        if time.monotonic() >= self._next_heartbeat:
            self._next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
            runs, beat = list(self.live_runs), Heartbeat.now()
            try:
                self.index.write(lambda txn: [txn.put_heartbeat(run_id, beat) for run_id in runs])
            except (StepLogError, OSError):
                # A heartbeat is proof of life, not data: try again soon; points are not held up.
                self._next_heartbeat = time.monotonic() + HEARTBEAT_RETRY_SECONDS

    def _next_batch(self) -> list[Sealed] | None:
        """Pending items to write; [] when a timer is due; None to stop."""
        deadline = min(self._next_seal, self._next_heartbeat, self._next_catalog)
        with self._cv:
            while True:
                if self._closing:
                    return None
                if self._pending and self._error is None:
                    return self._take_batch()
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return []
                self._cv.wait(timeout)

    def _take_batch(self) -> list[Sealed]:
        """The oldest pending items, up to a quarter of the budget, so that logging can
        refill the queue while they are written."""
        batch, size = [], 0
        for item in self._pending:
            batch.append(item)
            size += len(item.values) * item.series.point_bytes
            if size >= self.budget_bytes // 4:
                break
        return batch

    def _start_encoding(self, chunks: list[tuple]):
        """Futures encoding the chunks on the pool (kernels and zstd release the GIL), or
        None to encode them on this thread (few chunks, or the interpreter is exiting)."""
        if len(chunks) < PARALLEL_MIN_BLOCKS:
            return None
        try:
            return [self._encode_pool().submit(self._encode, chunk) for chunk in chunks]
        except RuntimeError:  # executors stop at interpreter exit, before atexit flushes
            return None

    def _encoded(self, chunks: list[tuple], futures) -> list[bytes]:
        if futures is None:
            return [self._encode(chunk) for chunk in chunks]
        return [future.result() for future in futures]

    def _append_blocks(self, groups: list[flushplan.SeriesPoints], work: list[flushplan.Work],
                       encoded: list[bytes]) -> tuple[SegmentWriter, int, list[NewBlock]]:
        """Append the blocks after one record block that holds the record of each series
        this segment lacks (so that repair finds every series defined before its blocks)
        and the block_seq of the first block (a pack takes one for each member). Caller
        holds segment_lock. Returns the segment, where the append starts, and the blocks
        to index."""
        segment = self._segment_for_append()
        seqs = sum(len(w.members) or 1 for w in work)
        first_seq = self._reserve_seqs(seqs)
        records = (series_record(group.series) for group in groups if group.series.key not in segment.recorded)
        head = encode_records(chain(records, [{"type": "blocks", "first_seq": first_seq, "count": seqs}]),
                              time.time_ns())
        start = segment.size
        blocks, offset, seq = [], start + len(head), first_seq
        for w, data in zip(work, encoded):
            if w.kind == "pack":
                for j, m in enumerate(w.members):
                    stats = MemberStats(m.count, m.step_min, m.step_max)
                    blocks.append(NewBlock(m.series_id, offset, stats, b"", m.last_step, seq, j, len(data)))
                    seq += 1
            else:
                header = unpack_header(data)
                blocks.append(NewBlock(header.series_id, offset, header, data[:HEADER_SIZE], w.last_step, seq))
                seq += 1
            offset += len(data)
        segment.append(head + b"".join(encoded))
        return segment, start, blocks

    def _placed_aggregates(self, groups: list[flushplan.SeriesPoints], found: dict,
                           blocks: list[NewBlock]) -> list[tuple[bytes, int, Aggregates]]:
        """(run_id, series_id, aggregates) of each scalar series of the flush, each chosen
        point's position replaced by the block_seq of its chunk: a series' points fill
        its blocks of block_points in order, or are one pack member."""
        seqs: dict[int, list[int]] = {}
        for block in blocks:
            seqs.setdefault(block.series_id, []).append(block.seq)
        per_block = self.block_points
        placed = []
        for group in groups:
            series_id = group.series.series_id
            if series_id in found:
                mine = seqs[series_id]
                placed.append((group.series.key.run_id, series_id, aggregates.placed(
                    found[series_id], lambda pos, mine=mine: mine[min(pos // per_block, len(mine) - 1)])))
        return placed

    def _reserve_seqs(self, n: int) -> int:
        """The first of ``n`` block_seqs for this writer's next commit. They are reserved
        from the index SEQ_CHUNK at a time, so a flush needs no transaction of its own;
        the order of blocks (ties between equal steps) is thus the same in the index and
        in the segments, which repair reads it from."""
        if self._seqs[1] - self._seqs[0] < n:
            count = max(n, SEQ_CHUNK)
            first = self.index.write(lambda txn: txn.next_ids(b"next_block", count))
            self._seqs = (first, first + count)
        first = self._seqs[0]
        self._seqs = (first + n, self._seqs[1])
        return first

    def commit_records(self, fn):
        """Run ``fn(txn) -> (result, records)`` in one index write transaction and append
        ``records`` (index records as dicts, engine.records) to this writer's segment in
        it, numbered in commit order; returns ``result``. Store metadata goes through
        here, so that the segments hold everything the index holds."""
        with self.segment_lock:
            self._check_usable()
            segment = self._segment_for_append()
            appended = []

            def write(txn: IndexWriter):
                if appended:   # a retried transaction: drop what the last try appended
                    segment.cut_back(appended.pop())
                result, records = fn(txn)
                if records:
                    first = txn.next_ids(b"next_record", len(records))
                    for i, record in enumerate(records):
                        record["seq"] = first + i
                    appended.append(segment.size)
                    segment.append(encode_records(records, time.time_ns()))
                    txn.put_segment(segment.segment_id, segment.size)
                return result

            try:
                return self.index.write(write)
            except BaseException:
                if appended:
                    segment.cut_back(appended[0])
                raise

    @staticmethod
    def _batch_rollups(groups: list[flushplan.SeriesPoints]) -> dict[int, list]:
        """Rollup groups of every level for the series whose points in this flush alone
        reach ROLLUP_MIN_POINTS (they keep rollups whatever the store holds); the others
        are decided in the commit, from the count stored before it."""
        from .rollup import all_levels

        found = {}
        for group in groups:
            if group.series.kind == KIND_SCALAR and len(group.values) >= ROLLUP_MIN_POINTS:
                steps, _, values = group.arrays()
                found[group.series.series_id] = all_levels(steps, values, group.series.rollup_shift)
        return found

    def _fold_rollups(self, txn: IndexWriter, groups: list[flushplan.SeriesPoints], ready: dict,
                      counts: dict[int, int], new_seqs: set[int]) -> None:
        """Fold this flush's points into the rollups of every series that keeps them
        after it (``counts``: points each held before it). A series that reaches
        ROLLUP_MIN_POINTS now gets its stored points folded first (the earlier writes;
        the blocks of this flush, ``new_seqs``, are indexed already and left out)."""
        from .rollup import all_levels

        for group in groups:
            if group.series.kind != KIND_SCALAR:
                continue
            series_id, shift = group.series.series_id, group.series.rollup_shift
            before = counts[series_id]
            if before + len(group.values) < ROLLUP_MIN_POINTS:
                continue
            folds = []
            if 0 < before < ROLLUP_MIN_POINTS:
                steps, values = self._stored_points(txn, series_id, new_seqs)
                folds.append(all_levels(steps, values, shift))
            levels = ready.get(series_id)
            if levels is None:
                steps, _, values = group.arrays()
                levels = all_levels(steps, values, shift)
            folds.append(levels)
            for levels in folds:
                for level, found in enumerate(levels):
                    txn.merge_rollups(series_id, level, found)

    def _stored_points(self, txn: IndexWriter, series_id: int, leave_out: set[int]) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values of a (small) stored series, in write order, but for the
        blocks whose block_seq is in ``leave_out``."""
        from .block import BlockDecoder

        if self._reader is None:
            self._reader, self._decoder = SegmentReader(self.layout.segment_path, max_open=4), BlockDecoder()
        parts = []
        for ref in sorted(txn.blocks_overlapping(series_id, None, None), key=lambda r: r.seq):
            if ref.seq in leave_out:
                continue
            data = self._reader.read(ref.segment_id, ref.offset, ref.header.length)
            parts.append(self._decoder.decode(data, self.layout.segment_path(ref.segment_id), ref.offset,
                                              ref.header_bytes, KIND_SCALAR))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[2] for p in parts])

    def _encode(self, work: flushplan.Work) -> bytes:
        encoder = getattr(self._local, "encoder", None)
        if encoder is None:
            encoder = self._local.encoder = BlockEncoder(self.block_points)
        if work.kind == "points":
            return encoder.encode(*work.args)
        if work.kind == "pack":
            return encoder.encode_pack(*work.args)
        return encoder.encode_summaries(*work.args)

    def _encode_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="steplog-encode",
                                            initializer=leave_signals_to_main_thread)
        return self._pool

    def _resolve_series(self, groups: list[flushplan.SeriesPoints]) -> None:
        from .rollup import base_shift

        new = {}
        for group in groups:
            series = group.series
            if series.series_id is None and series.key not in new:
                new[series.key] = (series, base_shift(group.steps) if series.kind == KIND_SCALAR else 0)
        if not new:
            return

        def create(txn: IndexWriter) -> dict:
            first = txn.next_ids(b"next_series", len(new))   # one counter update for all
            return {key: txn.create_series(key.run_id, key.name, key.context, series.kind, shift, first + i)
                    for i, (key, (series, shift)) in enumerate(new.items())}

        for key, entry in self.index.write(create).items():
            series = new[key][0]
            if entry.kind != series.kind:   # another process made it first, of the other kind
                series.refused = InvalidArgumentError(
                    "name", f"{key.name!r} already holds {KIND_NAMES[entry.kind]}; its points logged here "
                    f"as {KIND_NAMES[series.kind]} were not stored")
                continue
            series.series_id, series.rollup_shift = entry.series_id, entry.rollup_shift

    def _segment_for_append(self) -> SegmentWriter:
        """This writer's segment: the current one, else one no live writer holds, else a
        new one. Caller holds segment_lock."""
        if self._segment is not None and self._segment.size < SEGMENT_ROLL_BYTES:
            return self._segment
        if self._segment is not None:
            self._segment.close()
            self._segment = None
        self._segment = self._adopt_segment() or self._new_segment()
        return self._segment

    def _adopt_segment(self) -> SegmentWriter | None:
        with self.index.read() as txn:
            candidates = [sid for sid, end in txn.segments() if end < SEGMENT_ROLL_BYTES // 2]
        for segment_id in reversed(candidates[-ADOPT_CANDIDATES:]):
            def committed_end(segment_id=segment_id):
                with self.index.read() as txn:
                    return txn.segment_end(segment_id)

            segment = SegmentWriter.adopt(self.layout.segment_path(segment_id), segment_id, self._fsync,
                                          committed_end)
            if segment is not None:
                return segment
        return None

    def _new_segment(self) -> SegmentWriter:
        def allocate(txn: IndexWriter) -> int:
            segment_id = txn.next_ids(b"next_segment")
            txn.put_segment(segment_id, FILE_HEADER_SIZE)
            return segment_id

        segment_id = self.index.write(allocate)
        return SegmentWriter.create(self.layout.segment_path(segment_id), segment_id, self._fsync)


def series_record(series: SeriesRef) -> dict:
    """The record of a series that repair rebuilds its index entry from."""
    key = series.key
    return {"type": "series", "run": key.run_id.hex(), "name": key.name, "context": key.context,
            "kind": series.kind, "rollup_shift": series.rollup_shift, "series_id": series.series_id}
