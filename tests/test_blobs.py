"""The blob store on its own: content named by hashlib's SHA-256, kept once, read back
checked; damage of any kind (flipped byte, cut tail, bad header, a blob renamed to
another hash) is a CorruptionError naming the file; temp files are never blobs, and only
a dead writer's old ones are cleaned."""

from __future__ import annotations

import fcntl
import hashlib
import os
import time

import pytest

from steplog.engine.blobs import BLOB_HEADER, BlobStore, clean_temp_files
from steplog.engine.errors import CorruptionError, NotFoundError
from steplog.engine.layout import StoreLayout


@pytest.fixture
def blobs(tmp_path):
    return BlobStore(StoreLayout(str(tmp_path / "s")))


def test_bytes_and_files_round_trip_and_dedup(blobs, tmp_path):
    payloads = [b"", b"a", os.urandom(3 << 20), b"z" * 5_000_000]
    for data in payloads:
        digest = blobs.put_bytes(data)
        assert digest == hashlib.sha256(data).hexdigest()
        assert blobs.get(digest) == data
        assert blobs.put_bytes(data) == digest
    src = tmp_path / "f.bin"
    src.write_bytes(payloads[2])
    assert blobs.put_file(str(src), hashlib.sha256(payloads[2]).hexdigest(), len(payloads[2])) is False
    names = sorted(n for _, _, files in os.walk(blobs.layout.blobs_dir) for n in files)
    assert names == sorted(hashlib.sha256(d).hexdigest() + ".blob" for d in payloads)
    assert os.path.getsize(blobs.layout.blob_path(hashlib.sha256(payloads[3]).hexdigest())) < 1000   # compressed


def test_a_file_changed_after_hashing_is_refused(blobs, tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(b"first")
    digest = hashlib.sha256(b"first").hexdigest()
    src.write_bytes(b"other")
    with pytest.raises(ValueError, match="^path_or_uri"):
        blobs.put_file(str(src), digest, 5)
    assert not blobs.has(digest) and os.listdir(blobs.layout.blob_dir(digest)) == []


def damage_cases(path: str):
    def flip(f):
        f.seek(-2, os.SEEK_END)
        byte = f.read(1)
        f.seek(-2, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))

    def cut(f):
        f.truncate(os.path.getsize(path) - 5)

    def magic(f):
        f.write(b"XXXX")

    def size(f):
        f.seek(8)
        f.write((12345).to_bytes(8, "little"))

    return [flip, cut, magic, size]


@pytest.mark.parametrize("case", range(4))
def test_damage_is_caught_when_read(blobs, case):
    data = os.urandom(100_000)
    digest = blobs.put_bytes(data)
    path = blobs.layout.blob_path(digest)
    with open(path, "r+b") as f:
        damage_cases(path)[case](f)
    with pytest.raises(CorruptionError) as caught:
        blobs.get(digest)
    assert caught.value.path == path
    assert blobs.check(digest)


def test_a_blob_under_another_name_fails(blobs):
    digest = blobs.put_bytes(b"real")
    other = hashlib.sha256(b"claimed").hexdigest()
    os.makedirs(blobs.layout.blob_dir(other), exist_ok=True)
    os.rename(blobs.layout.blob_path(digest), blobs.layout.blob_path(other))
    with pytest.raises(CorruptionError, match="not to its name"):
        blobs.get(other)
    with pytest.raises(NotFoundError):
        blobs.get(digest)


def test_temp_files_are_not_blobs_and_only_dead_old_ones_go(blobs):
    digest = hashlib.sha256(b"x").hexdigest()
    folder = blobs.layout.blob_dir(digest)
    os.makedirs(folder)
    dead, live, fresh = (blobs.layout.blob_temp_path(digest, t) for t in ("00000000", "11111111", "22222222"))
    for path in (dead, live, fresh):
        with open(path, "wb") as f:
            f.write(BLOB_HEADER.pack(b"SLBL", 1, 1, 1))
    old = time.time() - 3600
    os.utime(dead, (old, old))
    os.utime(live, (old, old))
    assert not blobs.has(digest) and blobs.layout.blob_hashes_on_disk() == []
    fd = os.open(live, os.O_RDONLY)   # a writer still holds it
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert clean_temp_files(folder) == 1
        assert sorted(os.listdir(folder)) == sorted(os.path.basename(p) for p in (live, fresh))
    finally:
        os.close(fd)
    assert blobs.put_bytes(b"x") == digest and blobs.get(digest) == b"x"
