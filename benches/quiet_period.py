#!/usr/bin/env python3
"""What the adaptive delay (--quiet-period) costs as the app's connections grow, and how fast it
decides.

For 100, 1,000, 10,000 and 20,000 real idle kept-alive connections (each served one request) to a
real nginx under the static lameduck (scripts/build-static.sh) as PID 1 of its own PID namespace:

- cost: `--shutdown-delay 8s --quiet-period 1s --min-delay 7s`, SIGTERM, then lameduck's CPU time
  (utime+stime from /proc/PID/stat) from 0.5 s to 6.5 s into the drain, per second of drain, and
  its VmRSS (the highest of samples every 0.5 s) and VmHWM;
- decision: `--shutdown-delay 8s --quiet-period 1s`, SIGTERM, requests on one more kept-alive
  connection every 50 ms for 2 s, then none: the time from the last byte sent to the stop signal
  (lameduck's JSON log line), less the quiet period; and the CPU per second while the requests
  still came.

Prints one Markdown table. Root needed (PID and network namespaces, nginx). Loopback only, in a
network namespace of its own: the idle
connections are held by forked holder processes of 5,000 each, bound to 127.0.0.10, .11, ...,
so that neither a process's open-file limit nor a source address's ephemeral ports run out, and
nginx spreads them over four workers (reuseport). Not part of the test suite.
"""
import ctypes
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTS = [100, 1_000, 10_000, 20_000]
PER_SOURCE = 5_000
QUIET_PERIOD = 1.0
TICK = os.sysconf("SC_CLK_TCK")
REQUEST = b"GET /fast HTTP/1.1\r\nHost: bench\r\n\r\n"


def at(line):
    """The timestamp of a JSON log line, in seconds since the epoch."""
    stamp = json.loads(line)["timestamp"].rstrip("Z")[:26]
    return datetime.fromisoformat(stamp).replace(tzinfo=timezone.utc).timestamp()


def cpu_ms(pid):
    """utime + stime of a process, in ms."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICK


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def request(conn):
    """One keep-alive request, read to the end of its response."""
    conn.sendall(REQUEST)
    got = b""
    while not got.endswith(b"ok\n"):
        chunk = conn.recv(4096)
        if not chunk:
            raise RuntimeError("nginx closed a connection")
        got += chunk


def hold(addr, count, source):
    """Forks a process that opens `count` kept-alive connections from `source`, each served one
    request, and holds them until it is sent SIGTERM; returns its pid."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            held = []
            for _ in range(count):
                conn = socket.socket()
                conn.bind((source, 0))
                conn.connect(addr)
                request(conn)
                held.append(conn)
            os.write(ready_w, b"x")
            while True:
                signal.pause()
        finally:
            os._exit(1)
    os.close(ready_w)
    if os.read(ready_r, 1) != b"x":
        raise RuntimeError("a holder could not open its connections")
    os.close(ready_r)
    return pid


class Pod:
    """nginx under lameduck, PID 1 of its own PID namespace."""

    def __init__(self, lameduck, workdir, port, flags, connections):
        self.addr = ("127.0.0.1", port)
        endpoints = ("127.0.0.1", port + 1)
        conf = os.path.join(workdir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 4;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log;
events {{ worker_connections {connections // 2 + 1000}; }}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port} backlog=4096 reuseport;
        location = /fast {{ return 200 "ok\\n"; }}
    }}
}}
""")
        self.run = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", lameduck,
             "--listen", f"127.0.0.1:{port + 1}", "--log-format", "json",
             "--stop-signal", "QUIT", "--ready-check", f"http://127.0.0.1:{port}/fast",
             "--drain-timeout", "12s", *flags,
             "--", "nginx", "-c", conf, "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port + 1}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the pod never became ready")
            time.sleep(0.05)
        with open(f"/proc/{self.run.pid}/task/{self.run.pid}/children") as children:
            self.pid = int(children.read().split()[0])
        self.holders = [hold(self.addr, min(PER_SOURCE, connections - start), f"127.0.0.{10 + i}")
                        for i, start in enumerate(range(0, connections, PER_SOURCE))]
        self.busy = socket.create_connection(self.addr)
        request(self.busy)
        # Everything opened so far is older than the quiet period when the drain begins.
        time.sleep(QUIET_PERIOD + 0.2)

    def stop_signal_at(self):
        """Waits for lameduck to exit; returns when its log says the stop signal went out."""
        self.busy.close()
        for pid in self.holders:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        self.run.wait(timeout=20)
        log = self.run.stderr.read().splitlines()
        return next(at(l) for l in log if "sent the app its stop signal" in l)


def cost(lameduck, workdir, port, connections):
    pod = Pod(lameduck, workdir, port,
              ["--shutdown-delay", "8s", "--quiet-period", "1s", "--min-delay", "7s"],
              connections)
    os.kill(pod.pid, signal.SIGTERM)
    time.sleep(0.5)
    before = cpu_ms(pod.pid)
    rss = 0
    for _ in range(12):
        time.sleep(0.5)
        rss = max(rss, status_kib(pod.pid, "VmRSS"))
    used = cpu_ms(pod.pid) - before
    hwm = status_kib(pod.pid, "VmHWM")
    pod.stop_signal_at()
    return used / 6.0, rss, hwm


def decision(lameduck, workdir, port, connections):
    pod = Pod(lameduck, workdir, port, ["--shutdown-delay", "8s", "--quiet-period", "1s"],
              connections)
    os.kill(pod.pid, signal.SIGTERM)
    began = time.monotonic()
    before = cpu_ms(pod.pid)
    last = None
    while time.monotonic() - began < 2.0:
        last = time.time()
        request(pod.busy)
        time.sleep(0.05)
    busy_cpu = (cpu_ms(pod.pid) - before) / (time.monotonic() - began)
    # Closing the busy connection before the decision would hide its last bytes (a closed
    # socket leaves the table): hold it until the stop signal is long out.
    time.sleep(QUIET_PERIOD + 2.0)
    stopped = pod.stop_signal_at()
    return (stopped - last - QUIET_PERIOD) * 1000, busy_cpu


def main():
    if os.geteuid() != 0:
        sys.exit("quiet_period.py: run as root (PID namespaces, open-file limits)")
    lameduck = os.path.join(ROOT, subprocess.run(
        [os.path.join(ROOT, "scripts/build-static.sh")], cwd=ROOT, check=True,
        capture_output=True, text=True).stdout.strip())
    # The adaptive delay counts every connection its network namespace accepts: the bench gets
    # one of its own, so that other work on the machine does not hold its drains open.
    if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:  # CLONE_NEWNET
        sys.exit("quiet_period.py: cannot unshare a network namespace")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; {os.cpu_count()} cores; "
          f"Linux {os.uname().release}; {nginx}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("| app connections | lameduck CPU per s of drain (idle) | share of one core "
          "| CPU per s, first 2 s, requests coming (finding the ports included) | VmRSS (VmHWM) | last byte → stop signal |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="lameduck-quiet-bench-") as workdir:
        for n, connections in enumerate(COUNTS):
            port = 28_000 + 10 * n
            per_s, rss, hwm = cost(lameduck, workdir, port, connections)
            late_ms, busy_cpu = decision(lameduck, workdir, port + 2, connections)
            print(f"| {connections:,} | {per_s:.1f} ms | {per_s / 10:.2f} % "
                  f"| {busy_cpu:.1f} ms | {rss / 1024:.2f} MiB ({hwm / 1024:.2f} MiB) "
                  f"| quiet period + {late_ms:.0f} ms |", flush=True)


main()
