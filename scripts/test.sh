#!/usr/bin/env bash
# Runs every lameduck test on a fresh Debian machine: installs what the tests need when it is
# missing (nginx, HAProxy, Apache httpd, Caddy, lighttpd, gunicorn, util-linux's unshare, Python
# for the manifest checks), then runs the whole suite. Needs root (the tests make PID
# namespaces), a running Docker Engine (the container tests) and a Rust toolchain 1.94+ (its
# default linker, rust-lld, folds identical code in the static build, and its cargo tells the
# tests where the binaries under test are).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "test.sh: cargo not found; install a Rust toolchain (1.94+) first" >&2
    exit 1
fi
if ! docker info >/dev/null 2>&1; then
    echo "test.sh: the container tests need a running Docker Engine (docker info fails)" >&2
    exit 1
fi

missing=()
command -v unshare >/dev/null || missing+=(util-linux)
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
# The other servers tests/servers.rs drains (Apache httpd, Caddy, lighttpd, gunicorn).
command -v apache2 >/dev/null || missing+=(apache2)
command -v caddy >/dev/null || missing+=(caddy)
command -v lighttpd >/dev/null || missing+=(lighttpd)
command -v gunicorn >/dev/null || missing+=(gunicorn)
command -v kubectl >/dev/null || missing+=(kubernetes-client)
command -v python3 >/dev/null || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if ((${#missing[@]})); then
    echo "test.sh: installing ${missing[*]}" >&2
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
fi

# Python packages for the manifest schemas and the OpenMetrics parser the tests check against.
python_needs=()
python3 -c "import prometheus_client" 2>/dev/null || python_needs+=(prometheus-client)
python3 -c "import kubernetes_validate" 2>/dev/null || python_needs+=(kubernetes-validate==1.37.0)
if ((${#python_needs[@]})); then
    echo "test.sh: installing ${python_needs[*]} from PyPI" >&2
    # Debian's own python3 refuses system-wide installs without the flag (PEP 668).
    python3 -m pip install -q --break-system-packages "${python_needs[@]}" 2>/dev/null ||
        python3 -m pip install -q "${python_needs[@]}"
fi

cargo test --workspace --locked --no-fail-fast "$@"
