#!/usr/bin/env bash
# The zero-downtime benchmark: two nginx pods behind HAProxy (health checks every 200 ms,
# retries 0), 8 clients sending slow requests, SIGTERM to one pod's PID 1 midway; run three
# times each for nginx alone as PID 1, tini, dumb-init, dumb-init --rewrite 15:3 and lameduck
# (--shutdown-delay 2s; 15s; and 15s made adaptive by --quiet-period 1s, to show the time the
# adaptive delay saves). Prints the machine, then a Markdown table per run and a summary per init.
# Needs root (PID namespaces) and a Rust toolchain; installs nginx, HAProxy, tini and dumb-init
# from Debian when missing. Arguments go to the driver: [--runs N] [--keep-alive].
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) != 0 ]]; then
    echo "zero_downtime.sh: run as root (the pods are PID namespaces)" >&2
    exit 1
fi
missing=()
command -v unshare >/dev/null || missing+=(util-linux)
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v tini >/dev/null || missing+=(tini)
command -v dumb-init >/dev/null || missing+=(dumb-init)
if ((${#missing[@]})); then
    echo "zero_downtime.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --locked --bin lameduck --example zero_downtime_bench >&2

echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; Debian $(cat /etc/debian_version 2>/dev/null || echo '?');" \
    "$(nginx -v 2>&1 | sed 's#nginx version: ##'); $(haproxy -v | head -1 | cut -d' ' -f1-3);" \
    "$(tini --version); $(dumb-init --version 2>&1)"
echo
exec target/release/examples/zero_downtime_bench --lameduck target/release/lameduck "$@"
