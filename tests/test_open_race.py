"""Opens racing writers that commit and close: no committed block is ever cut.

Writers open the store, commit several flushes and close (releasing their segment's
lock) again and again, while other processes open and close the store as fast as they
can: every open cuts torn tails. Afterwards every acknowledged point reads back and
``steplog verify`` is clean. Real processes, real locks, bounded in time.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import steplog

RACE_SECONDS = 60
WRITERS = 2
OPENERS = 2

WRITER = r'''
import json, sys, time
import numpy as np
import steplog

path, writer, seconds, ack_path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + seconds
rounds = 0
with open(ack_path, "w") as ack:
    while time.monotonic() < deadline:
        store = steplog.open(path, block_points=64, flush_interval=None)
        run = store.start_run(name=f"w{writer}-{rounds}")
        for k in range(4):
            steps = np.arange(k * 64, (k + 1) * 64)
            run.log_batch("m", steps=steps, values=writer * 1e6 + rounds * 1e3 + steps)
            store.flush()
        ack.write(json.dumps({"run": run.id, "writer": writer, "round": rounds, "points": 256}) + "\n")
        ack.flush()
        store.close()
        rounds += 1
'''

OPENER = r'''
import sys, time
import steplog

path, seconds = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + seconds
opens = 0
while time.monotonic() < deadline:
    steplog.open(path, flush_interval=None).close()
    opens += 1
print(opens)
'''


@pytest.mark.slow
def test_opens_racing_commits_and_closes_cut_no_committed_block(tmp_path):
    path = str(tmp_path / "race.steplog")
    steplog.open(path).close()
    acks = [tmp_path / f"ack{w}.jsonl" for w in range(WRITERS)]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, path, str(w), str(RACE_SECONDS), str(acks[w])],
                              stderr=subprocess.PIPE, text=True) for w in range(WRITERS)]
    procs += [subprocess.Popen([sys.executable, "-c", OPENER, path, str(RACE_SECONDS)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(OPENERS)]
    outputs = [p.communicate(timeout=RACE_SECONDS + 120) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    opens = sum(int(out) for out, _ in outputs[WRITERS:])
    assert opens > 0

    acknowledged = [json.loads(line) for ack in acks for line in ack.read_text().splitlines()]
    assert len(acknowledged) >= WRITERS
    with steplog.open(path, flush_interval=None) as store:
        for ack in acknowledged:
            table = store.read(ack["run"], "m")
            steps = np.arange(ack["points"])
            np.testing.assert_array_equal(table["step"].to_numpy(), steps)
            np.testing.assert_array_equal(table["value"].to_numpy(),
                                          ack["writer"] * 1e6 + ack["round"] * 1e3 + steps)
    verify = subprocess.run([sys.executable, "-m", "steplog", "verify", path], capture_output=True, text=True,
                            timeout=300)
    assert verify.returncode == 0, verify.stdout[-3000:]
