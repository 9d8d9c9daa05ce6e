#!/usr/bin/env bash
# Builds a static release binary (the gnu target with crt-static: glibc linked in) and stages
# it alone as the build context of its image. Prints the binary's path.
#
#   scripts/build-static.sh                    # the init, which the images and the init-container
#                                              # install ship, plus the static fixture app the
#                                              # empty-root test runs; context target/image/
#   scripts/build-static.sh kubectl-lameduck   # the cluster-side tool; context
#                                              # target/image-kubectl-lameduck/
#
# The target is the toolchain's own, x86_64-unknown-linux-gnu: a machine that can add no other
# Rust target builds it as it is. (musl would make the init about 0.7 MB smaller, but needs the
# musl target added with rustup, which a machine that reaches only the package registries cannot.)
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
# crt-static: glibc linked in, so the binary runs in a scratch image or any app image.
# relocation-model=static: a plain static executable instead of static-pie (no relocation
# tables). force-unwind-tables=no: with panic = "abort" nothing unwinds through lameduck's code.
# --icf=all (rust-lld): identical functions folded.
export RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C force-unwind-tables=no -C link-arg=-Wl,--icf=all"
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
