"""``verify``: every index value against its checksum and layout, every block of every
segment decoded by its kind, and the index's view of the blocks against the segments.

Blobs (version 5) are read whole and hashed: every blob file, and every blob a stored
artifact needs (a file's content; a directory's manifest and each file it lists).

It reports damage instead of raising, and agrees with what reads see: whatever a read
would refuse as corrupt, verify lists. LMDB itself may abort the process on a damaged
index, so the command runs this in a child process (steplog.verify).
"""

from __future__ import annotations

from .artifacts import parse_manifest, table as records_table, whole_table
from .blobs import BlobStore
from .block import HEADER_SIZE, MEMBER_MAGIC, MEMBER_MARK, BlockDecoder, Pack
from .errors import CorruptionError
from .index import BE_U64, TABLES, Index
from .layout import StoreLayout
from .catalog import aggregates_mismatches
from .recovery import Damage, ScannedBlock, scan_segment
from .segment import SegmentReader


def verify(layout: StoreLayout, index: Index) -> tuple[int, list[Damage]]:
    """Check the whole store; returns (indexed blocks checked, damage found)."""
    damage: list[Damage] = []
    decoder = BlockDecoder()
    for table in TABLES:
        with index.read() as txn:
            for key, reason in txn.check_table(table):
                damage.append(Damage(index.data_path, 0, reason))
    with index.read() as txn:
        scanned, checked = {}, 0   # checked: indexed blocks
        for segment_id, end in _readable(txn.segments, index, damage):
            path = layout.segment_path(segment_id)
            try:
                for item in scan_segment(path, end):
                    if isinstance(item, Damage):
                        damage.append(item)
                        continue
                    scanned[(segment_id, item.offset)] = _decode(decoder, item, path, damage)
            except FileNotFoundError:
                pass   # each of its indexed blocks is reported below, with its offset
        counts: dict[int, int] = {}
        for ref in _readable(txn.all_blocks, index, damage):
            checked += 1
            path = layout.segment_path(ref.segment_id)
            found = scanned.get((ref.segment_id, ref.offset))
            if found is None:
                damage.append(Damage(path, ref.offset, f"indexed block {ref.seq} is not a whole block of the segment"))
            elif ref.header_bytes[:4] == MEMBER_MAGIC:
                reason = _member_mismatch(ref, found)
                if reason:
                    damage.append(Damage(path, ref.offset, reason))
            elif found and found != ref.header_bytes:
                damage.append(Damage(path, ref.offset, "block header differs from its index entry"))
            counts[ref.header.series_id] = counts.get(ref.header.series_id, 0) + ref.header.count
        for series_id, count in counts.items():
            try:
                info = txn.series_info(series_id)
            except CorruptionError:
                continue   # listed with the tables
            if info.count != count:
                damage.append(Damage(index.data_path, 0, f"index table series_info, key "
                                     f"{BE_U64.pack(series_id).hex()}: counts {info.count} points, its blocks "
                                     f"hold {count}"))
        if not damage and index.version >= 4:   # blocks decode: their aggregates are taken again
            damage.extend(Damage(index.data_path, 0, reason) for reason in
                          aggregates_mismatches(txn, SegmentReader(layout.segment_path), layout.segment_path))
        _check_pages(txn, damage)
        _check_blobs(layout, txn, damage)
    return checked, damage


def _check_pages(txn, damage: list[Damage]) -> None:
    """The artifact pages hold the artifact records, row for row."""
    try:
        paged = whole_table(txn.artifact_pages())
        records = records_table(txn.artifact_values())
    except CorruptionError as exc:
        damage.append(Damage(exc.path, exc.offset, exc.reason))
        return
    order = [("run_id", "ascending"), ("seq", "ascending")]
    if not paged.sort_by(order).equals(records.sort_by(order)):
        damage.append(Damage(txn.path, 0, f"index table artifact_pages: its {paged.num_rows} rows differ from the "
                             f"{records.num_rows} artifact records"))


def _check_blobs(layout: StoreLayout, txn, damage: list[Damage]) -> None:
    """Every blob file against its name, then the blobs each stored artifact needs."""
    blobs = BlobStore(layout)
    on_disk = set(layout.blob_hashes_on_disk())
    for sha in sorted(on_disk):
        reason = blobs.check(sha)
        if reason:
            damage.append(Damage(layout.blob_path(sha), 0, reason))
    for record in _readable(txn.artifact_records, txn, damage):
        if not record.get("stored"):
            continue
        shown = f"artifact {record['seq']} of run {record['run']}"
        if record["sha256"] not in on_disk:
            damage.append(Damage(layout.blob_path(record["sha256"]), 0, f"{shown} is stored, its blob is missing"))
        elif record["kind"] == "dir" and not blobs.check(record["sha256"]):
            try:
                rows = parse_manifest(blobs.get(record["sha256"]), layout.blob_path(record["sha256"]))
            except CorruptionError as exc:
                damage.append(Damage(exc.path, exc.offset, exc.reason))
                continue
            for row in rows:
                if row["sha256"] not in on_disk:
                    damage.append(Damage(layout.blob_path(row["sha256"]), 0,
                                         f"{shown}: the blob of its file {row['path']!r} is missing"))


def _decode(decoder: BlockDecoder, item: ScannedBlock, path: str, damage: list[Damage]):
    """Decode a block by its kind; its header bytes when whole (a pack: its length and
    members), else b"" (and damage)."""
    try:
        decoded = decoder.decode(item.data, path, item.offset)
    except CorruptionError as exc:
        damage.append(Damage(exc.path, exc.offset, exc.reason))
        return b""
    return (len(item.data), decoded) if isinstance(decoded, Pack) else item.data[:HEADER_SIZE]


def _member_mismatch(ref, found) -> str:
    """Why an index entry of a pack member does not match the pack found ("" if it does)."""
    if not found:
        return ""   # the block is damaged: listed already
    if not isinstance(found, tuple):
        return f"indexed pack member {ref.seq} names a block that is no pack"
    length, pack = found
    _, series_id, j, count = MEMBER_MARK.unpack(ref.header_bytes)
    if ref.header.length != length or j >= len(pack.series_ids) or pack.series_ids[j] != series_id:
        return f"indexed pack member {ref.seq} is not member {j} of the pack"
    steps = pack.member(j)[0]
    if len(steps) != count or (ref.header.step_min, ref.header.step_max) != (steps.min(), steps.max()):
        return f"indexed pack member {ref.seq} differs from its points in the pack"
    return ""


def _readable(entries, index, damage: list[Damage]):
    """The entries of a table scan, stopping (with a damage entry) where the scan fails."""
    try:
        yield from entries()
    except CorruptionError as exc:
        damage.append(Damage(exc.path or getattr(index, "data_path", index.path), exc.offset, exc.reason))
