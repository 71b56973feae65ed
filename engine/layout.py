"""Every file and folder name inside a store directory, and nothing else.

User-given names (experiments, runs, metrics, tags) never appear here: files are named
by numbers the index hands out.
"""

from __future__ import annotations

import os

INDEX_DIR = "index"            # the LMDB environment (data.mdb, lock.mdb)
SEGMENTS_DIR = "segments"      # append-only block files
SEGMENT_SUFFIX = ".seg"


class StoreLayout:
    """Paths of one store directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        self.index_dir = os.path.join(self.root, INDEX_DIR)
        self.segments_dir = os.path.join(self.root, SEGMENTS_DIR)

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
