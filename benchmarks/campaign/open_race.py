"""Writers that open, log, flush and close, racing processes that only open and close.

    python benchmarks/campaign/open_race.py [--seconds S] [--out DIR] [--writers W] [--openers O]

Writer processes loop until the deadline: open the store (block_points 64, 256 or
8192, drawn each time), start a run or resume one (their own, now and then another
writer's) with Store.run(id), log_batch points whose values are a function of
(writer, round, step) into the run and into one run shared by every writer, flush,
and only then append what was flushed (acknowledged) to their ack file. Then they
sometimes end the run, and close the store, or (one round in ten) exit without
closing, or (one in twenty) log more and exit before flushing it (those points are
not acknowledged). A writer that exits is replaced. Closes, exits and crashes release
segment locks while the openers run steplog.open() and close() in a tight loop, which
is when opening cuts the "torn tails" of segments whose lock is free.

At the deadline everything is read back in a child process (with a time limit) and
counted: acknowledged points missing, points with a wrong value or time, duplicated
points, series whose read raises CorruptionError (their points count as unreadable),
other errors, bucketed reads whose counts disagree with the raw points, then
``python -m steplog verify`` (exit code, DAMAGED lines), and, when ``python -m steplog
repair`` exists, the same read-back on a repaired copy. Ends with a summary line.
Exit status 0: the script measures, it does not judge.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _campaign as C  # noqa: E402

T0 = 1_700_000_000_000_000_000
EVAL = {"phase": "eval"}


def ack_paths(out: str) -> list[str]:
    return sorted(os.path.join(out, name) for name in os.listdir(out) if name.startswith("ack-"))


def expected_points(rec: dict, entry: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, values, times) of one acknowledged log_batch."""
    _run, _name, _context, base, n, stride, salt = entry
    ks = np.arange(0, n * stride, stride, dtype=np.int64)
    steps = base + ks
    return steps, C.det_values(rec["wid"], rec["r"], salt, ks), T0 + steps


# -- child roles -------------------------------------------------------------------------------

def setup(store_path: str, out: str) -> None:
    import steplog

    with steplog.open(store_path) as store:
        shared = store.start_run(experiment="race", name="shared", params={"shared": True})
        C.write_json_atomic(os.path.join(out, "shared.json"), {"id": shared.id})


def writer(store_path: str, out: str, slot: int, inc: int, until: float, points: int, seed: int) -> None:
    import steplog

    rng = np.random.default_rng([seed, slot, inc])
    wid = slot * 1000 + inc
    ack = os.path.join(out, f"ack-{slot:03d}.jsonl")
    stats_path = os.path.join(out, f"writer-{slot:03d}-{inc:04d}.json")
    with open(os.path.join(out, "shared.json")) as f:
        shared = json.load(f)["id"]
    mine, others = [], []
    for path in ack_paths(out):
        for rec in C.read_lines(path):
            for entry in rec["series"]:
                if entry[0] != shared:
                    (mine if path == ack else others).append(entry[0])
    mine, others = list(dict.fromkeys(mine)), list(dict.fromkeys(others))
    stats = {"wid": wid, "rounds": 0, "acked_points": 0, "opens": 0, "ends": 0, "errors": {}, "first_errors": []}

    def save():
        C.write_json_atomic(stats_path, stats)

    def error(exc):
        kind, text = C.classify_exception(exc)
        name = text.split(":")[0]
        stats["errors"][name] = stats["errors"].get(name, 0) + 1
        if len(stats["first_errors"]) < 5:
            stats["first_errors"].append(text)

    r = 0
    save()
    while time.time() < until:
        store = None
        try:
            store = steplog.open(store_path, block_points=int(rng.choice([64, 256, 8192])))
            stats["opens"] += 1
            if not mine or rng.random() < 0.3:
                run = store.start_run(experiment="race", name=f"w{wid}-{r}", params={"wid": wid, "round": r},
                                      tags={"slot": str(slot)})
                mine.append(run.id)
            elif others and rng.random() < 0.15:
                run = store.run(others[int(rng.integers(len(others)))])
            else:
                run = store.run(mine[int(rng.integers(len(mine)))])
            both = store.run(shared)
            base = (wid * 100_000 + r) * points
            entries = [[run.id, "m", None, base, points, 1, 0]]
            if r % 2 == 0:
                entries.append([run.id, "m", EVAL, base, points // 8, 8, 1])
            entries.append([shared, "shared", None, base, points // 4, 1, 2])
            rec = {"wid": wid, "r": r, "series": entries}
            for entry in entries:
                steps, values, times = expected_points(rec, entry)
                target = run if entry[0] == run.id else both
                target.log_batch(entry[1], steps, values, times=times, context=entry[2])
            store.flush()
            C.append_line(ack, rec)                       # acknowledged: flush has returned
            stats["rounds"] += 1
            stats["acked_points"] += sum(e[4] for e in entries)
            fate = rng.random()
            if fate >= 0.05 and rng.random() < 0.2:
                run.end()
                stats["ends"] += 1
            if fate < 0.05:                               # log more, exit before it is flushed
                extra = np.arange(points, 2 * points, dtype=np.int64)
                run.log_batch("m", base + extra, C.det_values(wid, r, 0, extra), times=T0 + base + extra)
                save()
                os._exit(0)
            if fate < 0.15:                               # exit without closing
                save()
                os._exit(0)
            store.close()
        except Exception as exc:   # noqa: BLE001 - counted, then the next round
            error(exc)
            if store is not None:
                try:
                    store.close()
                except Exception as exc2:   # noqa: BLE001
                    error(exc2)
            time.sleep(0.05)
        r += 1
        save()
    save()


def opener(store_path: str, out: str, idx: int, until: float) -> None:
    import steplog

    stats_path = os.path.join(out, f"opener-{idx:04d}.json")
    stats = {"opens": 0, "errors": {}, "first_errors": []}
    last = 0.0
    while time.time() < until:
        try:
            store = steplog.open(store_path)
            try:
                if stats["opens"] % 10 == 0:
                    store.runs()
            finally:
                store.close()
            stats["opens"] += 1
        except Exception as exc:   # noqa: BLE001
            _, text = C.classify_exception(exc)
            name = text.split(":")[0]
            stats["errors"][name] = stats["errors"].get(name, 0) + 1
            if len(stats["first_errors"]) < 5:
                stats["first_errors"].append(text)
            time.sleep(0.01)
        if time.monotonic() - last > 1.0:
            C.write_json_atomic(stats_path, stats)
            last = time.monotonic()
    C.write_json_atomic(stats_path, stats)


def reader(store_path: str, out: str, result_path: str, mem_mb: int) -> None:
    """Read every acknowledged series back; write counts to result_path."""
    import faulthandler

    C.limit_memory(mem_mb)
    faulthandler.enable()
    import steplog

    expected = collections.defaultdict(list)
    run_ids = set()
    for path in ack_paths(out):
        for rec in C.read_lines(path):
            for entry in rec["series"]:
                key = (entry[0], entry[1], json.dumps(entry[2], sort_keys=True) if entry[2] else "")
                expected[key].append(expected_points(rec, entry))
                run_ids.add(entry[0])
    res = collections.Counter()
    examples = collections.defaultdict(list)

    def example(kind, text):
        if len(examples[kind]) < 5:
            examples[kind].append(C.short(text, 300))

    res["series"] = len(expected)
    store = steplog.open(store_path)
    try:
        try:
            listed = set(store.runs().column("id").to_pylist())
            res["runs_missing"] = len(run_ids - listed)
        except Exception as exc:   # noqa: BLE001
            res["runs_table_errors"] += 1
            example("runs", C.classify_exception(exc)[1])
        for (run_id, name, context), parts in sorted(expected.items()):
            steps = np.concatenate([p[0] for p in parts])
            values = np.concatenate([p[1] for p in parts])
            times = np.concatenate([p[2] for p in parts])
            order = np.argsort(steps, kind="stable")
            steps, values, times = steps[order], values[order], times[order]
            res["acked_points"] += len(steps)
            ctx = json.loads(context) if context else None
            where = f"{run_id[:8]}/{name}{'@' + context if context else ''}"
            try:
                table = store.read(run_id, name, context=ctx)
                buckets = store.read(run_id, name, context=ctx, buckets=20)
            except steplog.CorruptionError as exc:
                res["corrupt_series"] += 1
                res["unreadable_points"] += len(steps)
                example("corrupt", f"{where}: {exc}")
                continue
            except Exception as exc:   # noqa: BLE001
                kind, text = C.classify_exception(exc)
                res[f"{kind}_errors"] += 1
                res["unreadable_points"] += len(steps)
                example(kind, f"{where}: {text}")
                continue
            got_steps = table.column("step").to_numpy()
            got_values = table.column("value").to_numpy()
            import pyarrow as pa

            got_times = table.column("time_ns").to_numpy()
            pos = np.searchsorted(got_steps, steps)
            found = pos < len(got_steps)
            found[found] = got_steps[pos[found]] == steps[found]
            missing = int((~found).sum())
            res["missing"] += missing
            if missing:
                example("missing", f"{where}: {missing} of {len(steps)} acknowledged points missing, "
                                   f"first at step {int(steps[~found][0])}")
            p = pos[found]
            bad = (got_values[p].view(np.uint64) != values[found].view(np.uint64)) | (got_times[p] != times[found])
            res["wrong"] += int(bad.sum())
            if bad.any():
                example("wrong", f"{where}: {int(bad.sum())} points with a wrong value or time, first at step "
                                 f"{int(steps[found][bad][0])}")
            dup = int((np.diff(got_steps) == 0).sum())
            res["duplicated"] += dup
            if dup:
                example("duplicated", f"{where}: {dup} steps returned twice")
            res["unacked_present"] += int(len(np.setdiff1d(got_steps, steps)))
            bucket_total = int(buckets.column("count").to_numpy().sum()) if buckets.num_rows else 0
            if bucket_total != table.num_rows:
                res["bucket_mismatch"] += 1
                example("bucket_mismatch", f"{where}: buckets count {bucket_total} points, raw read {table.num_rows}")
    finally:
        store.close()
    C.write_json_atomic(result_path, {"counts": dict(res), "examples": dict(examples)})


# -- the race ----------------------------------------------------------------------------------

def spawn(argv: list[str], log_path: str) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        log.close()


def read_back(store: str, out: str, name: str, timeout: float, mem_mb: int) -> tuple[C.Outcome, dict]:
    path = os.path.join(out, f"{name}.json")
    outcome = C.run_child(C.self_argv(__file__, "reader", store=store, dir=out, result=path, mem=mem_mb), timeout)
    try:
        with open(path) as f:
            return outcome, json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return outcome, {"counts": {}, "examples": {}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", default=None, help="directory for the store and logs (default: a temporary one)")
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--openers", type=int, default=2)
    parser.add_argument("--points", type=int, default=512, help="points a writer logs to its run each round")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mem-mb", type=int, default=4096, help="data-segment cap of the reader child (0: none)")
    parser.add_argument("--_role", default=None, help=argparse.SUPPRESS)
    for name in ("store", "dir", "slot", "inc", "until", "idx", "result", "mem", "points", "seed"):
        parser.add_argument(f"--_{name}", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    role = args._role
    if role == "setup":
        setup(args._store, args._dir)
        return 0
    if role == "writer":
        writer(args._store, args._dir, int(args._slot), int(args._inc), float(args._until), int(args._points),
               int(args._seed))
        return 0
    if role == "opener":
        opener(args._store, args._dir, int(args._idx), float(args._until))
        return 0
    if role == "reader":
        reader(args._store, args._dir, args._result, int(args._mem))
        return 0

    out = C.make_out_dir(args.out, "open_race")
    store, logs = os.path.join(out, "store"), os.path.join(out, "logs")
    os.makedirs(logs)
    made = C.run_child(C.self_argv(__file__, "setup", store=store, dir=out), 300)
    if made.kind != "exit" or made.rc != 0:
        print(f"setting up the store failed ({made.label}): {C.tail_lines(made.stderr, 6)}")
        print("open_race: setup=failed")
        return 0
    t_start = time.time()
    until = t_start + args.seconds
    ended = collections.Counter()          # how replaced children ended: "writer exit 0", "opener SIGBUS", ...
    crash_logs = []
    procs = {}                             # Popen -> (role, slot, inc)
    next_inc = collections.Counter()
    opener_idx = [0]

    def start(role, slot):
        if role == "writer":
            inc = next_inc[slot]
            next_inc[slot] += 1
            argv = C.self_argv(__file__, "writer", store=store, dir=out, slot=slot, inc=inc, until=until,
                               points=args.points, seed=args.seed)
            log = os.path.join(logs, f"writer-{slot:03d}-{inc:04d}.log")
        else:
            inc = opener_idx[0]
            opener_idx[0] += 1
            argv = C.self_argv(__file__, "opener", store=store, dir=out, idx=inc, until=until)
            log = os.path.join(logs, f"opener-{inc:04d}.log")
        procs[spawn(argv, log)] = (role, slot, inc, log)

    def reap(proc, how=None):
        role, slot, inc, log = procs.pop(proc)
        rc = proc.returncode
        how = how or (C.signal_name(-rc) if rc < 0 else f"exit {rc}")
        ended[f"{role} {how}"] += 1
        if how != "exit 0" and len(crash_logs) < 5:
            with open(log, errors="replace") as f:
                crash_logs.append(f"{role} {slot}/{inc} {how}: {C.short(C.crash_text(f.read()), 300)}")
        return role, slot

    for slot in range(args.writers):
        start("writer", slot)
    for slot in range(args.openers):
        start("opener", slot)
    while time.time() < until:
        time.sleep(0.2)
        for proc in [p for p in procs if p.poll() is not None]:
            role, slot = reap(proc)
            if until - time.time() > 2:
                start(role, slot)
    grace = time.time() + 60 + args.seconds / 10
    while procs and time.time() < grace:
        time.sleep(0.2)
        for proc in [p for p in procs if p.poll() is not None]:
            reap(proc)
    for proc in list(procs):
        C.kill_group(proc)
        reap(proc, "hang")
    race_wall = time.time() - t_start

    writers, openers = collections.Counter(), collections.Counter()
    writer_errors, opener_errors, first_errors = collections.Counter(), collections.Counter(), []
    for name in sorted(os.listdir(out)):
        if name.endswith(".json") and name.startswith(("writer-", "opener-")):
            with open(os.path.join(out, name)) as f:
                s = json.load(f)
            (writers if name.startswith("writer-") else openers).update(
                {k: v for k, v in s.items() if isinstance(v, int)})
            (writer_errors if name.startswith("writer-") else opener_errors).update(s["errors"])
            first_errors += [f"{name[:-5]}: {e}" for e in s["first_errors"]][:2]
    acked_records = sum(len(C.read_lines(p)) for p in ack_paths(out))

    timeout = max(300.0, args.seconds)
    outcome, back = read_back(store, out, "readback", timeout, args.mem_mb)
    verify = C.run_verify(store, timeout)
    counts = collections.Counter(back["counts"])
    print(f"race: {race_wall:.0f} s, {args.writers} writer slots ({sum(next_inc.values())} processes), "
          f"{args.openers} opener slots ({opener_idx[0]} processes)")
    print(f"writers: {writers['rounds']} rounds acknowledged ({acked_records} ack records), {writers['opens']} opens, "
          f"{writers['ends']} runs ended, errors {dict(writer_errors)}")
    print(f"openers: {openers['opens']} opens, errors {dict(opener_errors)}")
    print(f"how children ended: {dict(ended)}")
    for line in first_errors[:8]:
        print(f"  error: {C.short(line, 300)}")
    for line in crash_logs:
        print(f"  {line}")
    print(f"read-back ({outcome.label}, {outcome.wall:.0f} s): {dict(counts)}")
    if outcome.kind != "exit" or outcome.rc != 0:
        print(f"  read-back child: {C.short(C.crash_text(outcome.stderr), 400)}")
    for kind, texts in back["examples"].items():
        for text in texts:
            print(f"  {kind}: {text}")
    print(f"verify: {verify.verdict} (rc {verify.outcome.rc}), {len(verify.damaged)} DAMAGED lines"
          + (f", traceback: {verify.traceback}" if verify.traceback else ""))
    kinds = collections.Counter(line.split(": ", 1)[-1].split(" (")[0] for line in verify.damaged)
    for reason, n in kinds.most_common(5):
        print(f"  {n} x {C.short(reason, 160)}")
    repair_part = "repair=missing"
    if C.has_repair():
        copy = os.path.join(out, "repaired")
        shutil.copytree(store, copy, ignore=shutil.ignore_patterns("lock.mdb"))
        rep = C.steplog_cli(["repair", copy], timeout)
        r_outcome, r_back = read_back(copy, out, "readback-repaired", timeout, args.mem_mb)
        r_counts = collections.Counter(r_back["counts"])
        r_verify = C.run_verify(copy, timeout)
        print(f"repair: {rep.label}: {C.short(C.tail_lines(rep.stdout, 2), 200)}")
        print(f"read-back after repair ({r_outcome.label}): {dict(r_counts)}; verify {r_verify.verdict}")
        repair_part = (f"repair={rep.label.replace(' ', '')} repaired_missing={r_counts['missing']} "
                       f"repaired_wrong={r_counts['wrong']} repaired_corrupt_series={r_counts['corrupt_series']}")
    else:
        print("note: `python -m steplog repair` is not available; the repair pass is skipped")
    crashes = sum(n for k, n in ended.items() if k.split(" ", 1)[1] not in ("exit 0", "hang"))
    hangs = sum(n for k, n in ended.items() if k.endswith("hang"))
    print(f"store and logs: {out}")
    print(f"open_race: seconds={race_wall:.0f} writer_rounds={writers['rounds']} opens={openers['opens']} "
          f"writer_opens={writers['opens']} acked_points={counts['acked_points']} missing={counts['missing']} "
          f"wrong={counts['wrong']} duplicated={counts['duplicated']} corrupt_series={counts['corrupt_series']} "
          f"unreadable_points={counts['unreadable_points']} "
          f"read_errors={counts['typed_errors'] + counts['untyped_errors'] + counts['runs_table_errors']} "
          f"runs_missing={counts['runs_missing']} bucket_mismatch={counts['bucket_mismatch']} "
          f"readback={outcome.label.replace(' ', '')} writer_errors={sum(writer_errors.values())} "
          f"opener_errors={sum(opener_errors.values())} child_crashes={crashes} hangs={hangs} "
          f"verify_rc={verify.outcome.rc if verify.outcome.kind == 'exit' else verify.outcome.label} "
          f"verify_damaged={len(verify.damaged)} {repair_part}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
