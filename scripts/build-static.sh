#!/usr/bin/env bash
# Builds a static release binary (the musl target: the C library linked in, no loader, no NSS)
# and stages it alone as the build context of its image. Prints the binary's path.
#
#   scripts/build-static.sh                    # the init, which the images and the init-container
#                                              # install ship, plus the static fixture app the
#                                              # empty-root test runs; context target/image/
#   scripts/build-static.sh kubectl-lameduck   # the cluster-side tool; context
#                                              # target/image-kubectl-lameduck/
#
# Needs the Rust target x86_64-unknown-linux-musl and Debian's musl-tools (musl-gcc, for the
# few C lines signal-hook compiles); scripts/test.sh installs both when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
# musl instead of glibc with crt-static: glibc drags its dynamic loader, locale and scanf and
# printf machinery into every static binary (~450 KB here) and its pages into every pod's RSS.
export CC_x86_64_unknown_linux_musl=musl-gcc
# relocation-model=static: a plain static executable instead of static-pie (no relocation
# tables). force-unwind-tables=no: with panic = "abort" nothing unwinds through lameduck's code.
export RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C force-unwind-tables=no"
case "${1:-lameduck}" in
lameduck)
    cargo build --quiet --release --locked --target "$target" --bin lameduck --example fixture
    binary=lameduck
    context=target/image
    ;;
kubectl-lameduck)
    cargo build --quiet --release --locked --target "$target" -p kubectl-lameduck --bin kubectl-lameduck
    binary=kubectl-lameduck
    context=target/image-kubectl-lameduck
    ;;
*)
    echo "usage: scripts/build-static.sh [lameduck|kubectl-lameduck]" >&2
    exit 2
    ;;
esac
# A build context that holds the binary alone (cargo's release folder holds ~80 MB of build
# files that docker would send along).
mkdir -p "$context"
cp "target/$target/release/$binary" "$context/$binary"
echo "target/$target/release/$binary"
