#!/usr/bin/env bash
# Builds the static release binary (glibc linked statically: the gnu target with crt-static)
# that the images and the init-container install ship, plus the static fixture app the
# empty-root test runs. Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
# crt-static: glibc linked in, so the binary runs in a scratch image or any app image.
# relocation-model=static: a plain static executable instead of static-pie (no relocation
# tables: ~100 KB smaller). --icf=all (rust-lld): identical functions folded (~20 KB).
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C link-arg=-Wl,--icf=all" cargo build --quiet --release --locked --target "$target" --bin lameduck --example fixture
echo "target/$target/release/lameduck"
