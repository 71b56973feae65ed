"""Environment capture figures: what start_run(capture=...) costs, and what it stores.

    import      `import steplog.environment` in a fresh process that imported steplog
    first       the first capture() of a fresh process, and the first capture of each
                part alone (each in its own fresh process): git, packages, machine, ...
    next        capture() again in the same process (everything cached; git checked by
                the stat of five files), median over --calls calls
    record      JSON bytes of the record (compact, as a run record keeps it) for a plain
                script and for a rank of a distributed job; the blobs' bytes, stored once;
                bytes per run over --runs runs of one environment

Targets (issue 11, item 2): next <= a small part of 5 ms; record <= 200 bytes per run
over 10,000 runs of one environment. The git figures come from a repository of --files
tracked files with one uncommitted edit and one untracked file, built in a temporary
folder (or --repo PATH).

    .venv/bin/python benchmarks/environment.py                  # 5 fresh processes a case
    .venv/bin/python benchmarks/environment.py --repeats 3 --files 10000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = """
import json, sys, time
import steplog
t = time.perf_counter()
from steplog import environment
out = {"import": time.perf_counter() - t}
parts = json.loads(sys.argv[2])
t = time.perf_counter()
environment.capture(parts, cwd=sys.argv[1])
out["first"] = time.perf_counter() - t
calls = int(sys.argv[3])
times = []
for _ in range(calls):
    t = time.perf_counter()
    environment.capture(parts, cwd=sys.argv[1])
    times.append(time.perf_counter() - t)
out["next"] = sorted(times)[len(times) // 2] if times else None
print(json.dumps(out))
"""

PLAIN_ARGV = ["train.py", "--lr", "0.1", "--batch-size", "256"]
RANK_ENV = {"RANK": "3", "LOCAL_RANK": "3", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8", "MASTER_ADDR": "10.0.0.1",
            "MASTER_PORT": "29500", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7", "OMP_NUM_THREADS": "8"}


def make_repo(path: str, files: int) -> None:
    def git(*args):
        subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@example.com", *args], cwd=path, check=True,
                       capture_output=True)
    git("init", "-q")
    os.makedirs(os.path.join(path, "src"))
    for i in range(files):
        with open(os.path.join(path, "src", f"m{i}.py"), "w") as f:
            f.write(f"VALUE = {i}\n" * 20)
    git("add", "-A")
    git("commit", "-q", "-m", "files")
    with open(os.path.join(path, "src", "m0.py"), "a") as f:
        f.write("EDITED = True\n")
    with open(os.path.join(path, "new.txt"), "w") as f:
        f.write("untracked\n")


def child(repo: str, parts, calls: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, repo, json.dumps(parts), str(calls)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


def med(rows, key) -> float:
    return statistics.median(r[key] for r in rows) * 1e3


def timings(repo: str, repeats: int, calls: int) -> None:
    from steplog.environment import CAPTURE_ALL
    rows = [child(repo, list(CAPTURE_ALL), calls) for _ in range(repeats)]
    print(f"import steplog.environment     {med(rows, 'import'):8.2f} ms")
    print(f"first capture(), all parts     {med(rows, 'first'):8.2f} ms")
    print(f"next capture(), all parts      {med(rows, 'next') * 1e3:8.1f} us   (median of {calls} calls)")
    for part in CAPTURE_ALL:
        part_rows = [child(repo, [part], calls) for _ in range(repeats)]
        print(f"  {part:<10} first {med(part_rows, 'first'):8.2f} ms   next {med(part_rows, 'next') * 1e3:8.1f} us")


def sizes(repo: str, runs: int) -> None:
    from steplog import environment
    saved_argv, saved_env = sys.argv, dict(os.environ)
    try:
        sys.argv = PLAIN_ARGV
        plain = environment.capture(cwd=repo)
        os.environ.update(RANK_ENV)
        rank = environment.capture(cwd=repo)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    blob_bytes = sum(len(b) for b in plain.blobs.values())
    print(f"blobs, stored once             {blob_bytes:8d} bytes in {len(plain.blobs)} blobs: "
          + ", ".join(str(len(b)) for b in plain.blobs.values()))
    for label, captured in (("plain script", plain), ("distributed rank", rank)):
        size = len(json.dumps(captured.record, separators=(",", ":")))
        print(f"record, {label:<22} {size:8d} bytes; per run over {runs} runs: {size + blob_bytes / runs:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes a case")
    parser.add_argument("--calls", type=int, default=1000, help="capture() calls after the first, a process")
    parser.add_argument("--files", type=int, default=1000, help="tracked files of the temporary repository")
    parser.add_argument("--runs", type=int, default=10_000, help="runs of one environment, for bytes per run")
    parser.add_argument("--repo", help="measure git in this repository instead of a temporary one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo or tmp
        if not args.repo:
            make_repo(tmp, args.files)
        timings(repo, args.repeats, args.calls)
        sizes(repo, args.runs)


if __name__ == "__main__":
    main()
