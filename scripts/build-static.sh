#!/usr/bin/env bash
# Builds the static release binary (glibc linked statically: the gnu target with crt-static)
# that the images and the init-container install ship, plus the static fixture app the
# empty-root test runs, and stages the binary alone in target/image/ as the context of
# images/Dockerfile. Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
# crt-static: glibc linked in, so the binary runs in a scratch image or any app image.
# relocation-model=static: a plain static executable instead of static-pie (no relocation
# tables: ~100 KB smaller). --icf=all (rust-lld): identical functions folded (~20 KB).
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C link-arg=-Wl,--icf=all" cargo build --quiet --release --locked --target "$target" --bin lameduck --example fixture
# A build context for images/Dockerfile that holds the binary alone (cargo's release folder
# holds ~80 MB of build files that docker would send along).
mkdir -p target/image
cp "target/$target/release/lameduck" target/image/lameduck
echo "target/$target/release/lameduck"
