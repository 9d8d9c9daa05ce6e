#!/usr/bin/env bash
# Builds the static release binary (glibc linked statically: the gnu target with crt-static)
# that the images and the init-container install ship, plus the static fixture app the
# empty-root test runs. Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release --locked --target "$target" --bin lameduck --example fixture
echo "target/$target/release/lameduck"
