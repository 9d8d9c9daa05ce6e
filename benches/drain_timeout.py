#!/usr/bin/env python3
"""How close to --drain-timeout lameduck kills an app that ignores its stop signal.

Runs the static lameduck (scripts/build-static.sh) as PID 1 of its own PID namespace over the
static fixture app that ignores every signal, with --shutdown-delay 0 --drain-timeout 1s, sends
SIGTERM, and reports over 10 runs how late the kill came after the 1 s (from lameduck's own JSON
log: stop signal sent -> SIGKILL sent), and how late the whole namespace was gone as seen from
outside (the kernel's teardown of the PID namespace included).
Root needed (PID namespaces).
"""
import os
import signal
import statistics
import subprocess
import json
import time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAMEDUCK = subprocess.run([os.path.join(ROOT, "scripts/build-static.sh")], cwd=ROOT,
                          check=True, capture_output=True, text=True).stdout.strip()
LAMEDUCK = os.path.join(ROOT, LAMEDUCK)
FIXTURE = os.path.join(os.path.dirname(LAMEDUCK), "examples", "fixture")
RUNS = 10

def at(line):
    """The timestamp of a JSON log line, in seconds."""
    stamp = json.loads(line)["timestamp"].rstrip("Z")[:26]
    return datetime.fromisoformat(stamp).timestamp()


late_ms = []
kill_late_ms = []
for _ in range(RUNS):
    run = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", LAMEDUCK,
         "--listen", "127.0.0.1:0", "--log-format", "json", "--shutdown-delay", "0",
         "--drain-timeout", "1s",
         "--", FIXTURE, "signals", "--exit-on", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run.stdout.readline()  # "ready pid=..."
    with open(f"/proc/{run.pid}/task/{run.pid}/children") as children:
        pid1 = int(children.read().split()[0])
    sent = time.monotonic()
    os.kill(pid1, signal.SIGTERM)
    code = run.wait(timeout=10)
    late_ms.append((time.monotonic() - sent - 1.0) * 1000)
    assert code == 137, f"expected 137 (killed at the drain timeout), got {code}"
    log = run.stderr.read().splitlines()
    stopped = next(at(l) for l in log if "sent the app its stop signal" in l)
    killed = next(at(l) for l in log if "drain timeout ran out" in l)
    kill_late_ms.append((killed - stopped - 1.0) * 1000)


def summary(values):
    return (f"median {statistics.median(values):.2f} ms, min {min(values):.2f} ms, "
            f"max {max(values):.2f} ms")


print(f"--drain-timeout 1s, {RUNS} runs")
print(f"  SIGKILL after the stop signal, minus 1 s (lameduck's log): {summary(kill_late_ms)}")
print(f"  namespace gone after SIGTERM, minus 1 s (from outside):    {summary(late_ms)}")
