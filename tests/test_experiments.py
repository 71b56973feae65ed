"""Experiments as records with ids, tags and soft delete; renames; run records as a
frontend gives them; logging with the caller's times."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys

import numpy as np
import pytest

import steplog


def test_experiments_get_ids_in_creation_order_and_a_frontends_own(tmp_path):
    with steplog.open(tmp_path / "s") as store:
        store.start_run(experiment="auto", capture=False).end()
        made = store.create_experiment("made", tags={"team": "a"}, artifact_location="s3://b/x")
        own = store.create_experiment("Default", id="0")
        found = {e["name"]: e for e in store.experiments()}
    assert found["auto"]["id"] == "1" and made["id"] == "2" and own["id"] == "0"
    assert found["made"]["tags"] == {"team": "a"} and found["made"]["artifact_location"] == "s3://b/x"


def test_a_name_or_an_id_in_use_is_refused_and_nothing_changes(tmp_path):
    with steplog.open(tmp_path / "s") as store:
        store.create_experiment("a", id="7")
        with pytest.raises(steplog.AlreadyExistsError, match="name"):
            store.create_experiment("a")
        with pytest.raises(steplog.AlreadyExistsError, match="id"):
            store.create_experiment("b", id="7")
        with pytest.raises(steplog.InvalidArgumentError, match="id"):
            store.create_experiment("c", id=" ")
        with pytest.raises(steplog.InvalidTypeError, match="artifact_location"):
            store.create_experiment("d", artifact_location=3)
        assert [e["name"] for e in store.experiments()] == ["a"]


def test_a_rename_moves_the_runs_and_survives_repair(tmp_path):
    path = tmp_path / "s"
    with steplog.open(path) as store:
        run = store.start_run(experiment="old", capture=False)
        run.log("loss", 1.0, step=0)
        run.end()
        other = store.start_run(experiment="kept", capture=False)
        other.end()
        store.create_experiment("taken")
        with pytest.raises(steplog.AlreadyExistsError):
            store.update_experiment("old", lambda r: r.update(name="taken"))
        renamed = store.update_experiment("old", lambda r: r.update(name="new", deleted=123))
        assert renamed["name"] == "new" and renamed["deleted"] == 123
        with pytest.raises(steplog.NotFoundError):
            store.update_experiment("old", lambda r: None)
        by_id = {r["id"]: r["experiment"] for r in store.run_records()}
        assert by_id == {run.id: "new", other.id: "kept"}
        before = sorted((e["id"], e["name"], e.get("deleted")) for e in store.experiments())
    shutil.rmtree(path / "index")
    done = subprocess.run([sys.executable, "-m", "steplog", "repair", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    with steplog.open(path, "r") as store:
        assert sorted((e["id"], e["name"], e.get("deleted")) for e in store.experiments()) == before
        assert {r["id"]: r["experiment"] for r in store.run_records()} == {run.id: "new", other.id: "kept"}
        assert store.read(run.id, "loss").column("value").to_pylist() == [1.0]


def test_put_run_record_keeps_what_it_is_given(tmp_path):
    record = {"id": "ab" * 16, "experiment": "imported", "name": "r", "parent": None, "status": "finished",
              "start_time": 5, "end_time": 9, "params": {"p": "1"}, "tags": {}, "user": "ann"}
    with steplog.open(tmp_path / "s") as store:
        store.put_run_record(record)
        with pytest.raises(steplog.InvalidArgumentError, match="lacks"):
            store.put_run_record({"id": "cd" * 16})
        with pytest.raises(steplog.InvalidArgumentError, match="run id"):
            store.put_run_record({**record, "id": "x"})
        assert store.run_record(record["id"]) == record
        assert store.run_record("ef" * 16) is None
        assert [e["name"] for e in store.experiments()] == ["imported"]


def test_a_run_logged_without_resuming_keeps_its_record(tmp_path):
    with steplog.open(tmp_path / "s") as store:
        run = store.start_run(capture=False)
        run.end()
        handle = store.run(run.id, resume=False)
        handle.log("late", 2.0, step=3)
        with pytest.raises(steplog.NotFoundError):
            store.run("12" * 16, resume=False)
    with steplog.open(tmp_path / "s", "r") as store:   # closing did not end or resume it
        assert store.runs().column("status").to_pylist() == ["finished"]
        assert store.read(run.id, "late").column("value").to_pylist() == [2.0]


def test_points_keep_the_times_the_caller_gives(tmp_path):
    when = dt.datetime(2025, 3, 1, 12, tzinfo=dt.timezone.utc)
    with steplog.open(tmp_path / "s") as store:
        run = store.start_run(capture=False)
        run.log("a", 1.0, step=0, time=1_000)
        run.log("a", 2.0, time=when)
        run.log({"b": 1.0, "c": 2.0}, step=4, time=np.datetime64("2025-03-01T12:00:00", "ns"))
        for bad, error in (("noon", steplog.InvalidTypeError), (True, steplog.InvalidTypeError),
                           (dt.datetime(2025, 1, 1), steplog.InvalidArgumentError), (2 ** 70, steplog.InvalidArgumentError)):
            with pytest.raises(error, match="time"):
                run.log("a", 3.0, step=9, time=bad)
        assert store.read(run.id, "a").column("time_ns").to_pylist() == [1_000, int(when.timestamp()) * 10 ** 9]
        assert store.read(run.id, "c").column("time_ns").to_pylist() == [int(when.timestamp()) * 10 ** 9]
        assert store.read(run.id, "a").num_rows == 2


def test_an_automatic_id_skips_the_ids_given_explicitly(tmp_path):
    with steplog.open(tmp_path / "s") as store:
        for name, given in (("zero", "0"), ("one", "1"), ("two", "2")):
            store.create_experiment(name, id=given)
        made = [store.create_experiment(f"auto{i}")["id"] for i in range(2)]
        made.append(store.start_run(experiment="by-run", capture=False).id and
                    {e["name"]: e["id"] for e in store.experiments()}["by-run"])
    assert made == ["3", "4", "5"]
