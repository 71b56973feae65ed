"""Provenance, lineage and diff over a store of many runs and artifacts.

    .venv/bin/python benchmarks/provenance.py [--runs 10000] [--artifacts 10] [--repeat 7]

Builds, in a temporary directory, a store of ``--runs`` runs: 10 preprocessing jobs
that each produce a dataset, 100 sweeps, and trials (parent: a sweep) that each read
one dataset and log one code artifact, checkpoints and one model, ``--artifacts`` logs
a trial in all (10,000 runs x 10 = 100,000 artifacts), with two metrics of 50 points.
Artifacts are logged by hash (no files); where the store cannot log artifacts yet, the
same logs are kept in an Arrow table beside it. Prints medians of:

* provenance(store, sha256) of one model (hashing excluded), and its parts: runs(),
  artifacts(), the graph of every edge, the upstream walk;
* lineage(store, artifact=dataset): a dataset read by a thousand trials, both ways;
* diff_runs of two trials;
* hashing one 64 MB file (for scale: what comes before the lookup).

Target: provenance <= 50 ms after hashing, at 10,000 runs and 100,000 artifacts.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time

import numpy as np
import pyarrow as pa

import steplog
from steplog.query.lineage import Graph, file_sha256, lineage
from steplog.query.provenance import provenance
from steplog.query.rundiff import diff_runs

SCHEMA = pa.schema([("run_id", pa.string()), ("seq", pa.int64()), ("name", pa.string()), ("role", pa.string()),
                    ("kind", pa.string()), ("location", pa.string()), ("size", pa.int64()),
                    ("sha256", pa.string()), ("logged", pa.int64())])


class Kept:
    """A store and the artifact logs kept beside it (for stores without artifacts)."""

    def __init__(self, store):
        self.store, self.columns = store, {name: [] for name in SCHEMA.names}
        self.table = None

    def __getattr__(self, name):
        return getattr(self.store, name)

    def start_run(self, *args, kind=None, **kwargs):
        return self.store.start_run(*args, **kwargs)

    def log(self, run, name, role, sha):
        row = (run.id, len(self.columns["seq"]), name, role, "uri", f"s3://bucket/{name}", 1000, sha,
               len(self.columns["seq"]))
        for column, value in zip(SCHEMA.names, row):
            self.columns[column].append(value)

    def artifacts(self, run_id=None):
        if self.table is None:
            self.table = pa.table(self.columns, SCHEMA)
        if run_id is None:
            return self.table
        import pyarrow.compute as pc

        return self.table.filter(pc.equal(self.table.column("run_id"), run_id))


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def log(store, run, name: str, role: str) -> None:
    if isinstance(store, Kept):
        store.log(run, name, role, sha(name))
    else:
        run.log_artifact(f"s3://bucket/{name}", role=role, name=name, hash=sha(name))


def build(path: str, runs: int, per_trial: int) -> tuple:
    store = steplog.open(path, flush_interval=None, budget_bytes=256 << 20)
    if not hasattr(steplog.Run, "log_model"):
        store = Kept(store)
    steps = np.arange(50, dtype=np.int64)
    rng = np.random.default_rng(0)
    for d in range(10):
        with store.start_run("data", name=f"prep-{d}", kind="preprocess") as prep:
            log(store, prep, f"dataset-{d}", "output")
    sweeps = [store.start_run("sweep", name=f"sweep-{s}", kind="sweep") for s in range(100)]
    trials = []
    for i in range(runs - 110):
        params = {"lr": float(10 ** rng.uniform(-4, -1)), "depth": int(i % 4), "opt": ["adam", "sgd"][i % 2]}
        with store.start_run("sweep", name=f"trial-{i}", params=params, kind="train",
                             parent=sweeps[i % 100]) as run:
            log(store, run, f"dataset-{i % 10}", "input")
            log(store, run, f"code-{i % 50}", "code")
            for c in range(per_trial - 3):
                log(store, run, f"ckpt-{i}-{c}", "checkpoint")
            log(store, run, f"model-{i}", "model")
            run.log_batch("loss", steps, np.exp(-steps / 10) + rng.random(50) * 0.01)
            run.log_batch("acc", steps, 1 - np.exp(-steps / 10))
            trials.append(run.id)
    for s in sweeps:
        s.end()
    store.flush()
    return store, trials


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--artifacts", type=int, default=10, help="artifact logs a trial")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store, trials = build(os.path.join(tmp, "runs.steplog"), args.runs, args.artifacts)
        n_artifacts = store.artifacts().num_rows
        print(f"store: {args.runs:,} runs, {n_artifacts:,} artifacts, built in {time.perf_counter() - t:.1f} s"
              + (" (artifact logs kept beside the store)" if isinstance(store, Kept) else ""))
        model = sha(f"model-{len(trials) // 2}")
        provenance(store, model)   # warm: the catalog, numba, pyarrow kernels
        runs, arts = store.runs(), store.artifacts()
        graph = Graph(runs, arts)
        figures = {
            "provenance(store, sha256) of a model": lambda: provenance(store, model),
            "  store.runs()": store.runs,
            "  store.artifacts()": store.artifacts,
            "  graph of every edge": lambda: Graph(runs, arts),
            "  upstream walk": lambda: graph.around({model}, downstream=False),
            "lineage of a dataset read by 1,000 trials": lambda: lineage(store, artifact=sha("dataset-3")),
            "diff_runs of two trials": lambda: diff_runs(store, trials[0], trials[1]),
        }
        for label, fn in figures.items():
            print(f"{label:<45} {median_ms(fn, args.repeat):8.1f} ms (median of {args.repeat})")
        big = os.path.join(tmp, "model.bin")
        with open(big, "wb") as f:
            f.write(os.urandom(64 << 20))
        print(f"{'hashing a 64 MB file':<45} {median_ms(lambda: file_sha256(big), 3):8.1f} ms (median of 3)")
        store.close()


if __name__ == "__main__":
    main()
