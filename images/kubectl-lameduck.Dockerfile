# The kubectl-lameduck image: the plugin's static binary alone, at /kubectl-lameduck, run as a
# non-root user. examples/webhook/webhook.yaml runs its admission webhook from it.
#
# Built like images/Dockerfile, from a binary cargo has already built. From the repository root:
#
#   RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target x86_64-unknown-linux-gnu -p kubectl-lameduck
#   mkdir -p target/plugin-image && cp target/x86_64-unknown-linux-gnu/release/kubectl-lameduck target/plugin-image/
#   docker build -f images/kubectl-lameduck.Dockerfile -t kubectl-lameduck:0.1.0 target/plugin-image
#
# Uses:
#   - the admission webhook: `/kubectl-lameduck webhook --tls-cert ... --tls-key ...`
#   - lint or inject in CI: `docker run --rm -i kubectl-lameduck:0.1.0 lint -`
FROM scratch
COPY kubectl-lameduck /kubectl-lameduck
USER 65532:65532
ENTRYPOINT ["/kubectl-lameduck"]
