"""Artifacts: files, directories and URIs a run logs, checked against hashlib over the
bytes and an os.walk of the directory done here; copies kept once per content; bad input
refused with the argument named and nothing stored; records rebuilt by repair; a real
SIGKILL during a copy leaves no half blob. Runs start with capture=False, so that the
blob folder holds the artifacts' bytes only (no environment documents)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest

import steplog
from steplog.engine.check import verify
from steplog.engine.index import Index
from steplog.engine.layout import StoreLayout
from steplog.engine.repair import repair

COLUMNS = ["run_id", "seq", "name", "role", "kind", "location", "size", "mtime", "sha256", "etag", "stored",
           "logged"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def walk_manifest(root: str) -> tuple[list[dict], str]:
    """The manifest of a directory made here with os.walk (followlinks), and its hash."""
    rows = []
    for folder, _, files in os.walk(root, followlinks=True):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                data = f.read()
            rows.append({"path": os.path.relpath(path, root).replace(os.sep, "/"), "sha256": sha(data),
                         "size": len(data)})
    rows.sort(key=lambda r: r["path"])
    canonical = json.dumps({"files": rows, "version": 1}, sort_keys=True, separators=(",", ":")).encode()
    return rows, sha(canonical)


def blob_files(store_path) -> list[str]:
    found = []
    for folder, _, files in os.walk(os.path.join(store_path, "blobs")):
        found += [name for name in files if name.endswith(".blob")]
    return sorted(found)


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "data"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "a.csv").write_bytes(b"x,y\n1,2\n")
    (src / "sub" / "b.bin").write_bytes(os.urandom(3000))
    (src / "sub" / "deep" / "c.txt").write_bytes(b"")
    (src / "link.txt").symlink_to(src / "a.csv")
    return src


def test_file_record_matches_hashlib(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)   # several 1 MiB reads and a tail
    path = tmp_path / "train.bin"
    path.write_bytes(data)
    with steplog.open(tmp_path / "s") as store, store.start_run(capture=False) as run:
        got = run.log_input(str(path))
        assert got["sha256"] == sha(data) and got["size"] == len(data)
        assert got["kind"] == "file" and got["role"] == "input" and got["name"] == "train.bin"
        assert got["location"] == str(path) and got["mtime"] == os.stat(path).st_mtime_ns
        assert got["stored"] is False and got["seq"] == 1
        table = store.artifacts(run.id)
        assert table.column_names == COLUMNS and table.num_rows == 1
        row = table.to_pylist()[0]
        assert row["sha256"] == sha(data) and row["run_id"] == run.id
        assert table.schema.field("mtime").type == pa.timestamp("us", tz="UTC")
        with pytest.raises(steplog.NotFoundError):
            store.open_artifact(sha(data))   # not copied
    assert blob_files(tmp_path / "s") == []


def test_directory_manifest_matches_os_walk(tmp_path, tree):
    rows, expected = walk_manifest(str(tree))
    with steplog.open(tmp_path / "s") as store, store.start_run(capture=False) as run:
        got = run.log_artifact(str(tree), role="output", copy=True)
        assert got["kind"] == "dir" and got["sha256"] == expected
        assert got["manifest"] == rows and got["size"] == sum(r["size"] for r in rows)
        assert [r["path"] for r in rows] == ["a.csv", "link.txt", "sub/b.bin", "sub/deep/c.txt"]
        with store.open_artifact(expected) as f:
            assert json.loads(f.read())["files"] == rows
        dest = tmp_path / "back"
        assert store.restore_artifact(expected, dest) == str(dest)
        assert walk_manifest(str(dest)) == (rows, expected)
        assert not os.path.islink(dest / "link.txt")   # the link's content, as a file
        with pytest.raises(steplog.InvalidArgumentError, match="^dest"):
            store.restore_artifact(expected, dest)


def test_directory_without_copy_keeps_only_its_manifest(tmp_path, tree):
    rows, expected = walk_manifest(str(tree))
    with steplog.open(tmp_path / "s") as store:
        with store.start_run(capture=False) as run:
            got = run.log_input(str(tree), name="train-set")
        assert got["stored"] is False and got["name"] == "train-set"
        with store.open_artifact(expected) as f:   # the manifest is kept without copy
            assert json.loads(f.read())["files"] == rows
        with pytest.raises(steplog.NotFoundError, match="^sha256: file 'a.csv'"):
            store.restore_artifact(expected, tmp_path / "back")
        assert not os.path.exists(tmp_path / "back") and [n for n in os.listdir(tmp_path) if "restore" in n] == []
        with pytest.raises(steplog.ClosedError):
            run.log_artifact(str(tree))
    assert blob_files(tmp_path / "s") == [expected + ".blob"]


def test_copy_dedups_across_runs_and_restores(tmp_path):
    data = os.urandom(200_000)
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    with steplog.open(tmp_path / "s") as store:
        for _ in range(2):
            with store.start_run(capture=False) as run:
                assert run.log_model(str(path), copy=True)["stored"] is True
        assert blob_files(tmp_path / "s") == [sha(data) + ".blob"]
        table = store.artifacts()
        assert table.num_rows == 2 and set(table.column("sha256").to_pylist()) == {sha(data)}
        with store.open_artifact(sha(data).upper()) as f:
            assert f.read() == data
        with store.open_artifact(sha(data)) as f:
            assert b"".join(f) == data   # iteration over lines
        store.restore_artifact(sha(data), tmp_path / "copy.pt")
        assert (tmp_path / "copy.pt").read_bytes() == data


def test_uri_credentials_removed_nothing_downloaded(tmp_path):
    digest = "ab" * 32
    with steplog.open(tmp_path / "s") as store, store.start_run(capture=False) as run:
        a = run.log_input("s3://AKIA:hunter2@bucket/data/train.parquet?versionId=7&X-Amz-Signature=s3cr3t"
                          "&X-Amz-Credential=AKIA%2F1&X-Amz-Security-Token=tok", hash=digest.upper())
        b = run.log_input("https://user:pw@example.com:8443/m/model.bin?access_token=zzz&rev=main",
                          hash='"9b2cf535f27731c974343645a3985328"')
        c = run.log_input("gs://b/x/")
    assert a["location"] == "s3://bucket/data/train.parquet?versionId=7"
    assert a["sha256"] == digest and a["etag"] is None and a["name"] == "train.parquet"
    assert b["location"] == "https://example.com:8443/m/model.bin?rev=main"
    assert b["sha256"] is None and b["etag"] == '"9b2cf535f27731c974343645a3985328"'
    assert c["sha256"] is None and c["etag"] is None and c["size"] is None and c["name"] == "x"
    raw = b""
    for folder, _, files in os.walk(tmp_path / "s"):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                raw += f.read()
    for secret in (b"hunter2", b"s3cr3t", b"tok", b"zzz", b"pw@", b"AKIA%2F1"):
        assert secret not in raw


def bad_cases(tmp_path):
    loop = tmp_path / "loop"
    (loop / "inner").mkdir(parents=True)
    (loop / "inner" / "up").symlink_to(loop)
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    (dangling / "gone").symlink_to(tmp_path / "nothing-here")
    fifo = tmp_path / "withfifo"
    fifo.mkdir()
    os.mkfifo(fifo / "pipe")
    ok = tmp_path / "ok.txt"
    ok.write_bytes(b"ok")
    return [
        (dict(path_or_uri=str(tmp_path / "missing.csv")), steplog.NotFoundError, "path_or_uri"),
        (dict(path_or_uri=str(loop)), steplog.InvalidArgumentError, "path_or_uri"),
        (dict(path_or_uri=str(dangling)), steplog.InvalidArgumentError, "path_or_uri"),
        # running as root, chmod 000 cannot make a file unreadable: a FIFO stands for it
        (dict(path_or_uri=str(fifo)), steplog.InvalidArgumentError, "path_or_uri"),
        (dict(path_or_uri=str(fifo / "pipe")), steplog.InvalidArgumentError, "path_or_uri"),
        (dict(path_or_uri=str(ok), role="weights"), steplog.InvalidArgumentError, "role"),
        (dict(path_or_uri=str(ok), name=""), steplog.InvalidArgumentError, "name"),
        (dict(path_or_uri=str(ok), name=7), TypeError, "name"),
        (dict(path_or_uri=str(ok), copy="yes"), TypeError, "copy"),
        (dict(path_or_uri=str(ok), hash="0" * 64), steplog.InvalidArgumentError, "hash"),
        (dict(path_or_uri=12), TypeError, "path_or_uri"),
        (dict(path_or_uri=""), steplog.InvalidArgumentError, "path_or_uri"),   # not the working directory
    ]


def test_bad_input_names_the_argument_and_stores_nothing(tmp_path):
    with steplog.open(tmp_path / "s") as store, store.start_run(capture=False) as run:
        for kwargs, error, argument in bad_cases(tmp_path):
            with pytest.raises(error) as caught:
                run.log_artifact(copy=kwargs.pop("copy", True), **kwargs)
            assert str(caught.value).startswith(argument), (kwargs, caught.value)
        assert store.artifacts().num_rows == 0
        with pytest.raises(steplog.InvalidArgumentError, match="^sha256"):
            store.open_artifact("not-a-hash")
        with pytest.raises(TypeError, match="^data"):
            store.put_blob("text")
    assert blob_files(tmp_path / "s") == []


def test_blobs_for_documents_and_run_kind(tmp_path):
    with steplog.open(tmp_path / "s") as store:
        digest = store.put_blob(b"numpy==2.0\n")
        assert digest == sha(b"numpy==2.0\n") and store.put_blob(b"numpy==2.0\n") == digest
        assert store.get_blob(digest) == b"numpy==2.0\n"
        with pytest.raises(steplog.NotFoundError):
            store.get_blob(sha(b"other"))
        with store.start_run(capture=False, kind="train", resources={"gpus": 8, "node": {"type": "a100"}}) as run:
            pass
        with pytest.raises(steplog.InvalidArgumentError, match="^kind"):
            store.start_run(kind="")
        with pytest.raises(TypeError, match="^resources"):
            store.start_run(resources=[1])
        with store._index.read() as txn:
            record = txn.get_run(bytes.fromhex(run.id))
    assert record["kind"] == "train" and record["resources"] == {"gpus": 8, "node": {"type": "a100"}}
    assert blob_files(tmp_path / "s") == [digest + ".blob"]


def test_artifacts_survive_repair_and_verify(tmp_path, tree):
    path = tmp_path / "s"
    with steplog.open(path) as store:
        with store.start_run(capture=False) as run:
            run.log_input(str(tree / "a.csv"))
            run.log_model(str(tree), copy=True)
            run.log_artifact("https://example.com/x", name="remote")
        before = store.artifacts().drop_columns(["logged"])
    layout = StoreLayout(str(path))
    repair(layout)
    with steplog.open(path, mode="r") as store:
        assert store.artifacts().drop_columns(["logged"]).equals(before)
    index = Index(layout.index_dir, sync=False, create=False, readonly=True)
    try:
        assert verify(layout, index)[1] == []
        victim = layout.blob_path(sha((tree / "sub" / "b.bin").read_bytes()))
        with open(victim, "r+b") as f:
            f.seek(-3, os.SEEK_END)
            f.write(b"\x00\x00\x00")
        damage = verify(layout, index)[1]
        assert [d.path for d in damage] == [victim]
    finally:
        index.close()
    with steplog.open(path) as store, pytest.raises(steplog.CorruptionError):
        store.restore_artifact(before.column("sha256")[1].as_py(), tmp_path / "back")
    assert not os.path.exists(tmp_path / "back") and not [n for n in os.listdir(tmp_path) if "restore" in n]


def test_pages_hold_the_records_across_page_boundaries(tmp_path):
    path = tmp_path / "s"
    with steplog.open(path) as store:
        runs = [store.start_run(capture=False, name=f"r{i}") for i in range(3)]
        logged = []
        for i in range(1100):   # more than one page of 1024, runs interleaved
            run = runs[i % 3]
            logged.append((run.id, run.log_artifact(f"s3://b/{i}.bin", hash=f"{i:064x}")["seq"]))
        whole = store.artifacts()
        assert list(zip(whole.column("run_id").to_pylist(), whole.column("seq").to_pylist())) == logged
        assert whole.column("sha256").to_pylist() == [f"{i:064x}" for i in range(1100)]
        per_run = pa.concat_tables([store.artifacts(r.id) for r in runs])
        order = [("run_id", "ascending"), ("seq", "ascending")]
        assert per_run.sort_by(order).equals(whole.sort_by(order))
        assert [store.artifacts(r.id).column("seq").to_pylist() for r in runs] == [
            list(range(1, 368)), list(range(1, 368)), list(range(1, 367))]
    layout = StoreLayout(str(path))
    repair(layout)
    with steplog.open(path, mode="r") as store:
        assert store.artifacts().drop_columns(["logged"]).equals(whole.drop_columns(["logged"]))
    index = Index(layout.index_dir, sync=False, create=False, readonly=True)
    try:
        assert verify(layout, index)[1] == []
    finally:
        index.close()


CHILD = r'''
import os, sys
import steplog
path, small, big = sys.argv[1:4]
store = steplog.open(path)
run = store.start_run(capture=False, name="killed")
run.log_artifact(small, copy=True)
print(run.id, flush=True)
run.log_artifact(big, copy=True)
print("done", flush=True)
'''


def test_sigkill_during_copy_leaves_no_half_blob(tmp_path):
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(os.urandom(10_000))
    with open(big, "wb") as f:
        for _ in range(96):
            f.write(os.urandom(1 << 20))
    path = tmp_path / "s"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(small), str(big)],
                             stdout=subprocess.PIPE, text=True)
    run_id = child.stdout.readline().strip()
    big_sha = hashlib.sha256(big.read_bytes()).hexdigest()
    temp_dir = os.path.join(path, "blobs", big_sha[:2])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:   # the temp file of the big blob is being written
        if os.path.isdir(temp_dir) and any(n.endswith(".tmp") and os.path.getsize(os.path.join(temp_dir, n)) > 0
                                           for n in os.listdir(temp_dir)):
            break
        time.sleep(0.001)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert any(n.endswith(".tmp") for n in os.listdir(temp_dir)), "killed after the copy ended"
    with steplog.open(path) as store:
        table = store.artifacts()
        assert table.column("run_id").to_pylist() == [run_id]
        for row in table.to_pylist():
            assert row["stored"]
            store.restore_artifact(row["sha256"], tmp_path / row["sha256"])
            assert sha((tmp_path / row["sha256"]).read_bytes()) == row["sha256"]
        with pytest.raises(steplog.NotFoundError):
            store.open_artifact(big_sha)   # the temp file is not a blob
        assert blob_files(path) == [sha(small.read_bytes()) + ".blob"]
        for name in os.listdir(temp_dir):   # a dead writer's temp file, old enough, goes with the next write
            old = time.time() - 3600
            os.utime(os.path.join(temp_dir, name), (old, old))
        with store.start_run(capture=False) as run:
            run.log_artifact(str(big), copy=True)
        assert sorted(os.listdir(temp_dir)) == [big_sha + ".blob"]
        with store.open_artifact(big_sha) as f:
            assert hashlib.sha256(f.read()).hexdigest() == big_sha


TWIN = r'''
import sys
import steplog
with steplog.open(sys.argv[1]) as store, store.start_run(capture=False) as run:
    run.log_artifact(sys.argv[2], copy=True)
'''


def test_two_processes_copying_one_file_keep_one_blob(tmp_path):
    big = tmp_path / "shared.bin"
    big.write_bytes(os.urandom(24 << 20))
    path = tmp_path / "s"
    steplog.open(path).close()
    children = [subprocess.Popen([sys.executable, "-c", TWIN, str(path), str(big)]) for _ in range(2)]
    assert [child.wait(timeout=120) for child in children] == [0, 0]
    digest = sha(big.read_bytes())
    assert blob_files(path) == [digest + ".blob"]
    assert os.listdir(os.path.join(path, "blobs", digest[:2])) == [digest + ".blob"]   # no temp file left
    with steplog.open(path, mode="r") as store:
        assert store.artifacts().column("sha256").to_pylist() == [digest, digest]
        assert sha(store.get_blob(digest)) == digest


def test_restore_creates_the_folders_above_dest(tmp_path):
    model = tmp_path / "model.bin"
    model.write_bytes(os.urandom(1000))
    with steplog.open(tmp_path / "s") as store, store.start_run(capture=False) as run:
        sha = run.log_model(model, copy=True)["sha256"]
        dest = tmp_path / "restored" / "deep" / "model.bin"
        assert store.restore_artifact(sha, dest) == str(dest)
        assert dest.read_bytes() == model.read_bytes()
        (tmp_path / "afile").write_bytes(b"")
        with pytest.raises(steplog.InvalidArgumentError, match="not a directory"):
            store.restore_artifact(sha, tmp_path / "afile" / "model.bin")


@pytest.mark.parametrize("uri, secret", [
    ("https://h/x?Authorization=Bearer%20zz&part=1", "Bearer"),
    ("https://fn.azurewebsites.net/api/run?code=AZSECRET", "AZSECRET"),
    ("https://h/x?pwd=P1&jwt=J2&session=S3&auth=A4&pw=P5", "P1"),
    ("https://h/cb#access_token=OAUTHTOKEN&state=ok", "OAUTHTOKEN"),
    ("https://h/app;jsessionid=JSESSION/file.bin", "JSESSION"),
    ("https://user:PASSWORD9@h/x?X-Amz-Signature=SIG9", "PASSWORD9"),
])
def test_uri_credentials_never_reach_the_store(tmp_path, uri, secret):
    """Every spelling of a credential in a URI is dropped before the record is written,
    and provenance of the URI as the user has it (credentials and all) finds it without
    repeating them."""
    with steplog.open(tmp_path / "s") as store, store.start_run(capture=False) as run:
        kept = run.log_input(uri, hash="a" * 64)["location"]
        assert secret not in kept and kept.startswith(uri.split(":", 1)[0] + "://")
        assert store.provenance(uri).sha256 == "a" * 64
    for folder, _, names in os.walk(tmp_path / "s"):   # the index keeps artifact records as plain JSON
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                assert secret.encode() not in f.read(), name
