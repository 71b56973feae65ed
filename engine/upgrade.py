"""Opening a store's index: created atomically when missing, upgraded from older
format versions when found in one.

Creation builds the new store under a temporary name beside it and renames it into
place, fsyncing the directories, so a power loss leaves either no store or a whole
one. Version 1 indexes carry no checksums and their segments no records: the upgrade
rewrites every value with its checksum (series_info gains last_seq) and writes the
records of every experiment, run, series and block_seq to a new segment. Version 2
keeps rollups for every series and one heartbeat a run: the upgrade to 3 drops the
rollups of series below ROLLUP_MIN_POINTS and keys each heartbeat by its writer.
Version 3 keeps no aggregates of whole series: the upgrade to 4 decodes every scalar
series once and stores them. Version 4 has no artifacts: the upgrade to 5 only sets the
version (the table is created when the index is opened to write). All steps run in one
index transaction.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time

from .block import encode_records
from .errors import CorruptionError
from .index import BE_U64, FORMAT_VERSION, ROLLUP_MIN_POINTS, U64, Index, IndexWriter
from .layout import StoreLayout
from .segment import SegmentWriter, fsync_dir


def open_index(layout: StoreLayout, fsync: bool) -> Index:
    """The store's index, creating the store if it does not exist, upgraded if old."""
    if not os.path.isdir(layout.index_dir):
        if os.path.isdir(layout.segments_dir) and layout.segment_ids_on_disk():
            raise CorruptionError(layout.index_dir, 0, "the index is missing; `steplog repair` rebuilds it "
                                  "from the segments")
        create_store(layout)
    elif not os.path.exists(os.path.join(layout.index_dir, "data.mdb")):
        raise CorruptionError(layout.index_dir, 0, "the index data file is missing; `steplog repair` rebuilds "
                              "it from the segments")
    os.makedirs(layout.segments_dir, exist_ok=True)
    index = Index(layout.index_dir, sync=fsync, create=False)
    try:
        if index.version < FORMAT_VERSION:
            upgrade(layout, index, fsync)
            from .catalog import refresh

            refresh(index, force=True)   # its first readers need not build the catalog from the records
    except BaseException:
        index.close()
        raise
    return index


def create_store(layout: StoreLayout) -> None:
    """Create an empty store (or the index of an existing empty directory) atomically."""
    parent = os.path.dirname(os.path.abspath(layout.root))
    if not os.path.isdir(layout.root):
        staging = StoreLayout(os.path.join(parent, f".{os.path.basename(layout.root)}.{secrets.token_hex(4)}.new"))
        _create_in(staging)
        try:
            os.rename(staging.root, layout.root)
        except OSError:   # another process created it first (or the name is taken): use theirs
            shutil.rmtree(staging.root, ignore_errors=True)
            if not os.path.isdir(layout.index_dir):
                raise
        fsync_dir(parent)
        return
    staging_index = os.path.join(layout.root, f".{secrets.token_hex(4)}.index.new")
    os.makedirs(layout.segments_dir, exist_ok=True)
    Index(staging_index, sync=True).close()
    try:
        os.rename(staging_index, layout.index_dir)
    except OSError:
        shutil.rmtree(staging_index, ignore_errors=True)
        if not os.path.isdir(layout.index_dir):
            raise
    fsync_dir(layout.root)


def _create_in(layout: StoreLayout) -> None:
    layout.create_dirs()
    Index(layout.index_dir, sync=True).close()
    for path in (layout.index_dir, layout.segments_dir, layout.root):
        fsync_dir(path)


def upgrade(layout: StoreLayout, index: Index, fsync: bool) -> None:
    """Bring an older index to FORMAT_VERSION in one transaction (if no other process
    did it first)."""

    def rewrite(txn: IndexWriter) -> None:
        if txn.format_version() == 1:
            _from_v1(layout, txn, fsync)
        if txn.format_version() == 2:
            _from_v2(txn)
        if txn.format_version() == 3:
            _from_v3(layout, txn)
        if txn.format_version() == 4:
            txn.set_format_version(5)   # version 5 adds the artifact tables and blobs/, all empty

    index.write(rewrite)
    index.version = FORMAT_VERSION


def _from_v2(txn: IndexWriter) -> None:
    """Version 2 to 3: no rollups below ROLLUP_MIN_POINTS, one heartbeat a writer."""
    for _, entry, _, _ in list(txn.all_series()):
        if entry.kind == 1 and txn.series_info(entry.series_id).count < ROLLUP_MIN_POINTS:
            txn.delete_rollups(entry.series_id)
    for run_id, beats in txn.heartbeats().items():
        for beat in beats:
            txn.put_heartbeat(run_id, beat)
        txn.delete_run_heartbeat(run_id)
    txn.set_format_version(3)


def _from_v3(layout: StoreLayout, txn: IndexWriter) -> None:
    """Version 3 to 4: the aggregates of every scalar series, from its blocks."""
    from .catalog import stored_aggregates
    from .segment import SegmentReader

    reader = SegmentReader(layout.segment_path, max_open=4)
    try:
        for _, entry, _, _ in list(txn.all_series()):
            if entry.kind == 1:
                found = stored_aggregates(txn, reader, layout.segment_path, entry.series_id)
                if found is not None:
                    txn.put_aggregates(entry.series_id, found)
    finally:
        reader.close()
    txn.set_format_version(4)


def _from_v1(layout: StoreLayout, txn: IndexWriter, fsync: bool) -> None:
    """Version 1 to 2: checksums, series_info.last_seq, the records in a segment."""
    values = list(txn.tables())
    experiments = list(txn.experiments())
    runs = list(txn.runs())
    series = list(txn.all_series())
    blocks = list(txn.all_blocks())
    last_seq: dict[int, int] = {}
    for ref in blocks:   # version 1 handed block_seqs out in commit order
        last_seq[ref.header.series_id] = max(last_seq.get(ref.header.series_id, 0), ref.seq)
    txn.set_format_version(2)
    for table, key, value in values:
        if table == "series_info":
            value = value + U64.pack(last_seq.get(BE_U64.unpack(key)[0], 0))
        if (table, key) != ("meta", b"format"):
            txn.put_raw(table, key, value)
    records = [{"type": "experiment", "record": r} for r in experiments]
    first = txn.next_ids(b"next_record", len(runs))
    records += [{"type": "run", "record": r, "seq": first + i} for i, r in enumerate(runs)]
    records += [{"type": "series", "run": run_id.hex(), "name": name, "context": context, "kind": entry.kind,
                 "rollup_shift": entry.rollup_shift, "series_id": entry.series_id}
                for run_id, entry, name, context in series]
    records += [{"type": "seqs", "blocks": [[ref.segment_id, ref.offset, ref.seq] for ref in blocks]}]
    if records:
        segment_id = txn.next_ids(b"next_segment")
        segment = SegmentWriter.create(layout.segment_path(segment_id), segment_id, fsync)
        try:
            segment.append(encode_records(records, time.time_ns()))
            txn.put_segment(segment_id, segment.size)
        finally:
            segment.close()
