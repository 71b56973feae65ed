"""The command line, run as a user runs it: `python -m steplog ...` in a child process."""

from __future__ import annotations

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
