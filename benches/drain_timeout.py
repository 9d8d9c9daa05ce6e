#!/usr/bin/env python3
"""How close to --drain-timeout lameduck kills an app that ignores its stop signal.

Runs the static lameduck (scripts/build-static.sh) as PID 1 of its own PID namespace over the
static fixture app that ignores every signal, with --shutdown-delay 0 --drain-timeout 1s, sends
SIGTERM, and times the exit. Prints how late the exit came after the 1 s, over 10 runs.
Root needed (PID namespaces).
"""
import os
import signal
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAMEDUCK = subprocess.run([os.path.join(ROOT, "scripts/build-static.sh")], cwd=ROOT,
                          check=True, capture_output=True, text=True).stdout.strip()
LAMEDUCK = os.path.join(ROOT, LAMEDUCK)
FIXTURE = os.path.join(os.path.dirname(LAMEDUCK), "examples", "fixture")
RUNS = 10

late_ms = []
for _ in range(RUNS):
    run = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", LAMEDUCK,
         "--listen", "127.0.0.1:0", "--shutdown-delay", "0", "--drain-timeout", "1s",
         "--", FIXTURE, "signals", "--exit-on", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    run.stdout.readline()  # "ready pid=..."
    with open(f"/proc/{run.pid}/task/{run.pid}/children") as children:
        pid1 = int(children.read().split()[0])
    sent = time.monotonic()
    os.kill(pid1, signal.SIGTERM)
    code = run.wait(timeout=10)
    late_ms.append((time.monotonic() - sent - 1.0) * 1000)
    assert code == 137, f"expected 137 (killed at the drain timeout), got {code}"

print(f"--drain-timeout 1s, {RUNS} runs: exit after SIGTERM minus 1 s: "
      f"median {statistics.median(late_ms):.2f} ms, min {min(late_ms):.2f} ms, max {max(late_ms):.2f} ms")
