"""Shared fixtures for the steplog test suite.

``open_store`` opens (and later closes) stores in this test's tmp_path; ``store`` is
one such store. Stores use small blocks (64 points) so that a few hundred points
already span many blocks, and no flush interval, so that nothing is flushed behind a
test's back.
"""

from __future__ import annotations

import contextlib

import pytest

pytest.register_assert_rewrite("_helpers")

import steplog  # noqa: E402

SMALL_BLOCKS = 64


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "store.steplog"


@pytest.fixture
def open_store(store_path):
    """open_store(**kw) -> a Store at store_path (or kw['path']); closed at teardown."""
    opened = []

    def _open(path=None, **kwargs):
        kwargs.setdefault("block_points", SMALL_BLOCKS)
        kwargs.setdefault("flush_interval", None)
        store = steplog.open(store_path if path is None else path, **kwargs)
        opened.append(store)
        return store

    yield _open
    # Tests that care about what close() does call it themselves and check it; a store
    # that a test left broken on purpose must not turn teardown into a second failure.
    for store in reversed(opened):
        with contextlib.suppress(Exception):
            store.close()


@pytest.fixture
def store(open_store):
    return open_store()
