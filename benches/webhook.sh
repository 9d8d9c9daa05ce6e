#!/usr/bin/env bash
# The admission webhook under load (kubectl-lameduck/benches/webhook_load/driver.rs): 1,000
# injected pod reviews a second for 10 s over loopback HTTPS; prints p50, p99 and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --locked -p kubectl-lameduck --bin kubectl-lameduck
KUBECTL_LAMEDUCK="$PWD/target/release/kubectl-lameduck" \
    cargo run --quiet --release --locked -p kubectl-lameduck --example webhook_load
