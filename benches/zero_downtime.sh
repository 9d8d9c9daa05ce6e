#!/usr/bin/env bash
# The zero-downtime benchmark: two pods of one server (nginx unless --server NAME: nginx,
# apache, haproxy, caddy, lighttpd, gunicorn) behind HAProxy (health checks every 200 ms,
# retries 0), 8 clients sending slow requests, SIGTERM to one pod's PID 1 midway; run three
# times each for the server alone as PID 1, tini, dumb-init, dumb-init rewriting SIGTERM to the
# server's graceful signal, and lameduck (--shutdown-delay 2s; 15s; and 15s made adaptive by
# --quiet-period 1s, to show the time the adaptive delay saves). Prints the machine, then a
# Markdown table per run and a summary per init. Needs root (PID namespaces) and a Rust
# toolchain; installs the servers, HAProxy, tini and dumb-init from Debian when missing.
# Arguments go to the driver: [--server NAME] [--runs N] [--keep-alive] [--l4] [--short].
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
command -v apache2 >/dev/null || missing+=(apache2)
command -v caddy >/dev/null || missing+=(caddy)
command -v lighttpd >/dev/null || missing+=(lighttpd)
command -v gunicorn >/dev/null || missing+=(gunicorn)
if ((${#missing[@]})); then
    echo "zero_downtime.sh: installing ${missing[*]}" >&2
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --locked --bin lameduck --example zero_downtime_bench >&2

server=nginx
for ((i = 1; i <= $#; i++)); do
    if [[ ${!i} == --server ]]; then
        next=$((i + 1))
        server=${!next:-}
    fi
done
case $server in
    nginx) version=$(nginx -v 2>&1 | sed 's#nginx version: ##') ;;
    apache) version=$(apache2 -v | head -1 | sed 's#Server version: ##') ;;
    haproxy) version="app $(haproxy -v | head -1 | cut -d' ' -f1-3)" ;;
    caddy) version="Caddy $(caddy version | cut -d' ' -f1)" ;;
    lighttpd) version=$(lighttpd -v 2>&1 | head -1 | cut -d' ' -f1) ;;
    gunicorn) version="gunicorn $(gunicorn --version | cut -d' ' -f3 | tr -d ')')" ;;
    *) version=$server ;;
esac
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; Debian $(cat /etc/debian_version 2>/dev/null || echo '?');" \
    "$version; $(haproxy -v | head -1 | cut -d' ' -f1-3) in front;" \
    "$(tini --version); $(dumb-init --version 2>&1)"
echo
exec target/release/examples/zero_downtime_bench --lameduck target/release/lameduck "$@"
