#!/usr/bin/env bash
# Builds lameduck and shows a zero-downtime drain of a real nginx, with lameduck as PID 1 of
# its own PID namespace (as in a container). Needs root and a Rust toolchain; installs nginx
# and curl when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v curl >/dev/null || missing+=(curl)
command -v unshare >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --locked

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log stderr;
events {}
http {
    access_log off;
    client_body_temp_path $work;
    proxy_temp_path $work;
    fastcgi_temp_path $work;
    uwsgi_temp_path $work;
    scgi_temp_path $work;
    server { listen 127.0.0.1:8080; location / { return 200 "hello from nginx\n"; } }
}
CONF

echo "== starting: lameduck --stop-signal QUIT --shutdown-delay 3s -- nginx (as PID 1)"
# Job control on: without it bash starts a background command with SIGINT and SIGQUIT ignored,
# and lameduck passes ignored signals on to the app, as a plain exec would.
set -m
unshare --pid --fork --mount-proc --kill-child \
    target/release/lameduck --listen 127.0.0.1:8099 --stop-signal QUIT --shutdown-delay 3s \
    -- nginx -c "$work/nginx.conf" -g 'daemon off;' &
outer=$!
set +m
probe() {
    local code
    code=$(curl -s -o /dev/null -m 2 -w "%{http_code}" "$1" 2>/dev/null || true)
    if [ "$code" = 000 ] || [ -z "$code" ]; then echo down; else echo "$code"; fi
}
for _ in $(seq 50); do [ "$(probe http://127.0.0.1:8099/readyz)" = 200 ] && break; sleep 0.1; done
inner=$(cat /proc/$outer/task/$outer/children | awk '{print $1}')
echo "== ready: /readyz $(probe http://127.0.0.1:8099/readyz), app $(probe http://127.0.0.1:8080/)"
echo "== SIGTERM to lameduck (pid $inner), as the kubelet sends it"
kill -TERM "$inner"
for i in 1 2 3 4 5; do
    sleep 1
    echo "   t+${i}s: /readyz $(probe http://127.0.0.1:8099/readyz), /livez $(probe http://127.0.0.1:8099/livez), nginx $(probe http://127.0.0.1:8080/)"
done
wait "$outer" && echo "== lameduck exited 0: nginx served until the delay ended, then stopped gracefully"
