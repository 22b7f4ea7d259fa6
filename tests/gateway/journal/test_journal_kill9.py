"""kill -9 at random moments: every op acknowledged as durable is recovered, in order, intact."""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

from journal_helpers import make_record, replay

from gateway.journal import Journal

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]
KILLS = 22


def run_child_and_kill(data_dir: str, rng: random.Random) -> list[int]:
    """Start the child, SIGKILL it at a random moment, return the ops it acknowledged."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, str(HERE / "journal_crash_child.py"), data_dir],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    acked: list[int] = []
    if rng.random() < 0.2:
        time.sleep(rng.uniform(0.0, 0.2))          # often lands inside start-up recovery
    else:
        first = child.stdout.readline()
        if first:
            acked.append(int(first))
        time.sleep(rng.uniform(0.0, 0.25))
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=10)
    assert child.returncode == -signal.SIGKILL
    acked.extend(int(line) for line in out.split())
    return acked


def test_kill9_never_loses_an_acknowledged_op(tmp_path) -> None:
    seed = random.randrange(2**32)
    print(f"kill -9 test seed {seed}")
    rng = random.Random(seed)
    data_dir = str(tmp_path)
    acked_max = 0
    started_s = time.monotonic()
    for kill_index in range(KILLS):
        acked = run_child_and_kill(data_dir, rng)
        acked_max = max([acked_max, *acked])
        recovery = Journal(data_dir).recover()
        context = f"seed {seed}, kill {kill_index}"
        assert recovery.last_op >= acked_max, f"lost acknowledged ops ({context})"
        expected = [make_record(op) for op in range(recovery.snapshot_op + 1, recovery.last_op + 1)]
        assert recovery.records == expected, f"gap or garbage ({context})"
        state = replay(recovery.snapshot, recovery.records)
        full = replay(None, [make_record(op) for op in range(1, recovery.last_op + 1)])
        assert state == full, f"snapshot inconsistent with the journal ({context})"
    assert acked_max > 0, "the child never acknowledged anything"
    assert time.monotonic() - started_s < 30
