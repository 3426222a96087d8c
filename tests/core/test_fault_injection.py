"""Crash safety of every trainer and of ``save_pretrained``: each run is killed (SIGKILL, and
Ctrl-C as KeyboardInterrupt) right after each of its write boundaries in turn, run again, and the
continuation must equal an uninterrupted run bit for bit, with no leftover temporaries and every
file within the umask (harness: ``tests/fault_injection.py``: two processes, one fork per run)."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the fault-injection harness forks")

HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fault_injection.py")
# scenario -> fewest write boundaries its uninterrupted run must show (proves the injector sees the saves)
SCENARIOS = {"trainer": 25, "save_pretrained": 5, "vqgan": 15, "video": 15, "progress": 10, "rl": 25}
GROUPS = (("rl", "progress", "save_pretrained"), ("trainer", "vqgan", "video"))  # two processes, similar work


def _start(work, *scenarios):
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "stderr.txt", "w+")  # a file, not a pipe: a full pipe would stall the run
    proc = subprocess.Popen([sys.executable, HARNESS, str(work), *scenarios], stdout=subprocess.PIPE, stderr=log,
                            text=True)
    return proc, log


def _finish(started):
    proc, log = started
    out, _ = proc.communicate(timeout=1200)
    with log:
        log.seek(0)
        assert proc.returncode == 0, log.read()[-4000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    work = tmp_path_factory.mktemp("faults")
    procs = [_start(work / f"group{i}", *group) for i, group in enumerate(GROUPS)]
    return {name: r for proc in procs for name, r in _finish(proc).items()}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_kill_at_any_write_boundary_then_a_resume_equals_an_uninterrupted_run(report, scenario):
    r = report[scenario]
    assert r["boundaries"] >= SCENARIOS[scenario], r
    assert r["trials"] == 2 * r["boundaries"]  # SIGKILL and KeyboardInterrupt after each one
    assert r["failures"] == [], "\n".join(r["failures"][:20])


def test_the_harness_catches_a_state_saved_as_two_files(tmp_path):
    r = _finish(_start(tmp_path, "two_file_state"))["two_file_state"]
    differs = [f for f in r["failures"] if "differs from the uninterrupted one in ['step', 'w']" in f
               or "differs from the uninterrupted one in ['w']" in f]
    assert differs, r  # a kill between the tensors' rename and the counters' leaves new tensors + old counters
