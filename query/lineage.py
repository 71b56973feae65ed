"""Lineage: the graph of runs and artifacts that made something, and what it went on to make.

Nodes are runs and artifacts. An artifact node is its content: every log of the same
sha256, by any run, at any time, is one node (a log without a hash, a URI say, is
known by its location). Edges, each with the role of the log that made it:

- ``produced``: run -> artifact, for a log with role output, model or checkpoint;
- ``consumed``: artifact -> run, for a log with role input or code;
- ``parent``: parent run -> child run.

A log with role "other" says nothing about direction and makes no edge. Upstream of a
node is what its incoming edges lead back to, downstream what its outgoing edges lead
to; ``depth`` counts edges (run -> artifact -> run is two hops). So one preprocessing
job whose dataset twenty trials read is one node with twenty ``consumed`` edges out of
that dataset, and the upstream of one trial's model is that trial, its parent sweep,
the dataset and the preprocessing job, not the nineteen other trials.

Everything here works on Arrow tables of the store's runs (``Store.runs()``) and
artifacts (``Store.artifacts()``): ``lineage(store, ...)`` only fetches them.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..engine.errors import InvalidArgumentError, NotFoundError

PRODUCED_ROLES = ("output", "model", "checkpoint")
CONSUMED_ROLES = ("input", "code")
RUN_NODE_COLUMNS = ("id", "experiment", "name", "kind", "status", "parent", "start_time", "end_time")
ARTIFACT_NODE_COLUMNS = ("id", "sha256", "name", "role", "kind", "location", "size")
EDGE_SCHEMA = pa.schema([("source", pa.string()), ("target", pa.string()),
                         ("relation", pa.string()), ("role", pa.string())])
SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Lineage:
    """A lineage graph as three Arrow tables.

    runs: id, experiment, name, kind, status, parent, start_time, end_time (join with
    ``Store.runs()`` on id for params and tags); artifacts: id (the sha256, or the
    location of a log without one), sha256, name, role, kind, location, size, from
    the log that produced the content if one did (the latest), else the first one;
    edges: source, target, relation ("produced", "consumed", "parent"), role (the
    log's role, null for parent edges), where source and target are run ids or
    artifact ids. Each edge appears once however often it was logged.
    """

    runs: pa.Table
    artifacts: pa.Table
    edges: pa.Table

    def __str__(self) -> str:
        return (f"lineage: {self.runs.num_rows} runs, {self.artifacts.num_rows} artifacts, "
                f"{self.edges.num_rows} edges")


class Graph:
    """Every edge of a store, built once from its runs and artifacts tables, and walks
    over it. Each hop of a walk is one vectorised lookup over all the edges."""

    def __init__(self, runs: pa.Table, artifacts: pa.Table):
        self.runs = runs
        self.artifacts = artifacts.append_column("key", artifact_keys(artifacts))
        self.edges = all_edges(runs, self.artifacts)

    def walk(self, start: set[str], depth: int | None, forward: bool) -> tuple[set[str], np.ndarray]:
        """The nodes reached from ``start`` (included) within ``depth`` hops, following
        edges forward (downstream) or backward (upstream), and the rows of the edges
        taken."""
        near = self.edges.column("source" if forward else "target")
        far = self.edges.column("target" if forward else "source")
        seen, frontier, taken, hops = set(start), set(start), [], 0
        while frontier and (depth is None or hops < depth):
            mask = pc.is_in(near, value_set=pa.array(list(frontier), pa.string()))
            rows = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
            taken.append(rows)
            reached = set(far.take(rows).to_pylist())
            frontier = reached - seen
            seen |= reached
            hops += 1
        return seen, np.unique(np.concatenate(taken)) if taken else np.zeros(0, np.int64)

    def around(self, start: set[str], depth: int | None = None,
               upstream: bool = True, downstream: bool = True) -> Lineage:
        """The graph upstream and/or downstream of ``start`` (node ids)."""
        nodes, rows = set(start), []
        for forward, wanted in ((False, upstream), (True, downstream)):
            if wanted:
                reached, taken = self.walk(start, depth, forward)
                nodes |= reached
                rows.append(taken)
        return self.subgraph(nodes, np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64))

    def subgraph(self, nodes: set[str], edge_rows: np.ndarray) -> Lineage:
        edges = unique_edges(self.edges.take(pa.array(edge_rows, pa.int64())))
        return Lineage(runs=run_nodes(self.runs, nodes), artifacts=artifact_nodes(self.artifacts, nodes),
                       edges=edges)


def artifact_keys(artifacts: pa.Table) -> pa.ChunkedArray:
    """The node id of each log: its sha256, else its location."""
    return pc.coalesce(artifacts.column("sha256"), artifacts.column("location"))


def all_edges(runs: pa.Table, artifacts: pa.Table) -> pa.Table:
    """The edges of every log and every parent link, as logged (repeats kept)."""
    artifacts = artifacts.select(["run_id", "key", "role"])   # filter only the columns edges need
    role = artifacts.column("role")
    produced = artifacts.filter(pc.is_in(role, value_set=pa.array(PRODUCED_ROLES)))
    consumed = artifacts.filter(pc.is_in(role, value_set=pa.array(CONSUMED_ROLES)))
    children = runs.select(["id", "parent"]).filter(pc.is_valid(runs.column("parent")))

    def edges(source, target, relation: str, roles) -> pa.Table:
        n = len(source)
        return pa.table([pa.chunked_array(source.chunks, pa.string()) if n else pa.array([], pa.string()),
                         pa.chunked_array(target.chunks, pa.string()) if n else pa.array([], pa.string()),
                         pa.repeat(pa.scalar(relation, pa.string()), n),
                         roles if roles is not None else pa.nulls(n, pa.string())], schema=EDGE_SCHEMA)

    parts = [edges(produced.column("run_id"), produced.column("key"), "produced", produced.column("role")),
             edges(consumed.column("key"), consumed.column("run_id"), "consumed", consumed.column("role")),
             edges(children.column("parent"), children.column("id"), "parent", None)]
    return pa.concat_tables(parts).combine_chunks()


def unique_edges(edges: pa.Table) -> pa.Table:
    """Each (source, target, relation, role) once, sorted by relation, source, target."""
    if not edges.num_rows:
        return edges
    grouped = edges.group_by(["source", "target", "relation", "role"], use_threads=False).aggregate([])
    return grouped.select(EDGE_SCHEMA.names).sort_by([("relation", "ascending"), ("source", "ascending"),
                                                      ("target", "ascending"), ("role", "ascending")])


def run_nodes(runs: pa.Table, nodes: set[str]) -> pa.Table:
    """The runs among ``nodes``, by start time, with RUN_NODE_COLUMNS (kind null for
    a store that keeps none)."""
    picked = runs.filter(pc.is_in(runs.column("id"), value_set=pa.array(list(nodes), pa.string())))
    columns = {}
    for name in RUN_NODE_COLUMNS:
        if name in picked.column_names:
            columns[name] = picked.column(name)
        else:
            columns[name] = pa.nulls(picked.num_rows, pa.string())
    return pa.table(columns)


def artifact_nodes(artifacts: pa.Table, nodes: set[str]) -> pa.Table:
    """One row per artifact node among ``nodes``: the latest producing log, else the
    first log."""
    picked = artifacts.filter(pc.is_in(artifacts.column("key"), value_set=pa.array(list(nodes), pa.string())))
    produced = pc.is_in(picked.column("role"), value_set=pa.array(PRODUCED_ROLES)).to_numpy(zero_copy_only=False)
    logged = _logged(picked)
    row = np.arange(picked.num_rows)
    # first per key after sorting: producers before the rest, the latest producer, the first of the rest
    ranking = pa.table({"key": picked.column("key"), "p": ~produced, "t": np.where(produced, -logged, logged),
                        "r": np.where(produced, -row, row)})
    order = pc.sort_indices(ranking, [(n, "ascending") for n in ("key", "p", "t", "r")])
    keys = picked.column("key").take(order)
    first = np.ones(len(keys), bool)
    if len(keys) > 1:
        first[1:] = pc.not_equal(keys[1:], keys[:-1]).to_numpy(zero_copy_only=False)
    chosen = picked.take(order.filter(pa.array(first)))
    columns = {"id": chosen.column("key")}
    for name in ARTIFACT_NODE_COLUMNS[1:]:
        columns[name] = chosen.column(name)
    return pa.table(columns)


def _logged(artifacts: pa.Table) -> np.ndarray:
    """The logged time of each log as int64 (-1 for none); zeros without the column."""
    if "logged" not in artifacts.column_names:
        return np.zeros(artifacts.num_rows, np.int64)
    logged = artifacts.column("logged")
    if pa.types.is_timestamp(logged.type):
        logged = logged.cast(pa.int64())
    return pc.fill_null(logged, -1).to_numpy(zero_copy_only=False).astype(np.int64)


# -- resolving what the user names ------------------------------------------------------

def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in chunks (a model of many GB needs no memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def artifact_key(artifacts: pa.Table, value, argument: str = "artifact") -> str:
    """The node id that ``value`` names: a sha256 (64 hex digits), a file (hashed), a
    directory (the hash of its manifest, as logging it gives), or a URI logged by
    location. NotFoundError when nothing can be found."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(argument, f"must be a path, a sha256 or a URI, got {value!r}")
    if SHA256.fullmatch(value) and not os.path.exists(value):
        return value.lower()
    if os.path.isfile(value):
        return file_sha256(value)
    if os.path.isdir(value):
        from ..engine.artifacts import describe   # a directory's sha256 is that of its manifest

        return describe(value).fields["sha256"]
    if "://" in value:   # kept without its credentials, so looked up and named without them
        from ..engine.artifacts import clean_uri

        value = clean_uri(value)
        locations = (value,)
    else:
        locations = (value, os.path.abspath(value), os.path.realpath(value))
    held = artifacts.filter(pc.is_in(artifacts.column("location"), value_set=pa.array(list(locations))))
    if held.num_rows:
        hashes = [h for h in held.column("sha256").to_pylist() if h]
        return hashes[-1] if hashes else held.column("location")[0].as_py()
    if os.path.lexists(value):
        raise NotFoundError(f"{argument}: {value!r} is neither a file nor a directory one can hash, "
                            "and no run logged that location")
    raise NotFoundError(f"{argument}: no file, sha256 or logged location {value!r}")


def run_arg(runs: pa.Table, run_id, argument: str = "run") -> str:
    """A run id of the store (full, any case)."""
    if not isinstance(run_id, str):
        run_id = getattr(run_id, "id", run_id)
    if not isinstance(run_id, str) or not re.fullmatch(r"[0-9a-fA-F]{32}", run_id):
        raise InvalidArgumentError(argument, f"must be a run id (32 hex digits), got {run_id!r}")
    run_id = run_id.lower()
    if not pc.any(pc.equal(runs.column("id"), run_id)).as_py():
        raise NotFoundError(f"{argument}: no run {run_id}")
    return run_id


def graph_of(store) -> Graph:
    """The graph of every run and artifact of ``store`` (anything with ``runs()`` and
    ``artifacts()`` as Store has them)."""
    return Graph(store.runs(), store.artifacts())


def lineage(store, artifact=None, run=None, depth: int | None = None) -> Lineage:
    """The graph upstream and downstream of one artifact (a path, which is hashed, a
    sha256 or a URI) or one run (its id), ``depth`` hops each way (None: all).

    An artifact that no run logged is NotFoundError naming its hash."""
    if (artifact is None) == (run is None):
        raise InvalidArgumentError("artifact", "give one of artifact= and run=")
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 0):
        raise InvalidArgumentError("depth", f"must be a whole number >= 0 or None, got {depth!r}")
    graph = graph_of(store)
    if run is not None:
        start = run_arg(graph.runs, run)
    else:
        start = artifact_key(graph.artifacts, artifact)
        if not pc.any(pc.equal(graph.artifacts.column("key"), start)).as_py():
            raise NotFoundError(f"artifact: no run logged {start}")
    return graph.around({start}, depth)
