#!/usr/bin/env bash
# The drain proxy's cost, against direct access in one run: nginx (one worker, keep-alive) under
# lameduck with --proxy, and wrk with keep-alive connections to nginx's own port and to the
# proxy's, for a small answer and a 40 KiB one: requests/s, p50 and p99 latency, and the CPU
# time (utime+stime from /proc/PID/stat) lameduck and nginx's worker spent per 1,000 requests.
# Then memory per connection: VmRSS and RssAnon (/proc/PID/status) of lameduck and of nginx's
# worker idle, and with 1,000 and 10,000 idle kept-alive connections held open
# (benches/proxy_hold.py), direct and through the proxy, each in a fresh pod. Prints two
# Markdown tables and the KiB per 1,000 connections, ready for the README; takes about a
# minute. Needs root (nginx's worker switches user), an open-file limit of 12,000 (20,192 for
# the proxy's cap to admit all 10,000: two descriptors a client, see the README) and a Rust
# toolchain; installs nginx, wrk, python3 and procps from Debian when missing. Loopback only.
# Arguments: [--duration SECONDS] [--connections N] (wrk's).
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
command -v pgrep >/dev/null || missing+=(procps)
if ((${#missing[@]})); then
    echo "proxy.sh: installing ${missing[*]}" >&2
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --locked --bin lameduck >&2
lameduck=$PWD/target/release/lameduck

dir=$(mktemp -d /tmp/lameduck-proxy-bench.XXXXXX)
# mktemp's 0700 would keep nginx's worker (user nobody) out: every answer a 403.
chmod 755 "$dir"
pid=
stop_pod() {
    # lameduck stops nginx (master and worker) and exits: --shutdown-delay 0.
    if [[ -n $pid ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    fi
}
cleanup() {
    stop_pod
    [[ -s $dir/lameduck.log ]] && cat "$dir/lameduck.log" >&2
    rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p "$dir/html"
printf 'ok\n' >"$dir/html/small"
head -c 40960 /dev/zero | tr '\0' x >"$dir/html/40k"
nginx_port=18480 proxy_port=18481 endpoints_port=18482
# 10,000 held connections are 10,000 descriptors in the holder and in nginx (the clients', or
# the proxy's upstream side of each), and two per connection in lameduck.
ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < 12000)); then
    echo "proxy.sh: the open-file limit is $(ulimit -n); 10,000 held connections need 12,000" >&2
    exit 1
fi
cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 11000; }
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
# nginx under lameduck with --proxy; sets pid (lameduck's) and worker (nginx's one worker's).
start_pod() {
    "$lameduck" --listen "127.0.0.1:$endpoints_port" --log-level warn --shutdown-delay 0 \
        --proxy "127.0.0.1:$proxy_port=127.0.0.1:$nginx_port" \
        -- nginx -c "$dir/nginx.conf" -g 'daemon off;' 2>>"$dir/lameduck.log" &
    pid=$!
    local master=
    worker=
    for _ in $(seq 100); do
        if curl -sf "http://127.0.0.1:$proxy_port/small" >/dev/null 2>&1; then
            master=$(cat "$dir/nginx.pid" 2>/dev/null || true)
            worker=$(pgrep -P "$master" || true)
            [[ $worker =~ ^[0-9]+$ ]] && return 0
        fi
        sleep 0.1
    done
    echo "proxy.sh: nginx under lameduck did not start (nginx master '$master', worker '$worker')" >&2
    exit 1
}
tick=$(getconf CLK_TCK)
cpu_ticks() { # pid: its utime + stime, in clock ticks
    cut -d')' -f2- "/proc/$1/stat" | awk '{print $12 + $13}'
}
kib() { # pid field: a /proc/PID/status value, in KiB
    awk -v key="$2:" '$1 == key {print $2}' "/proc/$1/status"
}
proxy_open() { # the connections the proxy holds now, from /status
    curl -sf "http://127.0.0.1:$endpoints_port/status" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["proxy"]["open_connections"])'
}
# wrk's latency (812.00us, 2.20ms, 1.02s) in ms.
in_ms() { awk -v t="$1" 'BEGIN {f = t + 0; if (t ~ /us$/) f /= 1000; else if (t ~ /[0-9]s$/ && t !~ /ms$/) f *= 1000; printf "%.2f ms", f}'; }
commas() { sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|[^0-9]\)/\1,\2\3/;ta' <<<"$1"; }
# ms of CPU per 1,000 requests: ticks requests
per_1000_requests() { awk -v t="$1" -v hz="$tick" -v n="$2" 'BEGIN {printf "%.1f ms", t * 1000 / hz / (n / 1000)}'; }
# KiB per 1,000 connections: KiB connections
per_1000_connections() { commas "$(awk -v d="$1" -v n="$2" 'BEGIN {if (n > 0) printf "%.0f", d / (n / 1000); else printf "—"}')"; }

echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
# The proxy's connection cap at this open-file limit (src/proxy/forward.rs, connection_cap).
cap=$((($(ulimit -n) - 64 - 128) / 2))
((cap > 32768)) && cap=32768
echo "$(nginx -v 2>&1 | cut -d: -f2 | xargs), 1 worker, keep-alive; wrk -t1 -c$connections -d${duration}s --latency; lameduck $(commas "$(stat -c %s "$lameduck")") bytes; open-file limit $(commas "$(ulimit -n)") (the proxy's cap $(commas "$cap")); CPU is utime+stime from /proc/PID/stat"
echo
echo "| path | answer | req/s | p50 | p99 | lameduck CPU per 1,000 req | nginx worker CPU per 1,000 req |"
echo "|---|---|---|---|---|---|---|"
run_wrk() { # port path label answer
    local out before_l before_n after_l after_n rps p50 p99 requests
    before_l=$(cpu_ticks "$pid") before_n=$(cpu_ticks "$worker")
    out=$(wrk -t1 -c"$connections" -d"${duration}s" --latency "http://127.0.0.1:$1$2")
    after_l=$(cpu_ticks "$pid") after_n=$(cpu_ticks "$worker")
    rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
    p50=$(in_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(in_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
        echo "proxy.sh: not every request to port $1 got its answer:" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "| $3 | $4 | $(commas "$rps") | $p50 | $p99 | $(per_1000_requests $((after_l - before_l)) "$requests") | $(per_1000_requests $((after_n - before_n)) "$requests") |"
}
start_pod
for path in /small /40k; do
    answer=$([[ $path == /small ]] && echo "3 B" || echo "40 KiB")
    run_wrk "$nginx_port" "$path" "direct to nginx" "$answer"
    run_wrk "$proxy_port" "$path" "through lameduck \`--proxy\`" "$answer"
done
stop_pod

# Memory: a fresh pod for each row, so that no row's freed heap flatters the next; each held
# connection has served one request (benches/proxy_hold.py).
echo
echo "| idle kept-alive connections | path | held by lameduck | lameduck VmRSS | lameduck RssAnon | nginx worker VmRSS | nginx worker RssAnon |"
echo "|---|---|---|---|---|---|---|"
summary=()
for count in 1000 10000; do
    for route in direct proxy; do
        start_pod
        if [[ $route == direct ]]; then
            port=$nginx_port label="direct to nginx"
        else
            port=$proxy_port label="through lameduck \`--proxy\`"
        fi
        idle=("$(kib "$pid" VmRSS)" "$(kib "$pid" RssAnon)" "$(kib "$worker" VmRSS)" "$(kib "$worker" RssAnon)")
        if [[ $count == 1000 && $route == direct ]]; then
            echo "| 0 | — | 0 | $(commas "${idle[0]}") KiB | $(commas "${idle[1]}") KiB | $(commas "${idle[2]}") KiB | $(commas "${idle[3]}") KiB |"
        fi
        coproc hold { python3 benches/proxy_hold.py "127.0.0.1:$port" "$count"; }
        answer_line=
        read -r -t 90 answer_line <&"${hold[0]}" || true
        held=$(proxy_open)
        now=("$(kib "$pid" VmRSS)" "$(kib "$pid" RssAnon)" "$(kib "$worker" VmRSS)" "$(kib "$worker" RssAnon)")
        echo done >&"${hold[1]}"
        wait "$hold_PID" || { echo "proxy.sh: the holder failed (${answer_line:-no answer})" >&2; exit 1; }
        answered=$(awk '{print $2}' <<<"$answer_line")
        note=
        ((answered < count)) && note=" ($(commas "$answered") answered, the rest in the listen queue$( ((answered == cap)) && echo ": the proxy's cap"))"
        echo "| $(commas "$count")$note | $label | $(commas "$held") | $(commas "${now[0]}") KiB | $(commas "${now[1]}") KiB | $(commas "${now[2]}") KiB | $(commas "${now[3]}") KiB |"
        # Over this pod idle: lameduck's growth over the connections it holds, the nginx
        # worker's over those it serves (the clients', or the proxy's upstream side of each).
        nginx_per="nginx worker $(per_1000_connections $((now[3] - idle[3])) "$answered") KiB RssAnon ($(per_1000_connections $((now[2] - idle[2])) "$answered") VmRSS)"
        if [[ $route == proxy ]]; then
            summary+=("$(commas "$held") through the proxy: lameduck $(per_1000_connections $((now[1] - idle[1])) "$held") KiB RssAnon ($(per_1000_connections $((now[0] - idle[0])) "$held") VmRSS), $nginx_per")
        else
            summary+=("$(commas "$answered") direct: $nginx_per")
        fi
        stop_pod
    done
done
echo
echo "KiB per 1,000 held connections, over the same pod idle:"
for line in "${summary[@]}"; do echo "- $line"; done
