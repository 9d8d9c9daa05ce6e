#!/usr/bin/env bash
# The footprint and speed benchmark: lameduck (the static release build) against tini, tini-static
# and dumb-init, each as PID 1 of its own PID namespace: startup and exit (hyperfine), idle
# memory, binary size, signal-forwarding latency and reaping 5,000 orphans; then lameduck alone:
# /readyz under a wrk probe flood and the drain timeline with and without load on its endpoints.
# Prints the machine, then one Markdown table with lameduck's ratio to tini and the targets.
# Needs root (PID namespaces) and a Rust toolchain; installs tini, dumb-init, hyperfine and wrk
# from Debian when missing. Arguments go to the driver: [--quick] for a short trial run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) != 0 ]]; then
    echo "footprint.sh: run as root (each init runs in its own PID namespace)" >&2
    exit 1
fi
missing=()
command -v unshare >/dev/null || missing+=(util-linux)
# Debian's tini package ships both /usr/bin/tini and /usr/bin/tini-static.
command -v tini-static >/dev/null || missing+=(tini)
command -v dumb-init >/dev/null || missing+=(dumb-init)
command -v hyperfine >/dev/null || missing+=(hyperfine)
command -v wrk >/dev/null || missing+=(wrk)
if ((${#missing[@]})); then
    echo "footprint.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The static binary the images ship, and the static fixture app (its `orphans N` mode).
lameduck=$(scripts/build-static.sh)
fixture=target/x86_64-unknown-linux-gnu/release/examples/fixture
cargo build --quiet --release --locked --example footprint_bench >&2

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores ($cpu); Linux $(uname -r);" \
    "Debian $(cat /etc/debian_version 2>/dev/null || echo '?'); load average $(cut -d' ' -f1-3 /proc/loadavg);" \
    "$(tini --version); $(dumb-init --version 2>&1); $(hyperfine --version); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo
exec target/release/examples/footprint_bench --lameduck "$lameduck" --fixture "$fixture" "$@"
