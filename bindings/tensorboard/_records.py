"""What the writer and the importer store alike, so that a script's data reads the same
whether it went through steplog's SummaryWriter or was imported from event files:
histograms as tensor-summary rows, texts as artifacts, session-log markers as a series.
numpy only (the writer's import stays light)."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

SESSION_LOG = "_tensorboard/session_log"   # SessionLog events: value 1 START, 2 STOP, 3 CHECKPOINT, at their step
SESSION_START = 1.0
TEXT_ARTIFACT = "tensorboard-text/"        # + tag: a JSON Lines artifact, one {"step", "time_ns", "text"} a line
QUANTILES = np.array([0.01, 0.05, 0.25, 0.50, 0.75, 0.95, 0.99])
NSTATS = 16


def histogram_row(lefts, rights, counts, minimum=None, maximum=None, total=None, sum_squares=None):
    """(stats, counts, edges) of a tensor-summary row for a histogram of buckets
    (lefts[i], rights[i], counts[i]) in TensorBoard's ``[k, 3]`` form. Edges are the lefts
    and the last right, each nudged to the next float64 above its neighbour where not
    strictly increasing (a one-value histogram [v, v]: steplog's edges increase
    strictly; float32, as TensorBoard keeps them, reads them back unchanged). Counts are
    rounded to integers. Statistics: count, min, max exact when given (HistogramProto
    has them), mean, std and l2 from ``total``/``sum_squares`` when given, else from
    bucket midpoints; nan/inf counts 0 and zero_fraction NaN (not in a histogram);
    quantiles interpolated within buckets."""
    lefts = np.asarray(lefts, np.float64)
    rights = np.asarray(rights, np.float64)
    counts = np.rint(np.asarray(counts, np.float64)).astype(np.int64)
    if not len(counts):
        edges, counts = np.array([0.0, 1.0]), np.zeros(1, np.int64)
        lefts, rights = edges[:1], edges[1:]
    else:
        edges = increasing(np.append(lefts, rights[-1]))
    n = int(counts.sum())
    lo = float(lefts[0]) if minimum is None else float(minimum)
    hi = float(rights[-1]) if maximum is None else float(maximum)
    stats = np.full(NSTATS, np.nan)
    stats[0], stats[1], stats[2] = n, 0, 0
    if n:
        mids = (lefts + rights) / 2
        total = float(mids @ counts) if total is None else float(total)
        sum_squares = float((mids * mids) @ counts) if sum_squares is None else float(sum_squares)
        mean = total / n
        stats[3:8] = lo, hi, mean, np.sqrt(max(sum_squares / n - mean * mean, 0.0)), np.sqrt(max(sum_squares, 0.0))
        stats[9:] = _quantiles(edges, counts, lo, hi)
    return stats, counts, edges


def proto_histogram(minimum, maximum, num, total, sum_squares, limits, counts):
    """A HistogramProto's fields as a row, read as TensorBoard's data_compat reads them:
    empty end buckets dropped, min and max as the outer edges (``bucket_limit[i]`` is
    bucket i's right edge)."""
    counts = np.asarray(counts, np.float64)
    full = np.flatnonzero(counts > 0)
    if not len(full):
        return histogram_row([], [], [])
    a, b = full[0], full[-1] + 1
    inner = np.asarray(limits, np.float64)[a:b - 1]
    lefts, rights = np.append(float(minimum), inner), np.append(inner, float(maximum))
    return histogram_row(lefts, rights, counts[a:b], minimum, maximum, total, sum_squares)


def increasing(edges: np.ndarray) -> np.ndarray:
    edges = np.array(edges, np.float64)
    for i in range(1, len(edges)):
        if not edges[i] > edges[i - 1]:
            edges[i] = np.nextafter(edges[i - 1], np.inf)
    return edges


def _quantiles(edges, counts, lo, hi):
    cum = np.concatenate([[0], np.cumsum(counts)]).astype(np.float64)
    at = QUANTILES * cum[-1]
    i = np.clip(np.searchsorted(cum, at, side="left") - 1, 0, len(counts) - 1)
    width = np.where(counts[i] > 0, counts[i], 1)
    q = edges[i] + (edges[i + 1] - edges[i]) * np.clip((at - cum[i]) / width, 0, 1)
    return np.clip(q, lo, hi)


def k3_buckets(edges, counts, minimum=None, maximum=None) -> np.ndarray:
    """A stored histogram as TensorBoard's data_compat gives it: ``[k, 3]`` float32
    (left, right, count), empty buckets at both ends dropped, and the outer edges
    replaced by ``minimum`` and ``maximum`` when given (a row's min and max)."""
    edges = np.asarray(edges, np.float64)
    counts = np.asarray(counts)
    full = np.flatnonzero(counts > 0)
    if not len(full):
        return np.zeros((0, 3), np.float32)
    a, b = full[0], full[-1] + 1
    lefts, rights = edges[a:b].copy(), edges[a + 1:b + 1].copy()
    if minimum is not None:
        lefts[0] = minimum
    if maximum is not None:
        rights[-1] = maximum
    return np.stack([lefts, rights, counts[a:b]], axis=1).astype(np.float32)


def log_texts(run, texts: dict) -> int:
    """Keep each tag's texts [(step, time_ns, text)] as one JSON Lines artifact of ``run``
    named TEXT_ARTIFACT + tag (its bytes stored in the store); returns the texts kept."""
    kept = 0
    with tempfile.TemporaryDirectory(prefix="steplog-tb-text-") as scratch:
        for i, (tag, rows) in enumerate(texts.items()):
            path = os.path.join(scratch, f"{i}.jsonl")
            with open(path, "w", encoding="utf-8") as out:
                for step, time_ns, text in rows:
                    out.write(json.dumps({"step": step, "time_ns": time_ns, "text": text}, ensure_ascii=False) + "\n")
            run.log_artifact(path, role="other", name=TEXT_ARTIFACT + tag, copy=True)
            kept += len(rows)
    return kept


def read_texts(store, run_id: str) -> dict:
    """tag -> [(step, time_ns, text)] of the text artifacts of a run (the latest record of each tag)."""
    table = store.artifacts(run_id)
    found = {}
    for name, sha in zip(table.column("name").to_pylist(), table.column("sha256").to_pylist()):
        if name.startswith(TEXT_ARTIFACT):
            found[name[len(TEXT_ARTIFACT):]] = sha
    out = {}
    for tag, sha in found.items():
        with store.open_artifact(sha) as stream:
            rows = [json.loads(line) for line in stream.read().decode("utf-8").splitlines()]
        out[tag] = [(r["step"], r["time_ns"], r["text"]) for r in rows]
    return out
