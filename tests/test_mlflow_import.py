"""steplog import-mlflow: stores written by MLflow itself (SQLite and ./mlruns) copied into
steplog stores, then read through MLflow's client on both sides and compared entity by
entity; re-runs, the command line, and arguments that cannot work."""

import contextlib
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install steplog[mlflow])")

import steplog  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag, ViewType  # noqa: E402
from steplog.bindings.mlflow import importer  # noqa: E402
from steplog.cli import main  # noqa: E402

pytestmark = [
    # MLflow's SQLite store configures its SQLAlchemy mappers with a strategy that SQLAlchemy
    # 2.1 deprecates; the warning comes from MLflow's import, not from anything tested here.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    # MLflow versions before 3.17 warn that the ./mlruns file store is deprecated.
    pytest.mark.filterwarnings("ignore:.*[Ff]ile ?(system|store).*deprecated"),
]

T0 = 1_600_000_000_000   # client times, ms (2020), far from the clock
LONG = 20_000            # points of the long history (SQLite source)
FLOAT64_MAX = 1.7976931348623157e308
STEPLOG = Path(sys.executable).with_name("steplog")
QUIET_MLFLOW = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


# -- the sources, written by MLflow -------------------------------------------------------

def populate(client: MlflowClient, long_points: int) -> None:
    """Experiments (one deleted), runs of every status, a deleted run, nested runs,
    params, tags, NaN and infinities, repeated steps, a long history, a dataset input."""
    train = client.create_experiment("train", tags={"team": "vision"})
    archived = client.create_experiment("archived")
    parent = client.create_run(train, start_time=T0, run_name="parent", tags={"stage": "sweep"}).info.run_id
    edge = [Metric("edge", v, T0 + i, i) for i, v in enumerate([1.0, math.nan, math.inf, -math.inf, 2.5])]
    repeat = [Metric("repeat", v, T0 + t, s) for s, t, v in [(0, 1, 0.5), (0, 2, 0.25), (1, 3, 2.0), (1, 3, 1.0),
                                                               (1, 4, -1.0), (2, 5, 7.0), (2, 5, 3.0)]]
    client.log_batch(parent, metrics=edge + repeat, params=[Param("lr", "0.01"), Param("layers", "4")],
                     tags=[RunTag("note", "spaces and / slashes")])
    for lo in range(0, long_points, 1000):
        client.log_batch(parent, metrics=[Metric("long", math.sin(i / 50), T0 + i, i)
                                          for i in range(lo, min(lo + 1000, long_points))])
    dataset = mlflow.data.from_numpy(np.arange(12.0).reshape(4, 3), targets=np.arange(4.0), name="digits")
    client.log_inputs(parent, [DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", "train")])])
    client.set_terminated(parent, "FINISHED", end_time=T0 + 100_000)
    for n, status in enumerate(["FAILED", "KILLED", "SCHEDULED", "RUNNING"]):
        child = client.create_run(train, start_time=T0 + 10 * n, run_name=f"child-{status.lower()}",
                                  tags={"mlflow.parentRunId": parent}).info.run_id
        client.log_metric(child, "loss", 1.0 / (n + 1), timestamp=T0 + n, step=n)
        client.log_param(child, "seed", str(n))
        if status != "RUNNING":
            client.set_terminated(child, status, end_time=T0 + 20_000 + n)
    gone = client.create_run(train, start_time=T0 + 50, run_name="gone").info.run_id
    client.log_metric(gone, "loss", 9.0, timestamp=T0, step=0)
    client.set_terminated(gone, "FINISHED", end_time=T0 + 60)
    client.delete_run(gone)
    client.create_run("0", start_time=T0 + 70, run_name="in-default")
    old = client.create_run(archived, start_time=T0 + 80, run_name="old").info.run_id
    client.log_metric(old, "acc", 0.5, timestamp=T0, step=3)
    client.set_terminated(old, "FINISHED", end_time=T0 + 90)
    client.delete_experiment(archived)


@pytest.fixture(scope="module", autouse=True)
def allow_file_store():
    """MLflow 3.17 opens a ./mlruns store only with MLFLOW_ALLOW_FILE_STORE set: the
    tests write and read one (the importer sets it for itself, see test_cli_*)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        yield


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """{"sqlite": URI, "file": URI} of the two sources (one SQLite database per module:
    its migration costs seconds)."""
    folder = tmp_path_factory.mktemp("mlflow-sources")
    with contextlib.chdir(folder):   # MLflow's default artifact root is ./mlruns of the working directory
        sqlite_uri = f"sqlite:///{folder}/mlflow.db"
        populate(MlflowClient(sqlite_uri), LONG)
        file_uri = (folder / "mlruns").as_uri()
        populate(MlflowClient(file_uri), 300)
    return {"sqlite": sqlite_uri, "file": file_uri}


@pytest.fixture(scope="module")
def expected(sources):
    """kind -> the snapshot of its source (read once: the sources do not change)."""
    return {kind: snapshot(MlflowClient(uri)) for kind, uri in sources.items()}


@pytest.fixture(scope="module")
def imported(sources, tmp_path_factory):
    """kind -> (target path, Summary of its first import)."""
    folder = tmp_path_factory.mktemp("imported")
    return {kind: (folder / kind, importer.import_mlflow(uri, folder / kind)) for kind, uri in sources.items()}


# -- what MLflow's client shows -----------------------------------------------------------

def number(value: float, sql: bool):
    """A metric value as compared: NaN as "nan"; +-FLOAT64_MAX, the stand-in for +-inf
    that MLflow's SQL store and the steplog tracking store both give MLflow's clients, as
    inf (that steplog itself keeps inf is checked on the store)."""
    if math.isnan(value):
        return "nan"
    return math.copysign(math.inf, value) if abs(value) >= FLOAT64_MAX else value


def snapshot(client: MlflowClient) -> dict:
    """Every experiment and run the client shows, with every point."""
    sql = client.tracking_uri.startswith("sqlite:")
    experiments = client.search_experiments(view_type=ViewType.ALL)
    shown = {"experiments": {e.name: (e.experiment_id, e.lifecycle_stage, e.tags, e.artifact_location,
                                      e.creation_time, e.last_update_time) for e in experiments}, "runs": {}}
    for experiment in experiments:
        for run in client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000):
            found = run_view(client, run, sql)
            assert run_view(client, client.get_run(run.info.run_id), sql) == found
            shown["runs"][run.info.run_id] = found
    return shown


def run_view(client: MlflowClient, run, sql: bool) -> dict:
    info = run.info
    histories = {key: sorted(((m.step, m.timestamp, number(m.value, sql)) for m in
                              client.get_metric_history(info.run_id, key)), key=repr)
                 for key in run.data.metrics}
    inputs = [(d.dataset.name, d.dataset.digest, d.dataset.source_type, d.dataset.source, d.dataset.schema,
               d.dataset.profile, {t.key: t.value for t in d.tags}) for d in run.inputs.dataset_inputs]
    return {"info": (info.experiment_id, info.user_id, info.status, info.start_time, info.end_time,
                     info.lifecycle_stage, info.artifact_uri, info.run_name),
            "params": run.data.params, "tags": run.data.tags,
            "metrics": {k: number(v, sql) for k, v in run.data.metrics.items()}, "inputs": inputs,
            "histories": histories}


def steplog_client(path) -> MlflowClient:
    return MlflowClient(f"steplog://{os.path.abspath(path)}")


def point_counts(path) -> dict:
    with contextlib.closing(steplog.open(path, mode="r")) as store:
        table = store.series()
        return dict(zip(zip(table.column("run_id").to_pylist(), table.column("metric").to_pylist()),
                        table.column("count").to_pylist()))


# -- the copy -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_the_copy_reads_through_mlflow_as_the_source(kind, expected, imported):
    path, summary = imported[kind]
    assert snapshot(steplog_client(path)) == expected[kind]
    runs = expected[kind]["runs"]
    parent = next(run_id for run_id, r in runs.items() if r["info"][-1] == "parent")
    with contextlib.closing(steplog.open(path, mode="r")) as store:   # the copy holds inf, not MLflow's stand-in
        assert store.read(parent, "edge").column("value").to_pylist()[2:4] == [math.inf, -math.inf]
    assert (summary.runs, summary.runs_skipped, summary.experiments_existing) == (len(runs), 0, 0)
    assert summary.experiments == len(expected[kind]["experiments"]) == 3
    assert summary.points == sum(len(h) for r in runs.values() for h in r["histories"].values())
    assert summary.params == sum(len(r["params"]) for r in runs.values())
    assert summary.tags == sum(len(r["tags"]) for r in runs.values())


def test_the_scenario_holds_what_the_copy_must_keep(expected):
    """The source itself: every case the comparison above relies on is in it."""
    shown = expected["sqlite"]
    runs = {r["info"][-1]: r for r in shown["runs"].values()}
    assert {r["info"][2] for r in runs.values()} == {"FINISHED", "FAILED", "KILLED", "SCHEDULED", "RUNNING"}
    assert runs["gone"]["info"][5] == runs["old"]["info"][5] == "deleted"
    assert shown["experiments"]["archived"][1] == "deleted"
    assert runs["child-failed"]["tags"]["mlflow.parentRunId"] in shown["runs"]
    assert len(runs["parent"]["histories"]["long"]) == LONG
    assert [v for _, _, v in runs["parent"]["histories"]["edge"]][1:4] == ["nan", math.inf, -math.inf]
    assert runs["parent"]["metrics"]["repeat"] == 7.0   # step 2, timestamp tie: the larger value
    assert runs["parent"]["inputs"][0][0] == "digits"


def test_histories_read_in_small_chunks_keep_every_point_in_order(sources, expected, tmp_path, monkeypatch):
    """The SQLite reader fetches a history in chunks; the points of a step cut by a
    chunk's end wait for the rest of that step (step 2 of "repeat": its latest point)."""
    monkeypatch.setattr(importer, "HISTORY_CHUNK", 6)   # cuts between the two points of step 2
    importer.import_mlflow(sources["sqlite"], tmp_path / "store")
    assert snapshot(steplog_client(tmp_path / "store")) == expected["sqlite"]


def test_a_rerun_copies_nothing_and_says_skipped(sources, expected, imported):
    path, first = imported["sqlite"]
    counts = point_counts(path)
    again = importer.import_mlflow(sources["sqlite"], path)
    assert (again.runs, again.runs_skipped, again.points, again.experiments) == (0, first.runs, 0, 0)
    assert again.experiments_existing == first.experiments
    assert point_counts(path) == counts
    assert snapshot(steplog_client(path)) == expected["sqlite"]


def test_a_deleted_experiment_restored_brings_back_its_runs(sources, tmp_path):
    """As in MLflow: restoring an experiment restores the runs deleted with it."""
    importer.import_mlflow(sources["sqlite"], tmp_path / "store")
    client = steplog_client(tmp_path / "store")
    archived = client.get_experiment_by_name("archived")
    client.restore_experiment(archived.experiment_id)
    [old] = client.search_runs([archived.experiment_id], run_view_type=ViewType.ALL)
    assert (old.info.run_name, old.info.lifecycle_stage) == ("old", "active")


def test_an_experiment_id_in_use_gets_a_new_one(sources, tmp_path):
    path = tmp_path / "store"
    with contextlib.closing(steplog.open(path)) as store:
        store.create_experiment("other", id="1")   # "train" is 1 in the source
    importer.import_mlflow(sources["sqlite"], path)
    client, source = steplog_client(path), MlflowClient(sources["sqlite"])
    ids = {e.name: e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)}
    assert ids["other"] == "1" and ids["archived"] == "2" and ids["train"] not in ("0", "1", "2")
    assert len(set(ids.values())) == len(ids)
    source_train = source.get_experiment_by_name("train").experiment_id
    assert ({r.info.run_id for r in client.search_runs([ids["train"]], run_view_type=ViewType.ALL)}
            == {r.info.run_id for r in source.search_runs([source_train], run_view_type=ViewType.ALL)})


def test_an_experiment_created_after_the_import_gets_an_id_of_its_own(sources, tmp_path):
    importer.import_mlflow(sources["sqlite"], tmp_path / "store")
    client = steplog_client(tmp_path / "store")
    before = {e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)}
    assert client.create_experiment("made-after-the-import") not in before


def test_a_run_an_interrupted_import_left_is_refused_and_nothing_written(sources, tmp_path, capsys):
    source = MlflowClient(sources["sqlite"])
    [parent] = source.search_runs([source.get_experiment_by_name("train").experiment_id],
                                  "attributes.run_name = 'parent'")
    path = tmp_path / "store"
    with contextlib.closing(steplog.open(path)) as store:   # what an import cut short leaves: no imported_from
        store.put_run_record({**importer.run_record(parent, "train"), "status": "running", "end_time": None})
        before = (store.experiments(), store.run_records())
    with pytest.raises(importer.IncompleteRunError, match=parent.info.run_id):
        importer.import_mlflow(sources["sqlite"], path)
    assert main(["import-mlflow", "--from", sources["sqlite"], "--to", str(path), "-q"]) == 1
    assert "cannot remove a single run" in capsys.readouterr().err
    with contextlib.closing(steplog.open(path, mode="r")) as store:
        assert (store.experiments(), store.run_records()) == before


def test_a_count_that_differs_is_an_error_naming_it(sources, tmp_path, capsys):
    path = tmp_path / "store"
    importer.import_mlflow(sources["sqlite"], path)
    source = MlflowClient(sources["sqlite"])
    [parent] = source.search_runs([source.get_experiment_by_name("train").experiment_id],
                                  "attributes.run_name = 'parent'")
    with contextlib.closing(steplog.open(path)) as store:
        store.run(parent.info.run_id, resume=False).log("repeat", 1.0, step=9)
    with pytest.raises(importer.MismatchError, match=f"run {parent.info.run_id}: metric 'repeat': 7 points in the "
                                                     "source, 8 in the target"):
        importer.import_mlflow(sources["sqlite"], path)
    assert main(["import-mlflow", "--from", sources["sqlite"], "--to", str(path), "-q"]) == 1
    assert "'repeat': 7 points in the source, 8 in the target" in capsys.readouterr().err


# -- the command line ---------------------------------------------------------------------

def steplog_command(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_ALLOW_FILE_STORE"}
    return subprocess.run([str(STEPLOG), *args], capture_output=True, text=True, timeout=120,
                          env={**env, **QUIET_MLFLOW})


def test_cli_imports_a_file_store_then_skips_it(sources, expected, tmp_path, capsys):
    """The installed command, in a process of its own without MLFLOW_ALLOW_FILE_STORE;
    the re-run through the same entry in this process."""
    path, runs = tmp_path / "store", len(expected["file"]["runs"])
    done = steplog_command("import-mlflow", "--from", sources["file"], "--to", str(path))
    assert done.returncode == 0, done.stderr
    assert f"imported 3 experiments (0 there already), {runs} runs (0 skipped: imported before)" in done.stdout
    assert "verified: every count matches the source (3 experiments" in done.stdout
    assert "Traceback" not in done.stderr
    assert main(["import-mlflow", "--from", sources["file"], "--to", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"imported 0 experiments (3 there already), 0 runs ({runs} skipped: imported before)" in out
    assert snapshot(steplog_client(path)) == expected["file"]


def _not_mlflow_db(folder: Path) -> str:
    with contextlib.closing(sqlite3.connect(folder / "other.db")) as db:
        db.execute("CREATE TABLE experiments (id INTEGER)")
        db.commit()
    return f"sqlite:///{folder}/other.db"


@pytest.mark.parametrize("case, message", [
    ("missing database", "no MLflow SQLite database at "),
    ("empty file", "is an SQLite database but not MLflow's"),
    ("other database", "is an SQLite database but not MLflow's (it lacks the tables alembic_version"),
    ("not sqlite", "does not read as an SQLite database"),
    ("sqlite without scheme", "is a file, not an MLflow ./mlruns directory; for an MLflow SQLite database pass "
                              "sqlite:///"),
    ("missing mlruns", "(no such directory)"),
    ("folder without experiments", "holds no MLflow experiment"),
    ("unknown scheme", "unknown scheme 'postgresql'"),
    ("target not a store", "holds other files and is not a steplog store"),
    ("target a file", "is a file; a steplog store is a directory"),
])
def test_arguments_that_cannot_work_exit_2_and_write_nothing(case, message, sources, tmp_path, capsys):
    source, target = sources["sqlite"], tmp_path / "store"
    if case == "missing database":
        source = f"sqlite:///{tmp_path}/missing.db"
    elif case == "empty file":
        (tmp_path / "empty.db").touch()
        source = f"sqlite:///{tmp_path}/empty.db"
    elif case == "other database":
        source = _not_mlflow_db(tmp_path)
    elif case == "not sqlite":
        (tmp_path / "notes.db").write_text("not a database\n" * 100)
        source = f"sqlite:///{tmp_path}/notes.db"
    elif case == "sqlite without scheme":
        source = sources["sqlite"].removeprefix("sqlite:///")
    elif case == "missing mlruns":
        source = str(tmp_path / "mlruns")
    elif case == "folder without experiments":
        (tmp_path / "mlruns" / "x").mkdir(parents=True)
        source = str(tmp_path / "mlruns")
    elif case == "unknown scheme":
        source = "postgresql://user@127.0.0.1/mlflow"
    elif case == "target not a store":
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    elif case == "target a file":
        target.write_text("mine")
    before = files_of(tmp_path)
    assert main(["import-mlflow", "--from", source, "--to", str(target), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("steplog: error: --") and message in err, err
    assert files_of(tmp_path) == before


def files_of(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}
