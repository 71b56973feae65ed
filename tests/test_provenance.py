"""Provenance, lineage and diff end to end: a preprocessing job, a sweep of three
trainings that read its dataset (one through a copy), an evaluation of one model, in a
real git repository with an uncommitted edit. Expectations come from what the test
wrote: hashlib over the files, git itself, numpy over the logged curves."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import steplog
from steplog.engine.errors import InvalidArgumentError, NotFoundError
from steplog.query.lineage import lineage
from steplog.query.provenance import provenance
from steplog.query.rundiff import diff_runs

LRS = (0.1, 0.01, 0.001)
# Until runs log artifacts themselves, the scenario keeps its logs in a table of the
# columns Store.artifacts() returns, beside a real store that holds everything else.
HAS_ARTIFACTS = hasattr(steplog.Run, "log_model")


class Logged:
    """A real store whose artifacts() are the logs the scenario kept."""

    def __init__(self, store):
        self.store, self.rows = store, []

    def __getattr__(self, name):
        return getattr(self.store, name)

    def artifacts(self, run_id=None):
        import pyarrow as pa

        schema = pa.schema([("run_id", pa.string()), ("seq", pa.int64()), ("name", pa.string()),
                            ("role", pa.string()), ("kind", pa.string()), ("location", pa.string()),
                            ("size", pa.int64()), ("sha256", pa.string()), ("logged", pa.int64())])
        return pa.Table.from_pylist([r for r in self.rows if run_id in (None, r["run_id"])], schema)

    def start_run(self, *args, kind=None, **kwargs):
        return self.store.start_run(*args, **kwargs)

    def log(self, run, path, role):
        self.rows.append({"run_id": run.id, "seq": len(self.rows), "name": os.path.basename(path), "role": role,
                          "kind": "file", "location": str(path), "size": os.path.getsize(path),
                          "sha256": sha_of(path), "logged": len(self.rows)})


def log(store, run, path, role):
    if HAS_ARTIFACTS:
        {"input": run.log_input, "model": run.log_model}.get(role, run.log_artifact)(
            str(path), **({} if role in ("input", "model") else {"role": role}))
    else:
        store.log(run, path, role)


def git(repo, *args) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(("git", *args), cwd=repo, env=env, check=True, capture_output=True).stdout.decode()


def sha_of(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The scenario, run once: the store (open), the files and what was logged."""
    root = tmp_path_factory.mktemp("provenance")
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("print('train')\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "train")
    (repo / "train.py").write_text("print('train, edited')\n")
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        w = run_scenario(root, repo)
    finally:
        os.chdir(cwd)
    yield w
    w["store"].close()


def run_scenario(root, repo) -> dict:
    store = steplog.open(root / "runs.steplog", flush_interval=None)
    store = store if HAS_ARTIFACTS else Logged(store)
    rng = np.random.default_rng(7)
    w = {"store": store, "repo": repo, "commit": git(repo, "rev-parse", "HEAD").strip(),
         "diff_sha256": hashlib.sha256(subprocess.run(["git", "diff", "--no-color", "--no-ext-diff", "HEAD"],
                                                      cwd=repo, capture_output=True).stdout).hexdigest(),
         "train": [], "models": [], "curves": []}
    dataset = repo / "data" / "train.csv"
    dataset.parent.mkdir()
    with store.start_run("pipeline", name="prep", kind="preprocess") as prep:
        dataset.write_bytes(rng.integers(0, 255, 5000, dtype=np.uint8).tobytes())
        log(store, prep, dataset, "output")
    copy = root / "elsewhere" / "train.csv"
    copy.parent.mkdir()
    shutil.copy(dataset, copy)
    with store.start_run("sweep", name="sweep", kind="sweep") as sweep:
        for i, lr in enumerate(LRS):
            with store.start_run("sweep", name=f"lr={lr}", params={"lr": lr, "depth": 3, "opt": "adam"},
                                 tags={"team": "vision"}, kind="train", parent=sweep) as run:
                log(store, run, copy if i == 2 else dataset, "input")
                steps = np.arange(0, 2000, 5)
                loss = np.exp(-lr * steps / 100) + rng.random(len(steps)) * 0.05
                acc = 1 - loss + rng.random(len(steps)) * 0.01
                run.log_batch("loss", steps=steps, values=loss)
                run.log_batch("acc", steps=steps, values=acc)
                model = repo / f"model-{i}.bin"
                model.write_bytes(rng.bytes(3000))
                log(store, run, model, "model")
                w["train"].append(run.id)
                w["models"].append(model)
                w["curves"].append({"loss": (steps, loss), "acc": (steps, acc)})
        w["sweep"] = sweep.id
    with store.start_run("pipeline", name="eval", kind="eval") as ev:
        log(store, ev, w["models"][0], "input")
        report = repo / "report.json"
        report.write_text("{}")
        log(store, ev, report, "output")
    w.update(prep=prep.id, eval=ev.id, dataset=dataset, copy=copy, report=report)
    store.flush()
    return w


def has_kinds(world) -> bool:
    return "kind" in world["store"].runs().column_names


def test_provenance_of_a_model_file_alone(world):
    i = 1
    p = provenance(world["store"], world["models"][i])
    assert p.sha256 == sha_of(world["models"][i])
    assert p.run["id"] == world["train"][i]
    if has_kinds(world):
        assert p.run["kind"] == "train"
    assert p.other_producers == []
    assert [r["id"] for r in p.parents] == [world["sweep"]]
    assert {r["id"] for r in p.upstream} == {world["prep"], world["sweep"]}
    assert [(a["sha256"], a["read_by"], a["produced_by"]) for a in p.inputs] == [
        (sha_of(world["dataset"]), [world["train"][i]], [world["prep"]])]
    assert p.params == {"depth": 3, "lr": LRS[i], "opt": "adam"}
    assert p.readers == []
    by_name = {m["metric"]: m for m in p.metrics}
    assert set(by_name) == {"loss", "acc"}
    for name, (steps, values) in world["curves"][i].items():
        m = by_name[name]
        assert m["count"] == len(values)
        assert (m["last"], m["last_step"]) == (values[-1], steps[-1])
        assert (m["min"], m["min_step"]) == (values.min(), steps[np.argmin(values)])
        assert (m["max"], m["max_step"]) == (values.max(), steps[np.argmax(values)])


def test_provenance_reads_the_environment(world):
    if not hasattr(world["store"], "environment"):
        pytest.skip("this store keeps no environment records yet")
    p = provenance(world["store"], world["models"][0])
    assert p.code["commit"] == world["commit"]
    assert p.code["dirty"] is True and p.code["diff_sha256"] == world["diff_sha256"]
    assert p.environment["packages"] > 10 and p.environment["main_packages"]["numpy"] == np.__version__


def test_provenance_report_and_dict(world):
    p = provenance(world["store"], world["models"][0])
    text = str(p)
    for needle in (p.sha256, world["train"][0][:8], world["prep"][:8], sha_of(world["dataset"]), "lr", "loss"):
        assert needle in text
    assert [r["id"] for r in p.readers] == [world["eval"]]   # the evaluation read this model
    back = json.loads(json.dumps(p.to_dict()))
    assert back["run"]["id"] == world["train"][0] and back["sha256"] == p.sha256
    assert {e["relation"] for e in back["lineage"]["edges"]} == {"produced", "consumed", "parent"}


def test_provenance_of_a_dataset_and_by_hash(world):
    p = provenance(world["store"], sha_of(world["dataset"]))
    assert p.run["id"] == world["prep"] and p.upstream == [] and p.inputs == []
    assert sorted(r["id"] for r in p.readers) == sorted(world["train"])


def test_unknown_file_names_its_hash(world, tmp_path):
    stray = tmp_path / "stray.bin"
    stray.write_bytes(b"nobody logged this")
    with pytest.raises(NotFoundError, match=hashlib.sha256(b"nobody logged this").hexdigest()):
        provenance(world["store"], stray)
    with pytest.raises(NotFoundError, match="0" * 64):
        provenance(world["store"], "0" * 64)
    with pytest.raises(InvalidArgumentError, match="path_or_hash"):
        provenance(world["store"], None)


def test_lineage_of_a_model_is_the_expected_graph(world):
    w = world
    sd, m0 = sha_of(w["dataset"]), sha_of(w["models"][0])
    got = lineage(w["store"], artifact=w["models"][0])
    edges = {(e["source"], e["target"], e["relation"], e["role"]) for e in got.edges.to_pylist()}
    assert edges == {(w["train"][0], m0, "produced", "model"), (sd, w["train"][0], "consumed", "input"),
                     (w["sweep"], w["train"][0], "parent", None), (w["prep"], sd, "produced", "output"),
                     (m0, w["eval"], "consumed", "input"), (w["eval"], sha_of(w["report"]), "produced", "output")}
    if has_kinds(world):
        assert set(got.runs.column("kind").to_pylist()) == {"train", "sweep", "preprocess", "eval"}


def test_lineage_of_the_dataset_counts_every_reader_once(world):
    w = world
    sd = sha_of(w["dataset"])
    got = lineage(w["store"], artifact=w["copy"])   # the copy is the same content
    readers = {e["target"] for e in got.edges.to_pylist() if e["source"] == sd and e["relation"] == "consumed"}
    assert readers == set(w["train"])
    assert got.artifacts.column("id").to_pylist().count(sd) == 1
    assert set(got.runs.column("id").to_pylist()) == {w["prep"], *w["train"], w["eval"]}


def test_lineage_of_the_sweep_run(world):
    w = world
    got = lineage(w["store"], run=w["sweep"], depth=1)
    assert {(e["source"], e["target"]) for e in got.edges.to_pylist()} == {(w["sweep"], t) for t in w["train"]}
    with pytest.raises(NotFoundError, match="run"):
        lineage(w["store"], run="f" * 32)
    with pytest.raises(InvalidArgumentError, match="depth"):
        lineage(w["store"], run=w["sweep"], depth=-1)


def test_diff_of_two_trainings_lists_the_params_that_differ(world):
    w = world
    d = diff_runs(w["store"], w["train"][0], w["train"][2])
    assert d.params == [("lr", LRS[0], LRS[2])]
    assert d.tags == [] and d.code == [] and d.packages == {"added": {}, "removed": {}, "changed": {}}
    assert d.inputs == []   # the copy holds the same bytes under the same name
    finals = {k: (a, b) for k, a, b in d.metrics}
    assert finals == {name: (w["curves"][0][name][1][-1], w["curves"][2][name][1][-1]) for name in ("acc", "loss")}
    text = str(d)
    assert "lr" in text and str(LRS[2]) in text
    assert json.loads(json.dumps(d.to_dict()))["params"] == [{"key": "lr", "a": LRS[0], "b": LRS[2]}]


def test_diff_of_runs_with_other_inputs(world):
    w = world
    d = diff_runs(w["store"], w["train"][0], w["eval"])
    assert ("train.csv", [sha_of(w["dataset"])], None) in d.inputs
    assert ("model-0.bin", None, [sha_of(w["models"][0])]) in d.inputs
    assert {k for k, _, _ in d.params} == {"lr", "depth", "opt"}


@pytest.mark.skipif(not HAS_ARTIFACTS, reason="the store keeps no artifacts yet")
def test_command_line(world, capsys):
    from steplog.commands import diff as diff_command
    from steplog.commands import provenance as provenance_command
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    provenance_command.add_parser(sub)
    diff_command.add_parser(sub)
    path = world["store"].path
    args = parser.parse_args(["provenance", str(path), str(world["models"][2]), "--format", "json"])
    assert args.handler(args) == 0
    assert json.loads(capsys.readouterr().out)["run"]["id"] == world["train"][2]
    args = parser.parse_args(["diff", str(path), world["train"][0][:10], world["train"][1][:10]])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "params (1 differ)" in out and world["train"][0][:8] in out


def described(repo) -> dict:
    from steplog import environment

    environment.reset_cache()
    captured = environment.capture(cwd=str(repo))
    return environment.describe(captured.record, captured.blobs.__getitem__)


def test_code_and_environment_summaries_of_a_real_capture(world):
    from steplog.query.provenance import code_summary, environment_summary

    env = described(world["repo"])
    code = code_summary(env)
    assert code["commit"] == world["commit"] and code["dirty"] is True
    assert code["diff_sha256"] == world["diff_sha256"]
    summary = environment_summary(env)
    assert summary["main_packages"]["numpy"] == np.__version__
    assert summary["main_packages"]["pyarrow"] == __import__("pyarrow").__version__
    assert summary["packages"] >= len(summary["main_packages"]) and summary["host"] == os.uname().nodename


def test_environment_diff_of_two_captures(world):
    from steplog.query.rundiff import RunDiff, _diff_environment

    env_a = described(world["repo"])
    env_b = json.loads(json.dumps(env_a))
    packages = env_b["packages"]
    removed = sorted(k for k in packages if k == k.lower() and k.isalpha())[0]   # names compare normalised
    del packages[removed]
    packages["a-new-package"] = "1.0"
    packages["numpy"] = "0.0.1"
    env_b["git"]["commit"] = "0" * 40
    d = RunDiff(a={}, b={})
    _diff_environment(d, env_a, env_b)
    assert d.packages == {"added": {"a-new-package": "1.0"}, "removed": {removed: env_a["packages"][removed]},
                          "changed": {"numpy": (np.__version__, "0.0.1")}}
    assert d.code == [("commit", world["commit"], "0" * 40)]
    assert d.python is None and d.host is None


@pytest.mark.skipif(not HAS_ARTIFACTS, reason="the store keeps no artifacts yet")
def test_provenance_of_a_directory(tmp_path, open_store):
    model = tmp_path / "model"
    (model / "shards").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "shards" / "0.bin").write_bytes(b"\x00" * 100)
    store = open_store(path=tmp_path / "s.steplog")
    with store.start_run("e", name="train") as run:
        logged = run.log_model(str(model))
    p = provenance(store, model)
    assert p.run["id"] == run.id and p.sha256 == logged["sha256"]
    (model / "config.json").write_text('{"changed": 1}')
    with pytest.raises(NotFoundError):
        provenance(store, model)
