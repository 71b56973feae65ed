"""The command line, run as a user runs it: `python -m steplog ...` in a child process."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

import steplog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "steplog", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_version():
    done = cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"steplog {steplog.__version__}"


def test_small_demo_logs_about_what_it_was_asked(tmp_path):
    store = tmp_path / "demo.steplog"
    done = cli("demo", "--points", "1000", "--store", str(store))
    assert done.returncode == 0, done.stderr
    logged = int(re.search(r"ingest: ([\d,]+) points", done.stdout).group(1).replace(",", ""))
    assert 900 <= logged <= 1100, done.stdout
    rate = re.search(r"= ([\d.,]+) (M )?points/s", done.stdout)
    assert rate and float(rate.group(1).replace(",", "")) > 0, done.stdout
    with steplog.open(store, mode="r") as s:
        assert s.runs().num_rows == 8
        assert set(s.runs().column("status").to_pylist()) == {"finished"}
    again = cli("demo", "--points", "1000", "--store", str(store))   # a demo store is replaced
    assert again.returncode == 0, again.stderr


def test_demo_refuses_a_directory_that_is_not_its_own(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    done = cli("demo", "--points", "1000", "--store", str(tmp_path))
    assert done.returncode == 2
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_bad_points_argument():
    done = cli("demo", "--points", "0")
    assert done.returncode == 2
    assert "--points" in done.stderr


# -- the commands over one store -------------------------------------------------------
#
# One store for the module: 20 runs (more runs than hex digits, so two ids share a first
# digit), a loss series with NaN and inf in it, a val series under a context, and a tensor.

import datetime
import io
import json
import os
import pty

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

RUNS = 20
POINTS = 3000
COMMANDS = ["ls", "show", "read", "plot", "sql", "export", "import", "verify", "repair", "demo", "bench",
            "warm-up"]


def loss_values(i: int) -> np.ndarray:
    values = np.random.default_rng(i).standard_normal(POINTS) + i
    values[[7, 1500]] = np.nan
    values[99] = np.inf
    return values


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """The store and, independently of it, what was logged: {run id: (experiment, name, lr)}."""
    path = str(tmp_path_factory.mktemp("cli") / "runs.steplog")
    runs = {}
    with steplog.open(path) as store:
        for i in range(RUNS):
            experiment = "sweep" if i < RUNS - 2 else "other"
            with store.start_run(experiment=experiment, name=f"trial-{i}", params={"lr": 0.5 / (i + 1), "i": i},
                                 tags={"team": "cli"}) as run:
                run.log_batch("loss", np.arange(POINTS), loss_values(i))
                run.log("loss", 0.25 + i, step=10, context={"subset": "val"})
                run.log_tensor("w", np.arange(10.0), step=0)
            runs[run.id] = (experiment, f"trial-{i}", 0.5 / (i + 1))
    return path, runs


def assert_same_table(got: pa.Table, want: pa.Table) -> None:
    """Equal schemas and columns, NaN equal to NaN (Table.equals holds NaN unequal)."""
    assert got.schema == want.schema
    for name in want.column_names:
        a, b = got.column(name).to_numpy(), want.column(name).to_numpy()
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name


def strict_json(line: str):
    """A line parsed as JSON parsers other than Python's do: NaN and Infinity refused."""
    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    return json.loads(line, parse_constant=refuse)


def from_json(value):
    """A number as --format json writes it: the non-finite ones as strings."""
    return {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}.get(value, value) \
        if isinstance(value, str) else value


def rows_of(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def test_ls_lists_every_run_newest_first_with_unique_short_ids(logged):
    path, runs = logged
    done = cli("ls", path, "--limit", "0")
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout + done.stderr
    header, *rows = rows_of(done.stdout)
    assert header == ["id", "experiment", "name", "status", "start", "duration"]
    assert len(rows) == RUNS
    names = [r[2] for r in rows]
    assert names == [f"trial-{i}" for i in reversed(range(RUNS))]   # newest first
    for row in rows:
        short = row[0]
        assert len(short) >= 8
        matches = [run_id for run_id in runs if run_id.startswith(short)]
        assert len(matches) == 1 and runs[matches[0]][:2] == (row[1], row[2])
        assert row[3] == "finished"


def test_ls_limit_experiment_and_columns(logged):
    path, runs = logged
    done = cli("ls", path, "--limit", "5")
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 + 5 + 1 and f"{RUNS - 5} more runs" in lines[-1], done.stdout
    done = cli("ls", path, "--experiment", "other", "--columns", "params.lr,metrics.loss.min,metrics.loss.count")
    assert done.returncode == 0, done.stderr
    header, *rows = rows_of(done.stdout)
    assert header[-3:] == ["params.lr", "metrics.loss.min", "metrics.loss.count"]
    assert sorted(r[2] for r in rows) == sorted(name for e, name, _ in runs.values() if e == "other")
    for row in rows:
        i = int(row[2].split("-")[1])
        values = loss_values(i)
        assert float(row[-3]) == pytest.approx(0.5 / (i + 1), rel=1e-5)
        assert float(row[-2]) == pytest.approx(np.nanmin(values), rel=1e-5)
        assert int(row[-1]) == POINTS   # NaN points count, as in read(buckets=...)
    done = cli("ls", path, "--columns", "params.nope")
    assert done.returncode == 1 and "params.nope" in done.stderr and "Traceback" not in done.stderr


def test_ls_where_and_order_by(logged):
    path, runs = logged
    done = cli("ls", path, "--where", "params.i >= 15 and tags.team = 'cli'", "--order-by", "params.lr DESC",
               "--columns", "params.i")
    assert done.returncode == 0, done.stderr
    header, *rows = rows_of(done.stdout)
    assert [r[2] for r in rows] == [f"trial-{i}" for i in range(15, RUNS)]   # lr falls as i grows
    assert [int(r[-1]) for r in rows] == list(range(15, RUNS))
    for row in rows:   # short ids stay unique among all runs, not only the runs shown
        assert len([run_id for run_id in runs if run_id.startswith(row[0])]) == 1
    done = cli("ls", path, "--where", "metrics.loss.min < 2", "--limit", "0", "--format", "csv")
    got = pcsv.read_csv(io.BytesIO(done.stdout.encode())).column("name").to_pylist()
    want = {f"trial-{i}" for i in range(RUNS) if np.nanmin(loss_values(i)) < 2}
    assert 0 < len(want) < RUNS and set(got) == want
    done = cli("ls", path, "--where", "params.lr <")
    assert done.returncode == 1 and done.stderr.startswith("steplog: error: where") and "Traceback" not in done.stderr


def test_ls_csv_and_json_hold_full_ids_and_values(logged):
    path, runs = logged
    done = cli("ls", path, "--limit", "0", "--format", "csv", "--columns", "params.*")
    table = pcsv.read_csv(io.BytesIO(done.stdout.encode()))
    assert sorted(table.column("id").to_pylist()) == sorted(runs)
    for row in table.to_pylist():
        assert (row["experiment"], row["name"]) == runs[row["id"]][:2]
        assert row["params.lr"] == runs[row["id"]][2]
    done = cli("ls", path, "--limit", "3", "--format", "json")
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 3 and all(runs[r["id"]][1] == r["name"] for r in rows)
    # the last loss of every run is finite but its max is inf: valid JSON all the same
    done = cli("ls", path, "--limit", "0", "--format", "json", "--columns", "metrics.loss.max,metrics.loss.min")
    rows = [strict_json(line) for line in done.stdout.splitlines()]
    assert len(rows) == RUNS and all(r["metrics.loss.max"] == "Infinity" for r in rows)
    for r in rows:
        assert r["metrics.loss.min"] == pytest.approx(np.nanmin(loss_values(int(r["name"].split("-")[1]))))


def test_ls_metric_columns_with_a_context(logged):
    path, runs = logged
    done = cli("ls", path, "--limit", "0", "--format", "csv",
               "--columns", "metrics.loss{subset=val}.last,metrics.loss{subset='val'}.count,metrics.loss.count")
    assert done.returncode == 0, done.stderr
    table = pcsv.read_csv(io.BytesIO(done.stdout.encode()))
    assert table.num_rows == RUNS
    for row in table.to_pylist():
        i = int(row["name"].split("-")[1])
        assert row["metrics.loss{subset=val}.last"] == 0.25 + i   # logged under the context, once
        assert row["metrics.loss{subset='val'}.count"] == 1
        assert row["metrics.loss.count"] == POINTS                # the series without a context
    done = cli("ls", path, "--where", "name = 'trial-4'", "--columns", "metrics.loss{subset=val}.last")
    header, row = rows_of(done.stdout)
    assert header[-1] == "metrics.loss{subset=val}.last" and float(row[-1]) == 4.25
    for typo, near in (("metrics.loss{subset=vall}.min", "metrics.loss{subset=val}.min"),
                       ("metrics.lss.max", "metrics.loss.max")):
        done = cli("ls", path, "--columns", typo)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert typo in done.stderr and near in done.stderr, done.stderr


def test_ls_mixed_kinds_empty_store_and_negative_limit(tmp_path):
    path = str(tmp_path / "mixed.steplog")
    with steplog.open(path) as store:
        pass
    for fmt in ("table", "csv", "json"):
        done = cli("ls", path, "--format", fmt)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        if fmt == "table":
            assert "no runs" in done.stderr
    batches = {"a": 32, "b": "auto", "c": 64}
    with steplog.open(path) as store:
        for name, batch in batches.items():
            with store.start_run(name=name, params={"batch": batch, "lr": 0.1}):
                pass
    done = cli("ls", path, "--columns", "params.*")
    header, *rows = rows_of(done.stdout)
    assert header[-2:] == ["params.batch", "params.lr"]
    assert {r[2]: r[-2] for r in rows} == {name: str(batch) for name, batch in batches.items()}
    done = cli("ls", path, "--columns", "params.batch", "--format", "csv")
    table = pcsv.read_csv(io.BytesIO(done.stdout.encode()), convert_options=pcsv.ConvertOptions(
        column_types={"params.batch": pa.string()}))
    assert "params_text.batch" not in table.column_names
    assert dict(zip(table.column("name").to_pylist(), table.column("params.batch").to_pylist())) == \
        {name: str(batch) for name, batch in batches.items()}
    done = cli("ls", path, "--limit", "-3")
    assert done.returncode == 2 and "--limit" in done.stderr and done.stdout == ""


def test_show_prints_record_params_series_and_last_values(logged):
    path, runs = logged
    run_id = next(i for i, (_, name, _) in runs.items() if name == "trial-3")
    done = cli("show", path, run_id[:10])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert run_id in out and "trial-3" in out and "sweep" in out and "finished" in out
    assert "team" in out and "cli" in out and f"{0.5 / 4:.6g}" in out
    lines = out.split("series (3)")[1].strip().splitlines()[1:]
    loss, val, tensor = (line.split() for line in lines)   # sorted by metric, then context
    assert loss[:3] == ["loss", "scalar", f"{POINTS:,}"]
    assert float(loss[-1]) == pytest.approx(loss_values(3)[-1], rel=1e-5)
    assert val[:2] == ["loss", '{"subset":"val"}'] and float(val[-1]) == pytest.approx(0.25 + 3)
    assert tensor[:2] == ["w", "tensor"]
    record = json.loads(cli("show", path, run_id, "--format", "json").stdout)
    assert record["params"] == {"i": 3, "lr": 0.5 / 4} and record["tags"] == {"team": "cli"}
    assert [(r["metric"], r["count"], r["last"]) for r in record["series"]] == \
        [("loss", POINTS, loss_values(3)[-1]), ("loss", 1, 3.25), ("w", 1, None)]


def test_read_csv_json_parquet_equal_the_store_and_what_was_logged(logged, tmp_path):
    path, runs = logged
    run_id = next(i for i, (_, name, _) in runs.items() if name == "trial-1")
    with steplog.open(path, mode="r") as store:
        want = store.read(run_id, "loss", start=5, stop=2000)
        buckets = store.read(run_id, "loss", buckets=10)
    steps, values = np.arange(5, 2000), loss_values(1)[5:2000]
    csv = cli("read", path, run_id[:9], "loss", "--start", "5", "--stop", "2000")   # a pipe: csv
    got = pcsv.read_csv(io.BytesIO(csv.stdout.encode()),
                        convert_options=pcsv.ConvertOptions(null_values=[], strings_can_be_null=False))
    assert got.column("step").to_pylist() == steps.tolist() == want.column("step").to_pylist()
    assert np.array_equal(got.column("value").to_numpy(), values, equal_nan=True)
    lines = cli("read", path, run_id, "loss", "--start", "5", "--stop", "2000", "--format", "json").stdout
    rows = [strict_json(line) for line in lines.splitlines()]
    assert [r["step"] for r in rows] == steps.tolist()
    assert np.array_equal(np.array([from_json(r["value"]) for r in rows]), values, equal_nan=True)
    assert [r["value"] for r in rows if r["step"] in (7, 99, 1500)] == ["NaN", "Infinity", "NaN"]
    out = str(tmp_path / "loss.parquet")
    done = cli("read", path, run_id, "loss", "--buckets", "10", "-o", out)
    assert done.returncode == 0, done.stderr
    assert_same_table(pq.read_table(out), buckets)
    val = cli("read", path, run_id, "loss", "--context", "subset=val", "--format", "json").stdout
    assert [json.loads(line)["value"] for line in val.splitlines()] == [1.25]


def test_run_prefixes_unique_ambiguous_unknown(logged):
    path, runs = logged
    ids = sorted(runs)
    shared = next(a[0] for a, b in zip(ids, ids[1:]) if a[0] == b[0])   # 20 runs, 16 digits
    done = cli("read", path, shared, "loss", "--stop", "1")
    assert done.returncode == 1 and "ambiguous" in done.stderr
    for run_id in ids:
        if run_id.startswith(shared):
            assert run_id in done.stderr
    unused = next(f"{d:02x}" for d in range(256) if not any(i.startswith(f"{d:02x}") for i in ids))
    done = cli("show", path, unused)
    assert done.returncode == 1 and f"no run {unused}" in done.stderr
    done = cli("show", path, "not-hex")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    done = cli("read", path, "0" * 32, "loss")   # a whole id the store does not hold
    assert done.returncode == 1 and "no run" in done.stderr


def test_runs_by_name_unique_and_ambiguous(logged, tmp_path):
    path, runs = logged
    run_id = next(i for i, (_, name, _) in runs.items() if name == "trial-7")
    record = json.loads(cli("show", path, "trial-7", "--format", "json").stdout)
    assert record["id"] == run_id and record["params"]["i"] == 7
    csv = cli("read", path, "trial-7", "loss", "--stop", "3").stdout
    assert pcsv.read_csv(io.BytesIO(csv.encode())).column("value").to_pylist() == loss_values(7)[:3].tolist()
    done = cli("show", path, "trail-7")
    assert done.returncode == 1 and "no run trail-7" in done.stderr
    assert "did you mean" in done.stderr and "trial-7" in done.stderr
    two = str(tmp_path / "two.steplog")
    with steplog.open(two) as store:
        ids = []
        for _ in range(2):
            with store.start_run(name="twin") as run:
                run.log("loss", 1.0, step=0)
            ids.append(run.id)
    done = cli("read", two, "twin", "loss")
    assert done.returncode == 1 and "ambiguous" in done.stderr and all(i in done.stderr for i in ids)
    done = cli("read", two, ids[0], "lost")   # the API's missing_ok= is no option of the command line
    assert done.returncode == 1 and "no series 'lost'" in done.stderr and "missing_ok" not in done.stderr


def test_errors_exit_codes_and_nothing_created(logged, tmp_path):
    path, runs = logged
    missing = tmp_path / "nothing.steplog"
    for args in (["ls", str(missing)], ["show", str(missing), "abc"], ["read", str(missing), "abc", "loss"],
                 ["sql", str(missing), "select 1"]):
        done = cli(*args)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.startswith("steplog: error:") and "Traceback" not in done.stderr
        assert not missing.exists()
    run_id = next(iter(runs))
    done = cli("read", path, run_id, "lost")
    assert done.returncode == 1 and "loss" in done.stderr   # did you mean
    for args in (["read", path, run_id, "loss", "--format", "parquet"], ["read", path, run_id, "loss", "--buckets", "0"],
                 ["ls"], ["nope"], ["plot", path, run_id, "loss"], ["read", path, run_id, "loss", "--context", "x"]):
        done = cli(*args)
        assert done.returncode == 2, (args, done.stderr)


def test_every_command_help_has_an_example():
    # one process prints every --help (a process each would cost a second more in all)
    code = ("import contextlib, io, json, sys; from steplog.cli import main\n"
            "helps = {}\n"
            "for command in sys.argv[1:]:\n"
            "    out = io.StringIO()\n"
            "    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
            "        main([command, '--help'])\n"
            "    helps[command] = out.getvalue()\n"
            "print(json.dumps(helps))")
    done = subprocess.run([sys.executable, "-c", code, *COMMANDS], capture_output=True, text=True, timeout=60)
    helps = json.loads(done.stdout)
    for command in COMMANDS:
        example = helps[command].partition("\nexample")[2]
        assert re.search(rf"^  steplog {command}( |$)", example, re.M), (command, helps[command])


def test_the_parser_loads_no_optional_library():
    code = ("import sys, steplog.cli; steplog.cli.build_parser(); "
            "print([m for m in ('rich', 'matplotlib', 'pandas', 'duckdb', 'numba', 'polars') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_sql_export_import_round_trip(logged, tmp_path):
    path, runs = logged
    done = cli("sql", path, "select name, \"params.lr\" from runs where experiment = 'other' order by name",
               "--format", "csv")
    assert done.returncode == 0, done.stderr
    table = pcsv.read_csv(io.BytesIO(done.stdout.encode()))
    assert table.column("name").to_pylist() == sorted(n for e, n, _ in runs.values() if e == "other")
    run_id = next(i for i, (_, name, _) in runs.items() if name == "trial-2")
    with steplog.open(path, mode="r") as store:
        started = store.runs(where="name = 'trial-2'").column("start_time")[0].as_py()
    done = cli("sql", path, "select id, start_time from runs where name = 'trial-2'")   # a table, as on a screen
    assert rows_of(done.stdout)[1] == [run_id, started.astimezone(datetime.timezone.utc)
                                       .strftime("%Y-%m-%dT%H:%M:%S.%fZ")]
    dest, copy = str(tmp_path / "dataset"), str(tmp_path / "copy.steplog")
    chosen = sorted(runs)[:2]
    done = cli("export", path, dest, "--runs", ",".join(r[:12] for r in chosen))
    assert done.returncode == 0, done.stderr
    assert "exported 2 runs" in done.stdout and "\x1b" not in done.stderr
    done = cli("import", copy, dest)
    assert done.returncode == 0, done.stderr
    with steplog.open(copy, mode="r") as store:
        assert sorted(store.runs().column("id").to_pylist()) == chosen
        for run_id in chosen:
            i = int(runs[run_id][1].split("-")[1])
            got = store.read(run_id, "loss").column("value").to_numpy()
            assert np.array_equal(got, loss_values(i), equal_nan=True)
    done = cli("import", copy, dest)   # the runs are there already: refused
    assert done.returncode == 1 and "already holds" in done.stderr
    assert os.path.isdir(copy)           # and the store it did not create is kept


def test_a_failed_import_leaves_no_store_behind(logged, tmp_path):
    path, runs = logged
    (tmp_path / "file").write_text("x")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "_runs.parquet").write_text("not parquet")
    dest = tmp_path / "dataset"
    assert cli("export", path, str(dest), "--runs", sorted(runs)[0]).returncode == 0
    points = next(dest.glob("*/*/points.parquet"))
    points.write_bytes(points.read_bytes()[:100])   # damaged: found only once the import has begun
    for source in (tmp_path / "nothing", tmp_path / "file", tmp_path, tmp_path / "junk", dest):
        store = tmp_path / "new.steplog"
        done = cli("import", str(store), str(source))
        assert done.returncode == 1 and done.stderr.startswith("steplog: error: source"), (source, done.stderr)
        assert "Traceback" not in done.stderr
        assert not store.exists(), source


def test_verify_and_repair_tell_a_missing_directory_from_one_that_is_no_store(tmp_path):
    missing, empty = tmp_path / "typo.steplog", tmp_path / "empty"
    empty.mkdir()
    for command, code in (("verify", 2), ("repair", 1)):
        done = cli(command, str(missing))
        said = done.stdout.replace(str(missing), "PATH")
        assert done.returncode == code and said == "PATH: no such directory\n", said
        assert not missing.exists()
    done = cli("verify", str(empty))
    assert done.returncode == 2 and "not a steplog store" in done.stdout


def on_terminal(*args, columns: int = 100, stdout_too: bool = False) -> tuple[int, str, bytes]:
    """Run the command with stderr (and stdout) on a pseudo-terminal ``columns`` wide:
    (exit code, stdout if piped, terminal bytes)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "steplog", *args], cwd=ROOT,
                            stdout=slave if stdout_too else subprocess.PIPE, stderr=slave,
                            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns)})
    os.close(slave)
    seen = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:   # EIO: the child closed the terminal
            break
        if not data:
            break
        seen += data
    os.close(master)
    out = "" if stdout_too else proc.stdout.read().decode()
    if not stdout_too:
        proc.stdout.close()
    return proc.wait(timeout=120), out, seen


def test_progress_on_a_terminal_and_quiet(logged, tmp_path):
    path, _ = logged
    code, out, seen = on_terminal("export", path, str(tmp_path / "a"))
    assert code == 0 and "exported" in out
    assert b"exporting series" in seen and b"\x1b" in seen
    code, out, seen = on_terminal("export", path, str(tmp_path / "b"), "--quiet")
    assert code == 0 and "exported" in out
    assert seen == b""


def test_ls_on_a_terminal_fits_its_width(logged):
    path, runs = logged
    for columns in (70, 200):
        code, _, seen = on_terminal("ls", path, "--columns", "params.lr,tags.team", columns=columns,
                                    stdout_too=True)
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode())
        lines = text.replace("\r", "").splitlines()
        assert code == 0 and max(map(len, lines)) <= columns, text
        shown = {line.split()[0] for line in lines if line.strip() and line.split()[0] != "id"}
        if columns == 200:   # a table: every id, and the names whole
            assert len([i for i in runs for s in shown if i.startswith(s)]) == RUNS, text
            assert all(name in text for _, name, _ in runs.values())


def test_show_lists_kind_resources_and_artifacts(tmp_path):
    """show prints what start_run(kind=, resources=) and log_input/log_model kept."""
    data = tmp_path / "train.csv"
    data.write_text("x,y\n1,2\n")
    path = tmp_path / "s"
    with steplog.open(path) as store, store.start_run(name="trial", kind="train", resources={"gpus": 4},
                                                      capture=False) as run:
        run.log_input(data)
        run.log_model(data, name="weights", copy=True)
        run_id = run.id
    done = subprocess.run([sys.executable, "-m", "steplog", "show", str(path), run_id[:8]], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    assert "kind        train" in done.stdout and "gpus" in done.stdout and "4" in done.stdout
    assert "artifacts (2)" in done.stdout and f"sha256 {digest[:12]}" in done.stdout
    assert "weights  (file, kept)" in done.stdout
    shown = json.loads(subprocess.run([sys.executable, "-m", "steplog", "show", str(path), "trial", "--format", "json"],
                                      capture_output=True, text=True, check=True).stdout)
    assert shown["kind"] == "train" and shown["resources"] == {"gpus": 4}
    assert [(a["role"], a["sha256"]) for a in shown["artifacts"]] == [("input", digest), ("model", digest)]
