"""Every file and folder name inside a store directory, and nothing else.

User-given names (experiments, runs, metrics, tags, artifacts) never appear here:
segments are named by numbers the index hands out, blobs by the SHA-256 of their content.
"""

from __future__ import annotations

import os

INDEX_DIR = "index"            # the LMDB environment (data.mdb, lock.mdb)
SEGMENTS_DIR = "segments"      # append-only block files
SEGMENT_SUFFIX = ".seg"
BLOBS_DIR = "blobs"            # content-addressed files: blobs/<2 hex>/<64 hex>.blob (engine/blobs.py)
BLOB_SUFFIX = ".blob"
BLOB_TEMP_SUFFIX = ".tmp"      # a blob being written: blobs/<2 hex>/.<64 hex>.<8 hex>.tmp


class StoreLayout:
    """Paths of one store directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        self.index_dir = os.path.join(self.root, INDEX_DIR)
        self.segments_dir = os.path.join(self.root, SEGMENTS_DIR)
        self.blobs_dir = os.path.join(self.root, BLOBS_DIR)

    def create_dirs(self) -> None:
        os.makedirs(self.index_dir, exist_ok=True)
        os.makedirs(self.segments_dir, exist_ok=True)

    def segment_path(self, segment_id: int) -> str:
        return os.path.join(self.segments_dir, f"{segment_id:016x}{SEGMENT_SUFFIX}")

    def segment_ids_on_disk(self) -> list[int]:
        ids = []
        for entry in os.listdir(self.segments_dir):
            stem, suffix = os.path.splitext(entry)
            if suffix == SEGMENT_SUFFIX and len(stem) == 16:
                ids.append(int(stem, 16))
        return sorted(ids)

    def blob_dir(self, sha256: str) -> str:
        return os.path.join(self.blobs_dir, sha256[:2])

    def blob_path(self, sha256: str) -> str:
        return os.path.join(self.blobs_dir, sha256[:2], sha256 + BLOB_SUFFIX)

    def blob_temp_path(self, sha256: str, token: str) -> str:
        return os.path.join(self.blobs_dir, sha256[:2], f".{sha256}.{token}{BLOB_TEMP_SUFFIX}")

    def blob_hashes_on_disk(self) -> list[str]:
        """The hashes of every whole blob (temp files left out), sorted."""
        found = []
        if not os.path.isdir(self.blobs_dir):
            return found
        for prefix in sorted(os.listdir(self.blobs_dir)):
            folder = os.path.join(self.blobs_dir, prefix)
            if len(prefix) != 2 or not os.path.isdir(folder):
                continue
            for entry in os.listdir(folder):
                stem, suffix = os.path.splitext(entry)
                if suffix == BLOB_SUFFIX and len(stem) == 64 and stem[:2] == prefix:
                    found.append(stem)
        return sorted(found)
