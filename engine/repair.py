"""``repair``: rebuild the index from the segments alone.

The segments are the source of truth: record blocks hold every experiment, run (each
change, numbered in commit order), series and artifact record (version 5; the blobs they
name are files of their own, outside the index); data blocks hold every point. Repair
scans every segment, keeps every whole block, builds a new index beside the old one
(block locations, series stats, rollups and aggregates recomputed from the points,
counters, a catalog snapshot), and
swaps it in. The old index, if any, is kept under a name of its own for inspection.
Nothing may write the store while it runs: repair refuses when a segment is locked.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from typing import NamedTuple

from .aggregates import merge, of_points
from .block import HEADER_SIZE, KIND_PACK, KIND_RECORD, KIND_SCALAR, BlockDecoder, unpack_header
from .errors import StepLogError
from .catalog import refresh as refresh_catalog
from .index import FORMAT_VERSION, ROLLUP_MIN_POINTS, Index, IndexWriter, NewBlock, member_ref
from .layout import StoreLayout
from .recovery import Damage, scan_segment, segment_id_of
from .segment import fsync_dir


class RepairReport(NamedTuple):
    segments: int
    blocks: int
    runs: int
    series: int
    damage: list          # Damage skipped in the segments
    orphans: int          # data blocks of a series no record defines
    old_index: str | None  # where the replaced index was moved


class Chunk(NamedTuple):
    """A whole data block found in a segment, or one member of a pack block."""

    segment_id: int
    offset: int
    data: bytes
    block: NewBlock       # its index entry, block_seq not yet known (0)
    mark: bytes           # what BlockDecoder.decode expects of it: header bytes, or a member reference
    scalar: bool          # points (a block or a pack member), not tensor summaries


class Rebuild:
    """What the scan found, folded in segment order."""

    def __init__(self):
        self.experiments: dict[str, tuple[int, dict]] = {}   # id (or name) -> (seq, record)
        self.runs: dict[str, tuple[int, dict]] = {}        # run id -> (seq, record)
        self.series: dict[int, dict] = {}                  # series_id -> series record
        self.artifacts: dict[tuple[str, int], tuple[int, dict]] = {}   # (run id, seq) -> (record seq, record)
        self.blocks: list[Chunk] = []
        self.seqs: dict[tuple[int, int], int] = {}         # (segment, offset) -> block_seq
        self.ends: dict[int, int] = {}                     # segment -> end of its last whole block
        self.damage: list[Damage] = []
        self.max_seq = 0

    def add_record(self, record: dict) -> None:
        kind = record.get("type")
        if kind == "experiment":   # the latest record of each experiment (by id: a rename keeps it)
            found = record["record"]
            key = found.get("id") or found["name"]
            if key not in self.experiments or self.experiments[key][0] <= record.get("seq", 0):
                self.experiments[key] = (record.get("seq", 0), found)
        elif kind == "run":
            seq, run = record.get("seq", 0), record["record"]
            self.max_seq = max(self.max_seq, seq)
            if run["id"] not in self.runs or self.runs[run["id"]][0] <= seq:
                self.runs[run["id"]] = (seq, run)
        elif kind == "series":
            self.series.setdefault(record["series_id"], record)
        elif kind == "artifact":
            self.max_seq = max(self.max_seq, record.get("seq", 0))
            found = record["record"]
            self.artifacts.setdefault((found["run"], found["seq"]), (record.get("seq", 0), found))
        elif kind == "seqs":
            for segment_id, offset, seq in record["blocks"]:
                self.seqs[(segment_id, offset)] = seq

    def ordered_blocks(self) -> list[tuple[int, Chunk]]:
        """(seq, chunk) in block_seq order; a chunk that no record numbers (its writer
        died between append and commit) comes after all. Members of a pack are keyed
        (segment, offset, member)."""
        top = max(self.seqs.values(), default=0)
        found = []
        for chunk in self.blocks:
            seq = self.seqs.get(_seq_key(chunk))
            if seq is None:
                top += 1
                seq = top
            found.append((seq, chunk))
        return sorted(found, key=lambda b: b[0])


def _seq_key(chunk: Chunk) -> tuple:
    member = chunk.block.member
    return (chunk.segment_id, chunk.offset) if member < 0 else (chunk.segment_id, chunk.offset, member)


def repair(layout: StoreLayout) -> RepairReport:
    """Rebuild ``layout``'s index from its segments and swap it in."""
    held = _lock_segments(layout)
    try:
        found = _scan(layout)
        staging = os.path.join(layout.root, f".{secrets.token_hex(4)}.index.new")
        index = Index(staging, sync=True)
        try:
            orphans = index.write(lambda txn: _fill(txn, found))
            refresh_catalog(index, force=True)
        finally:
            index.close()
        old = None
        if os.path.exists(layout.index_dir):
            old = os.path.join(layout.root, f"index.replaced-{secrets.token_hex(4)}")
            os.rename(layout.index_dir, old)
        os.rename(staging, layout.index_dir)
        fsync_dir(layout.root)
    finally:
        for fd in held:
            os.close(fd)
    return RepairReport(len(found.ends), len(found.blocks), len(found.runs), len(found.series),
                        found.damage, orphans, old)


def _lock_segments(layout: StoreLayout) -> list[int]:
    """Lock every segment (a live writer holds its own): no one appends while we scan."""
    held = []
    try:
        for segment_id in layout.segment_ids_on_disk():
            fd = os.open(layout.segment_path(segment_id), os.O_RDONLY)
            held.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StepLogError(f"segment {segment_id:016x} is being written by a live process: close every "
                                   "process using the store before repairing it") from None
    except BaseException:
        for fd in held:
            os.close(fd)
        raise
    return held


def _scan(layout: StoreLayout) -> Rebuild:
    found = Rebuild()
    decoder = BlockDecoder()
    for segment_id in layout.segment_ids_on_disk():
        path = layout.segment_path(segment_id)
        if segment_id_of(path) != segment_id:
            found.damage.append(Damage(path, 0, "segment header missing or naming another segment; skipped"))
            continue
        found.ends[segment_id] = 16
        numbering = (0, 0)
        for item in scan_segment(path):
            if isinstance(item, Damage):
                found.damage.append(item)
                continue
            try:
                decoded = decoder.decode(item.data, path, item.offset)
            except StepLogError as exc:
                found.damage.append(Damage(path, item.offset, str(exc)))
                continue
            header = unpack_header(item.data)
            if header.kind == KIND_RECORD:
                for record in decoded:
                    found.add_record(record)
                    if record.get("type") == "blocks":
                        numbering = (record["first_seq"], record["count"])
            else:
                for chunk in _chunks(segment_id, item.offset, item.data, header, decoded):
                    found.blocks.append(chunk)
                    if numbering[1] > 0:   # the chunks after a "blocks" record take its seqs in turn
                        found.seqs[_seq_key(chunk)] = numbering[0]
                        numbering = (numbering[0] + 1, numbering[1] - 1)
            found.ends[segment_id] = item.offset + len(item.data)
    return found


def _chunks(segment_id: int, offset: int, data: bytes, header, decoded) -> list[Chunk]:
    """The chunks of one data block: itself, or each member of a pack."""
    if header.kind != KIND_PACK:
        steps = decoded[0] if header.kind == KIND_SCALAR else decoded.steps
        block = NewBlock(header.series_id, offset, header, data[:HEADER_SIZE], int(steps[-1]), 0)
        return [Chunk(segment_id, offset, data, block, data[:HEADER_SIZE], header.kind == KIND_SCALAR)]
    chunks = []
    for j, series_id in enumerate(decoded.series_ids.tolist()):
        steps = decoded.member(j)[0]
        ref = member_ref(series_id, 0, segment_id, offset, len(data), j, len(steps), int(steps.min()), int(steps.max()))
        block = NewBlock(series_id, offset, ref.header, b"", int(steps[-1]), 0, j, len(data))
        chunks.append(Chunk(segment_id, offset, data, block, ref.header_bytes, True))
    return chunks


def _fill(txn: IndexWriter, found: Rebuild) -> int:
    """Write everything found into an empty index; returns the orphan block count.
    Rollups are folded, in block_seq order, for the series that hold ROLLUP_MIN_POINTS;
    the aggregates of every scalar series from all its points."""
    from .rollup import all_levels

    txn.track_changes = False   # a new index: its catalog is built from it whole
    txn.set_format_version(FORMAT_VERSION)
    for _, record in found.experiments.values():
        txn.put_experiment(record)
    for _, record in found.runs.values():
        txn.put_run(bytes.fromhex(record["id"]), record)
    logged = sorted(found.artifacts.values(), key=lambda a: a[0])   # record seqs: the order of logging
    txn.put_artifacts([record for _, record in logged if record["run"] in found.runs])
    for series_id, s in found.series.items():
        txn.create_series(bytes.fromhex(s["run"]), s["name"], s["context"], s["kind"], s["rollup_shift"], series_id)
    for segment_id, end in found.ends.items():
        txn.put_segment(segment_id, end)
    orphans, top_seq, counts, kept = 0, 0, {}, []
    for seq, chunk in found.ordered_blocks():
        top_seq = seq
        series = found.series.get(chunk.block.series_id)
        if series is None or series["kind"] != chunk.block.header.kind:
            orphans += 1
            continue
        txn.add_blocks(chunk.segment_id, [chunk.block._replace(seq=seq)], found.ends[chunk.segment_id])
        counts[chunk.block.series_id] = counts.get(chunk.block.series_id, 0) + chunk.block.header.count
        kept.append((seq, chunk))
    decoder, aggregates = BlockDecoder(), {}
    for seq, chunk in kept:
        series_id = chunk.block.series_id
        if not chunk.scalar:
            continue
        steps, _, values = decoder.decode(chunk.data, "", chunk.offset, chunk.mark, KIND_SCALAR)
        aggregates[series_id] = merge(aggregates.get(series_id), of_points(steps, values, lambda _, s=seq: s))
        if counts[series_id] >= ROLLUP_MIN_POINTS:
            for level, groups in enumerate(all_levels(steps, values, found.series[series_id]["rollup_shift"])):
                txn.merge_rollups(series_id, level, groups)
    for series_id, value in aggregates.items():
        txn.put_aggregates(series_id, value)
    _set_counter(txn, b"next_series", max(found.series, default=0) + 1)
    _set_counter(txn, b"next_segment", max(found.ends, default=0) + 1)
    _set_counter(txn, b"next_record", found.max_seq + 1)
    _set_counter(txn, b"next_block", top_seq + 1)
    return orphans


def _set_counter(txn: IndexWriter, name: bytes, value: int) -> None:
    current = txn.counter(name)
    if value > current:
        txn.next_ids(name, value - current)
