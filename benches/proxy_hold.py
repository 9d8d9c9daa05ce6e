#!/usr/bin/env python3
"""Holds idle kept-alive connections for benches/proxy.sh: `proxy_hold.py 127.0.0.1:PORT COUNT`
opens COUNT connections to PORT (at most 500 connecting at once), sends `GET /small` on each
and reads its answer, so that each is a kept-alive connection that has served a request, then
prints one line, `answered A of COUNT`, and holds every connection open until a line (or EOF)
comes on stdin, at most 120 s. A connection still unanswered 3 s after the last progress (the
drain proxy serves at most its connection cap of clients; the rest wait in its listen queue) is
held as it is and not counted as answered. Loopback only; every wait is bounded."""
import resource
import select
import selectors
import socket
import sys
import time

REQUEST = b"GET /small HTTP/1.1\r\nHost: bench\r\n\r\n"
CONNECTING_AT_ONCE = 500
STALL = 3.0
OPEN_FOR_AT_MOST = 60.0
HOLD_FOR_AT_MOST = 120.0


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    count = int(sys.argv[2])
    if not host.startswith("127."):
        sys.exit("proxy_hold.py: loopback addresses only")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    target = (host, int(port))
    selector = selectors.DefaultSelector()
    held = []
    received = {}
    opened = connecting = answered = 0
    began = last_progress = time.monotonic()
    while answered < count:
        while opened < count and connecting < CONNECTING_AT_ONCE:
            conn = socket.socket()
            conn.setblocking(False)
            conn.connect_ex(target)
            held.append(conn)
            selector.register(conn, selectors.EVENT_WRITE)
            opened += 1
            connecting += 1
        now = time.monotonic()
        if now - last_progress > STALL or now - began > OPEN_FOR_AT_MOST:
            break
        for key, _ in selector.select(timeout=0.2):
            conn = key.fileobj
            if conn not in received:
                connecting -= 1
                error = conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    sys.exit(f"proxy_hold.py: connect to {sys.argv[1]}: error {error}")
                conn.send(REQUEST)
                received[conn] = b""
                selector.modify(conn, selectors.EVENT_READ)
            else:
                chunk = conn.recv(4096)
                if not chunk:
                    sys.exit(f"proxy_hold.py: {sys.argv[1]} closed a kept-alive connection")
                received[conn] += chunk
                if not received[conn].endswith(b"\r\n\r\nok\n"):
                    continue
                selector.unregister(conn)
                answered += 1
            last_progress = time.monotonic()
    print(f"answered {answered} of {count}", flush=True)
    select.select([sys.stdin], [], [], HOLD_FOR_AT_MOST)
    for conn in held:
        conn.close()


main()
