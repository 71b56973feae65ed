"""Artifacts: hashing speed, copy speed and the artifacts table of a big store; medians.

    .venv/bin/python benchmarks/artifacts.py [--gb 1] [--artifacts 100000] [--repeat 5]

- hash: SHA-256 of a file of real random bytes (--gb GiB, deleted afterwards), as
  log_artifact reads it (engine.artifacts.hash_file), in GB/s;
- copy: log_artifact(copy=True) of a 256 MiB random file into a fresh store (hash, then
  zstd into a blob, fsynced), in MB/s;
- table: Store.artifacts() of --artifacts records, cold (a new process's first call:
  every record read from the index) and warm (nothing logged since), in ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import steplog
from steplog.engine.artifacts import hash_file

COLD = """
import sys, time, steplog
import pyarrow as pa
store = steplog.open(sys.argv[1], mode="r")
pa.array([0])   # pyarrow's first array from a list imports pandas (about 0.2 s, once a process, any query)
t = time.perf_counter(); table = store.artifacts(); cold = time.perf_counter() - t
t = time.perf_counter(); store.artifacts(); warm = time.perf_counter() - t
t = time.perf_counter(); store.artifacts(table.column("run_id")[0].as_py()); one = time.perf_counter() - t
print(table.num_rows, cold, warm, one)
"""


def random_file(path: str, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))


def bench_hash(folder: str, gb: float, repeat: int) -> None:
    path = os.path.join(folder, "big.bin")
    size = int(gb * (1 << 30))
    random_file(path, size)
    try:
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            hash_file(path)
            times.append(time.perf_counter() - t)
    finally:
        os.unlink(path)
    print(f"hash   {size / 1e9:.2f} GB: median {size / statistics.median(times) / 1e9:.2f} GB/s "
          f"({statistics.median(times):.3f} s)")


def bench_copy(folder: str, repeat: int) -> None:
    path = os.path.join(folder, "model.bin")
    size = 256 << 20
    random_file(path, size)
    times = []
    for i in range(repeat):
        with steplog.open(os.path.join(folder, f"copy{i}")) as store, store.start_run() as run:
            t = time.perf_counter()
            run.log_artifact(path, copy=True)
            times.append(time.perf_counter() - t)
    os.unlink(path)
    print(f"copy   256 MiB random: median {size / statistics.median(times) / 1e6:.0f} MB/s")


def bench_table(folder: str, n: int, repeat: int) -> None:
    path = os.path.join(folder, "many")
    files = [os.path.join(folder, f"f{i}.txt") for i in range(100)]
    for i, name in enumerate(files):
        with open(name, "w") as f:
            f.write(str(i))
    t = time.perf_counter()
    with steplog.open(path) as store:
        per_run = 100
        for r in range(n // per_run):
            with store.start_run(name=f"r{r}") as run:
                for i in range(per_run):
                    run.log_artifact(files[i], role="input" if i % 2 else "output")
    print(f"       ({n} artifacts logged in {time.perf_counter() - t:.1f} s)")
    found = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", COLD, path], capture_output=True, text=True, check=True).stdout
        found.append([float(x) for x in out.split()])
    rows = int(found[0][0])
    print(f"table  {rows} artifacts: cold median {statistics.median(f[1] for f in found) * 1e3:.1f} ms, "
          f"warm {statistics.median(f[2] for f in found) * 1e3:.3f} ms, "
          f"one run {statistics.median(f[3] for f in found) * 1e3:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--artifacts", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        bench_hash(folder, args.gb, args.repeat)
        bench_copy(folder, min(args.repeat, 3))
        bench_table(folder, args.artifacts, args.repeat)


if __name__ == "__main__":
    main()
