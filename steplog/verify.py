"""``steplog verify PATH`` and ``steplog repair PATH``.

verify checks the whole store in a child process (blocks, index tables, and every blob
read whole and hashed): LMDB may abort a process that reads a
badly damaged index, and that must become a report and an exit code, not a dead shell.
Exit codes: 0 clean, 1 damage found, 2 not a store (no such directory, or it does not
open). repair: 0 done, 1 refused (or no such directory), 2 not a store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

from .engine.errors import FormatVersionError, StepLogError
from .engine.layout import StoreLayout

CHILD = "import sys; from steplog.verify import verify_here; sys.exit(verify_here(sys.argv[1]))"


def run_verify(path: str) -> int:
    """Verify in a child process, printing its lines as they come."""
    if not os.path.isdir(path):
        print(f"{path}: {_no_directory(path)}")
        return 2
    if not os.path.isdir(StoreLayout(path).index_dir):
        print(f"{path}: not a steplog store (no index/; `steplog repair` rebuilds one from segments/)")
        return 2
    with tempfile.TemporaryFile("w+") as errors:   # a file, not a pipe: a long stderr cannot stall the child
        child = subprocess.Popen([sys.executable, "-c", CHILD, path], stdout=subprocess.PIPE, stderr=errors,
                                 text=True)
        with child:
            for line in child.stdout:
                print(line, end="", flush=True)
        errors.seek(0)
        stderr = errors.read()
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        print(f"DAMAGED {StoreLayout(path).index_dir}: the index reader died of {name} (LMDB found the index "
              "damaged); `steplog repair` rebuilds it from the segments")
        return 1
    if child.returncode not in (0, 1, 2):
        print(stderr[-2000:], end="")
        print(f"verify failed (exit {child.returncode})")
        return 1
    return child.returncode


def verify_here(path: str) -> int:
    """verify in this process (the child): prints a line per damage, then a summary."""
    from .engine.check import verify
    from .engine.index import FORMAT_VERSION, Index

    layout = StoreLayout(path)
    if not os.path.exists(os.path.join(layout.index_dir, "data.mdb")):
        print(f"DAMAGED {layout.index_dir}: the index data file is missing; `steplog repair` rebuilds it")
        return 1
    try:
        index = Index(layout.index_dir, sync=False, create=False, readonly=True)
    except FormatVersionError as exc:
        print(f"{path}: {exc}")
        return 2
    except StepLogError as exc:
        print(f"DAMAGED {exc}")
        print("the index does not open; `steplog repair` rebuilds it from the segments")
        return 1
    if index.version == 1:
        print(f"format version 1: its index values carry no checksums; opening the store "
              f"upgrades it to version {FORMAT_VERSION}")
    elif index.version < FORMAT_VERSION:
        print(f"format version {index.version}: opening the store to write upgrades it to version {FORMAT_VERSION}")
    try:
        checked, damage = verify(layout, index)
    finally:
        index.close()
    for item in damage:
        print(f"DAMAGED {item.path} offset {item.offset}: {item.reason}", flush=True)
    blobs = len(layout.blob_hashes_on_disk())
    if blobs:   # each read whole and hashed by verify
        print(f"{blobs} blobs checked")
    print(f"{checked} blocks checked, {len(damage)} damaged")
    return 1 if damage else 0


def run_repair(path: str) -> int:
    from .engine.repair import repair
    from .engine.upgrade import open_index

    layout = StoreLayout(path)
    if not os.path.isdir(path):
        print(f"{path}: {_no_directory(path)}")
        return 1
    if not os.path.isdir(layout.segments_dir):
        print(f"{path}: not a steplog store (no segments/)")
        return 2
    try:   # an older index is upgraded first: its records are not in its segments yet
        open_index(layout, fsync=True).close()
    except StepLogError:
        pass   # damaged or missing: the segments decide
    try:
        report = repair(layout)
    except StepLogError as exc:
        print(f"repair refused: {exc}")
        return 1
    for item in report.damage:
        print(f"SKIPPED {item.path} offset {item.offset}: {item.reason}")
    print(json.dumps({"segments": report.segments, "blocks": report.blocks, "runs": report.runs,
                      "series": report.series, "damaged_regions": len(report.damage),
                      "orphan_blocks": report.orphans}))
    if report.old_index:
        print(f"the replaced index was kept at {report.old_index}")
    return 0


def _no_directory(path: str) -> str:
    return "not a directory, so no steplog store" if os.path.exists(path) else "no such directory"
