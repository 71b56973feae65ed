"""Lineage graphs: over Arrow tables shaped as Store.runs() and Store.artifacts() are,
against edge sets written out by hand and against reachability computed here by a
fixpoint over plain dicts."""

from __future__ import annotations

import hashlib
import random

import pyarrow as pa
import pytest

from steplog.engine.errors import InvalidArgumentError, NotFoundError
from steplog.query.lineage import Graph, artifact_key

ARTIFACT_SCHEMA = pa.schema([("run_id", pa.string()), ("seq", pa.int64()), ("name", pa.string()),
                             ("role", pa.string()), ("kind", pa.string()), ("location", pa.string()),
                             ("size", pa.int64()), ("mtime", pa.timestamp("us", "UTC")), ("sha256", pa.string()),
                             ("etag", pa.string()), ("stored", pa.bool_()), ("logged", pa.timestamp("us", "UTC"))])


def rid(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def runs_table(runs: list[tuple[str, str, str | None]]) -> pa.Table:
    """runs: (name, kind, parent name or None), in start order."""
    n = len(runs)
    return pa.table({"id": [rid(r[0]) for r in runs], "experiment": ["e"] * n, "name": [r[0] for r in runs],
                     "parent": pa.array([rid(r[2]) if r[2] else None for r in runs], pa.string()),
                     "status": ["finished"] * n,
                     "start_time": pa.array(list(range(n)), pa.int64()).cast(pa.timestamp("us", "UTC")),
                     "end_time": pa.nulls(n, pa.timestamp("us", "UTC")), "kind": [r[1] for r in runs]})


def artifacts_table(logs: list[tuple[str, str, str]]) -> pa.Table:
    """logs: (run name, role, content name; a content name with :// is a URI logged
    without a hash), in log order."""
    rows = []
    for i, (run, role, content) in enumerate(logs):
        uri = "://" in content
        rows.append({"run_id": rid(run), "seq": i, "name": content.rsplit("/", 1)[-1], "role": role,
                     "kind": "uri" if uri else "file", "location": content if uri else f"/data/{run}/{content}",
                     "size": None if uri else len(content), "mtime": None, "sha256": None if uri else sha(content),
                     "etag": None, "stored": False, "logged": i})
    return pa.Table.from_pylist(rows, ARTIFACT_SCHEMA)


RUNS = [("prep", "preprocess", None), ("sweep", "sweep", None), ("t1", "train", "sweep"),
        ("t2", "train", "sweep"), ("t3", "train", "sweep"), ("eval", "eval", None)]
LOGS = [("prep", "output", "data"), ("t1", "input", "data"), ("t1", "input", "data"),   # logged twice: one edge
        ("t1", "input", "s3://bucket/vocab"), ("t2", "input", "data"), ("t3", "input", "data"),
        ("t1", "model", "m1"), ("t2", "model", "m2"), ("t3", "model", "m3"), ("t1", "other", "notes"),
        ("eval", "input", "m1"), ("eval", "output", "report")]


@pytest.fixture(scope="module")
def graph():
    return Graph(runs_table(RUNS), artifacts_table(LOGS))


def edge_set(lineage) -> set:
    return {(e["source"], e["target"], e["relation"], e["role"]) for e in lineage.edges.to_pylist()}


def produced(run, content, role="output"):
    return (rid(run), sha(content), "produced", role)


def consumed(content, run, role="input"):
    return (sha(content) if "://" not in content else content, rid(run), "consumed", role)


def parent(a, b):
    return (rid(a), rid(b), "parent", None)


def test_model_lineage_is_its_trial_the_trial_inputs_and_what_read_it(graph):
    got = graph.around({sha("m1")})
    assert edge_set(got) == {produced("t1", "m1", "model"), consumed("data", "t1"), consumed("s3://bucket/vocab", "t1"),
                             parent("sweep", "t1"), produced("prep", "data"), consumed("m1", "eval"),
                             produced("eval", "report")}
    assert set(got.runs.column("id").to_pylist()) == {rid(r) for r in ("t1", "sweep", "prep", "eval")}
    assert set(got.artifacts.column("id").to_pylist()) == {sha("m1"), sha("data"), "s3://bucket/vocab",
                                                           sha("report")}


def test_shared_dataset_is_one_node_with_an_edge_per_trial(graph):
    got = graph.around({sha("data")})
    consumers = [e for e in got.edges.to_pylist() if e["source"] == sha("data")]
    assert sorted(e["target"] for e in consumers) == sorted(rid(t) for t in ("t1", "t2", "t3"))
    assert got.artifacts.column("id").to_pylist().count(sha("data")) == 1
    # the producing log describes the node, not a trial's copy of it
    row = [a for a in got.artifacts.to_pylist() if a["id"] == sha("data")][0]
    assert row["role"] == "output" and row["location"] == "/data/prep/data"
    assert rid("sweep") not in got.runs.column("id").to_pylist()   # a trial's parent is not downstream of data


def test_depth_counts_edges(graph):
    assert edge_set(graph.around({sha("m1")}, depth=1)) == {produced("t1", "m1", "model"), consumed("m1", "eval")}
    assert edge_set(graph.around({sha("m1")}, depth=0)) == set()
    two = edge_set(graph.around({sha("m1")}, depth=2, downstream=False))
    assert two == {produced("t1", "m1", "model"), consumed("data", "t1"), consumed("s3://bucket/vocab", "t1"),
                   parent("sweep", "t1")}


def test_run_lineage_follows_children(graph):
    got = graph.around({rid("sweep")})
    assert edge_set(got) == ({parent("sweep", t) for t in ("t1", "t2", "t3")}
                             | {produced(t, m, "model") for t, m in (("t1", "m1"), ("t2", "m2"), ("t3", "m3"))}
                             | {consumed("m1", "eval"), produced("eval", "report")})


def test_other_role_makes_no_edge(graph):
    assert not [e for e in graph.edges.to_pylist() if sha("notes") in (e["source"], e["target"])]


def closure(edges: set, start: str, forward: bool) -> set:
    """Every node reachable from ``start``: grow the set until nothing changes."""
    reached = {start}
    while True:
        more = {t if forward else s for s, t in edges if (s if forward else t) in reached}
        if more <= reached:
            return reached
        reached |= more


@pytest.mark.parametrize("seed", range(20))
def test_random_graphs_reach_what_a_fixpoint_reaches(seed):
    rng = random.Random(seed)
    names = [f"r{i}" for i in range(rng.randint(2, 12))]
    runs = [(n, "train", rng.choice(names[:i]) if i and rng.random() < 0.3 else None) for i, n in enumerate(names)]
    contents = [f"c{i}" for i in range(rng.randint(1, 8))]
    logs = [(rng.choice(names), rng.choice(["input", "output", "model", "checkpoint", "code", "other"]),
             rng.choice(contents)) for _ in range(rng.randint(0, 30))]
    expected = {(rid(p), rid(n)) for n, _, p in runs if p}
    for run, role, content in logs:
        if role in ("output", "model", "checkpoint"):
            expected.add((rid(run), sha(content)))
        elif role in ("input", "code"):
            expected.add((sha(content), rid(run)))
    graph = Graph(runs_table(runs), artifacts_table(logs))
    for start in [rid(n) for n in names] + [sha(c) for c in contents]:
        up, down = closure(expected, start, False), closure(expected, start, True)
        got = graph.around({start})
        nodes = set(got.runs.column("id").to_pylist()) | set(got.artifacts.column("id").to_pylist())
        known = {rid(n) for n in names} | {sha(c) for run, _, c in logs}
        assert nodes == (up | down) & known, start
        assert {(s, t) for s, t, _, _ in edge_set(got)} == {(s, t) for s, t in expected
                                                           if t in up or s in down}, start


def test_artifact_key_hashes_a_file_and_takes_a_hash(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"weights" * 1000)
    table = artifacts_table(LOGS)
    assert artifact_key(table, path) == hashlib.sha256(b"weights" * 1000).hexdigest()
    assert artifact_key(table, sha("m1").upper()) == sha("m1")
    assert artifact_key(table, "s3://bucket/vocab") == "s3://bucket/vocab"
    with pytest.raises(NotFoundError, match="nowhere"):
        artifact_key(table, str(tmp_path / "nowhere"))
    with pytest.raises(InvalidArgumentError, match="artifact"):
        artifact_key(table, 3)
