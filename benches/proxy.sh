#!/usr/bin/env bash
# The drain proxy's cost, against direct access in one run: nginx (one worker, keep-alive) under
# lameduck with --proxy, and wrk with keep-alive connections to nginx's own port and to the
# proxy's, for a small answer and a 40 KiB one: requests/s, p50 and p99 latency. Needs root
# (nginx's worker switches user) and a Rust toolchain; installs
# nginx and wrk from Debian when missing. Arguments: [--duration SECONDS] [--connections N].
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10
connections=50
while (($#)); do
    case $1 in
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    *) echo "proxy.sh: unknown argument $1; usage: [--duration SECONDS] [--connections N]" >&2; exit 2 ;;
    esac
done
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
    echo "proxy.sh: installing ${missing[*]}" >&2
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --locked --bin lameduck >&2
lameduck=$PWD/target/release/lameduck

dir=$(mktemp -d /tmp/lameduck-proxy-bench.XXXXXX)
pid=
cleanup() {
    # lameduck stops nginx (master and worker) and exits: --shutdown-delay 0.
    if [[ -n $pid ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    [[ -s $dir/lameduck.log ]] && cat "$dir/lameduck.log" >&2
    rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p "$dir/html"
printf 'ok\n' >"$dir/html/small"
head -c 40960 /dev/zero | tr '\0' x >"$dir/html/40k"
nginx_port=18480 proxy_port=18481 endpoints_port=18482
cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 4096;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4000; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server { listen 127.0.0.1:$nginx_port; root $dir/html; }
}
EOF
# 1,000 connections through the proxy are 2,000 descriptors in lameduck and 1,000 in wrk.
ulimit -n "$(ulimit -Hn)"
"$lameduck" --listen "127.0.0.1:$endpoints_port" --log-level warn --shutdown-delay 0 \
    --proxy "127.0.0.1:$proxy_port=127.0.0.1:$nginx_port" \
    -- nginx -c "$dir/nginx.conf" -g 'daemon off;' 2>"$dir/lameduck.log" &
pid=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$proxy_port/small" >/dev/null 2>&1 && break
    sleep 0.1
done

echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), Linux $(uname -r), load average $(cut -d' ' -f1 /proc/loadavg)"
echo "wrk -t1 -c$connections -d${duration}s --latency, keep-alive, nginx 1 worker; lameduck $(stat -c %s "$lameduck") bytes"
echo
echo "| path | answer | req/s | p50 | p99 |"
echo "|---|---|---|---|---|"
run_wrk() { # port path label answer
    local out
    out=$(wrk -t1 -c"$connections" -d"${duration}s" --latency "http://127.0.0.1:$1$2")
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    echo "| $3 | $4 | $rps | $p50 | $p99 |"
}
for path in /small /40k; do
    answer=$([[ $path == /small ]] && echo "3 B" || echo "40 KiB")
    run_wrk "$nginx_port" "$path" "direct to nginx" "$answer"
    run_wrk "$proxy_port" "$path" "through lameduck --proxy" "$answer"
done
