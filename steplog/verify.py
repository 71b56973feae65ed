"""``steplog verify PATH``: check every block; exit 1 when anything is damaged."""

from __future__ import annotations

import os

from .engine.errors import StepLogError
from .engine.index import Index
from .engine.layout import StoreLayout
from .engine.recovery import verify


def run_verify(path: str) -> int:
    layout = StoreLayout(path)
    if not os.path.isdir(layout.index_dir):
        print(f"{path}: not a steplog store")
        return 2
    try:
        index = Index(layout.index_dir, sync=False)
    except StepLogError as exc:
        print(f"{path}: {exc}")
        return 2
    try:
        checked, damage = verify(layout, index)
    finally:
        index.close()
    for item in damage:
        print(f"DAMAGED {item.path} offset {item.offset}: {item.reason}")
    print(f"{checked} blocks checked, {len(damage)} damaged")
    return 1 if damage else 0
