"""Index records as they are also written to segments (record blocks, engine.block
KIND_RECORD), so that ``steplog repair`` can rebuild the index from the segments alone.

Each record is a JSON object with a ``type``:

    experiment  {"type", "record": experiment record}
    run         {"type", "record": the whole run record after the change, "seq"}
    series      {"type", "run", "name", "context", "kind", "rollup_shift", "series_id"}
    artifact    {"type", "record": the artifact record (engine/artifacts.py), "seq"}  (version 5)

A run's record is written whole each time it changes (start, resume, params, tags, end);
``seq`` numbers them in index commit order, so the highest wins on repair. Layout in
docs/FORMAT.md, "Record blocks".
"""

from __future__ import annotations

from .index import IndexWriter


def experiment_record(txn: IndexWriter, record: dict) -> dict:
    """Store an experiment record in the index; returns its segment record."""
    txn.put_experiment(record)
    return {"type": "experiment", "record": record}


def run_record(txn: IndexWriter, record: dict) -> dict:
    """Store a run record in the index; returns its segment record."""
    txn.put_run(bytes.fromhex(record["id"]), record)
    return {"type": "run", "record": record}


def artifact_record(txn: IndexWriter, record: dict) -> dict:
    """Store an artifact record in the index, as the run's next; returns its segment record."""
    record["seq"] = txn.next_artifact_seq(bytes.fromhex(record["run"]))
    txn.put_artifacts([record])
    return {"type": "artifact", "record": record}
